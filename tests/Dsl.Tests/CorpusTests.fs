/// Text corpora for language models (src/Dsl.Runtime/Text): documents from plain, line and
/// fortune files, byte tokens, and packing into next-token rows with a split by document.
module Dsl.Tests.CorpusTests

open System
open System.IO
open Expecto
open Dsl.Runtime.Data
open Dsl.Runtime.Text
open Dsl.Tests.Support

let private withTempDir = withTempDir "dsl-corpus-"

let private rows (t: TorchSharp.torch.Tensor) =
    let a = t.data<int64>().ToArray()
    let width = int t.shape[1]
    Array.init (int t.shape[0]) (fun i -> a[i * width .. i * width + width - 1])

[<Tests>]
let tests =
    testList
        "corpus"
        [
            test "a fortunes file splits at lines holding only %, blank entries dropped" {
                withTempDir (fun dir ->
                    let path = Path.Combine(dir, "wisdom")
                    File.WriteAllText(path, "First, think.\n  -- someone\n%\nSecond % not a separator\n%\n%\nThird.\n")

                    Expect.equal
                        (TextCorpus.Read(path, TextCorpus.Fortunes) |> List.ofSeq)
                        [ "First, think.\n  -- someone"; "Second % not a separator"; "Third." ]
                        "three entries")
            }

            test "lines and plain formats; a missing file or unknown format is a DataError naming the file" {
                withTempDir (fun dir ->
                    let path = Path.Combine(dir, "t.txt")
                    File.WriteAllText(path, "one\n\ntwo\n")
                    Expect.equal (TextCorpus.Read(path, TextCorpus.Lines) |> List.ofSeq) [ "one"; "two" ] "lines"
                    Expect.equal (TextCorpus.Read(path, TextCorpus.Plain) |> List.ofSeq) [ "one\n\ntwo" ] "plain"

                    Expect.throwsC
                        (fun () -> TextCorpus.Read(Path.Combine(dir, "nope"), TextCorpus.Plain) |> ignore)
                        (fun e -> Expect.stringContains e.Message "nope: text file not found" "names it")

                    Expect.throwsT<DataError> (fun () -> TextCorpus.Read(path, "csv") |> ignore) "unknown format")
            }

            test "byte tokens round-trip UTF-8 and stop at end-of-text" {
                let ids = ByteTokens.Encode "café ☕"
                Expect.isTrue (ids |> Array.forall (fun i -> i >= 0 && i < 256)) "bytes"

                Expect.equal
                    (ByteTokens.Decode(Array.append (ids |> Array.map int64) [| 256L; 65L |]))
                    "café ☕"
                    "decodes up to EOT"
            }

            test "packed rows are the documents' stream with end-of-text between them, cut into whole rows" {
                let documents = [| "abc"; "de"; "fghij" |]

                use packed =
                    PackedSequences.Pack(documents, (fun s -> ByteTokens.Encode s), ByteTokens.EndOfText, 3, 0.0, 1L)

                let stream =
                    documents
                    |> Array.collect (fun d -> Array.append (ByteTokens.Encode d |> Array.map int64) [| 256L |])

                Expect.equal packed.Train.shape [| 3L; 4L |] "13 ids make 3 rows of 4"
                Expect.equal (rows packed.Train |> Array.concat) stream[..11] "the stream, in order"
                Expect.equal packed.Validation.shape [| 0L; 4L |] "nothing held out"
            }

            test "the split is by document, deterministic per seed, and disjoint" {
                let documents = Array.init 50 (fun i -> sprintf "document number %02d." i)

                let split seed =
                    use p =
                        PackedSequences.Pack(
                            documents,
                            (fun s -> ByteTokens.Encode s),
                            ByteTokens.EndOfText,
                            20,
                            0.2,
                            seed
                        )

                    let text t =
                        rows t
                        |> Array.concat
                        |> Array.map (fun i -> if i = 256L then '|' else char i)
                        |> System.String

                    text p.Train, text p.Validation

                let train, validation = split 3L
                Expect.equal (split 3L) (train, validation) "same seed, same split"
                Expect.notEqual (split 4L) (train, validation) "another seed, another split"

                let held = documents |> Array.filter (fun d -> validation.Contains d)

                Expect.isGreaterThanOrEqual held.Length 8 "about a fifth of the documents held out (whole ones)"

                for d in held do
                    Expect.isFalse (train.Contains d) $"'{d}' on one side only"
            }

            test
                "bible output parses into books without references, chapters apart; a stray line is a located DataError" {
                let books =
                    BibleKjv.Parse
                        [
                            "Ge1:1 In the beginning."
                            "Ge1:2 And the earth."
                            "Ge2:1 Thus the heavens."
                            "1Sm1:1 Now there was a man."
                            ""
                            "Rev22:21 The grace."
                        ]

                Expect.equal (books |> Seq.map (fun b -> b.Book) |> List.ofSeq) [ "Ge"; "1Sm"; "Rev" ] "books in order"

                Expect.equal
                    books[0].Text
                    "In the beginning.\nAnd the earth.\n\nThus the heavens.\n"
                    "verses per line, a blank line between chapters"

                Expect.equal (books |> Seq.sumBy (fun b -> b.Verses)) 5 "five verses"

                Expect.throwsC
                    (fun () -> BibleKjv.Parse [ "Ge1:1 In the beginning."; "Chapter two" ] |> ignore)
                    (fun e ->
                        Expect.isTrue (e :? DataError) "a DataError"
                        Expect.stringContains e.Message "line 2 is not a verse" "names the line")
            }

            test
                "dsl data bible-kjv writes the books as %-separated documents atomically; no bible program is a clean error" {
                withTempDir (fun dir ->
                    // A stand-in for the bible program of bible-kjv: the same output format.
                    let program = Path.Combine(dir, "bible")

                    File.WriteAllText(
                        program,
                        "#!/bin/sh\n[ \"$1 $2\" = \"-f Gen1:1-Rev22:21\" ] || exit 3\nprintf 'Ge1:1 In the beginning.\\nGe1:2 And the earth.\\nExo1:1 Now these are the names.\\n'\n"
                    )

                    File.SetUnixFileMode(
                        program,
                        UnixFileMode.UserRead ||| UnixFileMode.UserWrite ||| UnixFileMode.UserExecute
                    )

                    let out = Path.Combine(dir, "data", "kjv.txt")
                    let r = CliTests.dsl [ "data"; "bible-kjv"; "--out"; out; "--bible"; program ]
                    Expect.equal r.Code 0 r.Err
                    Expect.stringContains r.Out "wrote 2 books (3 verses" "counts"

                    Expect.equal
                        (TextCorpus.Read(out, TextCorpus.Fortunes) |> List.ofSeq)
                        [ "In the beginning.\nAnd the earth."; "Now these are the names." ]
                        "one document per book"

                    Expect.equal
                        (Directory.GetFiles(Path.Combine(dir, "data")) |> Array.map Path.GetFileName)
                        [| "kjv.txt" |]
                        "no temporary file left"

                    let missing =
                        CliTests.dsl [ "data"; "bible-kjv"; "--out"; out; "--bible"; Path.Combine(dir, "nope") ]

                    Expect.equal missing.Code 1 "user error"
                    Expect.stringContains missing.Err "install the Debian package bible-kjv" "says what to install"
                    Expect.isFalse (missing.Err.Contains "   at ") "no stack trace")
            }

            test "GPT-2 ids of a long text are not truncated" {
                let t = TextTokenizer.Gpt2 8
                let ids = t.EncodeAll(String.replicate 40 "dress ")
                Expect.isGreaterThan ids.Length 8 "longer than any context"
                Expect.isFalse (Array.contains t.EndOfText ids) "no end-of-text added"
            }
        ]

