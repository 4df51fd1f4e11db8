/// Text generation from decoders (src/Dsl.Runtime/Generation, `dsl generate`): cached decoding
/// against the full-sequence forward, sampling, context limits and the command's errors.
module Dsl.Tests.GenerateTests

open System.IO
open Expecto
open TorchSharp
open Dsl.Runtime.Emit
open Dsl.Runtime.Generation
open Dsl.Tests.Support

/// lm.dsl's byte-level blocks: GQA (4 query heads, 2 key/value heads), RoPE and qk-norm.
let private ropeSource =
    "open lm\nmodel tiny : tokens[16] -> logits[16, 257] = decoder lmTiny\n"

/// Learned positions instead of RoPE, and plain multi-head attention.
let private positionalSource =
    "model tiny : tokens[12] -> logits[12, 257] =\n    embedding 257 32 >> positionalEmbedding >> residual (layernorm >> attention 4 (causal = true)) >> layernorm >> linear 257\n"

let private model src =
    let m = new GraphModule(graph src, 7L)
    m.eval ()
    m

let private ids (values: int64 list) =
    torch.tensor(Array.ofList values, dtype = torch.int64).view(1L, int64 values.Length)

/// The logits of every position from decoding `prefill` positions at once, then one at a time.
let private decodeSteps (m: GraphModule) useCache prefill (tokens: torch.Tensor) =
    use decoder = new CachedDecoder(m, useCache)
    let length = tokens.shape[1]

    [
        yield decoder.Append(tokens.narrow (1, 0L, prefill))
        for i in prefill .. length - 1L do
            yield decoder.Append(tokens.narrow (1, i, 1L))
    ]
    |> List.toArray
    |> fun steps -> torch.cat (steps, 1L)

let private greedy (m: GraphModule) (prompt: int64 list) count useCache =
    use sampler = new TokenSampler(0.0, 0, 0L, 257L)
    (TextGeneration.Generate(m, Array.ofList prompt, count, sampler, System.Nullable(), useCache)).Tokens

let private sample (m: GraphModule) temperature topK seed =
    use sampler = new TokenSampler(temperature, topK, seed, 257L)

    (TextGeneration.Generate(m, [| 256L; 65L |], 12, sampler, System.Nullable(), true)).Tokens
    |> List.ofSeq

