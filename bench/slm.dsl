// What limits the training throughput of small language models (Computational Bottlenecks of
// Training Small-scale Large Language Models, arXiv 2410.19456), at CPU scale: OpenLM-style
// decoders (lm.dsl: gain-only LayerNorm, qk-norm, RoPE, SwiGLU) from 0.2M to 27M parameters on
// the King James Bible in bytes, every run given the same token budget. Swept: model size, the
// attention kernel (libtorch's fused scaled_dot_product_attention vs matmul–softmax written out),
// batch size, sequence length and libtorch threads. Each run reports tokens/s over its steps,
// model FLOPs utilisation (6·N·tokens/s over a matmul peak measured in the same run), peak
// resident memory, the training loss at the end of the budget, and what the tokens cost on a
// machine whose price is below (edit it); each the median of three seeds. `dsl run
// bench/slm.dsl` writes docs/slm-*.{tsv,md,png}; docs/slm.md discusses them. Run it alone: it is a benchmark.
open lm

/// A byte-level decoder of width d (heads of 64, at least 2), L layers, a context of T bytes, and
/// attention computed by `kernel`.
model slm d layers context kernel : tokens[context] -> logits[context, 257] =
    decoder { openlmTiny with width = d; layers = layers; heads = max 2 (d / 64); kernel = kernel }

train slm {
    data      = corpus "../data/kjv-books.txt" (format = "fortunes") (tokenizer = "bytes") (validation = 0.05)
    loss      = nextToken
    optimizer = adamw (lr = 2e-3, weightDecay = 0.033)
    schedule  = constant (warmup = 2)
    epochs    = 1
    batch     = 8
    clip      = 1.0
}

experiment main =
    let corpus = Stage.data "bible-kjv" (out = "../data/kjv-books.txt")
    // The price of the machine the runs are on, in dollars per hour: an assumption to edit.
    let machine = { name = "2-vCPU VM"; dollarsPerHour = 0.10 }
    // Every run sees the same tokens: steps = budget / (batch · context).
    let budget = 32768
    let sizes = [ { d = 64; layers = 2 }; { d = 128; layers = 4 }; { d = 256; layers = 4 }; { d = 384; layers = 6 }; { d = 512; layers = 8 } ]

    // Three seeds per setting, reported as medians: one run of a few seconds moves by tens of
    // percent on a shared machine (the same d512 setting measured 654 and 871 tokens/s in two runs).
    let seeds = [ 1; 2; 3 ]
    let median3 a b c = a + b + c - max a (max b c) - min a (min b c)

    let run size context kernel batch threads =
        let ts = [ for s in seeds -> Stage.train (slm size.d size.layers context kernel) (data = corpus) (batch = batch) (steps = budget / (batch * context)) (threads = threads) (seed = s) ]
        let median name = derived (fun a b c -> median3 a b c) [ for t in ts -> metric t name ]
        let tokensPerS = median "tokens_per_s"
        let loss = median "loss"
        {
            d = size.d
            layers = size.layers
            context = context
            kernel = kernel
            batch = batch
            threads = threads
            params = metric (List.head ts) "params"
            tokens_per_s = tokensPerS
            mfu = median "mfu"
            peak_gflops = median "peak_gflops"
            peak_rss_mb = median "peak_rss_mb"
            loss = loss
            usd_per_mtok = derived (fun r -> machine.dollarsPerHour / 3600.0 / r * 1000000.0) [ tokensPerS ]
            loss_x_usd = derived (fun l r -> l * machine.dollarsPerHour / 3600.0 * float budget / r) [ loss; tokensPerS ]
        }

    let bySize = [ for s in sizes -> [ for k in [ "sdpa"; "math" ] -> run s 256 k 8 2 ] ] |> List.concat
    let byBatch = [ for b in [ 1; 2; 4; 8; 16; 32 ] -> run (List.item 2 sizes) 256 "sdpa" b 2 ]
    let byContext = [ for c in [ 64; 128; 256; 512 ] -> [ for k in [ "sdpa"; "math" ] -> run (List.item 2 sizes) c k 8 2 ] ] |> List.concat
    let byThreads = [ for s in [ List.item 2 sizes; List.item 4 sizes ] -> [ for n in [ 1; 2 ] -> run s 256 "sdpa" 8 n ] ] |> List.concat

    {
        tables =
            [
                table "slm-size" bySize (dir = "../docs")
                table "slm-batch" byBatch (dir = "../docs")
                table "slm-context" byContext (dir = "../docs")
                table "slm-threads" byThreads (dir = "../docs")
            ]
        plots =
            [
                plot "slm-size-throughput" bySize (x = "params") (y = "tokens_per_s") (series = "kernel") (logX = true) (title = "tokens/s by model size") (xLabel = "parameters") (yLabel = "tokens/s") (dir = "../docs")
                plot "slm-batch-throughput" byBatch (x = "batch") (y = "tokens_per_s") (logX = true) (title = "tokens/s by batch (d 256, 4 layers)") (xLabel = "batch (rows of 256 bytes)") (yLabel = "tokens/s") (dir = "../docs")
                plot "slm-context-throughput" byContext (x = "context") (y = "tokens_per_s") (series = "kernel") (logX = true) (title = "tokens/s by context (d 256, 4 layers)") (xLabel = "context (bytes)") (yLabel = "tokens/s") (dir = "../docs")
            ]
    }
