// ConvNeXt (Liu et al. 2022): a 4×4 stride-4 patchify stem with a channel LayerNorm; four stages,
// each after the first entered by a channel LayerNorm and a 2×2 stride-2 conv; blocks of a 7×7
// depthwise conv, a channels-last LayerNorm, an inverted bottleneck (linear 4C → GELU →
// linear C), a layer scale γ on the channel axis (initially 1e-6) and the residual; the head
// pools globally, normalises and classifies. LayerNorm eps is 1e-6 throughout, as in the paper's
// code. Parameter names follow timm (stem, stages.i.downsample, stages.i.blocks.j.conv_dw, norm,
// mlp.fc1, mlp.fc2; the layer scale is ls.gamma; head.norm, head.fc). Blocks are code; variants are records (below).

/// x + γ · fc2(gelu(fc1(LN(dwconv x)))), computed channels-last between the permutes.
let convnextBlock (dropPath = 0.0) =
    fun x ->
        let c = List.item 1 x.shape
        let branch =
            x
            |> named "conv_dw" (conv c (k = 7) (padding = 3) (groups = c))
            |> permute [ 0; 2; 3; 1 ]
            |> named "norm" (layernorm (eps = 1e-6))
            |> named "mlp" (named "fc1" (linear (4 * c)) >> gelu >> named "fc2" (linear c))
            |> named "ls" (layerScale (init = 1e-6))
            |> permute [ 0; 3; 1; 2 ]
        x + (branch |> droppath dropPath)

/// Stage i: the downsampling (except the first stage) and `depth` blocks of `dim` channels.
let convnextStage i dim depth =
    let blocks = named "blocks" (repeat depth convnextBlock)
    let down = named "downsample" (layernorm (axis = 1) (eps = 1e-6) >> conv dim (k = 2) (stride = 2) (padding = 0))
    named (string i) (if i = 0 then blocks else down >> blocks)

/// Stem, stages and head.
let convnext cfg =
    named "stem" (conv (List.head cfg.dims) (k = cfg.stem) (stride = cfg.stem) (padding = 0) >> layernorm (axis = 1) (eps = 1e-6))
    >> named "stages" (seq (List.mapi (fun i dim -> convnextStage i dim (List.item i cfg.depths)) cfg.dims))
    >> globalAvgPool
    >> named "head" (named "norm" (layernorm (eps = 1e-6)) >> named "fc" (linear cfg.classes))

// ---- variants: data, not code -----------------------------------------------------------------

/// ConvNeXt-T: dims 96 … 768, depths 3-3-9-3, 1000 classes (timm convnext_tiny: 28,589,128).
let convnextT = { dims = [ 96; 192; 384; 768 ]; depths = [ 3; 3; 9; 3 ]; stem = 4; classes = 1000 }

/// A quick one for 28×28 Fashion-MNIST: a 2×2 stem (28 → 14 → 7 → 3), three stages of 16 … 64.
let convnextFashion = { convnextT with dims = [ 16; 32; 64 ]; depths = [ 1; 1; 2 ]; stem = 2; classes = 10 }

model convnextT : image[3, 224, 224] -> logits[1000] = convnext convnextT

model convnextSmall : image[1, 28, 28] -> logits[10] = convnext convnextFashion

train convnextSmall {
    data      = fashionMnist { augment = [ randomCrop 28 (pad = 2); hflip ] }
    loss      = crossEntropy (smoothing = 0.1)
    optimizer = adamw (lr = 2e-3, weightDecay = 0.05)
    schedule  = cosine (warmup = 100)
    epochs    = 2
    batch     = 128
}
