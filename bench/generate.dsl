// The decoder of bench/generate.sh: lm.dsl's byte-level blocks (pre-RMSNorm, GQA 4/2 heads,
// RoPE, qk-norm, SwiGLU) at width 128, 4 layers, a context of 256 tokens.
open lm

model lm128 : tokens[256] -> logits[256, 257] = decoder { lmTiny with width = 128; layers = 4 }