[<Tests>]
let tests =
    testList
        "generation"
        [
            test "cached decoding gives the full forward's logits at every step (GQA, RoPE, qk-norm; learned positions)" {
                for src, length in [ ropeSource, 16L; positionalSource, 12L ] do
                    use m = model src
                    use tokens = torch.randint (257L, [| 2L; length |], dtype = torch.int64)

                    use full =
                        use _ = torch.no_grad ()
                        m.Forward(tokens)[0]

                    for prefill in [ 1L; 5L ] do
                        use cached = decodeSteps m true prefill tokens
                        use uncached = decodeSteps m false prefill tokens
                        Expect.equal cached.shape full.shape "one row of logits per position"
                        Expect.isLessThan (EmitTests.maxAbsDiff cached full) 1e-4 $"cached, prefill {prefill}"
                        Expect.isLessThan (EmitTests.maxAbsDiff uncached full) 1e-4 $"uncached, prefill {prefill}"
            }

            test "greedy generation is deterministic and the same with and without the cache; top-k = 1 is greedy" {
                use m = model ropeSource
                let first = greedy m [ 256L; 72L; 105L ] 10 true
                Expect.equal first.Count 10 "ten new tokens"
                Expect.sequenceEqual (greedy m [ 256L; 72L; 105L ] 10 true) first "same again"
                Expect.sequenceEqual (greedy m [ 256L; 72L; 105L ] 10 false) first "same without the cache"

                use topOne = new TokenSampler(1.0, 1, 5L, 257L)

                let drawn =
                    TextGeneration.Generate(m, [| 256L; 72L; 105L |], 10, topOne, System.Nullable(), true)

                Expect.sequenceEqual drawn.Tokens first "top-1 draws are the argmax"
            }

            test "seeded sampling is reproducible; top-k keeps draws among the k most likely" {
                use m = model ropeSource
                Expect.equal (sample m 1.0 0 3L) (sample m 1.0 0 3L) "same seed, same text"
                Expect.notEqual (sample m 1.0 0 3L) (sample m 1.0 0 4L) "another seed, another text"

                // With k = 3 every drawn token is among the 3 highest logits at its step.
                use sampler = new TokenSampler(1.5, 3, 9L, 257L)
                use decoder = new CachedDecoder(m)
                use logits = decoder.Append(ids [ 256L; 70L ])
                let row = logits[0, -1]
                let struct (_, top) = row.topk 3
                let allowed = top.data<int64>().ToArray()

                for _ in 1..20 do
                    Expect.contains allowed (sampler.Next row) "one of the top 3"
            }

            test
                "the context is the model's T: generation stops when it is full; a prompt that fills it or a non-causal model is a DecodingError" {
                use m = model ropeSource
                use sampler = new TokenSampler(0.0, 0, 0L, 257L)

                let r =
                    TextGeneration.Generate(m, [| 256L; 1L; 2L; 3L |], 100, sampler, System.Nullable(), true)

                Expect.equal r.Stop "context" "stopped by the context"
                Expect.equal r.Tokens.Count 13 "16 − 4 fed positions, plus the last draw that needs none"

                Expect.throwsC
                    (fun () ->
                        TextGeneration.Generate(m, Array.create 16 1L, 5, sampler, System.Nullable(), true)
                        |> ignore)
                    (fun e ->
                        Expect.isTrue (e :? DecodingError) "a DecodingError"
                        Expect.stringContains e.Message "give at most 15" "says the limit")

                use bidirectional =
                    model "model m : tokens[8] -> logits[8, 257] = embedding 257 16 >> attention 2 >> linear 257\n"

                Expect.throwsC (fun () -> new CachedDecoder(bidirectional) |> ignore) (fun e ->
                    Expect.stringContains e.Message "is not causal" "names the reason")
            }

            test
                "dsl generate continues a prompt with the trained checkpoint; a missing checkpoint or an empty prompt is a clean error" {
                withTempDir "dsl-generate-" (fun dir ->
                    File.WriteAllText(
                        Path.Combine(dir, "f.txt"),
                        String.concat "\n%\n" [ for i in 1..60 -> sprintf "the cat sat on mat %d." i ]
                    )

                    let file = Path.Combine(dir, "lm.dsl")

                    File.WriteAllText(
                        file,
                        ropeSource
                        + "train tiny {\n    data = corpus \"f.txt\" (format = \"fortunes\")\n    loss = nextToken\n    batch = 8\n}\n"
                    )

                    let run = Path.Combine(dir, "run")
                    let trained = CliTests.dsl [ "train"; file; "--out"; run; "--max-steps"; "3" ]
                    Expect.equal trained.Code 0 trained.Err
                    let checkpoint = Path.Combine(run, "checkpoint")

                    let generate extra =
                        CliTests.dsl ([ "generate"; file; "--checkpoint"; checkpoint ] @ extra)

                    let ok = generate [ "--prompt"; "the c"; "--tokens"; "5"; "--temperature"; "0" ]
                    Expect.equal ok.Code 0 ok.Err
                    Expect.stringStarts ok.Out "the c" "the prompt, then its continuation"
                    Expect.stringContains ok.Err "new tokens/s" "the rate on stderr"

                    let again =
                        generate [ "--prompt"; "the c"; "--tokens"; "5"; "--temperature"; "0"; "--no-cache" ]

                    Expect.equal again.Out ok.Out "the same greedy text without the cache"

                    for r, fragment in
                        [
                            CliTests.dsl
                                [ "generate"; file; "--checkpoint"; Path.Combine(dir, "nope"); "--prompt"; "x" ],
                            "nope"
                            generate [ "--prompt"; "" ], "--prompt is empty"
                        ] do
                        Expect.equal r.Code 1 (r.Out + r.Err)
                        Expect.stringContains r.Err fragment "says what is wrong"
                        Expect.isFalse (r.Err.Contains "   at ") "no stack trace"

                    // An option out of its range is bad usage, refused when the line is parsed.
                    let cold = generate [ "--prompt"; "x"; "--temperature"; "-1" ]
                    Expect.equal cold.Code 2 (cold.Out + cold.Err)
                    Expect.stringContains cold.Err "--temperature must be a finite number ≥ 0" "the flag and its range")
            }
        ]
