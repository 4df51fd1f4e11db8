// fusionTiny (examples/models/fusion.dsl) trained on Fashion-MNIST images with a metadata side
// channel: build the data with `dsl data fashion-metadata --out examples/fusion/data/metadata`
// (see README.md beside this file). The image input takes the `image` field and the metadata
// input the `metadata` field, by name.
open "../models/fusion.dsl"

train fusionTiny {
    data      = records "data/metadata/train.jsonl" (test = "data/metadata/test.jsonl")
                    (fields = { image = Field.image [1; 28; 28]; metadata = Field.tensor [8]; label = Field.label 10 })
    loss      = fun out r -> Loss.crossEntropy out r.label
    metrics   = fun out r -> { accuracy = Metric.accuracy out r.label }
    optimizer = adamw (lr = 3e-3, weightDecay = 0.05)
    schedule  = cosine (warmup = 200)
    epochs    = 2
    batch     = 128
}

// The baseline: the same model and weights' shapes with the metadata multiplied by 0, so only
// the image informs the prediction; the same data, loss and schedule.
model fusionTinyImageOnly (image : image[1, 28, 28]) (metadata : tensor[8]) : logits[10] =
    fusion fusionSmall image (metadata * 0.0)

train fusionTinyImageOnly {
    data      = records "data/metadata/train.jsonl" (test = "data/metadata/test.jsonl")
                    (fields = { image = Field.image [1; 28; 28]; metadata = Field.tensor [8]; label = Field.label 10 })
    loss      = fun out r -> Loss.crossEntropy out r.label
    metrics   = fun out r -> { accuracy = Metric.accuracy out r.label }
    optimizer = adamw (lr = 3e-3, weightDecay = 0.05)
    schedule  = cosine (warmup = 200)
    epochs    = 2
    batch     = 128
}

/// Image + metadata against the same network with its metadata multiplied by 0: same data,
/// seed and schedule, two seeds.
experiment main =
    let metadata = Stage.data "fashion-metadata" (out = "data/metadata")
    let rows =
        [ for seed in [ 0; 1 ] ->
            let fused = Stage.eval (Stage.train fusionTiny (data = metadata) (seed = seed))
            let imageOnly = Stage.eval (Stage.train fusionTinyImageOnly (data = metadata) (seed = seed))
            { seed = seed; fusion = metric fused "accuracy"; image_only = metric imageOnly "accuracy" } ]

    { tables = [ table "fusion-accuracy" rows (dir = "../../docs") ] }
