// CatLIP's claim at small scale (CatLIP, arXiv 2404.15653; apple/corenet projects/catlip): one image encoder, pre-trained two ways on the
// same captions — as a multi-label classifier of the captions' WordNet synsets (CatLIP, BCE) and
// contrastively against a text tower (CLIP, InfoNCE). Both return the pooled image features as
// `features`, which the linear probe reads.
open fastvit
open clip

let small = { mci0 with layers = [ 1; 1; 2; 1 ]; dims = [ 16; 32; 64; 128 ] }

/// Stem, stages and conv_exp of a small MCi, mean-pooled: [B, 256].
let imageFeatures = fastvitFeatures small >> finalConv small >> globalAvgPool

/// A 2-layer text transformer of width 64 over GPT-2 tokens.
let textTower = textEncoder { clipText with vocabulary = 50257; eot = 50256; width = 64; heads = 2; layers = 2 } (dim = 64)

/// At most 40 synsets are mined from the captions (`dsl data catlip-labels --vocabulary-size 40`).
model catlip (image : image[1, 32, 32]) =
    let features = image |> imageFeatures
    { logits = features |> named "classifier" (linear 40); features = features }

model clip (image : image[1, 32, 32]) (text : tokens[24]) =
    let features = image |> imageFeatures
    let out = clipOutputs (features |> named "image_projection" (linear 64 (bias = false))) (text |> textTower)
    { image = out.image; text = out.text; logit_scale = out.logit_scale; features = features }

let adam = adamw (lr = 2e-3, weightDecay = 0.2, beta2 = 0.95)
let augment = [ randomCrop 32 (pad = 2); hflip ]

train catlip {
    data      = captions "../../data/fashion-captions/train.catlip.jsonl" (test = "../../data/fashion-captions/test.catlip.jsonl") (size = 32) (augment = augment)
    loss      = catlipLoss
    optimizer = adam
    schedule  = cosine (warmup = 100)
    epochs    = 1
    batch     = 128
    clip      = 1.0
}

train clip {
    data      = captions "../../data/fashion-captions/train.jsonl" (test = "../../data/fashion-captions/test.jsonl") (size = 32) (augment = augment)
    loss      = clipLoss
    optimizer = adam
    schedule  = cosine (warmup = 100)
    epochs    = 1
    batch     = 128
    clip      = 1.0
}

/// The captions and their mined synsets, both encoders trained one epoch and probed, and the
/// training step of each timed on random inputs (`dsl run examples/catlip/encoders.dsl`).
experiment main =
    let captions = Stage.data "fashion-captions" (out = "../../data/fashion-captions")
    let trainLabels =
        Stage.data "catlip-labels" (from = captions) (manifest = "../../data/fashion-captions/train.jsonl") (out = "../../data/fashion-captions/train.catlip.jsonl") (vocabularySize = 40)
    let testLabels =
        Stage.data "catlip-labels" (from = [ captions; trainLabels ]) (manifest = "../../data/fashion-captions/test.jsonl") (out = "../../data/fashion-captions/test.catlip.jsonl") (vocabulary = "../../data/fashion-captions/train.catlip.vocab.tsv")
    let catlipTrained = Stage.train catlip (data = [ trainLabels; testLabels ])
    let clipTrained = Stage.train clip (data = captions)
    let catlipEval = Stage.eval catlipTrained (probe = true)
    let clipEval = Stage.eval clipTrained (probe = true)
    // CatLIP has no text tower, so no zero-shot accuracy.
    let probes =
        [ { model = "catlip"; steps = metric catlipTrained "steps"; train_s = metric catlipTrained "seconds"; linear_probe = metric catlipEval "linear_probe"; zero_shot_top1 = "—" }
          { model = "clip"; steps = metric clipTrained "steps"; train_s = metric clipTrained "seconds"; linear_probe = metric clipEval "linear_probe"; zero_shot_top1 = metric clipEval "accuracy" } ]
    let steps =
        [ for batch in [ 64; 256; 1024 ] ->
            let a = Stage.bench catlip (batch = batch) (trainStep = true) (warmup = 1) (repeats = 15)
            let b = Stage.bench clip (batch = batch) (trainStep = true) (warmup = 1) (repeats = 15)
            { batch = batch; catlip_step_ms = metric a "train_ms"; clip_step_ms = metric b "train_ms"; clip_over_catlip = derived (fun x y -> x / y) [ metric b "train_ms"; metric a "train_ms" ] } ]
    let points =
        [ for r in steps -> { batch = r.batch; model = "CatLIP"; ms = r.catlip_step_ms } ]
        @ [ for r in steps -> { batch = r.batch; model = "CLIP"; ms = r.clip_step_ms } ]

    {
        tables = [ table "catlip-probe" probes (dir = "../../docs"); table "catlip-step-time" steps (dir = "../../docs") ]
        plots =
            [
                plot "catlip-step-time" points
                    (x = "batch") (y = "ms") (series = "model") (logX = true) (logY = true) (dir = "../../docs")
                    (title = "Training step, same image encoder: CatLIP (BCE) vs CLIP (InfoNCE, text tower)") (xLabel = "batch size") (yLabel = "ms per step (median)")
            ]
    }
