// MobileCLIP's claim at small scale (MobileCLIP, arXiv 2311.17049; apple/ml-mobileclip): the same student, the same steps, trained
// with CLIP's loss alone or with the reinforced loss (1 − λ)·CLIP + λ·distillation, λ = 0.75,
// against two teachers' stored embeddings (`dsl reinforce`; the experiment is mobileclip.dsl).
open "towers.dsl"

model studentClip (image : image[1, 32, 32]) (text : tokens[24]) =
    clipOutputs (image |> studentImage) (text |> studentText)

model studentReinforced (image : image[1, 32, 32]) (text : tokens[24]) =
    clipOutputs (image |> studentImage) (text |> studentText)

let adam = adamw (lr = 2e-3, weightDecay = 0.2, beta2 = 0.95)

train studentClip {
    data      = fashionCaptions
    loss      = clipLoss
    optimizer = adam
    schedule  = cosine (warmup = 100)
    epochs    = 2
    batch     = 128
    clip      = 1.0
}

train studentReinforced {
    data      = fashionCaptions
    loss      = mobileclipLoss (lambda = 0.75)
    optimizer = adam
    schedule  = cosine (warmup = 100)
    epochs    = 2
    batch     = 128
    clip      = 1.0
}
