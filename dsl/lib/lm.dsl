// Decoder language models (mlfoundations/open_lm open_lm/model.py): pre-norm blocks with causal attention
// (grouped-query heads, rotary positions, qk-norm per head as in OpenELM or over the full width
// as in OpenLM) and a SwiGLU FFN whose fused projection w12 is split into gate and value, as in
// OpenLM. Parameter names follow OpenLM (tok_embeddings, layers.i.attention_norm, attention,
// ffn_norm, feed_forward.w12/w3, norm, output) except inside the fused attention op, whose
// projections are qkv and proj (OpenLM: in_proj, out_proj; docs/lm.md maps them). Blocks are
// code; variants are records (at the end).

/// OpenLM's FFN width: 256 · ⌈⌊8d/3⌋ / 256⌉ (d 1024 → 2816, d 2048 → 5632).
let swigluHidden d = 256 * ceil (float (8 * d / 3) / 256.0)

/// SwiGLU: w12 projects to [gate; value] (2·hidden), silu(gate) · value, w3 projects back; no biases.
let swiglu hidden =
    fun x ->
        let d = List.last x.shape
        let both = x |> named "w12" (linear (2 * hidden) (bias = false))
        let gate = both |> narrow (-1) 0 hidden |> silu
        let value = both |> narrow (-1) hidden hidden
        gate * value |> named "w3" (linear d (bias = false))

/// MobileNet's make_divisible, which OpenELM rounds its widths with: v to the nearest multiple of
/// the divisor (at least the divisor), one multiple more if that lost over 10% of v.
let makeDivisible v divisor =
    let rounded = max divisor (int (v + float divisor / 2.0) / divisor * divisor)
    if float rounded < 0.9 * v then rounded + divisor else rounded

/// n values evenly from a to b (numpy's linspace), each rounded to 2 decimals as OpenELM's config does.
let linspace2 a b n =
    [ for i in [ 0 .. n - 1 ] -> float (round ((a + (b - a) * float i / float (n - 1)) * 100.0)) / 100.0 ]

/// The width of one head: the variant's headDim, or width / heads when it is 0.
let headWidth cfg = if cfg.headDim = 0 then cfg.width / cfg.heads else cfg.headDim

/// Each layer's query heads, key/value heads and FFN width. Uniform (heads, kvHeads and OpenLM's
/// swigluHidden) unless the variant has OpenELM's layer-wise scaling (corenet's OpenELM config,
/// mlfoundations/open_lm open_lm/model.py): layer i's query width is makeDivisible(d · q_i, headDim · gqaGroups) with q_i
/// from linspace2 over qkvMultipliers, its key/value heads are the query heads / gqaGroups, and
/// its FFN width is makeDivisible(d · f_i, 256) with f_i from linspace2 over ffnMultipliers.
let layerShapes cfg =
    if List.length cfg.qkvMultipliers = 0 then
        List.init cfg.layers (fun i -> { heads = cfg.heads; kvHeads = cfg.kvHeads; hidden = swigluHidden cfg.width })
    else
        let hd = headWidth cfg
        let qkv = linspace2 (List.head cfg.qkvMultipliers) (List.last cfg.qkvMultipliers) cfg.layers
        let ffn = linspace2 (List.head cfg.ffnMultipliers) (List.last cfg.ffnMultipliers) cfg.layers
        qkv
        |> List.mapi (fun i q ->
            let heads = makeDivisible (float cfg.width * q) (hd * cfg.gqaGroups) / hd
            let hidden = makeDivisible (float cfg.width * List.item i ffn) 256
            { heads = heads; kvHeads = heads / cfg.gqaGroups; hidden = hidden })

/// The variant's norm: "rms" (RMSNorm, eps 1e-6, as Llama and OpenELM) or "layer" (OpenLM's
/// gain-only LayerNorm: a weight, no bias, eps 1e-5).
let norm cfg = if cfg.norm = "layer" then layernorm (bias = false) else rmsnorm

