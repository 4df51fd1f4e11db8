// Image–text dual encoders: CLIP's text transformer (Radford et al., ICML 2021) and MobileCLIP's
// MCt (Vasu et al., CVPR 2024), with the heads that put both sides in one space. Facts from
// MobileCLIP, arXiv 2311.17049 (apple/ml-mobileclip text_encoder.py, modules/text/repmixer.py).
open fastvit
open vit

/// MobileCLIP's text RepMixer block: tokens [B, L, C] seen as a [B, C, 1, L] image, a RepMixer and
/// a ConvFFN with depthwise 1×k kernels (no 1×1 scale branch: its kernel height is 1), then back
/// to tokens. Re-parameterises like the image RepMixer.
let textRepMixerBlock (k = 11) (ratio = 4.0) (init = 1e-5) =
    fun x ->
        let c = List.last x.shape
        let len = List.item 1 x.shape
        let image = x |> permute [ 0; 2; 1 ] |> reshape [ c; 1; len ]
        let norm = image |> named "token_mixer" (named "norm" (named "identity" batchnorm))
        let mixed =
            image |> named "token_mixer" (named "mixer" (mobileOne c (k = [ 1; k ]) (groups = c) (act = identity) (scale = false)))
        let y = image + (mixed - norm |> named "token_mixer" (named "layer_scale" (layerScale (init = init))))
        let y = y + (y |> named "mlp" (convMlp (ratio = ratio) (k = [ 1; k ])) |> named "layer_scale" (layerScale (init = init)))
        y |> reshape [ c; len ] |> permute [ 0; 2; 1 ]

/// Token embedding plus learned positions, the blocks, a final LayerNorm, the features at the
/// end-of-text token, projected without bias into the shared space.
let textEncoder cfg (dim = 512) =
    fun ids ->
        let transformer i = vitBlock cfg.heads (causal = cfg.causal) (eps = 1e-5)
        let blocks =
            if cfg.kind = "mct" then
                [ textRepMixerBlock (k = cfg.kernel) ] @ List.init cfg.layers transformer @ [ textRepMixerBlock (k = cfg.kernel) ]
            else
                List.init cfg.layers transformer
        ids
        |> named "token_embedding" (embedding cfg.vocabulary cfg.width)
        |> named "positional_embedding" positionalEmbedding
        |> named "blocks" (seq blocks)
        |> named "ln_final" layernorm
        |> selectWhere cfg.eot ids
        |> named "text_projection" (linear dim (bias = false))

/// A dual encoder's outputs: L2-normalised image and text embeddings and the learnable logit
/// scale, initialised to ln(1/0.07) (the loss exponentiates it and clamps it at 100).
let clipOutputs image text =
    { image = image |> normalize
      text = text |> normalize
      logit_scale = param [] (init = 2.6592600) }

// ---- text variants (MobileCLIP, arXiv 2311.17049; apple/ml-mobileclip): data, not code -----------------------------------------

/// The 12-layer CLIP text transformer of MobileCLIP-S1/S2 (CLIP vocabulary, context 77).
let clipText = { kind = "transformer"; vocabulary = 49408; eot = 49407; width = 512; heads = 8; layers = 12; causal = false; kernel = 11 }
/// MobileCLIP-B's: the same, causal.
let clipTextCausal = { clipText with causal = true }
/// MCt (MobileCLIP-S0): four transformer layers between two text RepMixer blocks.
let mct = { clipText with kind = "mct"; layers = 4 }
