// The decoder of the KV-cache benchmark below: lm.dsl's byte-level blocks (pre-RMSNorm, GQA 4/2 heads,
// RoPE, qk-norm, SwiGLU) at width 128, 4 layers, a context of 256 tokens.
open lm

model lm128 : tokens[256] -> logits[256, 257] = decoder { lmTiny with width = 128; layers = 4 }

// The KV cache's speed-up, measured by `dsl run bench/generate.dsl`: greedy generation of 63 and
// 255 new tokens after a one-token prompt (random weights, no early stop), with and without the
// cache in alternating rounds; the ratio is the median of the rounds'.
experiment main =
    let rows =
        [ for tokens in [ 63; 255 ] ->
            let g = Stage.generate lm128 (tokens = tokens) (rounds = 7)
            { new_tokens = tokens; cached_per_s = metric g "cached_per_s"; uncached_per_s = metric g "uncached_per_s"; ratio = metric g "cache_ratio" } ]

    { tables = [ table "generate" rows (dir = "../docs") ] }