/// h = x + attention(norm x); out = h + ffn(norm h), causal attention with this layer's heads.
let decoderBlock cfg shape =
    fun x ->
        let attend =
            attention shape.heads (causal = true) (kvHeads = shape.kvHeads) (headDim = cfg.headDim) (rope = cfg.rope)
                (qkNorm = cfg.qkNorm) (qkLayerNorm = cfg.qkLayerNorm) (qkvBias = false) (bias = false) (kernel = cfg.kernel)
        let h = x + (x |> named "attention_norm" (norm cfg) |> named "attention" attend)
        h + (h |> named "ffn_norm" (norm cfg) |> named "feed_forward" (swiglu shape.hidden))

/// The output projection to the vocabulary: its own weight, or (tied) the token embedding's table.
let outputProjection cfg =
    if cfg.tied then tie "tok_embeddings" (linear cfg.vocabulary (bias = false))
    else named "output" (linear cfg.vocabulary (bias = false))

/// Token embedding, the blocks, a final norm and the output projection.
let decoder cfg =
    named "tok_embeddings" (embedding cfg.vocabulary cfg.width)
    >> named "layers" (seq (List.map (decoderBlock cfg) (layerShapes cfg)))
    >> named "norm" (norm cfg)
    >> outputProjection cfg

// ---- variants: data, not code -----------------------------------------------------------------

/// Every field a variant has; the variants below change what differs. kvHeads 0 = heads,
/// headDim 0 = width / heads; qkvMultipliers = [] means uniform layers; kernel "math" writes
/// attention's scores and softmax out instead of libtorch's fused SDPA (the same function).
let lmBase =
    { vocabulary = 257; width = 64; layers = 2; heads = 4; kvHeads = 0; headDim = 0; rope = 10000.0
      norm = "rms"; qkNorm = false; qkLayerNorm = false; tied = false
      qkvMultipliers = []; ffnMultipliers = []; gqaGroups = 1; kernel = "sdpa" }

/// A byte-level toy decoder for tests and small corpora (257 ids: bytes and end-of-text):
/// pre-RMSNorm, GQA 4/2 heads, RoPE, per-head qk-norm.
let lmTiny = { lmBase with kvHeads = 2; qkNorm = true }

/// OpenLM (mlfoundations/open_lm open_lm/model.py; a toy size of ours): gain-only LayerNorm, qk-norm over the full width,
/// RoPE, head width d/heads, untied output; byte-level toy size.
let openlmTiny = { lmBase with width = 128; norm = "layer"; qkLayerNorm = true }

/// OpenLM-411M (DCLM's 400M-1x): d 1024, 24 layers, 8 heads, FFN 2816; GPT-NeoX-20B's vocabulary
/// padded to 50432 as in DCLM (DCLM, arXiv 2406.11794).
let openlm411m = { openlmTiny with vocabulary = 50432; width = 1024; layers = 24; heads = 8 }

/// OpenLM-1B (DCLM's 1B-1x): d 2048, 24 layers, 16 heads, FFN 5632.
let openlm1b = { openlm411m with width = 2048; heads = 16 }

/// OpenELM (OpenELM, arXiv 2404.14619; apple/corenet): pre-RMSNorm, per-head qk RMSNorm, RoPE, GQA with 4 query heads per
/// key/value head, layer-wise scaling of heads (×0.5 → ×1.0) and FFN width (×0.5 → ×4.0), tied
/// embeddings; byte-level toy size with head width 16.
let openelmTiny =
    { lmBase with width = 128; layers = 4; headDim = 16; qkNorm = true; tied = true
                  qkvMultipliers = [ 0.5; 1.0 ]; ffnMultipliers = [ 0.5; 4.0 ]; gqaGroups = 4 }

/// OpenELM-270M: 16 layers, d 1280, head width 64, vocabulary 32128 (≈ 271.7M parameters).
let openelm270m = { openelmTiny with vocabulary = 32128; width = 1280; layers = 16; headDim = 64 }
