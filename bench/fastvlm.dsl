// FastVLM's claim at small scale (Vasu et al., CVPR 2025; arXiv 2412.13303): the
// time to the first token is vision encoder + projector + the LLM's prefill over the image
// tokens and the prompt. FastViTHD (output stride 64) emits 4× fewer tokens than a 4-stage
// FastViT (MCi2, stride 32) and 16× fewer than ViT-B/16, so its prefill stays short as the
// resolution grows. `bash bench/fastvlm.sh` times every pair below (Dsl.Bench --ttft).
open fastvit
open vit

// The decoder stands in for FastVLM's Qwen2 LLM, scaled down to run on two CPU cores
// (Qwen2-0.5B: width 896, 24 layers).
let width = 512
let layers = 4
let vocabulary = 32000

/// LLaVA's mlp2x_gelu projector, as in FastVLM: linear into the decoder's width, GELU, linear.
let projector = named "mm_projector" (seq [ linear width; gelu; linear width ])

/// Next-token logits after prefill: the projected image tokens, then the embedded prompt,
/// through a pre-norm causal decoder; the logits of the last position.
let vlm encoder image prompt =
    let visual = image |> named "vision_tower" encoder |> projector
    let text = prompt |> named "embed_tokens" (embedding vocabulary width)
    concat 1 [ visual; text ]
    |> named "layers" (repeati layers (fun _ -> vitBlock (width / 64) (causal = true)))
    |> named "norm" layernorm
    |> selectToken (-1)
    |> named "lm_head" (linear vocabulary (bias = false))

let fastvithd = fastvitTokens fastvitHD
let fastvit4 = fastvitTokens mci2
let vitB16 = vitEncoder vitBase16

// Each pair: the encoder alone (tokens out), and the whole model to the first token.
model fastvithd256Encoder : image[3, 256, 256] -> tensor[16, 3072] = fastvithd
model fastvithd256Vlm (image : image[3, 256, 256]) (prompt : tokens[32]) = vlm fastvithd image prompt
model fastvithd512Encoder : image[3, 512, 512] -> tensor[64, 3072] = fastvithd
model fastvithd512Vlm (image : image[3, 512, 512]) (prompt : tokens[32]) = vlm fastvithd image prompt
model fastvithd768Encoder : image[3, 768, 768] -> tensor[144, 3072] = fastvithd
model fastvithd768Vlm (image : image[3, 768, 768]) (prompt : tokens[32]) = vlm fastvithd image prompt
model fastvithd1024Encoder : image[3, 1024, 1024] -> tensor[256, 3072] = fastvithd
model fastvithd1024Vlm (image : image[3, 1024, 1024]) (prompt : tokens[32]) = vlm fastvithd image prompt

model fastvit256Encoder : image[3, 256, 256] -> tensor[64, 1280] = fastvit4
model fastvit256Vlm (image : image[3, 256, 256]) (prompt : tokens[32]) = vlm fastvit4 image prompt
model fastvit512Encoder : image[3, 512, 512] -> tensor[256, 1280] = fastvit4
model fastvit512Vlm (image : image[3, 512, 512]) (prompt : tokens[32]) = vlm fastvit4 image prompt
model fastvit768Encoder : image[3, 768, 768] -> tensor[576, 1280] = fastvit4
model fastvit768Vlm (image : image[3, 768, 768]) (prompt : tokens[32]) = vlm fastvit4 image prompt
model fastvit1024Encoder : image[3, 1024, 1024] -> tensor[1024, 1280] = fastvit4
model fastvit1024Vlm (image : image[3, 1024, 1024]) (prompt : tokens[32]) = vlm fastvit4 image prompt

model vitB16x256Encoder : image[3, 256, 256] -> tensor[256, 768] = vitB16
model vitB16x256Vlm (image : image[3, 256, 256]) (prompt : tokens[32]) = vlm vitB16 image prompt
model vitB16x512Encoder : image[3, 512, 512] -> tensor[1024, 768] = vitB16
model vitB16x512Vlm (image : image[3, 512, 512]) (prompt : tokens[32]) = vlm vitB16 image prompt
model vitB16x768Encoder : image[3, 768, 768] -> tensor[2304, 768] = vitB16
model vitB16x768Vlm (image : image[3, 768, 768]) (prompt : tokens[32]) = vlm vitB16 image prompt
model vitB16x1024Encoder : image[3, 1024, 1024] -> tensor[4096, 768] = vitB16
model vitB16x1024Vlm (image : image[3, 1024, 1024]) (prompt : tokens[32]) = vlm vitB16 image prompt
