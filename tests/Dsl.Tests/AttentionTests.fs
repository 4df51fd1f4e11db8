/// Attention for decoder language models (issue 5): grouped-query heads, rotary position
/// embedding and per-head qk-norm, each checked against an independent formulation.
module Dsl.Tests.AttentionTests

open Expecto
open TorchSharp
open Dsl.Runtime.Emit
open Dsl.Tests.Support

let private model src seed =
    let m = new GraphModule(graph src, seed)
    m.eval ()
    m

let private weight (m: GraphModule) name = m.state_dict().[name]

let private run (m: GraphModule) (x: torch.Tensor) =
    use _ = torch.no_grad ()
    m.forward x

[<Tests>]
let tests =
    testList
        "attention options"
        [
            test "grouped-query attention equals multi-head attention whose heads share k and v within a group" {
                use gqa =
                    model "model m : tensor[5, 32] = attention 4 (kvHeads = 2) (causal = true)\n" 1L

                use mha = model "model m : tensor[5, 32] = attention 4 (causal = true)\n" 2L
                let hd = 8L
                let w = weight gqa "qkv.weight"
                Expect.equal w.shape [| (4L + 2L * 2L) * hd; 32L |] "q rows for 4 heads, k and v rows for 2"

                // MHA's k (and v) head i is GQA's kv head i / 2: repeat each kv head's rows twice.
                let q = w.narrow (0, 0L, 4L * hd)

                let k =
                    w
                        .narrow(0, 4L * hd, 2L * hd)
                        .view(2L, hd, 32L)
                        .repeat_interleave(2L, dim = 0L)
                        .reshape(4L * hd, 32L)

                let v =
                    w
                        .narrow(0, 6L * hd, 2L * hd)
                        .view(2L, hd, 32L)
                        .repeat_interleave(2L, dim = 0L)
                        .reshape(4L * hd, 32L)

                use _ = torch.no_grad ()
                (weight mha "qkv.weight").copy_(torch.cat ([| q; k; v |], 0L)) |> ignore
                (weight mha "proj.weight").copy_(weight gqa "proj.weight") |> ignore
                (weight mha "qkv.bias").zero_() |> ignore
                (weight mha "proj.bias").copy_(weight gqa "proj.bias") |> ignore
                (weight gqa "qkv.bias").zero_() |> ignore
                use x = torch.randn (3L, 5L, 32L)
                use a = run gqa x
                use b = run mha x
                Expect.isLessThan (EmitTests.maxAbsDiff a b) 1e-5 "same outputs"
            }

            test
                "multi-head attention written from linear, matmul, softmax and layout ops equals the fused attention with the same weights" {
                // bench/attention.dsl holds both (and bench/attention.sh times them).
                let source =
                    System.IO.File.ReadAllText(System.IO.Path.Combine(repoRoot.Value, "bench", "attention.dsl"))

                let c = check source
                Expect.isEmpty c.Diagnostics "bench/attention.dsl checks"

                let graphOf name =
                    c.Models |> List.find (fun (n, _) -> n = name) |> snd

                use composed = new GraphModule(graphOf "composed", 1L)
                use fused = new GraphModule(graphOf "fused", 2L)
                let cs, fs = composed.state_dict (), fused.state_dict ()

                let names (d: System.Collections.Generic.IDictionary<string, torch.Tensor>) =
                    d.Keys |> Seq.sort |> List.ofSeq

                // The fused layer is the model's first layer, so its parameters sit under "0.";
                // the composed form names its projections itself.
                let ours (name: string) = name.Substring "0.".Length
                Expect.equal (names fs) (names cs |> List.map (fun n -> "0." + n)) "the same parameter names"

                let copyAcross () =
                    use _ = torch.no_grad ()

                    for KeyValue(name, p) in fs do
                        // Non-zero biases, so that each one's place shows.
                        p.copy_ (torch.randn_like p * 0.2) |> ignore
                        Expect.equal cs[ours name].shape p.shape (sprintf "%s: the same shape" name)
                        cs[ours name].copy_ p |> ignore

                copyAcross ()

                use x = torch.randn (2L, 64L, 128L)

                for training in [ false; true ] do
                    composed.train training
                    fused.train training
                    use a = composed.forward x
                    use b = fused.forward x

                    Expect.isLessThan (EmitTests.maxAbsDiff a b) 1e-5 (sprintf "same outputs (training = %b)" training)

                // The train step's gradients agree too.
                use target = torch.randn (2L, 64L, 128L)

                for m in [ composed; fused ] do
                    m.zero_grad ()
                    use loss = (m.forward x - target).square().mean()
                    loss.backward ()

                for KeyValue(name, p) in fs do
                    let scale = p.grad.abs().max().item<float32>() |> float
                    Expect.isGreaterThan scale 0.0 (sprintf "%s: a gradient" name)

                    Expect.isLessThan
                        (EmitTests.maxAbsDiff cs[ours name].grad p.grad / scale)
                        1e-4
                        (sprintf "%s: the same gradient" name)
            }

            test
                "dropout on the attention weights: identity in eval, in training the weights times a mask from the model's generator" {
                use m =
                    model "model m : tensor[5, 16] = attention 2 (causal = true) (dropout = 0.3)\n" 5L

                use plain = model "model m : tensor[5, 16] = attention 2 (causal = true)\n" 6L

                let names = [ "qkv.weight"; "qkv.bias"; "proj.weight"; "proj.bias" ]

                let copyInto (target: GraphModule) randomise =
                    use _ = torch.no_grad ()

                    for name in names do
                        if randomise then
                            (weight m name).copy_(torch.randn_like (weight m name) * 0.3) |> ignore

                        (weight target name).copy_(weight m name) |> ignore

                copyInto plain true

                use x = torch.randn (3L, 5L, 16L)
                use evalOut = run m x
                use plainOut = run plain x
                Expect.isLessThan (EmitTests.maxAbsDiff evalOut plainOut) 1e-6 "no dropout in eval mode"

                // The mask generator's state before the step gives the same masks here.
                m.train ()
                use generator = new torch.Generator(0UL)
                generator.set_state (m.MaskGenerator.get_state ()) |> ignore
                use trainOut = run m x
                use _ = torch.no_grad ()

                let qkv =
                    torch.nn.functional
                        .linear(x, weight m "qkv.weight", weight m "qkv.bias")
                        .view(3L, 5L, 3L, 2L, 8L)
                        .permute(2L, 0L, 3L, 1L, 4L)

                let scores: torch.Tensor =
                    torch.matmul (qkv[0], qkv[1].transpose(-1, -2)) / torch.tensor (sqrt 8.0)

                let future = torch.ones(5L, 5L, dtype = torch.ScalarType.Bool).triu(1L)
                let weights = scores.masked_fill(future, System.Double.NegativeInfinity).softmax(-1)
                let mask = torch.empty(weights.shape).bernoulli_(0.7, generator) / 0.7

                let merged =
                    torch.matmul(weights * mask, qkv[2]).permute(0L, 2L, 1L, 3L).reshape(3L, 5L, 16L)

                use expected =
                    torch.nn.functional.linear (merged, weight m "proj.weight", weight m "proj.bias")

                Expect.isLessThan (EmitTests.maxAbsDiff trainOut expected) 1e-5 "dropped-out weights times v"
                Expect.isGreaterThan (EmitTests.maxAbsDiff trainOut evalOut) 1e-3 "training differs from eval"

                // Seeded: the same seed gives the same masks.
                use again =
                    model "model m : tensor[5, 16] = attention 2 (causal = true) (dropout = 0.3)\n" 5L

                copyInto again false

                again.train ()
                use againOut = run again x
                Expect.isLessThan (EmitTests.maxAbsDiff againOut trainOut) 1e-6 "same seed, same masks"

                let printed =
                    Dsl.Print.model (graph "model m : tensor[5, 16] = attention 2 (dropout = 0.3)\n")

                Expect.stringContains printed "(dropout = 0.3)" "printed back"

                Expect.isTrue
                    (errors "model m : tensor[5, 16] = attention 2 (dropout = 1.0)\n"
                     |> List.exists (fun e ->
                         e.StartsWith "1:" && e.Contains "attention: dropout must be in [0, 1), got 1"))
                    "dropout 1 refused at its line"
            }

            test "headDim decouples the head width from the model width: explicit attention over 3 heads of 8 on D = 20" {
                use m = model "model m : tensor[5, 20] = attention 3 (headDim = 8)\n" 4L
                Expect.equal (weight m "qkv.weight").shape [| 72L; 20L |] "q, k, v rows: 3 heads of 8 each"
                Expect.equal (weight m "proj.weight").shape [| 20L; 24L |] "proj maps 3·8 back to 20"
                use x = torch.randn (2L, 5L, 20L)
                use y = run m x
                use _ = torch.no_grad ()

                let qkv =
                    torch.nn.functional
                        .linear(x, weight m "qkv.weight", weight m "qkv.bias")
                        .view(2L, 5L, 3L, 3L, 8L)
                        .permute(2L, 0L, 3L, 1L, 4L) // [q/k/v, B, heads, T, hd]

                let q, k, v = qkv[0], qkv[1], qkv[2]

                let scores: torch.Tensor =
                    torch.matmul (q, k.transpose (-1, -2)) / torch.tensor (sqrt 8.0)

                let merged =
                    torch.matmul(scores.softmax (-1), v).permute(0L, 2L, 1L, 3L).reshape(2L, 5L, 24L)

                use expected =
                    torch.nn.functional.linear (merged, weight m "proj.weight", weight m "proj.bias")

                Expect.isLessThan (EmitTests.maxAbsDiff y expected) 1e-5 "same outputs"

                let printed =
                    Dsl.Print.model (graph "model m : tensor[5, 20] = attention 3 (headDim = 8)\n")

                Expect.stringContains printed "(headDim = 8)" "the printed model keeps the head width"
            }

            test "RoPE matches the complex-number formulation: pair (i, i + d/2) times e^(i·m·θ_i)" {
                use m =
                    model "model m : tensor[6, 16] = attention 2 (rope = 10000.0) (qkvBias = false) (bias = false)\n" 3L

                use x = torch.randn (1L, 6L, 16L)
                use y = run m x
                use _ = torch.no_grad ()
                let heads, hd, t = 2L, 8L, 6L

                let qkv =
                    torch.nn.functional.linear(x, weight m "qkv.weight").view(1L, t, 3L, heads, hd)

                let rotate (z: torch.Tensor) : torch.Tensor = // [1, T, heads, hd] → rotated, via complex multiplication
                    let half = hd / 2L
                    let re, im = z.narrow (-1, 0L, half), z.narrow (-1, half, half)

                    let freqs =
                        torch.pow (10000.0, -(torch.arange (0L, half, dtype = torch.float64) * 2.0 / float hd))

                    let angles =
                        torch.outer(torch.arange (t, dtype = torch.float64), freqs).view(1L, t, 1L, half).to_type
                            torch.float32

                    let c, s = angles.cos (), angles.sin ()
                    torch.cat ([| re * c - im * s; re * s + im * c |], -1L)

                let q = rotate (qkv.select (2, 0L)) |> fun z -> z.transpose (1, 2)
                let k = rotate (qkv.select (2, 1L)) |> fun z -> z.transpose (1, 2)
                let v = qkv.select(2, 2L).transpose(1, 2)
                let scores: torch.Tensor = q.matmul (k.transpose (-1, -2)) / sqrt (float hd)
                let attended = scores.softmax(-1).matmul v

                let expected =
                    torch.nn.functional.linear (attended.transpose(1, 2).reshape(1L, t, 16L), weight m "proj.weight")

                Expect.isLessThan (EmitTests.maxAbsDiff y expected) 1e-5 "same outputs"
            }

            test "with qk-norm, scaling the query projection leaves the output unchanged; without, it does not" {
                let scaledQueries src =
                    use m = model src 4L
                    use x = torch.randn (2L, 4L, 16L)
                    use before = run m x
                    use _ = torch.no_grad ()
                    (weight m "qkv.weight").narrow(0, 0L, 16L).mul_(torch.tensor 7.0f) |> ignore
                    (weight m "qkv.bias").narrow(0, 0L, 16L).mul_(torch.tensor 7.0f) |> ignore
                    use after = run m x
                    EmitTests.maxAbsDiff before after

                Expect.isLessThan
                    (scaledQueries "model m : tensor[4, 16] = attention 2 (qkNorm = true)\n")
                    1e-4
                    "RMS-normalised"

                Expect.isGreaterThan
                    (scaledQueries "model m : tensor[4, 16] = attention 2\n")
                    1e-3
                    "plain attention sees the scale"
            }

            test "kvHeads that do not divide heads, and RoPE with an odd head size, are located errors" {
                expectError "model m : tensor[4, 24] = attention 4 (kvHeads = 3)\n" "1:27" "kvHeads must divide heads"
                expectError "model m : tensor[4, 6] = attention 2 (rope = 10000.0)\n" "1:26" "even head size"
            }

            test "new options print back and re-parse to the same graph; plain attention prints as before" {
                let src =
                    "model m : tensor[4, 32] = attention 4 (kvHeads = 2) (rope = 500000.0) (qkNorm = true)\n"

                let printed = Dsl.Print.model (graph src)
                Expect.stringContains printed "(kvHeads = 2) (rope = 500000.0) (qkNorm = true)" "options printed"
                Expect.equal (Dsl.IrJson.write false (graph printed)) (Dsl.IrJson.write false (graph src)) "same IR"
                let plain = Dsl.Print.model (graph "model m : tensor[4, 32] = attention 4\n")
                Expect.isFalse (plain.Contains "kvHeads") "defaults not printed"
            }

            test
                "the math kernel computes what the fused one does, forward and backward, causal with GQA, RoPE and a mask" {
                let options = "(causal = true) (kvHeads = 2) (rope = 10000.0) (qkLayerNorm = true)"

                let pair (extra: string) =
                    let src kernel =
                        let inputs =
                            if extra = "" then
                                "(x : tensor[6, 32])"
                            else
                                "(x : tensor[6, 32]) (keep : tensor[6, 6])"

                        sprintf "model m %s = x |> attention 4 %s%s%s\n" inputs options extra kernel

                    new GraphModule(graph (src ""), 3L), new GraphModule(graph (src " (kernel = \"math\")"), 3L)

                for extra in [ ""; " (mask = keep)" ] do
                    let fused, math = pair extra
                    use _f = fused
                    use _m = math
                    use scope = torch.NewDisposeScope()
                    let x = torch.randn (3L, 6L, 32L)
                    // A key-padding-like 0/1 mask that leaves every query at least key 0.
                    let keep = torch.ones (3L, 6L, 6L)
                    keep.narrow(2, 4L, 2L).zero_() |> ignore

                    let outOf (m: GraphModule) =
                        let xi = x.detach().requires_grad_ true
                        let y = (m.Forward(if extra = "" then [| xi |] else [| xi; keep |]))[0]
                        y.pow(torch.tensor 2.0).sum().backward()
                        y.detach (), xi.grad.detach ()

                    let y1, g1 = outOf fused
                    let y2, g2 = outOf math
                    let scale = y1.abs().max().item<float32>()
                    Expect.isLessThan (y1.sub(y2).abs().max().item<float32>() / scale) 1e-5f ("outputs" + extra)

                    Expect.isLessThan
                        (g1.sub(g2).abs().max().item<float32>() / g1.abs().max().item<float32>())
                        1e-5f
                        ("input gradients" + extra)

                let printed =
                    Dsl.Print.model (graph "model m : tensor[4, 32] = attention 4 (kernel = \"math\")\n")

                Expect.stringContains printed "(kernel = \"math\")" "printed back"

                Expect.equal
                    (Dsl.IrJson.write false (graph printed))
                    (Dsl.IrJson.write false (graph "model m : tensor[4, 32] = attention 4 (kernel = \"math\")\n"))
                    "same IR"

                expectError
                    "model m : tensor[4, 32] = attention 4 (kernel = \"flash\")\n"
                    "1:40"
                    "use \"sdpa\" (fused) or \"math\""
            }
        ]

