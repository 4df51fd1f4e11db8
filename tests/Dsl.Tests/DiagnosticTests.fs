/// One test per kind of diagnostic, each pinned to its exact line and column.
module Dsl.Tests.DiagnosticTests

open System.IO
open Expecto
open Dsl
open Dsl.Tests.Support

let private model body =
    "model m : image[1, 28, 28] -> logits[10] =\n    " + body + "\n"

[<Tests>]
let tests =
    testList
        "diagnostics"
        [
            test "syntax error" { expectError "let x = (1 + \nlet y = 2\n" "2:1" "syntax error" }

            test "unknown name, with a suggestion" {
                expectError (model "flatten >> lineer 10") "2:16" "unknown name 'lineer'; did you mean 'linear'?"
            }

            test "too many arguments" {
                expectError "let f a = a + 1\nlet y = f 1 2\n" "2:13" "f takes 1 argument but is given 2"
            }

            test "unknown named argument" {
                expectError
                    (model "conv 8 (kernal = 3) >> globalAvgPool >> linear 10")
                    "2:13"
                    "unknown named argument 'kernal' for conv; it takes k, stride, padding, groups, dilation, bias"
            }

            test "wrong argument type" {
                expectError
                    (model "conv \"eight\" >> globalAvgPool >> linear 10")
                    "2:10"
                    "conv: argument 'channels' must be an int, got a string"
            }

            test "shape mismatch names the layer and both shapes" {
                expectError
                    "model m (x : image[2, 8, 8]) =\n    x + (x |> conv 4)\n"
                    "2:7"
                    "cannot add tensors of shapes [B, 2, 8, 8] and [B, 4, 8, 8]"

                expectError
                    (model "flatten >> linear 12")
                    "1:31"
                    "model 'm' produces [B, 12] but its declared output type is logits[10]"

                expectError
                    "model m : image[1, 8, 8] -> logits[3] =\n    linear 3 >> attention 2 >> flatten\n"
                    "2:17"
                    "attention: expects a [B, T, D] input, got [B, 1, 8, 3]"
            }

            test "unknown output type, with a suggestion" {
                expectError
                    "model m : image[1, 28, 28] -> foo[10] =\n    flatten >> linear 10\n"
                    "1:31"
                    "unknown output type 'foo'; outputs are logits[…], tensor[…] or image[C, H, W]"

                expectError
                    "model m : image[1, 28, 28] -> logit[10] =\n    flatten >> linear 10\n"
                    "1:31"
                    "unknown output type 'logit'; did you mean 'logits'?"

                expectError
                    "model m (x : image[1, 4, 4]) : image[16] =\n    x |> flatten\n"
                    "1:32"
                    "an image output has three dimensions [C, H, W], got 1"

                Expect.equal (graph "model m : image[1, 4, 4] -> image[2, 4, 4] = conv 2\n").Name "m" "image outputs"
            }

            test "channel and group divisibility" {
                expectError
                    "model m : image[3, 8, 8] =\n    conv 32 (groups = 3)\n"
                    "2:5"
                    "32 output channels are not divisible by groups = 3"

                expectError
                    "model m : image[6, 8, 8] -> logits[2] =\n    groupnorm 4 >> globalAvgPool >> linear 2\n"
                    "2:5"
                    "6 channels are not divisible by 4 groups"
            }

            test "non-positive sizes" {
                expectError (model "flatten >> linear 0") "2:23" "linear: 'features' must be positive, got 0"

                expectError
                    "model m : image[1, 0, 8] -> logits[2] = flatten >> linear 2\n"
                    "1:20"
                    "a dimension must be a positive int"
            }

            test "empty convolution output" {
                expectError
                    "model m : image[1, 2, 2] -> logits[2] =\n    conv 4 (k = 5) (padding = 0) >> flatten >> linear 2\n"
                    "2:5"
                    "output would be empty"
            }

            test "unknown model in a train block" {
                expectError
                    (model "flatten >> linear 10" + "train mm {\n    data = fashionMnist\n}\n")
                    "3:1"
                    "train: unknown model 'mm'; did you mean 'm'?"
            }

            test "unknown train field and bad optimizer" {
                expectError
                    (model "flatten >> linear 10"
                     + "train m {\n    data = fashionMnist\n    epocs = 2\n}\n")
                    "5:5"
                    "unknown train field 'epocs'; did you mean 'epochs'?"

                expectError
                    (model "flatten >> linear 10"
                     + "train m {\n    data = fashionMnist\n    optimizer = 3\n}\n")
                    "5:17"
                    "optimizer must be one of adamw, sgd"
            }

            test "a random crop that would change the data's size" {
                expectError
                    (model "flatten >> linear 10"
                     + "train m {\n    data = fashionMnist { augment = [ randomCrop 64 (pad = 4) ] }\n}\n")
                    "4:12"
                    "randomCrop 64 (pad = 4): the crop must keep the data's size 28"
            }

            test "a free parameter that is also the scope of other parameters" {
                // Either order: the param made first, or the conv's 'up.0.weight' made first.
                expectError
                    (model "conv 4 >> named \"up\" (fun x -> conv 4 x + param [4; 1; 1]) >> flatten >> linear 10")
                    "2:47"
                    "the parameter 'up' would also be the scope of 'up.0.weight'; a name cannot be both (a free `param` takes its scope's name"

                expectError
                    (model "conv 4 >> named \"up\" (fun x -> x + param [4; 1; 1] |> conv 4) >> flatten >> linear 10")
                    "2:59"
                    "the parameter 'up' would also be the scope of 'up.0.weight'"

                expectError
                    (model "conv 4 >> at \"0.weight\" (conv 4) >> flatten >> linear 10")
                    "2:30"
                    "the parameter '0.weight' would also be the scope of '0.weight.weight'; a name cannot be both: give one of them another name with `named`"
            }

            test "sizes beyond 32 bits and sizes that are not positive" {
                expectError
                    (model "conv 99999999999 >> flatten >> linear 10")
                    "2:10"
                    "conv: 'channels' must be at most 2,147,483,647, got 99999999999"

                expectError
                    (model "flatten >> linear 1000000000000")
                    "2:23"
                    "linear: 'features' must be at most 2,147,483,647, got 1000000000000"

                expectError
                    (model "conv 8 (k = 3000000000) >> flatten >> linear 10")
                    "2:13"
                    "conv: 'k' must be at most 2,147,483,647"

                expectError
                    (model "narrow 1 (-3000000000) 2")
                    "2:15"
                    "narrow: argument 'start' must be an int from -2,147,483,648 to 2,147,483,647"

                expectError
                    "model m : image[1, 3000000000, 1] = flatten\n"
                    "1:20"
                    "a dimension must be a positive int (at most 2,147,483,647) or a name, got 3000000000"

                expectError
                    "model m : image[100000, 100000, 1000] =\n    flatten >> linear 10\n"
                    "2:5"
                    "flatten: the flattened size would be 10,000,000,000,000, more than the 2,147,483,647 a dimension holds"

                expectError
                    "model m (x : image[1, 4, 4]) = { p = param [ 4; -1 ] }\n"
                    "1:44"
                    "param: 'shape' must be positive, got -1"
            }

            test "integer values where float values are needed" {
                expectError
                    "model m (t : tokens[8]) =\n    t |> softmax\n"
                    "2:7"
                    "softmax: needs float values, but its input [B, 8] holds integer indices (token ids or an argmax)"
            }

            test "layerScale on a tensor whose channel axis nothing tells" {
                expectError
                    (model "reshape [ 28; 28; 1 ] >> layerScale >> flatten >> linear 10")
                    "2:30"
                    "layerScale: cannot tell the channel axis of [B, 28, 28, 1]: its axes come from a reshape; pass it, e.g. `layerScale (axis = -1)` for channels last"
            }

            test "recursion depth" {
                expectError "let f x = f (x + 1)\nlet y = f 0\n" "1:11" "recursion deeper than 400 calls (in f)"
            }

            test "missing imported file" {
                expectError "open \"nowhere/missing.dsl\"\n" "1:1" "cannot open 'nowhere/missing.dsl': no such file"
            }

            test "unknown library" { expectError "open prelud\n" "1:1" "no library 'prelud'; did you mean 'prelude'?" }

            test "import cycle" {
                let dir = tempDir ()
                File.WriteAllText(Path.Combine(dir, "a.dsl"), "open \"b.dsl\"\nlet a = 1\n")
                File.WriteAllText(Path.Combine(dir, "b.dsl"), "open \"a.dsl\"\nlet b = 2\n")
                let c = Compiler.checkFile (Path.Combine(dir, "a.dsl"))
                let d = c.Diagnostics |> List.exactlyOne

                Expect.equal
                    (Path.GetFileName d.Span.File, d.Span.Start.Line, d.Span.Start.Col)
                    ("b.dsl", 1, 1)
                    "located at the open in b.dsl"

                Expect.stringContains d.Message "import cycle: a.dsl -> b.dsl -> a.dsl" "names the cycle"
            }

            test "several errors in one run" {
                let es =
                    errors
                        "let a = nope\nmodel m : image[1, 8, 8] -> logits[2] = flatten >> linear 3\nmodel n : image[1, 8, 8] -> logits[2] = flaten\n"

                Expect.equal es.Length 3 "one per broken declaration"
            }

            test "a file that declares no model checks with a warning; picking a model from it is an error" {
                for text in [ ""; "let x = 1\n" ] do
                    let c = Compiler.checkSource "nomodel.dsl" text
                    Expect.isEmpty c.Diagnostics "no error"
                    let w = Expect.wantSome (List.tryExactlyOne c.Warnings) "one warning"
                    Expect.equal w.Severity Diagnostics.Severity.Warning "a warning"

                    Expect.stringStarts
                        (Diagnostics.format w)
                        "nomodel.dsl:1:1: warning: nomodel.dsl declares no model\n"
                        "located at line 1"

                    match Compiler.pickModel c None with
                    | Error msg ->
                        Expect.stringStarts msg "nomodel.dsl:1:1: error: nomodel.dsl declares no model\n" "error"
                    | Ok _ -> failtest "no model to pick"

                let some =
                    Compiler.checkSource "somemodel.dsl" "model m : image[1, 4, 4] = flatten\n"

                Expect.isEmpty some.Warnings "a file with a model has no warning"
                let broken = Compiler.checkSource "broken.dsl" "model m : image[1, 4, 4] = flaten\n"
                Expect.isEmpty broken.Warnings "a declared model that fails has its error, no warning"
            }

            test "formatted with the source line and a caret" {
                let c = Compiler.checkSource "format.dsl" "let x = undefinedThing\n"
                let text = Diagnostics.format c.Diagnostics.Head

                Expect.equal
                    text
                    "format.dsl:1:9: error: unknown name 'undefinedThing'\n  let x = undefinedThing\n          ^^^^^^^^^^^^^^"
                    "format"
            }

            test "an error inside a library function names the user's call, then the library's" {
                let src =
                    "let down = conv 8 (stride = 2)\nmodel m : image[1, 28, 28] =\n    conv 8 >> residual down\n"

                let c = Compiler.checkSource "calls.dsl" src
                let text = c.Diagnostics |> List.exactlyOne |> Diagnostics.format

                Expect.equal
                    text
                    ("lib/prelude.dsl:5:29: error: cannot add tensors of shapes [B, 8, 28, 28] and [B, 8, 14, 14]\n"
                     + "  let residual f = fun x -> x + f x\n"
                     + "                              ^\n"
                     + "calls.dsl:3:15: note: in the call of residual\n"
                     + "      conv 8 >> residual down\n"
                     + "                ^")
                    "the library's location, then the call in the user's file"
            }

            test "a chain of library calls is listed outermost first, innermost last" {
                let c =
                    Compiler.checkSource
                        "chain.dsl"
                        "open fastvit\nmodel m : image[3, 64, 64] = fastvit { fastvitT8 with dims = [ 48; 96; 190; 384 ] }\n"

                let d = c.Diagnostics |> List.exactlyOne
                Expect.equal d.Span.File "lib/fastvit.dsl" "the error is in the library"
                let notes = d.Notes |> List.map (fun (s, m) -> System.IO.Path.GetFileName s.File, m)
                Expect.equal notes.Head ("chain.dsl", "in the call of fastvit") "the user's call first"

                Expect.equal
                    (List.last notes)
                    ("fastvit.dsl", "in the call of branch")
                    "the innermost library call last"

                Expect.isTrue
                    (notes |> List.exists (fun (_, m) -> m = "in the call of largeKernelConv"))
                    "the calls in between"
            }

            test "an error in the user's own function has no notes" {
                let c =
                    Compiler.checkSource
                        "own.dsl"
                        "let block c = conv c >> lineer 3\nmodel m : image[1, 8, 8] = block 4\n"

                let d = c.Diagnostics |> List.exactlyOne
                Expect.equal d.Notes [] "no notes"
                Expect.isFalse ((Diagnostics.format d).Contains "note:") "unchanged format"
            }
        ]
