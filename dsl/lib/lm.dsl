// Decoder language models (shared/papers/PAPERS.md §4.2): pre-norm blocks with causal attention
// (grouped-query heads, rotary positions, per-head qk-norm as in OpenELM) and a SwiGLU FFN whose
// fused projection w12 is split into gate and value, as in OpenLM. Blocks are code; variants
// are records (at the end).

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

/// h = x + attention(norm x); out = h + ffn(norm h), with RMSNorm and causal attention.
let decoderBlock cfg =
    fun x ->
        let d = List.last x.shape
        let attend = attention cfg.heads (causal = true) (kvHeads = cfg.kvHeads) (rope = cfg.rope) (qkNorm = cfg.qkNorm) (qkvBias = false) (bias = false)
        let h = x + (x |> named "attention_norm" rmsnorm |> named "attention" attend)
        h + (h |> named "ffn_norm" rmsnorm |> named "feed_forward" (swiglu (swigluHidden d)))

/// Token embedding, the blocks, a final RMSNorm and an untied output projection to the vocabulary.
let decoder cfg =
    named "tok_embeddings" (embedding cfg.vocabulary cfg.width)
    >> named "layers" (seq (List.init cfg.layers (fun i -> decoderBlock cfg)))
    >> named "norm" rmsnorm
    >> named "output" (linear cfg.vocabulary (bias = false))

// ---- variants: data, not code -----------------------------------------------------------------

/// A byte-level toy decoder for tests and small corpora (257 ids: bytes and end-of-text).
let lmTiny = { vocabulary = 257; width = 64; layers = 2; heads = 4; kvHeads = 2; rope = 10000.0; qkNorm = true }
