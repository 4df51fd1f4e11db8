// U-Net (Ronneberger et al. 2015) with padded convolutions, so every level keeps its size and the
// output has the input's height and width: each level is a double 3×3 conv + BatchNorm + ReLU;
// the contracting path halves the resolution by 2×2 max pooling and doubles the channels; the
// expanding path doubles it back with a real up-convolution (`convTranspose2d (k = 2) (stride = 2)`,
// halving the channels), concatenates the skip from the same level, and applies a double conv;
// a 1×1 conv gives the per-pixel class scores. Blocks are code; variants are records (below).

/// (3×3 conv → BN → ReLU) twice; BatchNorm follows, so the convs have no bias.
let doubleConv c =
    conv c (k = 3) (padding = 1) (bias = false) >> batchnorm >> relu
    >> conv c (k = 3) (padding = 1) (bias = false) >> batchnorm >> relu

/// Level i of the U and everything below it: double conv at widths[i]; unless it is the bottom,
/// pool, recurse, up-convolve to widths[i] channels, concatenate with the skip, double conv.
let rec level widths i =
    fun x ->
        let c = List.item i widths
        let skip = x |> named ("down" + string i) (doubleConv c)
        if i = List.length widths - 1 then
            skip
        else
            let below = skip |> maxpool 2 |> level widths (i + 1)
            let up = below |> named ("up" + string i) (convTranspose2d c (k = 2) (stride = 2))
            concat 1 [ skip; up ] |> named ("merge" + string i) (doubleConv c)

/// The U: per-pixel scores for `classes`.
let unet cfg = level cfg.widths 0 >> named "head" (conv cfg.classes (k = 1))

/// For image-level labels: the U's per-pixel scores averaged over the image.
let unetClassifier cfg = unet cfg >> globalAvgPool

// ---- variants: data, not code -----------------------------------------------------------------

/// The paper's U-Net: 64 … 1024 channels, four poolings and four up-convolutions, 2 classes.
let unetPaper = { widths = [ 64; 128; 256; 512; 1024 ]; classes = 2 }

/// A quick one for 28×28 Fashion-MNIST (28 → 14 → 7 and back): three levels of 16 … 64 channels.
let unetFashion = { unetPaper with widths = [ 16; 32; 64 ]; classes = 10 }

model unet : image[1, 256, 256] -> image[2, 256, 256] = unet unetPaper

model unetSmall : image[1, 28, 28] -> image[10, 28, 28] = unet unetFashion

model unetSmallClassifier : image[1, 28, 28] -> logits[10] = unetClassifier unetFashion

train unetSmallClassifier {
    data      = fashionMnist { augment = [ hflip ] }
    loss      = crossEntropy
    optimizer = adamw (lr = 3e-3, weightDecay = 0.05)
    schedule  = cosine (warmup = 100)
    epochs    = 2
    batch     = 128
}
