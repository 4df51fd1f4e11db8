/// lm.dsl's published decoder shapes (mlfoundations/open_lm open_lm/model.py): OpenLM-411M and -1B,
/// OpenELM-270M and their toy forms, elaborated as shapes only (no tensors for the big ones),
/// with the options they need: gain-only LayerNorm, full-width qk LayerNorm and tied embeddings.
module Dsl.Tests.LmVariantTests

open Expecto
open TorchSharp
open Dsl
open Dsl.Runtime.Checkpoints
open Dsl.Runtime.Emit
open Dsl.Runtime.Generation
open Dsl.Tests.Support

let private variant name (t: int) (vocabulary: int) =
    graph $"open lm\nmodel m : tokens[{t}] -> logits[{t}, {vocabulary}] = decoder {name}\n"

let private shapeOf (g: Ir.Graph) name =
    (g.Params |> List.find (fun p -> p.Name = name)).Shape

/// OpenLM's count (mlfoundations/open_lm open_lm/model.py): per layer, attention_norm, q_norm and k_norm over the full
/// width and ffn_norm (4d), in_proj and out_proj (4d²), w12 and w3 (3·hidden·d); then the
/// untied embedding and output (2·V·d) and the final norm (d).
let private openlmCount (v: int64) (d: int64) (layers: int64) (hidden: int64) =
    2L * v * d + d + layers * (4L * d * d + 4L * d + 3L * hidden * d)

/// OpenELM's count: per layer, two RMSNorms (2d), qkv ((q + 2kv)·64·d), q_norm and k_norm (2·64),
/// out_proj (q·64·d), proj_1 and proj_2 (3·ffn·d); then one tied embedding (V·d) and the final norm.
let private openelmCount (v: int64) (d: int64) (heads: int list) (kvHeads: int list) (ffn: int list) =
    List.zip3 heads kvHeads ffn
    |> List.sumBy (fun (q, kv, f) ->
        2L * d
        + int64 (q + 2 * kv) * 64L * d
        + 128L
        + int64 q * 64L * d
        + 3L * int64 f * d)
    |> (+) (v * d + d)

// OpenELM-270M's layers from corenet's OpenELM config (make_divisible of linspace multipliers,
// mlfoundations/open_lm open_lm/model.py: q heads 12…20, kv heads 3…5, FFN dims 768…5120).
let private openelmHeads =
    [ 12; 12; 12; 12; 12; 16; 16; 16; 16; 16; 16; 16; 20; 20; 20; 20 ]

let private openelmKvHeads = openelmHeads |> List.map (fun h -> h / 4)

let private openelmFfn =
    [
        768
        1024
        1280
        1536
        1792
        2048
        2560
        2816
        3072
        3328
        3584
        3840
        4352
        4608
        4864
        5120
    ]

/// Each layer's (query heads, key/value heads, FFN width), read off the parameter shapes.
let private layers (g: Ir.Graph) (headDim: int) =
    g.Params
    |> List.filter (fun p -> p.Name.EndsWith ".attention.proj.weight")
    |> List.mapi (fun i proj ->
        let q = proj.Shape[1] / headDim
        let rows = (shapeOf g $"layers.{i}.attention.qkv.weight")[0] / headDim
        q, (rows - q) / 2, (shapeOf g $"layers.{i}.feed_forward.w3.weight")[1])

