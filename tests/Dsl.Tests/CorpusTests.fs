/// Text corpora for language models (src/Dsl.Runtime/Text): documents from plain, line and
/// fortune files, byte tokens, and packing into next-token rows with a split by document.
module Dsl.Tests.CorpusTests

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

            test "GPT-2 ids of a long text are not truncated" {
                let t = TextTokenizer.Gpt2 8
                let ids = t.EncodeAll(String.replicate 40 "dress ")
                Expect.isGreaterThan ids.Length 8 "longer than any context"
                Expect.isFalse (Array.contains t.EndOfText ids) "no end-of-text added"
            }
        ]
