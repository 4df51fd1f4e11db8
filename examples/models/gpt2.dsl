// GPT-2 (Radford et al. 2019): token embedding plus learned positions, pre-LayerNorm blocks of
// causal self-attention and a 4× MLP with tanh-approximated GELU, a final LayerNorm, and the
// output projection tied to the token embedding. Initialisation as GPT-2's: N(0, 0.02) for the
// linear, attention and embedding weights, zero biases, and the two residual output projections
// of every block (attn.proj and mlp.c_proj) N(0, 0.02/√(2L)), declared with one init policy.
// Parameter names follow GPT-2's (wte, wpe, h.i.ln_1, attn, ln_2, mlp.c_fc, mlp.c_proj, ln_f)
// except inside the fused attention op (qkv = c_attn, proj = c_proj). Blocks are code; variants
// are records (below).

/// h = x + attn(ln_1 x); out = h + mlp(ln_2 h).
let gpt2Block cfg =
    fun x ->
        let d = List.last x.shape
        let h = x + (x |> named "ln_1" layernorm |> named "attn" (attention cfg.heads (causal = true)))
        let mlp = named "c_fc" (linear (4 * d)) >> geluTanh >> named "c_proj" (linear d)
        h + (h |> named "ln_2" layernorm |> named "mlp" mlp)

/// GPT-2's initialisation, over the whole model: a later rule wins, so the residual projections'
/// rule comes after the general ones.
let gpt2Init cfg =
    initPolicy
        [ { op = "linear"; bias = false; init = Init.normal 0.02 }
          { op = "attention"; bias = false; init = Init.normal 0.02 }
          { op = "embedding"; init = Init.normal 0.02 }
          { op = "positionalEmbedding"; init = Init.normal 0.02 }
          { bias = true; init = Init.zeros }
          { path = "h.*.attn.proj.weight"; init = Init.normal (0.02 / sqrt (2.0 * float cfg.layers)) }
          { path = "h.*.mlp.c_proj.weight"; init = Init.normal (0.02 / sqrt (2.0 * float cfg.layers)) } ]

/// Embeddings, blocks, final norm, and the logits through the token embedding's table.
let gpt2 cfg =
    gpt2Init cfg
        (named "wte" (embedding cfg.vocabulary cfg.width)
         >> named "wpe" positionalEmbedding
         >> named "h" (repeat cfg.layers (gpt2Block cfg))
         >> named "ln_f" layernorm
         >> tie "wte" (linear cfg.vocabulary (bias = false)))

// ---- variants: data, not code -----------------------------------------------------------------

/// GPT-2 small: 12 layers of width 768 with 12 heads, the r50k vocabulary (124,439,808 parameters
/// at context 1024, the embedding counted once).
let gpt2Small = { vocabulary = 50257; width = 768; layers = 12; heads = 12 }

/// A quick byte-level one: 257 ids (bytes and end-of-text), width 128, 4 layers of 4 heads; it
/// trains on the King James Bible of `dsl data bible-kjv --out data/kjv-books.txt` (examples/lm).
let gpt2Bytes = { gpt2Small with vocabulary = 257; width = 128; layers = 4; heads = 4 }

model gpt2 : tokens[1024] -> logits[1024, 50257] = gpt2 gpt2Small

model gpt2Tiny : tokens[64] -> logits[64, 257] = gpt2 gpt2Bytes

train gpt2Tiny {
    data      = corpus "../../data/kjv-books.txt" (format = "fortunes") (tokenizer = "bytes") (validation = 0.05)
    loss      = nextToken
    optimizer = adamw (lr = 1e-3, weightDecay = 0.1)
    schedule  = cosine (warmup = 50)
    epochs    = 1
    batch     = 32
}