[<Tests>]
let tests =
    testList
        "lm variants"
        [
            test "OpenLM-411M and -1B elaborate to the closed-form count, DCLM's 412M and 1.4B" {
                let small = variant "openlm411m" 2048 50432
                Expect.equal (Ir.paramCount small) (openlmCount 50432L 1024L 24L 2816L) "411M: formula"
                Expect.equal (Ir.paramCount small) 411_665_408L "411M: the number"
                let big = variant "openlm1b" 2048 50432
                Expect.equal (Ir.paramCount big) (openlmCount 50432L 2048L 24L 5632L) "1B: formula"
                Expect.floatClose Accuracy.low (float (Ir.paramCount big) / 1e9) 1.44 "DCLM's 1B-1x: 1.4B"
                Expect.equal (shapeOf small "layers.23.attention.qkv.weight") [ 3072; 1024 ] "in_proj: 3d × d"
                Expect.equal (shapeOf small "layers.0.attention.q_norm.weight") [ 1024 ] "qk-norm over the full width"
                Expect.equal (shapeOf big "layers.0.feed_forward.w12.weight") [ 2 * 5632; 2048 ] "w12"
                Expect.equal (shapeOf big "output.weight") [ 50432; 2048 ] "untied output"

                Expect.isFalse
                    (small.Params |> List.exists (fun p -> p.Name.EndsWith "norm.bias"))
                    "gain-only norms: no bias anywhere"
            }

            test "examples/lm/kjv.dsl has the layer-by-layer count the README quotes" {
                let c =
                    Compiler.checkFile (System.IO.Path.Combine(repoRoot.Value, "examples", "lm", "kjv.dsl"))

                Expect.isEmpty c.Diagnostics "compiles"
                // 257 byte ids, width 128, 4 layers, 4 query and 2 key/value heads of 32, SwiGLU
                // hidden 256·⌈(8·128/3)/256⌉ = 512. Untied embedding and output (2·V·d), final
                // RMSNorm (d); per layer two RMSNorms (2d), qkv ((q + 2kv)·hd·d), q/k norms
                // (2·hd), proj (q·hd·d), w12 and w3 (3·hidden·d), no biases.
                let v, d, layers, q, kv, hd = 257L, 128L, 4L, 4L, 2L, 32L
                let hidden = 256L * int64 (ceil (float (8L * d / 3L) / 256.0))

                let expected =
                    2L * v * d
                    + d
                    + layers
                      * (2L * d + (q + 2L * kv) * hd * d + 2L * hd + q * hd * d + 3L * hidden * d)

                Expect.equal (Ir.paramCount (snd c.Models.Head)) expected "the count"

                let readme =
                    System.IO.File.ReadAllText(System.IO.Path.Combine(repoRoot.Value, "README.md"))

                Expect.stringContains
                    readme
                    (sprintf
                        "`examples/lm/kjv.dsl`, %s parameters"
                        (expected.ToString("N0", System.Globalization.CultureInfo.InvariantCulture)))
                    "the README quotes it"
            }

            test "OpenELM-270M has the published per-layer heads and FFN widths, tied embeddings, ≈ 271.7M parameters" {
                let g = variant "openelm270m" 2048 32128
                let found = layers g 64
                Expect.equal (found |> List.map (fun (q, _, _) -> q)) openelmHeads "query heads 12 … 20"
                Expect.equal (found |> List.map (fun (_, kv, _) -> kv)) openelmKvHeads "key/value heads 3 … 5"
                Expect.equal (found |> List.map (fun (_, _, f) -> f)) openelmFfn "FFN widths 768 … 5120"

                Expect.equal
                    (Ir.paramCount g)
                    (openelmCount 32128L 1280L openelmHeads openelmKvHeads openelmFfn)
                    "the closed form"

                Expect.equal (Ir.paramCount g) 271_691_008L "≈ 271.7M"
                Expect.isFalse (g.Params |> List.exists (fun p -> p.Name = "output.weight")) "no output matrix"
                let last = g.Nodes |> List.last
                Expect.equal last.Params["weight"] "tok_embeddings.weight" "the output reads the embedding table"
            }

            test "the toy variants decode with the cache as the full forward does (qk LayerNorm; tied, per-layer heads)" {
                for name in [ "openlmTiny"; "openelmTiny" ] do
                    use m = new GraphModule(variant name 12 257, 3L)
                    m.eval ()
                    use tokens = torch.randint (257L, [| 1L; 12L |], dtype = torch.int64)

                    use full =
                        use _ = torch.no_grad ()
                        m.Forward(tokens)[0]

                    use decoder = new CachedDecoder(m)

                    use steps =
                        torch.cat (
                            [|
                                yield decoder.Append(tokens.narrow (1, 0L, 3L))
                                for i in 3L .. 11L do
                                    yield decoder.Append(tokens.narrow (1, i, 1L))
                            |],
                            1L
                        )

                    Expect.isLessThan (EmitTests.maxAbsDiff steps full) 1e-4 name
            }

            test "full-width qk LayerNorm and gain-only LayerNorm match explicit formulations" {
                use m =
                    new GraphModule(
                        graph
                            "model m : tensor[5, 16] = layernorm (bias = false) >> attention 4 (kvHeads = 2) (qkLayerNorm = true) (qkvBias = false) (bias = false) (causal = true)\n",
                        2L
                    )

                m.eval ()
                let w name = m.state_dict().[name]
                Expect.isFalse (m.state_dict().ContainsKey "0.bias") "no LayerNorm bias"
                Expect.equal (w "1.q_norm.weight").shape [| 16L |] "q norm over 4 heads × 4"
                Expect.equal (w "1.k_norm.weight").shape [| 8L |] "k norm over 2 heads × 4"
                use _ = torch.no_grad ()
                // Non-trivial gains, so that a missing or misplaced norm shows.
                for name in [ "0.weight"; "1.q_norm.weight"; "1.k_norm.weight" ] do
                    (w name).uniform_(0.5, 1.5) |> ignore

                use x = torch.randn (2L, 5L, 16L)
                use y = m.forward x
                let normed = torch.nn.functional.layer_norm (x, [| 16L |], w "0.weight", null, 1e-5)
                let qkv = torch.nn.functional.linear (normed, w "1.qkv.weight")

                let q =
                    torch.nn.functional
                        .layer_norm(qkv.narrow (-1, 0L, 16L), [| 16L |], w "1.q_norm.weight", null, 1e-5)
                        .view(2L, 5L, 4L, 4L)
                        .transpose(1, 2)

                let heads (z: torch.Tensor) =
                    z.view(2L, 5L, 2L, 4L).transpose(1, 2).repeat_interleave(2L, 1L)

                let k =
                    heads (
                        torch.nn.functional.layer_norm (
                            qkv.narrow (-1, 16L, 8L),
                            [| 8L |],
                            w "1.k_norm.weight",
                            null,
                            1e-5
                        )
                    )

                let v = heads (qkv.narrow (-1, 24L, 8L))
                let scores: torch.Tensor = torch.matmul (q, k.transpose (-1, -2)) / 2.0
                use mask = torch.ones(5L, 5L, dtype = torch.bool).tril()

                let attended =
                    torch.matmul (scores.masked_fill(mask.logical_not (), -1e9).softmax(-1), v)

                let merged = attended.transpose(1, 2).reshape(2L, 5L, 16L)
                use expected = torch.nn.functional.linear (merged, w "1.proj.weight")
                Expect.isLessThan (EmitTests.maxAbsDiff y expected) 1e-5 "same outputs"
            }

            test "a tied output projection reads the embedding's table: one parameter, E[ids]·Eᵀ" {
                let src =
                    "model m : tokens[4] -> logits[4, 50] = named \"emb\" (embedding 50 8) >> tie \"emb\" (linear 50 (bias = false))\n"

                let g = graph src
                Expect.equal (g.Params |> List.map (fun p -> p.Name)) [ "emb.weight" ] "one table"
                Expect.equal (Ir.paramCount g) 400L "50 × 8, once"
                use m = new GraphModule(g, 1L)
                use _ = torch.no_grad ()
                use ids = torch.randint (50L, [| 2L; 4L |], dtype = torch.int64)
                use y = m.forward ids
                let e = m.state_dict().["emb.weight"]

                use expected =
                    torch.matmul (e.index_select(0L, ids.flatten ()).view(2L, 4L, 8L), e.t ())

                Expect.isLessThan (EmitTests.maxAbsDiff y expected) 1e-5 "logits against the embedding"
            }

            test "OpenLM and OpenELM toys print back as source (layernorm bias, qkLayerNorm, tie) with the same IR" {
                for name in [ "openlmTiny"; "openelmTiny" ] do
                    let g = variant name 16 257
                    let printed = Print.model g
                    let again = graph printed
                    Expect.equal (IrJson.write false again) (IrJson.write false g) name

                Expect.stringContains (Print.model (variant "openelmTiny" 16 257)) "tie \"tok_embeddings\"" "tie"
                Expect.stringContains (Print.model (variant "openlmTiny" 16 257)) "(bias = false)" "gain-only"
            }

            test "graphs without the new options keep their IR JSON and checkpoint hash" {
                // Hashes of the IR JSON (without spans) written before these options existed.
                let hash src =
                    Checkpoint.SourceHash(IrJson.write false (graph src))

                Expect.equal
                    (hash "open lm\nmodel t : tokens[16] -> logits[16, 257] = decoder lmTiny\n")
                    "709cbb0e01b1b4e6562a3d638a77fc21aecff5d0bd9c9f57d7b7b97c02feb73c"
                    "lmTiny"

                Expect.equal
                    (hash
                        "model m : tokens[8] -> logits[8, 50] = embedding 50 16 >> layernorm >> attention 2 (causal = true) >> layernorm (affine = false) >> linear 50\n")
                    "3f95892c05c523de47dc5ec4e9c145b8e4a0395573c70d451d7cb735d07d2e70"
                    "layernorm and attention with default options"
            }

            test "a tie without the parameters, with other shapes, or both qk norms: located errors" {
                expectError
                    "model m : tokens[4] -> logits[4, 50] = embedding 50 8 >> tie \"emb\" (linear 50)\n"
                    "1:69"
                    "no parameter 'emb.weight' to reuse"

                expectError
                    "model m : tokens[4] = named \"emb\" (embedding 50 8) >> tie \"emb\" (linear 40 (bias = false))\n"
                    "1:66"
                    "is [50, 8] where it was made, but this tied or shared use needs [40, 8]"

                expectError
                    "model m : tensor[4, 8] = attention 2 (qkNorm = true) (qkLayerNorm = true)\n"
                    "1:26"
                    "exclude each other"
            }
        ]
