// Two teachers for reinforced training, trained once with CLIP's loss from different seeds
// (MobileCLIP's ensemble is two ViT-L/14 CLIPs; MobileCLIP, arXiv 2311.17049; apple/ml-mobileclip).
open "towers.dsl"

model teacherA (image : image[1, 32, 32]) (text : tokens[24]) =
    clipOutputs (image |> teacherImage) (text |> teacherText)

model teacherB (image : image[1, 32, 32]) (text : tokens[24]) =
    clipOutputs (image |> teacherImage) (text |> teacherText)

train teacherA {
    data      = fashionCaptions
    loss      = clipLoss
    optimizer = adamw (lr = 2e-3, weightDecay = 0.2, beta2 = 0.95)
    schedule  = cosine (warmup = 100)
    epochs    = 3
    batch     = 128
    clip      = 1.0
    seed      = 1
}

train teacherB {
    data      = fashionCaptions
    loss      = clipLoss
    optimizer = adamw (lr = 2e-3, weightDecay = 0.2, beta2 = 0.95)
    schedule  = cosine (warmup = 100)
    epochs    = 3
    batch     = 128
    clip      = 1.0
    seed      = 2
}
