// Semantic segmentation and depth from one U-Net on `dsl data fashion-scenes` (docs/dense.md):
// 64×64 grey canvases of 1–4 Fashion-MNIST items, an 11-class mask (background + 10) and a depth
// map in metres (items 1–10 m, the background at the 10 m far plane). The U of
// examples/models/unet.dsl, three levels of 16 … 64 channels, ends in two 1×1 heads: per-pixel
// class scores and per-pixel depth — a two-output model trained with one loss expression.

open "../models/unet.dsl"

/// A 1×1 convolution to `n` channels written as a linear map of each pixel's channels: the same
/// function, but outside the convolution shapes oneDNN is trusted with (output channels a
/// multiple of 16, src/Dsl.Runtime/Emit/ConvolutionBackend.cs), a 1×1 conv to 11 classes would
/// switch the whole model to libtorch's slower im2col path.
let pixelLinear n x =
    let h = List.item 2 x.shape
    let w = List.item 3 x.shape
    x |> imageToTokens |> linear n |> tokensToImage h w

/// The U's last feature map [B, 16, H, W] and its two heads.
let scenesNet widths classes image =
    let features = image |> level widths 0
    { seg = features |> named "seg" (pixelLinear classes)
      depth = features |> named "depth" (pixelLinear 1) }

model unetScenes (image : image[1, 64, 64]) = scenesNet [ 16; 32; 64 ] 11 image

/// Per-pixel cross-entropy (padding is the ignore index 255) plus the mean absolute depth error in
/// metres over the pixels whose depth is known (padding is 0), weighted 0.1 so the two terms
/// start at about the same size (ln 11 ≈ 2.4 against ≈ 3 m of error).
train unetScenes {
    data      = records "data/scenes/train.jsonl" (test = "data/scenes/test.jsonl")
                    (augment = [ randomCrop 64 (pad = 4); hflip ])
                    (fields = { image = Field.image [ 1; 64; 64 ]; mask = Field.mask 11 [ 64; 64 ]; depth = Field.depth [ 1; 64; 64 ] })
    loss      = fun out r ->
                    { loss = Loss.crossEntropy out.seg r.mask (ignoreIndex = 255)
                             + 0.1 * Loss.maskedMean (abs (out.depth - r.depth)) (r.depth > 0.0)
                      segLoss = Loss.crossEntropy out.seg r.mask (ignoreIndex = 255)
                      depthL1 = Loss.maskedMean (abs (out.depth - r.depth)) (r.depth > 0.0) }
    metrics   = fun out r ->
                    { miou = Metric.miou 11 out.seg r.mask
                      pixelAccuracy = Metric.pixelAccuracy out.seg r.mask
                      depthRmse = Metric.rmse out.depth r.depth
                      depthAbsRel = Metric.absRel out.depth r.depth
                      depthDelta1 = Metric.delta1 out.depth r.depth }
    optimizer = adamw (lr = 3e-3, weightDecay = 0.01)
    schedule  = cosine (warmup = 100)
    epochs    = 3
    batch     = 32
}

/// Build the scenes, train the two-headed U-Net on them, evaluate its checkpoint on the 2,000
/// test scenes.
experiment main =
    let scenes = Stage.data "fashion-scenes" (out = "data/scenes")
    let trained = Stage.train unetScenes (data = scenes)
    let tested = Stage.eval trained

    {
        tables =
            [
                table "dense-scenes" [
                    {
                        miou = metric tested "miou"
                        pixel_accuracy = metric tested "pixelAccuracy"
                        depth_rmse = metric tested "depthRmse"
                        depth_abs_rel = metric tested "depthAbsRel"
                        depth_delta1 = metric tested "depthDelta1"
                        params = metric trained "params"
                        train_s = metric trained "seconds"
                    }
                ] (dir = "../../docs")
            ]
    }
