// The FastViT family (Vasu et al., ICCV 2023) in its train-time, multi-branch form, with timm's
// parameter names. Blocks are code, variants are data (the tables at the end). Facts from
// FastViT, arXiv 2303.14189: apple/ml-fastvit models/fastvit.py, timm timm/models/fastvit.py.

// The MobileOne block and squeeze-excitation come from the MobileOne library.
open mobileone

/// RepLKNet-style large-kernel depthwise conv with a parallel small kernel (Ding et al. 2022).
/// `act` is identity for the original FastViT (its activation result is discarded there) and
/// GELU for the MobileCLIP/FastVLM encoders (FastViT, arXiv 2303.14189; apple/ml-fastvit models/fastvit.py).
let largeKernelConv cout (k = 7) (stride = 2) (small = 3) (se = false) (act = identity) =
    fun x ->
        let branch kk =
            named "conv" (conv cout (k = kk) (stride = stride) (groups = channels x) (bias = false))
            >> named "bn" batchnorm
        let y = (x |> named "large_conv" (branch k)) + (x |> named "small_conv" (branch small))
        let y = if se then y |> named "se" (squeezeExcite (ratio = 0.25)) else y
        y |> act

/// Downsampling between stages: large-kernel conv (stride 2) then a 1×1 MobileOne block.
let patchEmbed cout (se = false) (act = identity) =
    named "proj" (seq [ largeKernelConv cout (se = se) (act = act); mobileOne cout (k = 1) ])

/// Output stride 4: 3×3 s2, depthwise 3×3 s2, 1×1; FastViTHD drops the scale branches.
let convStem c (scale = true) =
    seq [ mobileOne c (stride = 2) (scale = scale)
          mobileOne c (stride = 2) (groups = c) (scale = scale)
          mobileOne c (k = 1) (scale = scale) ]

/// RepMixer: x + γ·(mixer(x) − norm(x)), both depthwise; re-parameterises into one depthwise conv.
let repMixer (k = 3) (init = 1e-5) =
    fun x ->
        let c = channels x
        let norm = x |> named "norm" (mobileOne c (k = k) (groups = c) (act = identity) (scale = false) (branches = 0))
        let mixed = x |> named "mixer" (mobileOne c (k = k) (groups = c) (act = identity))
        x + (mixed - norm |> named "layer_scale" (layerScale (init = init)))

/// ConvFFN: depthwise k×k conv-BN (7×7 in FastViT), then a 1×1 expansion, GELU and a 1×1 projection.
let convMlp (ratio = 3.0) (k = 7) =
    fun x ->
        let c = channels x
        x
        |> named "conv" (named "conv" (conv c (k = k) (groups = c) (bias = false)) >> named "bn" batchnorm)
        |> named "fc1" (conv (int (float c * ratio)) (k = 1))
        |> gelu
        |> named "fc2" (conv c (k = 1))

let repMixerBlock (ratio = 3.0) (init = 1e-5) (dropPath = 0.0) =
    fun x ->
        let x = x |> named "token_mixer" (repMixer (init = init))
        x + (x |> named "mlp" (convMlp (ratio = ratio)) |> named "layer_scale" (layerScale (init = init)) |> droppath dropPath)

/// norm → multi-head self-attention over the H·W tokens (head size 32, no q/k/v bias) → ConvFFN,
/// each residual with layer scale and drop path.
let attentionBlock (ratio = 4.0) (init = 1e-5) (dropPath = 0.0) (norm = batchnorm) (headDim = 32) =
    fun x ->
        let mhsa =
            x |> named "norm" norm |> imageToTokens
            |> named "token_mixer" (attention (channels x / headDim) (qkvBias = false))
            |> tokensToImage (List.item 2 x.shape) (List.item 3 x.shape)
        let x = x + (mhsa |> named "layer_scale_1" (layerScale (init = init)) |> droppath dropPath)
        x + (x |> named "mlp" (convMlp (ratio = ratio)) |> named "layer_scale_2" (layerScale (init = init)) |> droppath dropPath)

/// Conditional positional encoding: x + depthwise 7×7 conv (Chu et al. 2021).
let repCpe = fun x -> x + (x |> named "pos_enc" (conv (channels x) (k = 7) (groups = channels x)))

/// Stochastic depth grows linearly with the block's global index (FastViT, arXiv 2303.14189; apple/ml-fastvit models/fastvit.py).
let dropPathAt cfg stage block =
    let before = List.sum (List.take stage cfg.layers)
    let total = List.sum cfg.layers
    if total > 1 then cfg.dropPath * float (before + block) / float (total - 1) else 0.0

/// Stage i: downsampling (from the second stage on), positional encoding before attention
/// stages, then the blocks.
let fastvitStage cfg i =
    let dim = List.item i cfg.dims
    let attn = List.item i cfg.mixers = "attention"
    let down = if i = 0 then [] else [ named "downsample" (patchEmbed dim (se = List.item i cfg.downSe) (act = cfg.downAct)) ]
    let cpe = if attn then [ named "pos_emb" repCpe ] else []
    let block j =
        if attn then attentionBlock (ratio = cfg.ratio) (init = cfg.init) (dropPath = dropPathAt cfg i j) (norm = cfg.attnNorm)
        else repMixerBlock (ratio = cfg.ratio) (init = cfg.init) (dropPath = dropPathAt cfg i j)
    seq (down @ cpe @ [ named "blocks" (repeati (List.item i cfg.layers) block) ])