let private lmSource (data: string) (loss: string) =
    sprintf
        "open lm\nmodel tiny : tokens[16] -> logits[16, 257] = decoder lmTiny\ntrain tiny {\n    data = %s\n    loss = %s\n    optimizer = adamw (lr = 3e-3)\n    batch = 8\n}\n"
        data
        loss

[<Tests>]
let languageModelTests =
    testList
        "language model training"
        [
            test "corpus data needs nextToken and nextToken needs corpus data: located errors" {
                expectError (lmSource "corpus \"f.txt\"" "crossEntropy") "5:12" "use nextToken"
                expectError (lmSource "fashionMnist" "nextToken") "5:12" "nextToken needs `corpus` data"

                expectError
                    (lmSource "corpus \"f.txt\" (tokenizer = \"words\")" "nextToken")
                    "4:12"
                    "not one of bytes, gpt2"
            }

            test "a corpus recipe prints back as source that gives the same recipe" {
                let src =
                    lmSource
                        "corpus \"f.txt\" (format = \"fortunes\") (tokenizer = \"gpt2\") (validation = 0.2)"
                        "nextToken (zLoss = 1e-4)"

                // GPT-2's 50257 ids do not fit the 257 logits: known from the recipe, a located error.
                expectError src "4:12" "field 'targets' has 50257 classes but the logits give 257"

                let src =
                    src.Replace(
                        "logits[16, 257] = decoder lmTiny",
                        "logits[16, 50257] = decoder { lmTiny with vocabulary = 50257 }"
                    )

                let c = check src
                Expect.isEmpty (c.Diagnostics |> List.map Dsl.Diagnostics.format) "compiles"
                let r = c.Recipes.Head
                let again = check (src.Substring(0, src.IndexOf "train") + Dsl.Print.recipe r)
                Expect.isEmpty again.Diagnostics "printed recipe compiles"

                Expect.equal
                    { again.Recipes.Head with
                        Span = r.Span
                        DataSpan = r.DataSpan
                    }
                    r
                    "same recipe"
            }

            test "dsl train on a fortunes file lowers the next-token loss; dsl eval reports perplexity = exp(loss)" {
                withTempDir (fun dir ->
                    let rnd = System.Random 1
                    let words = [| "the"; "cat"; "sat"; "on"; "a"; "mat"; "and"; "dog"; "ran" |]

                    let entries =
                        [
                            for _ in 1..200 ->
                                String.concat " " [ for _ in 1 .. rnd.Next(4, 12) -> words[rnd.Next words.Length] ]
                                + "."
                        ]

                    File.WriteAllText(Path.Combine(dir, "f.txt"), String.concat "\n%\n" entries)
                    let file = Path.Combine(dir, "lm.dsl")

                    File.WriteAllText(
                        file,
                        lmSource
                            "corpus \"f.txt\" (format = \"fortunes\") (validation = 0.1)"
                            "nextToken (zLoss = 1e-4)"
                    )

                    let run = Path.Combine(dir, "run")
                    let trained = CliTests.dsl [ "train"; file; "--out"; run; "--epochs"; "2" ]
                    Expect.equal trained.Code 0 trained.Err
                    Expect.stringContains trained.Out "perplexity" "the evaluation line"
                    Expect.stringContains trained.Out "rows of 16 tokens" "a corpus is counted in tokens"
                    Expect.stringContains trained.Out "tokens/s" "throughput in tokens"
                    Expect.isFalse (trained.Out.Contains "img/s") trained.Out
                    Expect.isFalse (trained.Out.Contains "images") trained.Out

                    let evaluated =
                        CliTests.dsl [ "eval"; file; "--checkpoint"; Path.Combine(run, "checkpoint"); "--json" ]

                    Expect.equal evaluated.Code 0 evaluated.Err
                    use json = System.Text.Json.JsonDocument.Parse evaluated.Out
                    let loss = json.RootElement.GetProperty("loss").GetDouble()
                    let perplexity = json.RootElement.GetProperty("perplexity").GetDouble()
                    Expect.isLessThan loss 2.5 "well below ln 257 = 5.55 after two epochs"
                    Expect.floatClose Accuracy.medium perplexity (exp loss) "perplexity = exp(loss)")
            }
        ]
