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
