// Data parallelism over Open MPI, measured on this machine and modelled past it (docs/scaling.md).
// Measured: the same training on 1 rank and on 2 ranks, one libtorch thread per rank, for a
// byte-level decoder (tokens/s) and a Fashion-MNIST convnet (images/s), with the share of each
// step the gradient allreduce took. Modelled: ring-allreduce over N machines (Horovod, arXiv
// 1802.05799; Patarasuk & Yuan's bandwidth-optimal ring): a step costs the measured compute time
// of one machine plus 2(N−1)·α per fused bucket and 2(N−1)/N · bytes / bandwidth, so N machines
// give N · tokens per step over that, and the efficiency is compute / (compute + exchange).
// `dsl run bench/scaling.dsl` writes docs/scaling-*.{tsv,md,png}. Run it alone.
open lm

model slm d layers context : tokens[context] -> logits[context, 257] =
    decoder { openlmTiny with width = d; layers = layers; heads = max 2 (d / 64) }

train slm {
    data      = corpus "../data/kjv-books.txt" (format = "fortunes") (tokenizer = "bytes") (validation = 0.05)
    loss      = nextToken
    optimizer = adamw (lr = 2e-3, weightDecay = 0.033)
    schedule  = constant (warmup = 2)
    epochs    = 1
    batch     = 8
    clip      = 1.0
}

let block c = conv c (k = 3) (bias = false) >> batchnorm >> relu

model convnet : image[1, 28, 28] -> logits[10] =
    block 32 >> block 32 >> maxpool 2 >> block 64 >> block 64 >> maxpool 2 >> flatten >> linear 10

train convnet {
    data      = fashionMnist {}
    loss      = crossEntropy
    optimizer = adamw (lr = 3e-3)
    epochs    = 1
    batch     = 128
}

experiment main =
    let corpus = Stage.data "bible-kjv" (out = "../data/kjv-books.txt")
    // The decoder of the study's largest size (27M parameters), and the README's convnet.
    let lmOn ranks = Stage.train (slm 512 8 256) (data = corpus) (steps = 12) (ranks = ranks) (threads = ranks)
    let visionOn ranks = Stage.train convnet (steps = 60) (ranks = ranks) (threads = ranks)

    let measured =
        [ for ranks in [ 1; 2 ] ->
            [
                { model = "decoder d512 L8, 8 x 256 bytes"; ranks = ranks; per_s = metric (lmOn ranks) "tokens_per_s"; unit = "tokens/s"; allreduce_share = metric (lmOn ranks) "allreduce_share"; mfu = metric (lmOn ranks) "mfu" }
                { model = "convnet, batch 128"; ranks = ranks; per_s = metric (visionOn ranks) "images_per_s"; unit = "images/s"; allreduce_share = metric (visionOn ranks) "allreduce_share"; mfu = 0.0 }
            ] ]
        |> List.concat

    // The model: one machine's measured compute per step (both cores, one rank), the decoder's
    // fp32 gradients, PyTorch DDP's 25 MB buckets, α = 10 µs per message (an assumption to edit).
    let machine = Stage.train (slm 512 8 256) (data = corpus) (steps = 12) (threads = 2)
    let tokensPerStep = 8 * 256
    let alpha = 0.00001
    let bucket = 25.0 * 1048576.0

    let modelled =
        [ for gbps in [ 10; 25; 100 ] ->
            [ for n in [ 1; 2; 4; 8; 16; 32; 64 ] ->
                let exchange = derived (fun p -> if n = 1 then 0.0 else 2.0 * float (n - 1) * (alpha * ceil (4.0 * p / bucket) + 4.0 * p / float n / (float gbps * 125000000.0))) [ metric machine "params" ]
                {
                    gbps = gbps
                    machines = n
                    compute_s = derived (fun t -> float tokensPerStep / t) [ metric machine "tokens_per_s" ]
                    exchange_s = exchange
                    tokens_per_s = derived (fun t e -> float n * float tokensPerStep / (float tokensPerStep / t + e)) [ metric machine "tokens_per_s"; exchange ]
                    efficiency = derived (fun t e -> float tokensPerStep / t / (float tokensPerStep / t + e)) [ metric machine "tokens_per_s"; exchange ]
                } ] ]
        |> List.concat

    {
        tables =
            [
                table "scaling-measured" measured (dir = "../docs")
                table "scaling-model" modelled (dir = "../docs")
            ]
        plots =
            [
                plot "scaling-model" modelled (x = "machines") (y = "efficiency") (series = "gbps") (logX = true) (title = "ring allreduce: modelled efficiency, decoder d512 L8") (xLabel = "machines") (yLabel = "compute / step time") (dir = "../docs")
            ]
    }
