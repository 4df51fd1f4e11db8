// ResNet-18 (He et al. 2016) in torchvision's layout: a 7×7 stride-2 stem, 3×3 max pooling,
// four stages of two BasicBlocks, global average pooling and a linear classifier. A block that
// changes the width or the resolution has a 1×1 stride-2 convolution + BatchNorm shortcut
// (`downsample`). The last BatchNorm γ of every residual branch starts at zero (torchvision's
// zero_init_residual), declared once with an init policy with torchvision's Kaiming-normal convs. Parameter names are torchvision's
// (conv1, bn1, layer1.0.conv1, …, layer2.0.downsample.0, fc). Blocks are code; variants are
// records (below).

/// conv-BN-ReLU-conv-BN, plus the shortcut, then ReLU.
let basicBlock planes stride =
    fun x ->
        let cin = List.item 1 x.shape
        let branch =
            x
            |> named "conv1" (conv planes (k = 3) (stride = stride) (padding = 1) (bias = false))
            |> named "bn1" batchnorm
            |> relu
            |> named "conv2" (conv planes (k = 3) (padding = 1) (bias = false))
            |> named "bn2" batchnorm
        let shortcut =
            if stride <> 1 || cin <> planes then
                x |> named "downsample" (conv planes (k = 1) (stride = stride) (bias = false) >> batchnorm)
            else
                x
        relu (branch + shortcut)

/// Stage i: `blocks` BasicBlocks of `planes` channels, the first one strided (except stage 0).
let resStage i planes blocks =
    named ("layer" + string (i + 1))
        (seq [ for j in [ 0 .. blocks - 1 ] -> basicBlock planes (if i > 0 && j = 0 then 2 else 1) ])

/// The stem: torchvision's 7×7 stride-2 convolution and 3×3 stride-2 max pooling, or, for small
/// images, a 3×3 stride-1 convolution without pooling.
let stem cfg =
    let c = named "conv1" (conv (List.head cfg.widths) (k = cfg.stemKernel) (stride = cfg.stemStride) (padding = cfg.stemKernel / 2) (bias = false))
            >> named "bn1" batchnorm
            >> relu
    if cfg.stemPool then c >> maxpool 3 (stride = 2) (padding = 1) else c

/// The whole network with torchvision's initialisation: Kaiming-normal (fan-out, ReLU) convolutions
/// and the zero-initialised last γ of each residual branch.
let resnet cfg =
    initPolicy [ { op = "conv2d"; init = Init.kaimingNormal (mode = "fanOut") (nonlinearity = "relu") }
                 { path = "layer*.bn2.weight"; init = Init.zeros } ]
        (stem cfg
         >> seq (List.mapi (fun i planes -> resStage i planes (List.item i cfg.blocks)) cfg.widths)
         >> globalAvgPool
         >> named "fc" (linear cfg.classes))

// ---- variants: data, not code -----------------------------------------------------------------

/// ResNet-18: two BasicBlocks per stage, widths 64 … 512, 1000 classes (11,689,512 parameters).
let resnet18 = { widths = [ 64; 128; 256; 512 ]; blocks = [ 2; 2; 2; 2 ]; stemKernel = 7; stemStride = 2; stemPool = true; classes = 1000 }

/// A quick one for 28×28 Fashion-MNIST: one block per stage, widths 16 … 128, a 3×3 stem.
let resnetFashion = { resnet18 with widths = [ 16; 32; 64; 128 ]; blocks = [ 1; 1; 1; 1 ]; stemKernel = 3; stemStride = 1; stemPool = false; classes = 10 }

model resnet18 : image[3, 224, 224] -> logits[1000] = resnet resnet18

model resnetSmall : image[1, 28, 28] -> logits[10] = resnet resnetFashion

train resnetSmall {
    data      = fashionMnist { augment = [ randomCrop 28 (pad = 2); hflip ] }
    loss      = crossEntropy
    optimizer = sgd (lr = 0.1, momentum = 0.9, weightDecay = 5e-4)
    schedule  = cosine (warmup = 100)
    epochs    = 2
    batch     = 128
}
