// A byte-level decoder trained on the King James Bible (`dsl run examples/lm/kjv.dsl`; docs/lm.md):
// lm.dsl's pre-RMSNorm blocks with GQA (4 query, 2 key/value heads), RoPE, per-head qk-norm and
// OpenLM's SwiGLU, at width 128 and 4 layers (about 1M parameters), on rows of 128 bytes.
open lm

model kjv : tokens[128] -> logits[128, 257] = decoder { lmTiny with width = 128; layers = 4 }

// The corpus from `dsl data bible-kjv`: one document per book, 5% of the books held out. One
// epoch is about 900 steps; run.sh stops after MAX_STEPS (default 300, a third of the text) to
// stay within 15 minutes on two cores, so the learning rate is constant after its warmup.
train kjv {
    data      = corpus "../../data/kjv-books.txt" (format = "fortunes") (tokenizer = "bytes") (validation = 0.05)
    loss      = nextToken (zLoss = 1e-4)
    optimizer = adamw (lr = 3e-3, weightDecay = 0.033)
    schedule  = constant (warmup = 100)
    epochs    = 1
    batch     = 32
    evalBatch = 64
    clip      = 1.0
}

/// Build the corpus from the Debian package, train 300 steps (a third of the text), evaluate on
/// the held-out books.
experiment main =
    let corpus = Stage.data "bible-kjv" (out = "../../data/kjv-books.txt")
    let trained = Stage.train kjv (data = corpus) (steps = 300)
    let tested = Stage.eval trained
    // Each continuation goes to generated.txt in its stage's folder; `dsl run` names the files.
    let greedy = Stage.generate trained (prompt = "And God said") (tokens = 200)
    let greedyNoCache = Stage.generate trained (prompt = "And God said") (tokens = 200) (cache = false)
    let sampled = Stage.generate trained (prompt = "And God said") (tokens = 200) (temperature = 0.8) (topK = 20) (seed = 1)

    {
        tables =
            [
                table "lm-kjv" [
                    { steps = metric trained "steps"; train_loss = metric trained "loss"; validation_loss = metric tested "loss"; params = metric trained "params"; train_s = metric trained "seconds" }
                ] (dir = "../../docs")
                table "lm-kjv-generate" [
                    for r in [ { what = "greedy, KV cache"; g = greedy }; { what = "greedy, no cache"; g = greedyNoCache }; { what = "sampled 0.8, top-20"; g = sampled } ] ->
                        { generation = r.what; new_tokens = metric r.g "tokens"; tokens_per_s = metric r.g "tokens_per_s" }
                ]
            ]
    }