let fastvitStem cfg = named "stem" (convStem (List.head cfg.dims) (scale = cfg.stemScale))

/// The network up to the final feature map: stem, stages with downsampling and (before
/// attention stages) positional encoding.
let fastvitFeatures cfg =
    fastvitStem cfg
    >> named "stages" (seq (List.init (List.length cfg.layers) (fun i -> named (string i) (fastvitStage cfg i))))

/// The four stages' outputs as named outputs, strides 4, 8, 16 and 32 (timm's `features_only`
/// / `forward_intermediates`; dense heads read them). The parameters are named as
/// `fastvitFeatures`' are, so a trained classifier's or MCi's weights load into it; a model
/// returns the stages it wants: `let f = image |> fastvitStages fastvitT8 in { c4 = f.stage2; c5 = f.stage3 }`.
let fastvitStages cfg =
    fun x ->
        let at i h = h |> named "stages" (named (string i) (fastvitStage cfg i))
        let s0 = x |> fastvitStem cfg |> at 0
        let s1 = s0 |> at 1
        let s2 = s1 |> at 2
        let s3 = s2 |> at 3
        { stage0 = s0; stage1 = s1; stage2 = s2; stage3 = s3 }

/// conv_exp: depthwise 3×3 MobileOne block to 2·C with squeeze-excitation.
let finalConv cfg =
    let c = List.last cfg.dims
    named "final_conv" (mobileOne (2 * c) (groups = c) (se = true))

/// FastViT classifier: features, conv_exp, global average pool, linear head.
let fastvit cfg (classes = 1000) =
    fastvitFeatures cfg >> finalConv cfg >> globalAvgPool >> named "head" (named "fc" (linear classes))

/// MobileCLIP image encoder (MCi): features, conv_exp, then GlobalPool2D — the mean over H, W
/// projected without bias into the shared image–text space (FastViT, arXiv 2303.14189; apple/ml-fastvit models/fastvit.py; MobileCLIP, arXiv 2311.17049; apple/ml-mobileclip).
let mci cfg (dim = 512) =
    fastvitFeatures cfg >> finalConv cfg >> named "head" (globalAvgPool >> named "proj" (linear dim (bias = false)))

/// The conv_exp map as a token grid [B, H·W, 2C]: what FastVLM feeds its projector (arXiv 2412.13303).
let fastvitTokens cfg = fastvitFeatures cfg >> finalConv cfg >> imageToTokens

/// LayerNorm over the channels of a [B, C, H, W] map (FastViTHD's attention norm).
let channelLayernorm = permute [ 0; 2; 3; 1 ] >> layernorm >> permute [ 0; 3; 1; 2 ]

// ---- variants: data, not code ------------------------------------------------------------

let fastvitBase =
    { layers = [ 2; 2; 6; 2 ]; dims = [ 64; 128; 256; 512 ]; ratio = 4.0; init = 1e-5; dropPath = 0.0
      mixers = [ "repmixer"; "repmixer"; "repmixer"; "repmixer" ]
      attnNorm = batchnorm; stemScale = true; downSe = [ false; false; false; false ]; downAct = identity }

let attentionLast = [ "repmixer"; "repmixer"; "repmixer"; "attention" ]

let fastvitT8 = { fastvitBase with layers = [ 2; 2; 4; 2 ]; dims = [ 48; 96; 192; 384 ]; ratio = 3.0 }
let fastvitT12 = { fastvitBase with ratio = 3.0 }
let fastvitS12 = fastvitBase
let fastvitSA12 = { fastvitBase with mixers = attentionLast }
let fastvitSA24 = { fastvitBase with layers = [ 4; 4; 12; 4 ]; mixers = attentionLast }
let fastvitSA36 = { fastvitBase with layers = [ 6; 6; 18; 6 ]; mixers = attentionLast; init = 1e-6 }
let fastvitMA36 = { fastvitSA36 with dims = [ 76; 152; 304; 608 ] }

// MobileCLIP's MCi encoders: FastViT with MLP ratio 3, attention in stage 4, squeeze-excitation in
// the downsamplings into stages 3 and 4, and the large-kernel conv's activation kept (§9.1, §5.2).
let mciBase = { fastvitBase with ratio = 3.0; mixers = attentionLast; downSe = [ false; false; true; true ]; downAct = gelu }
let mci0 = { mciBase with layers = [ 2; 6; 10; 2 ] }
let mci1 = { mciBase with layers = [ 4; 12; 20; 4 ] }
let mci2 = { mciBase with layers = [ 4; 12; 24; 4 ]; dims = [ 80; 160; 320; 640 ] }

// FastViTHD (= MCi3 layout; FastVLM's encoder): five stages, output stride 64, attention in
// stages 4 and 5 with channel LayerNorm, a stem without scale branches (§1.1).
let fastvitHD =
    { fastvitBase with
        layers = [ 2; 12; 24; 4; 2 ]; dims = [ 96; 192; 384; 768; 1536 ]
        mixers = [ "repmixer"; "repmixer"; "repmixer"; "attention"; "attention" ]
        attnNorm = channelLayernorm; stemScale = false; downSe = [ false; false; false; false; false ]; downAct = gelu }
