/// Shape inference, parameter naming and the IR's JSON and printed forms.
module Dsl.Tests.ElaborateTests

open System.IO
open Expecto
open Dsl
open Dsl.Ir
open Dsl.Tests.Support

let private shapeOf (g: Graph) output =
    let id = g.Outputs |> List.find (fun (n, _) -> n = output) |> snd
    showShape g.Nodes[id].Shape

let private names (g: Graph) = g.Params |> List.map (fun p -> p.Name)

let convnet =
    """
let block c = conv c (k = 3) (bias = false) >> batchnorm >> relu
model fashion : image[1, 28, 28] -> logits[10] =
    block 32 >> block 32 >> maxpool 2 >> block 64 >> block 64 >> maxpool 2 >> globalAvgPool >> linear 10
"""

[<Tests>]
let tests =
    testList
        "elaborate"
        [
            test "convnet shapes, names and parameter count" {
                let g = graph convnet
                Expect.equal (shapeOf g "output") "[B, 10]" "logits"

                Expect.equal
                    (names g |> List.take 6)
                    [
                        "0.weight"
                        "1.weight"
                        "1.bias"
                        "1.running_mean"
                        "1.running_var"
                        "1.num_batches_tracked"
                    ]
                    "Sequential-style names"

                Expect.contains (names g) "15.weight" "the head is the 16th element"
                // 1*32*9 + 32*32*9 + 32*64*9 + 64*64*9 convs, 4 BN (2C each), linear 64*10+10
                Expect.equal
                    (paramCount g)
                    (288L + 9216L + 18432L + 36864L + 2L * (32L + 32L + 64L + 64L) + 650L)
                    "parameter count"
            }

            test "conv and pool arithmetic" {
                let g =
                    graph
                        "model m : image[3, 32, 32] -> tensor[16, 12, 12] =\n    conv 8 (k = 3) (stride = 2) >> conv 16 (k = 5) (padding = 0) >> maxpool 3 (stride = 1) (padding = 1)\n"

                Expect.equal
                    (shapeOf g "output")
                    "[B, 16, 12, 12]"
                    "32 -> 16 by stride 2, -> 12 by k5 valid, kept by the pool"
            }

            test "a layer described once and applied twice gets two sets of parameters" {
                let g = graph "let l = linear 4\nmodel m (x : tensor[4]) = x |> l |> l\n"
                Expect.equal (names g) [ "0.weight"; "0.bias"; "1.weight"; "1.bias" ] "fresh per application"
            }

            test "shared ties parameters" {
                let g = graph "let l = shared (linear 4)\nmodel m (x : tensor[4]) = x |> l |> l\n"
                Expect.equal (names g) [ "0.weight"; "0.bias" ] "one set"

                let linears =
                    g.Nodes
                    |> List.filter (fun n ->
                        match n.Op with
                        | Linear _ -> true
                        | _ -> false)

                Expect.equal
                    (linears |> List.map (fun n -> n.Params["weight"]))
                    [ "0.weight"; "0.weight" ]
                    "both nodes use it"
            }

            test "named scopes and record outputs" {
                let g =
                    graph
                        "model clip (image : image[1, 16, 16]) (text : tokens[8]) =\n    { image = image |> named \"enc\" (conv 4 >> globalAvgPool) |> linear 6 |> normalize\n      text = text |> embedding 50 6 |> positionalEmbedding |> attention 2 (causal = true) |> selectToken (-1)\n      scale = param [] (init = 2.659) }\n"

                Expect.equal (g.Outputs |> List.map fst) [ "image"; "text"; "scale" ] "outputs in order"
                Expect.equal (shapeOf g "image") "[B, 6]" "image embedding"
                Expect.equal (shapeOf g "text") "[B, 6]" "text embedding"
                Expect.equal (shapeOf g "scale") "[]" "scalar parameter"
                Expect.contains (names g) "image.enc.0.weight" "named scope"
                Expect.contains (names g) "text.2.qkv.weight" "attention projections"
                Expect.contains (names g) "scale" "free parameter named by its field"
            }

            test "functions, recursion, comprehensions and the prelude" {
                let src =
                    "let rec widths n = if n = 0 then [] else widths (n - 1) @ [8 * n]\nlet body = seq [for w in widths 3 -> residual (conv w) >> conv w]\nmodel m : image[8, 8, 8] = conv 8 >> residual (conv 8 >> relu) >> stage \"s\" 2 (fun i -> conv (16 * (i + 1)))\n"

                let g = graph src
                Expect.equal (shapeOf g "output") "[B, 32, 8, 8]" "stage widths 16, 32"
                Expect.contains (names g) "s.1.weight" "stage names its blocks"
                Expect.contains (names g) "1.0.0.weight" "residual body scoped under its index"
            }

            test "List.collect and List.concat flatten lists of layers in order" {
                let g =
                    graph
                        "let pair c = [ conv c; relu ]\nmodel m : image[4, 8, 8] = seq (List.collect pair [ 8; 16 ] @ List.concat [ [ conv 24 ]; []; [ relu ] ])\n"

                Expect.equal (shapeOf g "output") "[B, 24, 8, 8]" "8, 16 then 24 channels"
                Expect.equal (names g) [ "0.weight"; "0.bias"; "2.weight"; "2.bias"; "4.weight"; "4.bias" ] "positions"
            }

            test "symbolic sequence length flows through" {
                let g =
                    graph
                        "model lm (t : tokens[T]) = t |> embedding 100 16 |> layernorm |> attention 4 (causal = true) |> linear 100\n"

                Expect.equal (shapeOf g "output") "[B, T, 100]" "T stays symbolic"
            }

            test "IR JSON is stable and print/parse gives the same IR" {
                for src in
                    [
                        convnet
                        "model c (image : image[1, 16, 16]) (text : tokens[8]) =\n    { image = image |> conv 4 (groups = 1) |> globalAvgPool |> normalize\n      text = text |> embedding 50 4 |> positionalEmbedding |> residual (layernorm >> attention 2) |> selectToken 0\n      scale = param [] (init = 2.5) }\n"
                    ] do
                    let g = graph src
                    let printed = Print.model g
                    let g2 = snd (Compiler.checkSource "printed.dsl" printed).Models.Head
                    Expect.equal (IrJson.write false g2) (IrJson.write false g) "round trip"
                    Expect.equal (IrJson.write false (graph src)) (IrJson.write false g) "deterministic"
            }

            test "IR JSON golden for a tiny model" {
                let g =
                    graph "model tiny : tensor[3] -> tensor[2] = linear 2 (bias = false) >> relu\n"

                let expected =
                    File.ReadAllText(Path.Combine(repoRoot.Value, "tests", "Dsl.Tests", "goldens", "tiny.ir.json"))

                Expect.equal (IrJson.write false g) (expected.TrimEnd().Replace("\r\n", "\n")) "golden"
            }

            test "parameter counts, bytes and MACs are 64-bit" {
                // 785 billion parameters: only elaborated, never allocated.
                let g = graph "model m : image[1, 28, 28] =\n    flatten >> linear 1000000000\n"
                Expect.equal (paramCount g) 785_000_000_000L "784·10⁹ weights + 10⁹ biases"
                Expect.equal (paramBytes g) 3_140_000_000_000L "float32"
                Expect.equal (totalMacs g) 784_000_000_000L "MACs"

                let c =
                    graph "model m : image[1, 8, 8] =\n    conv 1000000000 (k = 3) >> globalAvgPool\n"

                Expect.equal (paramCount c) 10_000_000_000L "9·10⁹ weights + 10⁹ biases"
            }

            test "layerScale takes the channel axis from the layout, or from axis" {
                let axisOf (g: Graph) =
                    g.Nodes
                    |> List.pick (fun n ->
                        match n.Op with
                        | LayerScale(c, a) -> Some(c, a)
                        | _ -> None)

                Expect.equal
                    (axisOf (graph "model m : image[8, 4, 6] = conv 16 >> layerScale\n"))
                    (16, 1)
                    "image: axis 1"

                Expect.equal
                    (axisOf (graph "model m : tokens[5] = embedding 10 12 >> relu >> layerScale\n"))
                    (12, 2)
                    "tokens: the last axis"

                Expect.equal
                    (axisOf (graph "model m : image[8, 4, 5] = reshape [ 8; 20 ] >> conv1d 6 >> layerScale\n"))
                    (6, 1)
                    "[B, C, L]: axis 1"

                Expect.equal
                    (axisOf (graph "model m : image[8, 4, 6] = conv 16 >> imageToTokens >> layerScale\n"))
                    (16, 2)
                    "tokens from an image: the last axis"

                let channelsLast =
                    "model m : image[32, 14, 14] = permute [ 0; 2; 3; 1 ] >> layerScale"

                Expect.equal (axisOf (graph (channelsLast + "\n"))) (32, 3) "a permute moves the channel axis"

                Expect.equal
                    (axisOf (
                        graph
                            "model m : image[8, 4, 6] = permute [ 0; 2; 3; 1 ] >> layernorm >> permute [ 0; 3; 1; 2 ] >> layerScale\n"
                    ))
                    (8, 1)
                    "and back"

                let merged = "model m : image[32, 14, 14] = reshape [ 14; 14; 32 ] >> layerScale"

                expectError
                    (merged + "\n")
                    "1:57"
                    "layerScale: cannot tell the channel axis of [B, 14, 14, 32]: its axes come from a reshape; pass it"

                Expect.equal (axisOf (graph (merged + " (axis = -1)\n"))) (32, 3) "explicit, from the end"
                Expect.equal (axisOf (graph (merged + " (axis = 3)\n"))) (32, 3) "explicit"
                Expect.equal (axisOf (graph (channelsLast + " (axis = 2)\n"))) (14, 2) "explicit beats the layout"
                expectError (merged + " (axis = 0)\n") "1:57" "layerScale: axis 0 is not a non-batch axis of"

                expectError
                    "model m (x : tensor[4, 6, 8]) = x |> layerScale\n"
                    "1:35"
                    "cannot tell the channel axis of [B, 4, 6, 8]: its axes come from the input 'x'"
            }

            test "layerScale prints its axis only when the layout would not give it" {
                let explicitSrc =
                    "model m : image[32, 14, 14] = permute [ 0; 2; 3; 1 ] >> layerScale (init = 0.5) (axis = 2)\n"

                let printed = Print.model (graph explicitSrc)
                Expect.stringContains printed "layerScale (init = 0.5) (axis = 2)" "non-default axis printed"
                Expect.equal (IrJson.write false (graph printed)) (IrJson.write false (graph explicitSrc)) "same IR"
                let plainSrc = "model m : image[8, 4, 6] = conv 16 >> layerScale (axis = 1)\n"
                let plain = Print.model (graph plainSrc)
                Expect.isFalse (plain.Contains "axis") "the default axis is not printed"
                Expect.equal (IrJson.write false (graph plain)) (IrJson.write false (graph plainSrc)) "same IR"
            }

            test "every shipped example and benchmark model checks" {
                let examples =
                    [ "examples"; "bench" ]
                    |> Array.ofList
                    |> Array.collect (fun dir ->
                        Directory.GetFiles(Path.Combine(repoRoot.Value, dir), "*.dsl", SearchOption.AllDirectories))
                    |> Array.filter (fun f -> not (f.Contains "/bin/" || f.Contains "/obj/"))

                Expect.isNonEmpty examples "examples exist"

                for f in examples do
                    let c = Compiler.checkFile f
                    Expect.isEmpty (c.Diagnostics |> List.map Diagnostics.format) f
            }
        ]
