// FastVLM's claim at small scale (Vasu et al., CVPR 2025; arXiv 2412.13303): the
// time to the first token is vision encoder + projector + the LLM's prefill over the image
// tokens and the prompt. FastViTHD (output stride 64) emits 4× fewer tokens than a 4-stage
// FastViT (MCi2, stride 32) and 16× fewer than ViT-B/16, so its prefill stays short as the
// resolution grows. `dsl run bench/fastvlm.dsl` times every pair below (the experiment at the end).
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
let firstToken encoder image prompt =
    let visual = image |> named "vision_tower" encoder |> projector
    let text = prompt |> named "embed_tokens" (embedding vocabulary width)
    concat 1 [ visual; text ]
    |> named "layers" (repeati layers (fun _ -> vitBlock (width / 64) (causal = true)))
    |> named "norm" layernorm
    |> selectToken (-1)
    |> named "lm_head" (linear vocabulary (bias = false))

// The encoders compared (variants are data): FastViTHD's output stride is 64, a 4-stage FastViT's
// (MCi2) 32, ViT-B/16's 16; each emits (px / stride)² tokens of `channels` features.
let fastvithd = { name = "fastvithd"; layer = fastvitTokens fastvitHD; stride = 64; channels = 3072 }
let fastvit = { name = "fastvit"; layer = fastvitTokens mci2; stride = 32; channels = 1280 }
let vitB16 = { name = "vitB16"; layer = vitEncoder vitBase16; stride = 16; channels = 768 }
let encoders = [ fastvithd; fastvit; vitB16 ]
let resolutions = [ 256; 512; 768; 1024 ]

/// The encoder alone, tokens out: `dsl show bench/fastvlm.dsl --model "encoder fastvithd 512"`.
model encoder e px : image[3, px, px] -> tensor[(px / e.stride) * (px / e.stride), e.channels] = e.layer

/// The whole model to the first token: `--model "vlm vitB16 1024"`.
model vlm e px (image : image[3, px, px]) (prompt : tokens[32]) = firstToken e.layer image prompt

/// Time to first token against resolution: every encoder alone and with the decoder, batch 1,
/// in the deploy form (re-parameterised, as FastVLM ships FastViTHD). `dsl run bench/fastvlm.dsl`
/// writes docs/fastvlm-ttft.{tsv,md,png}.
experiment ttft =
    let timed m = metric (Stage.bench m (deploy = true) (warmup = 2) (repeats = 5)) "median_ms"

    let rows =
        [ for px in resolutions ->
            [ for e in encoders ->
                {
                    family = e.name
                    px = px
                    tokens = (px / e.stride) * (px / e.stride)
                    encoder_ms = timed (encoder e px)
                    prefill_ms = derived (fun whole alone -> whole - alone) [ timed (vlm e px); timed (encoder e px) ]
                    ttft_ms = timed (vlm e px)
                    vs_fastvithd = derived (fun a b -> a / b) [ timed (vlm e px); timed (vlm fastvithd px) ]
                } ] ]
        |> List.concat

    {
        tables = [ table "fastvlm-ttft" rows (dir = "../docs") ]
        plots =
            [
                plot "fastvlm-ttft" rows (x = "px") (y = "ttft_ms") (series = "family") (logY = true)
                    (title = "Time to first token, batch 1, 2 CPU threads (dsl run bench/fastvlm.dsl)")
                    (xLabel = "input resolution (px)") (yLabel = "TTFT (ms, log scale)") (dir = "../docs")
            ]
    }