let private decoderSource =
    "open lm\nmodel t : tokens[16] -> logits[16, 257] = decoder lmTiny\n"

[<Tests>]
let decoderTests =
    testList
        "decoder"
        [
            test "the tiny decoder's parameters follow the formula" {
                let g = graph decoderSource
                let d, hd, vocab, hidden = 64, 16, 257, 256
                let attention = (4 + 2 * 2) * hd * d + d * d + 2 * hd
                let block = attention + 2 * d + 2 * hidden * d + hidden * d
                let expected = vocab * d + 2 * block + d + d * vocab
                Expect.equal (Dsl.Ir.paramCount g) (int64 expected) "embedding, 2 blocks, norm, output"
            }

            test "SwiGLU's hidden width is OpenLM's: 2816 at d 1024, 5632 at d 2048" {
                for d, hidden in [ 1024, 2816; 2048, 5632 ] do
                    let g = graph $"open lm\nmodel m : tensor[2, {d}] = swiglu (swigluHidden {d})\n"
                    let w12 = g.Params |> List.find (fun p -> p.Name = "w12.weight")
                    Expect.equal w12.Shape [ 2 * hidden; d ] $"d {d}"
            }

            test "the decoder is causal: a later token never changes earlier logits" {
                use m = new GraphModule(graph decoderSource, 5L)
                m.eval ()
                use _ = torch.no_grad ()
                use a = torch.randint (257L, [| 2L; 16L |])
                use b = a.clone ()
                use later = torch.randint (257L, [| 2L; 6L |])
                b.narrow(1, 10L, 6L).copy_ later |> ignore
                use ya = m.forward a
                use yb = m.forward b

                Expect.isLessThan
                    (EmitTests.maxAbsDiff (ya.narrow (1, 0L, 10L)) (yb.narrow (1, 0L, 10L)))
                    1e-5
                    "positions 0–9 agree"

                Expect.isGreaterThan (EmitTests.maxAbsDiff ya yb) 1e-4 "later positions do change"
            }

            test "the decoder prints back as source that elaborates to the same IR" {
                let g = graph decoderSource
                let again = graph (Dsl.Print.model g)
                Expect.equal (Dsl.IrJson.write false again) (Dsl.IrJson.write false g) "same IR"
            }

            test "narrow outside the axis, or on the batch axis, is a located error" {
                expectError "model m : tensor[4, 8] = narrow (-1) 6 4\n" "1:26" "outside the 8 of axis -1"
                expectError "model m : tensor[4, 8] = narrow 0 0 1\n" "1:26" "not a non-batch axis"
            }
        ]
