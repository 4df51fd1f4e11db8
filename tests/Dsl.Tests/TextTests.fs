/// Text to token ids (src/Dsl.Runtime/Text): CLIP-style rows from the GPT-2 vocabulary shipped in
/// a NuGet data package, and a user's own vocabulary files.
module Dsl.Tests.TextTests

open System.IO
open Expecto
open Dsl.Runtime.Data
open Dsl.Runtime.Text
open Dsl.Tests.Support

[<Tests>]
let tests =
    testList
        "text"
        [
            test "a caption becomes its ids, end-of-text, then padding, context-length long" {
                let t = TextTokenizer.Gpt2 16
                let row = t.Encode "a photo of a sneaker"
                Expect.equal row.Length 16 "context length"
                let eot = Array.findIndex ((=) 50256) row
                Expect.isGreaterThan eot 0 "the caption's tokens come first"
                Expect.allEqual row[eot + 1 ..] 0 "padding after end-of-text"
                Expect.equal (t.Decode(row |> Array.map int64)) "a photo of a sneaker" "decodes back"
                Expect.equal t.Vocabulary 50257 "r50k_base ids"
            }

            test "a long caption is truncated and still ends with end-of-text" {
                let t = TextTokenizer.Gpt2 8
                let row = t.Encode(String.replicate 40 "dress ")
                Expect.equal row.Length 8 "context length"
                Expect.equal row[7] 50256 "end-of-text in the last slot"
            }

            test "a batch is an int64 [count, context] tensor" {
                let t = TextTokenizer.Gpt2 12
                use b = t.Batch [| "a shirt"; "an ankle boot, seen from the side" |]
                Expect.sequenceEqual b.shape [| 2L; 12L |] "shape"
                Expect.equal b.dtype TorchSharp.torch.ScalarType.Int64 "dtype"
            }

            test "a user's vocabulary file is read; a missing one is a located data error" {
                withTempDir "vocab" (fun dir ->
                    // A tiny tiktoken file: base64 of each byte's own string, ranked by value.
                    let path = Path.Combine(dir, "bytes.tiktoken")

                    File.WriteAllLines(
                        path,
                        [
                            for b in 0..255 -> sprintf "%s %d" (System.Convert.ToBase64String [| byte b |]) b
                        ]
                    )

                    let t = TextTokenizer.FromFiles(path, null, 6)
                    Expect.equal t.EndOfText 256 "end-of-text after the 256 byte tokens"
                    Expect.equal (t.Encode "hi") [| 104; 105; 256; 0; 0; 0 |] "bytes, then end-of-text"

                    try
                        TextTokenizer.FromFiles(Path.Combine(dir, "missing.tiktoken"), null, 6)
                        |> ignore

                        failtest "a missing vocabulary must not load"
                    with :? DataError as e ->
                        Expect.stringContains e.Message "missing.tiktoken: no such vocabulary file" "names the file")
            }
        ]
