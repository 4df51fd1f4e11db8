// Image–text dual encoders: CLIP's text transformer (Radford et al., ICML 2021) and MobileCLIP's
// MCt (Vasu et al., CVPR 2024), with the heads that put both sides in one space. Facts from
// MobileCLIP, arXiv 2311.17049 (apple/ml-mobileclip text_encoder.py, modules/text/repmixer.py).
open fastvit
open vit

/// MobileCLIP's text RepMixer block: tokens [B, L, C] seen as a [B, C, 1, L] image, a RepMixer and
/// a ConvFFN with depthwise 1×k kernels (no 1×1 scale branch: its kernel height is 1), then back
/// to tokens. Re-parameterises like the image RepMixer. timm has no text tower, so the ConvFFN
/// keeps ml-mobileclip's name, `convffn` (modules/text/repmixer.py).
let textRepMixerBlock (k = 11) (ratio = 4.0) (init = 1e-5) =
    fun x ->
        let c = List.last x.shape
        let len = List.item 1 x.shape
        let image = x |> permute [ 0; 2; 1 ] |> reshape [ c; 1; len ]
        let norm = image |> named "token_mixer" (named "norm" (named "identity" batchnorm))
        let mixed =
            image |> named "token_mixer" (named "mixer" (mobileOne c (k = [ 1; k ]) (groups = c) (act = identity) (scale = false)))
        let y = image + (mixed - norm |> named "token_mixer" (named "layer_scale" (layerScale (init = init))))
        let y = y + (y |> named "convffn" (convMlp (ratio = ratio) (k = [ 1; k ])) |> named "layer_scale" (layerScale (init = init)))
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

/// A MobileCLIP dual encoder: an MCi image tower and a text tower (MobileCLIP, arXiv 2311.17049;
/// apple/ml-mobileclip clip.py), both projected to `dim`, under apple's prefixes
/// `image_encoder.model.` and `text_encoder.`, so `dsl import --from mobileclip` reads apple's
/// checkpoints into it.
let mobileclip v (dim = 512) image text =
    clipOutputs
        (image |> named "image_encoder" (named "model" (mci v.image (dim = dim))))
        (text |> named "text_encoder" (textEncoder v.text (dim = dim)))

/// CLIP's ViT image tower as OpenAI and open_clip build it (Radford et al., ICML 2021;
/// mlfoundations/open_clip transformer.py, VisionTransformer): patches embedded without bias, a
/// learned class token put before them, learned positions, a LayerNorm before the blocks and one
/// after, the class token's features projected without bias. `cfg` is a ViT variant (vit.dsl).
let clipVisual cfg (dim = 512) =
    fun image ->
        let patches =
            image |> named "conv1" (conv cfg.dim (k = cfg.patch) (stride = cfg.patch) (padding = 0) (bias = false)) |> imageToTokens
        // The one class embedding [D], broadcast to every image of the batch.
        let cls = (patches |> slice 1 (start = 0) (stop = 1)) * 0.0 + param [ cfg.dim ] (name = "class_embedding")
        concat 1 [ cls; patches ]
        |> named "positional_embedding" positionalEmbedding
        |> named "ln_pre" (layernorm (eps = 1e-5))
        |> named "blocks" (repeati cfg.depth (fun i -> vitBlock cfg.heads (ratio = cfg.ratio) (eps = 1e-5)))
        |> named "ln_post" (layernorm (eps = 1e-5))
        |> selectToken 0
        |> named "proj" (linear dim (bias = false))

/// An open_clip CLIP (mlfoundations/open_clip model.py, class CLIP): the ViT tower under
/// `visual.`, the text tower's parameters at the top, as open_clip's state dicts have them;
/// `dsl import --from open_clip` reads them. open_clip's text tower is causal.
let openclip v (dim = 512) image text =
    clipOutputs (image |> named "visual" (clipVisual v.image (dim = dim))) (text |> textEncoder v.text (dim = dim))

// ---- text variants (MobileCLIP, arXiv 2311.17049; apple/ml-mobileclip): data, not code -----------------------------------------

/// The 12-layer CLIP text transformer of MobileCLIP-S1/S2 (CLIP vocabulary, context 77).
let clipText = { kind = "transformer"; vocabulary = 49408; eot = 49407; width = 512; heads = 8; layers = 12; causal = false; kernel = 11 }
/// MobileCLIP-B's: the same, causal.
let clipTextCausal = { clipText with causal = true }
/// MCt (MobileCLIP-S0): four transformer layers between two text RepMixer blocks.
let mct = { clipText with kind = "mct"; layers = 4 }

// ---- MobileCLIP variants (apple/ml-mobileclip configs/mobileclip_s*.json): data, not code ----------------------------------------

/// MobileCLIP-S0: MCi0 and MCt; S1 and S2: MCi1 / MCi2 and the 12-layer text transformer.
let mobileclipS0 = { image = mci0; text = mct }
let mobileclipS1 = { image = mci1; text = clipText }
let mobileclipS2 = { image = mci2; text = clipText }

// ---- open_clip variants (open_clip model_configs/ViT-B-16.json, ViT-B-32.json): data ----------------------------------------------

/// ViT-B/16 at 224 px and ViT-B/32, with the 12-layer causal CLIP text transformer, embeddings of 512.
let openclipViTB16 = { image = vitBase16; text = clipTextCausal }
let openclipViTB32 = { image = { vitBase16 with patch = 32 }; text = clipTextCausal }
