// Vision Transformer (Dosovitskiy et al., ICLR 2021) with timm's parameter names and a global
// average-pool head (timm's `global_pool='avg'`, no class token), plus the convolutional-stem
// variant of Xiao et al. (NeurIPS 2021, "Early convolutions help transformers see better").
// Blocks are code; variants are records (at the end).

/// Linear → GELU → linear, hidden = ratio × width.
let vitMlp (ratio = 4.0) =
    fun x ->
        let d = List.last x.shape
        x |> named "fc1" (linear (int (float d * ratio))) |> gelu |> named "fc2" (linear d)

/// Pre-norm transformer block: x + attn(norm1 x), then x + mlp(norm2 x). `causal` masks each
/// token to those before it (a decoder).
let vitBlock heads (ratio = 4.0) (dropPath = 0.0) (causal = false) (eps = 1e-6) =
    fun x ->
        let x = x + (x |> named "norm1" (layernorm (eps = eps)) |> named "attn" (attention heads (causal = causal)) |> droppath dropPath)
        x + (x |> named "norm2" (layernorm (eps = eps)) |> named "mlp" (vitMlp (ratio = ratio)) |> droppath dropPath)

/// Non-overlapping p×p patches, linearly embedded: one strided convolution.
let patchEmbedding dim (patch = 16) =
    named "patch_embed" (named "proj" (conv dim (k = patch) (stride = patch) (padding = 0)))

/// Stride-2 3×3 conv-BN-ReLU stages, then a 1×1 projection: the same stride as 16×16 patches.
let convStemEmbedding dim (widths = [ 48; 96; 192; 384 ]) =
    named "patch_embed" (seq ([ for w in widths -> convBnAct w (stride = 2) ] @ [ conv dim (k = 1) ]))

/// Tokens of the embedded image with learned positions, through `depth` blocks, normalised.
let vitEncoder cfg =
    let embed = if cfg.stem = "conv" then convStemEmbedding cfg.dim else patchEmbedding cfg.dim (patch = cfg.patch)
    let block i = vitBlock cfg.heads (ratio = cfg.ratio) (dropPath = cfg.dropPath * float i / float (max 1 (cfg.depth - 1)))
    embed >> imageToTokens >> named "pos_embed" positionalEmbedding
    >> named "blocks" (repeati cfg.depth block) >> named "norm" (layernorm (eps = 1e-6))

/// Classifier: the encoder, the mean over tokens, a linear head.
let vit cfg (classes = 1000) =
    vitEncoder cfg >> permute [ 0; 2; 1 ] >> globalAvgPool >> named "head" (linear classes)

// ---- variants ----------------------------------------------------------------------------

let vitBase16 = { patch = 16; dim = 768; depth = 12; heads = 12; ratio = 4.0; dropPath = 0.0; stem = "patch" }
let vitSmall16 = { vitBase16 with dim = 384; heads = 6 }
let vitTiny16 = { vitBase16 with dim = 192; heads = 3 }
let vitBaseConvStem = { vitBase16 with stem = "conv" }
let vitSmallConvStem = { vitSmall16 with stem = "conv" }
let vitTinyConvStem = { vitTiny16 with stem = "conv" }
