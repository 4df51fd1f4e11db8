/// `dsl import --from SOURCE` and `dsl export --format safetensors --names SOURCE`: a state dict
/// with the reference implementation's keys and shapes imports with nothing missing or unused,
/// export then import gives back the same weights, and a key that does not fit is an error
/// unless --ignore names it.
module Dsl.Tests.ImportTests

open System.Collections.Generic
open System.IO
open Expecto
open TorchSharp
open Dsl.Runtime.Checkpoints
open Dsl.Runtime.Emit
open Dsl.Runtime.Interop
open Dsl.Tests.Support

/// timm's VisionTransformer (timm/models/vision_transformer.py) as dsl's ViT builds it:
/// class_token=False, global_pool='avg', fc_norm=False, so pos_embed is [1, N, D] and the final
/// norm is `norm`; each block norm1, attn.qkv (fused), attn.proj, norm2, mlp.fc1, mlp.fc2.
let timmVit (dim: int64) (depth: int) (patch: int64) (tokens: int64) (classes: int64) =
    [
        "patch_embed.proj.weight", [ dim; 3L; patch; patch ]
        "patch_embed.proj.bias", [ dim ]
        "pos_embed", [ 1L; tokens; dim ]
        for i in 0 .. depth - 1 do
            let b = sprintf "blocks.%d." i
            b + "norm1.weight", [ dim ]
            b + "norm1.bias", [ dim ]
            b + "attn.qkv.weight", [ 3L * dim; dim ]
            b + "attn.qkv.bias", [ 3L * dim ]
            b + "attn.proj.weight", [ dim; dim ]
            b + "attn.proj.bias", [ dim ]
            b + "norm2.weight", [ dim ]
            b + "norm2.bias", [ dim ]
            b + "mlp.fc1.weight", [ 4L * dim; dim ]
            b + "mlp.fc1.bias", [ 4L * dim ]
            b + "mlp.fc2.weight", [ dim; 4L * dim ]
            b + "mlp.fc2.bias", [ dim ]
        "norm.weight", [ dim ]
        "norm.bias", [ dim ]
        "head.weight", [ classes; dim ]
        "head.bias", [ classes ]
    ]

/// A BatchNorm's five state-dict entries under prefix `p`.
let private bn p c =
    [
        p + "weight", [ c ]
        p + "bias", [ c ]
        p + "running_mean", [ c ]
        p + "running_var", [ c ]
        p + "num_batches_tracked", []
    ]

/// A conv (no bias) and its BatchNorm, as timm's ConvNormAct names them.
let private convBn p cout perGroup k =
    (p + "conv.weight", [ cout; perGroup; k; k ]) :: bn (p + "bn.") cout

/// timm's FastViT with RepMixer stages only (timm/models/fastvit.py: MobileOneBlock's conv_kxk /
/// conv_scale / identity branches, ReparamLargeKernelConv's large_conv / small_conv, RepMixer,
/// ConvMlp, LayerScale2d's gamma of [dim, 1, 1], final_conv with SqueezeExcite at 1/16, head.fc),
/// train-time form.
let timmFastvitRepMixer (layers: int list) (dims: int64 list) (ratio: int64) (classes: int64) =
    /// MobileOneBlock: identity BN when the shape is kept, one k×k branch, a 1×1 scale branch when k > 1.
    let mobileOne p cin cout k stride groups =
        [
            if cin = cout && stride = 1 then
                yield! bn (p + "identity.") cout
            yield! convBn (p + "conv_kxk.0.") cout (cin / groups) k
            if k > 1L then
                yield! convBn (p + "conv_scale.") cout (cin / groups) 1L
        ]

    let c0 = dims.Head

    [
        yield! mobileOne "stem.0." 3L c0 3L 2 1L
        yield! mobileOne "stem.1." c0 c0 3L 2 c0
        yield! mobileOne "stem.2." c0 c0 1L 1 1L
        for i, (n, d) in List.indexed (List.zip layers dims) do
            let s = sprintf "stages.%d." i

            if i > 0 then
                yield! convBn (s + "downsample.proj.0.large_conv.") d 1L 7L
                yield! convBn (s + "downsample.proj.0.small_conv.") d 1L 3L
                yield! mobileOne (s + "downsample.proj.1.") d d 1L 1 1L

            for j in 0 .. n - 1 do
                let b = sprintf "%sblocks.%d." s j
                yield! bn (b + "token_mixer.norm.identity.") d
                yield! mobileOne (b + "token_mixer.mixer.") d d 3L 1 d
                yield b + "token_mixer.layer_scale.gamma", [ d; 1L; 1L ]
                yield! convBn (b + "mlp.conv.") d 1L 7L
                yield b + "mlp.fc1.weight", [ d * ratio; d; 1L; 1L ]
                yield b + "mlp.fc1.bias", [ d * ratio ]
                yield b + "mlp.fc2.weight", [ d; d * ratio; 1L; 1L ]
                yield b + "mlp.fc2.bias", [ d ]
                yield b + "layer_scale.gamma", [ d; 1L; 1L ]
        let c = List.last dims
        yield! mobileOne "final_conv." c (2L * c) 3L 1 c
        let rd = 2L * c / 16L
        yield "final_conv.se.fc1.weight", [ rd; 2L * c; 1L; 1L ]
        yield "final_conv.se.fc1.bias", [ rd ]
        yield "final_conv.se.fc2.weight", [ 2L * c; rd; 1L; 1L ]
        yield "final_conv.se.fc2.bias", [ 2L * c ]
        yield "head.fc.weight", [ classes; 2L * c ]
        yield "head.fc.bias", [ classes ]
    ]

/// timm's MobileOne (timm/models/byobnet.py, mobileone_s0): stem with one 3×3 branch and a 1×1
/// scale branch; per stage, blocks alternate a depthwise 3×3 (K branches, scale branch, identity
/// BN unless it strides) and a pointwise 1×1 (K branches, identity BN when the width is kept);
/// head.fc. dsl's names are apple/ml-mobileone's (stage0, stage1…4, linear).
let timmMobileOne (blocks: int list) (planes: int64 list) (stem: int64) (branches: int) (classes: int64) =
    [
        yield! convBn "stem.conv_kxk.0." stem 3L 3L
        yield! convBn "stem.conv_scale." stem 3L 1L
        let mutable cin = stem

        for s, (n, cout) in List.indexed (List.zip blocks planes) do
            for b in 0 .. n - 1 do
                let dw = sprintf "stages.%d.%d." s (2 * b)
                let pw = sprintf "stages.%d.%d." s (2 * b + 1)

                if b > 0 then
                    yield! bn (dw + "identity.") cin

                for k in 0 .. branches - 1 do
                    yield! convBn (sprintf "%sconv_kxk.%d." dw k) cin 1L 3L

                yield! convBn (dw + "conv_scale.") cin 1L 1L

                if cin = cout then
                    yield! bn (pw + "identity.") cout

                for k in 0 .. branches - 1 do
                    yield! convBn (sprintf "%sconv_kxk.%d." pw k) cout cin 1L

                cin <- cout

        yield "head.fc.weight", [ classes; cin ]
        yield "head.fc.bias", [ classes ]
    ]

/// open_lm's Transformer (mlfoundations/open_lm open_lm/model.py) with qk-norm and a gain-only
/// LayerNorm, as DCLM trains it: tok_embeddings, per layer attention.in_proj (fused q/k/v) and
/// out_proj, the rotary table's persistent inv_freq buffer, q_norm/k_norm over the full width,
/// feed_forward.w12 (gate and value fused) and w3, attention_norm, ffn_norm; norm, output.
let openlmKeys (d: int64) (layers: int) (heads: int64) (hidden: int64) (vocab: int64) =
    [
        "tok_embeddings.weight", [ vocab; d ]
        for i in 0 .. layers - 1 do
            let l = sprintf "layers.%d." i
            l + "attention.in_proj.weight", [ 3L * d; d ]
            l + "attention.out_proj.weight", [ d; d ]
            l + "attention.pos_embed.inv_freq", [ d / heads / 2L ]
            l + "attention.q_norm.weight", [ d ]
            l + "attention.k_norm.weight", [ d ]
            l + "feed_forward.w12.weight", [ 2L * hidden; d ]
            l + "feed_forward.w3.weight", [ d; hidden ]
            l + "attention_norm.weight", [ d ]
            l + "ffn_norm.weight", [ d ]
        "norm.weight", [ d ]
        "output.weight", [ vocab; d ]
    ]

/// MobileCLIP as apple/ml-mobileclip builds it (read at 4144bb1; mobileclip/clip.py,
/// models/mci.py, text_encoder.py, modules/common/mobileone.py, modules/image/replknet.py,
/// modules/text/repmixer.py), train-time form: image_encoder.model is ml-fastvit's FastViT
/// (patch_embed; network = stage 0, downsampling, stage 1, …, RepCPE, the attention stage;
/// conv_exp with its SE as reduce/expand; GlobalPool2D's bare head.proj [2C, dim]); the text
/// encoder a RepMixer block, `layers` pre-norm transformer layers and another RepMixer block (MCt)
/// with a bare projection_layer [width, dim]. MobileOne branches are rbr_skip / rbr_conv / rbr_scale.
let appleMobileClip
    (layers: int list)
    (dims: int64 list)
    (textLayers: int)
    (width: int64)
    (vocab: int64)
    (context: int64)
    (dim: int64)
    =
    let mobileOne p cin cout k stride groups =
        [
            if cin = cout && stride = 1 then
                yield! bn (p + "rbr_skip.") cin
            yield! convBn (p + "rbr_conv.0.") cout (cin / groups) k
            if k > 1L then
                yield! convBn (p + "rbr_scale.") cout (cin / groups) 1L
        ]

    let se p c r =
        [
            p + "1.weight", [ r; c; 1L; 1L ]
            p + "1.bias", [ r ]
            p + "2.weight", [ c; r; 1L; 1L ]
            p + "2.bias", [ c ]
        ]

    let convffn p d h (kh: int64) (kw: int64) =
        [
            p + "conv.conv.weight", [ d; 1L; kh; kw ]
            yield! bn (p + "conv.bn.") d
            p + "fc1.weight", [ h; d; 1L; 1L ]
            p + "fc1.bias", [ h ]
            p + "fc2.weight", [ d; h; 1L; 1L ]
            p + "fc2.bias", [ d ]
        ]

    let i = "image_encoder.model."
    let c0 = dims.Head
    let mutable net = 0

    [
        yield! mobileOne (i + "patch_embed.0.") 3L c0 3L 2 1L
        yield! mobileOne (i + "patch_embed.1.") c0 c0 3L 2 c0
        yield! mobileOne (i + "patch_embed.2.") c0 c0 1L 1 1L
        for s, (n, d) in List.indexed (List.zip layers dims) do
            if s = 3 then
                yield i + sprintf "network.%d.pe.weight" net, [ d; 1L; 7L; 7L ]
                yield i + sprintf "network.%d.pe.bias" net, [ d ]
                net <- net + 1

            for b in 0 .. n - 1 do
                let p = i + sprintf "network.%d.%d." net b

                if s < 3 then
                    yield! bn (p + "token_mixer.norm.rbr_skip.") d
                    yield! mobileOne (p + "token_mixer.mixer.") d d 3L 1 d
                    yield p + "token_mixer.layer_scale", [ d; 1L; 1L ]
                    yield p + "layer_scale", [ d; 1L; 1L ]
                else
                    yield! bn (p + "norm.") d
                    yield p + "token_mixer.qkv.weight", [ 3L * d; d ]
                    yield p + "token_mixer.proj.weight", [ d; d ]
                    yield p + "token_mixer.proj.bias", [ d ]
                    yield p + "layer_scale_1", [ d; 1L; 1L ]
                    yield p + "layer_scale_2", [ d; 1L; 1L ]

                yield! convffn (p + "convffn.") d (3L * d) 7L 7L

            net <- net + 1

            if s < 3 then
                let p = i + sprintf "network.%d.proj." net
                let next = dims[s + 1]
                yield! convBn (p + "0.lkb_origin.") next 1L 7L
                yield! convBn (p + "0.small_conv.") next 1L 3L
                // SE in the downsamplings into stages 2 and 3 (MCi's se_downsamples).
                if s >= 1 then
                    yield! se (p + "0.se.fc") next (next / 4L)

                yield! mobileOne (p + "1.") next next 1L 1 1L
                net <- net + 1
        let c = List.last dims
        yield! mobileOne (i + "conv_exp.") c (2L * c) 3L 1 c
        let rd = 2L * c / 16L
        yield i + "conv_exp.se.reduce.weight", [ rd; 2L * c; 1L; 1L ]
        yield i + "conv_exp.se.reduce.bias", [ rd ]
        yield i + "conv_exp.se.expand.weight", [ 2L * c; rd; 1L; 1L ]
        yield i + "conv_exp.se.expand.bias", [ 2L * c ]
        yield i + "head.proj", [ 2L * c; dim ]

        let t = "text_encoder."
        yield t + "embedding_layer.weight", [ vocab; width ]
        yield t + "positional_embedding.pos_embed.pos_embed", [ 1L; 1L; context; width ]

        let repMixer p =
            [
                yield! bn (p + "token_mixer.norm.rbr_skip.") width
                yield! bn (p + "token_mixer.mixer.rbr_skip.") width
                p + "token_mixer.mixer.rbr_conv.0.conv.weight", [ width; 1L; 1L; 11L ]
                yield! bn (p + "token_mixer.mixer.rbr_conv.0.bn.") width
                p + "token_mixer.layer_scale", [ width; 1L; 1L ]
                yield! convffn (p + "convffn.") width (4L * width) 1L 11L
                p + "layer_scale", [ width; 1L; 1L ]
            ]

        yield! repMixer (t + "transformer.0.")

        for l in 1..textLayers do
            let p = t + sprintf "transformer.%d." l
            yield p + "pre_norm_mha.0.weight", [ width ]
            yield p + "pre_norm_mha.0.bias", [ width ]
            yield p + "pre_norm_mha.1.qkv_proj.weight", [ 3L * width; width ]
            yield p + "pre_norm_mha.1.qkv_proj.bias", [ 3L * width ]
            yield p + "pre_norm_mha.1.out_proj.weight", [ width; width ]
            yield p + "pre_norm_mha.1.out_proj.bias", [ width ]
            yield p + "pre_norm_ffn.0.weight", [ width ]
            yield p + "pre_norm_ffn.0.bias", [ width ]
            yield p + "pre_norm_ffn.1.weight", [ 4L * width; width ]
            yield p + "pre_norm_ffn.1.bias", [ 4L * width ]
            yield p + "pre_norm_ffn.4.weight", [ width; 4L * width ]
            yield p + "pre_norm_ffn.4.bias", [ width ]

        yield! repMixer (t + sprintf "transformer.%d." (textLayers + 1))
        yield t + "final_layer_norm.weight", [ width ]
        yield t + "final_layer_norm.bias", [ width ]
        yield t + "projection_layer", [ width; dim ]
        yield "logit_scale", []
    ]

/// timm's fastvit_mci* keys (timm/models/fastvit.py, read at aa4b585) as its checkpoint_filter_fn
/// makes them from apple's: the image tower's keys without `image_encoder.model.`, MobileOne's
/// rbr_* as conv_kxk / conv_scale / identity, patch_embed as stem, conv_exp as final_conv with its
/// SE's reduce / expand as fc1 / fc2, lkb_origin as large_conv, convffn as mlp, bare layer scales
/// as `.gamma`, network.N re-addressed to stages.i.{downsample, pos_emb, blocks}, and GlobalPool2D's
/// proj [2C, dim] as head.fc.weight (its transpose) with a zero head.fc.bias.
let timmMciFromApple (apple: (string * int64 list) list) =
    let prefix = "image_encoder.model."
    let stageEnds = [ 1; 3; 5 ] // the network indices of the downsamplings (PatchEmbed)

    let network (rest: string) =
        let m = System.Text.RegularExpressions.Regex.Match(rest, @"^network\.(\d+)\.(.*)$")

        if not m.Success then
            rest
        else
            let n = int m.Groups[1].Value
            let tail = m.Groups[2].Value
            let stage = stageEnds |> List.filter (fun e -> e <= n) |> List.length

            if List.contains n stageEnds then
                sprintf "stages.%d.downsample.%s" stage tail
            elif tail.StartsWith "pe." then
                sprintf "stages.%d.pos_emb.pos_enc.%s" stage (tail.Substring 3)
            else
                sprintf "stages.%d.blocks.%s" stage tail

    [
        for key, shape in apple do
            if key.StartsWith prefix then
                let rest = key.Substring prefix.Length

                if rest = "head.proj" then
                    "head.fc.weight", List.rev shape
                    "head.fc.bias", [ List.last shape ]
                else
                    let renamed =
                        (network rest)
                            .Replace("patch_embed", "stem")
                            .Replace("rbr_conv", "conv_kxk")
                            .Replace("rbr_scale", "conv_scale")
                            .Replace("rbr_skip", "identity")
                            .Replace("conv_exp", "final_conv")
                            .Replace("lkb_origin", "large_conv")
                            .Replace("convffn", "mlp")
                            .Replace("se.reduce", "se.fc1")
                            .Replace("se.expand", "se.fc2")

                    let gamma =
                        System.Text.RegularExpressions.Regex.IsMatch(renamed, @"layer_scale(_[12])?$")

                    (if gamma then renamed + ".gamma" else renamed), shape
    ]

/// open_clip's CLIP (mlfoundations/open_clip src/open_clip/model.py, transformer.py; read at
/// 89fb801 and v3.3.0): visual.conv1 without bias, class_embedding [W], positional_embedding
/// [grid² + 1, W], ln_pre, transformer.resblocks.N (ln_1, attn.in_proj_weight/bias,
/// attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj), ln_post, proj [W, dim]; the text tower at the top:
/// token_embedding, positional_embedding [L, W'], the same blocks, ln_final, text_projection
/// [W', dim]; logit_scale. The causal attn_mask is not persistent, so not in the file.
let openClipKeys
    (width: int64)
    (depth: int)
    (patch: int64)
    (grid: int64)
    (textWidth: int64)
    (textDepth: int)
    (vocab: int64)
    (context: int64)
    (dim: int64)
    =
    let blocks p (w: int64) n =
        [
            for i in 0 .. n - 1 do
                let b = sprintf "%stransformer.resblocks.%d." p i
                b + "ln_1.weight", [ w ]
                b + "ln_1.bias", [ w ]
                b + "attn.in_proj_weight", [ 3L * w; w ]
                b + "attn.in_proj_bias", [ 3L * w ]
                b + "attn.out_proj.weight", [ w; w ]
                b + "attn.out_proj.bias", [ w ]
                b + "ln_2.weight", [ w ]
                b + "ln_2.bias", [ w ]
                b + "mlp.c_fc.weight", [ 4L * w; w ]
                b + "mlp.c_fc.bias", [ 4L * w ]
                b + "mlp.c_proj.weight", [ w; 4L * w ]
                b + "mlp.c_proj.bias", [ w ]
        ]

    [
        "visual.conv1.weight", [ width; 3L; patch; patch ]
        "visual.class_embedding", [ width ]
        "visual.positional_embedding", [ grid * grid + 1L; width ]
        "visual.ln_pre.weight", [ width ]
        "visual.ln_pre.bias", [ width ]
        yield! blocks "visual." width depth
        "visual.ln_post.weight", [ width ]
        "visual.ln_post.bias", [ width ]
        "visual.proj", [ width; dim ]
        "token_embedding.weight", [ vocab; textWidth ]
        "positional_embedding", [ context; textWidth ]
        yield! blocks "" textWidth textDepth
        "ln_final.weight", [ textWidth ]
        "ln_final.bias", [ textWidth ]
        "text_projection", [ textWidth; dim ]
        "logit_scale", []
    ]

/// A safetensors state dict of those keys, each tensor filled with a value from its position.
let private writeStateDict (path: string) (keys: (string * int64 list) list) =
    let tensors = Dictionary<string, torch.Tensor>()

    for i, (name, shape) in List.indexed keys do
        tensors[name] <-
            if name.EndsWith "num_batches_tracked" then
                torch.tensor (int64 i)
            else
                torch.full (List.toArray shape, (float32 i).ToScalar())

    WeightImport.WriteSafetensors(path, tensors)

    for t in tensors.Values do
        t.Dispose()

/// timm's MobileOne key back to apple/ml-mobileone's, the names dsl uses.
let private mobileOneName (theirs: string) =
    let m = System.Text.RegularExpressions.Regex.Match(theirs, @"^stages\.(\d)\.(.*)$")

    if theirs.StartsWith "stem." then
        "stage0." + theirs.Substring 5
    elif m.Success then
        sprintf "stage%d.%s" (int m.Groups[1].Value + 1) m.Groups[2].Value
    elif theirs.StartsWith "head.fc." then
        "linear." + theirs.Substring 8
    else
        theirs

let private cases =
    [
        "timm ViT-Ti/16 (no class token, average pool)",
        "open vit\nmodel m : image[3, 64, 64] = vit vitTiny16\n",
        timmVit 192L 12 16L 16L 1000L
        "timm FastViT-T8",
        "open fastvit\nmodel m : image[3, 64, 64] = fastvit fastvitT8\n",
        timmFastvitRepMixer [ 2; 2; 4; 2 ] [ 48L; 96L; 192L; 384L ] 3L 1000L
        "timm MobileOne-S0",
        "open mobileone\nmodel m : image[3, 64, 64] -> logits[1000] = mobileoneNet mobileoneS0\n",
        timmMobileOne [ 2; 8; 10; 1 ] [ 48L; 128L; 256L; 1024L ] 48L 4 1000L
        "openlm openlmTiny (fused q/k/v, qk-norm, rotary buffers dropped)",
        "open lm\nmodel m : tokens[16] -> logits[16, 257] = decoder openlmTiny\n",
        openlmKeys 128L 2 4L 512L 257L
    ]

/// MobileCLIP and open_clip at small widths, their reference files' keys written from the sources.
let private clipCases =
    [
        "mobileclip MobileCLIP (MCi, MCt)",
        "mobileclip",
        "open clip\nlet small = { image = { mci0 with layers = [ 1; 1; 1; 1 ]; dims = [ 16; 32; 64; 128 ] }; text = { mct with vocabulary = 100; eot = 99; width = 64; heads = 2; layers = 1 } }\nmodel m (image : image[3, 64, 64]) (text : tokens[16]) = mobileclip small (dim = 32) image text\n",
        appleMobileClip [ 1; 1; 1; 1 ] [ 16L; 32L; 64L; 128L ] 1 64L 100L 16L 32L
        "timm MCi (fastvit_mci, zero head bias dropped)",
        "timm",
        "open fastvit\nmodel m : image[3, 64, 64] = mci { mci0 with layers = [ 1; 1; 1; 1 ]; dims = [ 16; 32; 64; 128 ] } (dim = 32)\n",
        timmMciFromApple (appleMobileClip [ 1; 1; 1; 1 ] [ 16L; 32L; 64L; 128L ] 1 64L 100L 16L 32L)
        "open_clip CLIP (ViT, causal text transformer)",
        "open_clip",
        "open clip\nlet small = { image = { vitTiny16 with dim = 64; depth = 2; heads = 2 }; text = { clipTextCausal with vocabulary = 100; eot = 99; width = 48; heads = 2; layers = 2 } }\nmodel m (image : image[3, 32, 32]) (text : tokens[16]) = openclip small (dim = 32) image text\n",
        openClipKeys 64L 2 16L 2L 48L 2 100L 16L 32L
    ]

[<Tests>]
let tests =
    testList
        "import"
        [
            for label, src, keys in cases ->
                test (sprintf "%s: the reference state dict imports with nothing missing or unused" label) {
                    withTempDir "dsl-import-" (fun dir ->
                        let file = Path.Combine(dir, "m.dsl")
                        File.WriteAllText(file, src)
                        let weights = Path.Combine(dir, "timm.safetensors")
                        writeStateDict weights keys
                        let out = Path.Combine(dir, "imported")

                        let source = if label.StartsWith "openlm" then "openlm" else "timm"
                        let r = CliTests.dsl [ "import"; file; "--from"; source; weights; "--out"; out ]

                        Expect.equal r.Code 0 (r.Out + r.Err)
                        Expect.stringContains r.Out "unused 0, missing 0" "nothing missing or unused"

                        Expect.stringContains
                            r.Out
                            (if source = "openlm" then
                                 "dropped   layers.0.attention.pos_embed.inv_freq"
                             else
                                 "reshaped")
                            "the shape adapters and dropped buffers are reported"

                        use loaded = Checkpoint.Load(Path.Combine(out, "checkpoint"), optimizer = false)

                        for i, (name, _) in
                            List.indexed keys
                            |> List.filter (fun (_, (n, _)) -> not (n.EndsWith "inv_freq")) do
                            let ours =
                                match name with
                                | "pos_embed" -> "pos_embed.weight"
                                | n when source = "openlm" -> n.Replace("in_proj", "qkv").Replace("out_proj", "proj")
                                | n when label.Contains "MobileOne" -> mobileOneName n
                                | n -> n

                            let t = loaded.Weights[ours]
                            let expected = float i

                            Expect.equal
                                (t.to_type(torch.ScalarType.Float64).mean().item<float>())
                                expected
                                (sprintf "%s's values" ours))
                }

            for label, source, src, keys in clipCases ->
                test (
                    sprintf
                        "%s: the reference state dict imports with nothing missing or unused, transposed where it is x @ P"
                        label
                ) {
                    withTempDir "dsl-import-" (fun dir ->
                        let file = Path.Combine(dir, "m.dsl")
                        File.WriteAllText(file, src)
                        let weights = Path.Combine(dir, "ref.safetensors")
                        // Distinct values in every entry, so that a transposition or a wrong key shows.
                        let tensors = Dictionary<string, torch.Tensor>()

                        // timm's MCi head bias is zeros (its conversion adds it): dropped, not a parameter.
                        let zero =
                            set
                                [
                                    if source = "timm" then
                                        "head.fc.bias"
                                ]

                        for i, (name, shape) in List.indexed keys do
                            tensors[name] <-
                                if name.EndsWith "num_batches_tracked" then
                                    torch.tensor (int64 i)
                                elif zero.Contains name then
                                    torch.zeros (List.toArray shape)
                                else
                                    let n = List.fold (*) 1L shape

                                    (torch.arange (n, dtype = torch.float32) / float32 n + float32 i)
                                        .reshape(List.toArray shape)

                        WeightImport.WriteSafetensors(weights, tensors)
                        let out = Path.Combine(dir, "imported")
                        let r = CliTests.dsl [ "import"; file; "--from"; source; weights; "--out"; out ]
                        Expect.equal r.Code 0 (r.Out + r.Err)
                        Expect.stringContains r.Out "unused 0, missing 0" "nothing missing or unused"

                        if source = "timm" then
                            Expect.stringContains
                                r.Out
                                "dropped   head.fc.bias [32] (all zeros"
                                "the zero bias is dropped"
                        else
                            Expect.stringContains r.Out "(transposed)" "the projections are transposed"

                        use loaded = Checkpoint.Load(Path.Combine(out, "checkpoint"), optimizer = false)
                        let convention = NameConvention.For source

                        Expect.equal
                            loaded.Weights.Count
                            (List.length keys - zero.Count)
                            "one of dsl's tensors per key"

                        for KeyValue(ours, t) in loaded.Weights do
                            let mapped = convention.Map(ours, t.shape)
                            use expected = mapped.ToOurs(tensors[mapped.Theirs])

                            Expect.isTrue
                                (t.to_type(expected.dtype).equal(expected).all().item<bool>())
                                (sprintf "%s holds %s" ours mapped.Theirs)

                        // And back: dsl's weights under the source's names are the file's tensors.
                        let back = Path.Combine(dir, "back.safetensors")

                        let e =
                            CliTests.dsl
                                [
                                    "export"
                                    file
                                    "--checkpoint"
                                    Path.Combine(out, "checkpoint")
                                    "--format"
                                    "safetensors"
                                    "--names"
                                    source
                                    "--out"
                                    back
                                ]

                        Expect.equal e.Code 0 (e.Out + e.Err)
                        let again = WeightImport.ReadSafetensors back

                        try
                            Expect.equal (set again.Keys) (set tensors.Keys - zero) "the source's keys"

                            for KeyValue(k, t) in tensors do
                                if not (zero.Contains k) then
                                    Expect.isTrue
                                        (again[k].to_type(t.dtype).equal(t).all().item<bool>())
                                        (sprintf "%s round-trips" k)

                            // A bias that is not zero is a trained one, which dsl's model would lose.
                            if source = "timm" then
                                tensors["head.fc.bias"].fill_ 0.5 |> ignore
                                let biased = Path.Combine(dir, "biased.safetensors")
                                WeightImport.WriteSafetensors(biased, tensors)

                                let refused =
                                    CliTests.dsl
                                        [ "import"; file; "--from"; source; biased; "--out"; Path.Combine(dir, "no") ]

                                Expect.equal refused.Code 1 "a trained head bias is refused"
                                Expect.stringContains refused.Out "unused    head.fc.bias [32]" refused.Out
                        finally
                            for t in again.Values do
                                t.Dispose()

                            for t in tensors.Values do
                                t.Dispose())
                }

            yield
                test
                    "at full size, MobileCLIP-S0, open_clip ViT-B/16 and timm's MCi0 map onto the reference's every key and shape" {
                    let full =
                        [
                            "mobileclip",
                            "open clip\nmodel m (image : image[3, 256, 256]) (text : tokens[77]) = mobileclip mobileclipS0 image text\n",
                            appleMobileClip [ 2; 6; 10; 2 ] [ 64L; 128L; 256L; 512L ] 4 512L 49408L 77L 512L,
                            893
                            "open_clip",
                            "open clip\nmodel m (image : image[3, 224, 224]) (text : tokens[77]) = openclip openclipViTB16 image text\n",
                            openClipKeys 768L 12 16L 14L 512L 12 49408L 77L 512L,
                            302
                            "timm",
                            "open fastvit\nmodel m : image[3, 256, 256] = mci mci0\n",
                            timmMciFromApple (
                                appleMobileClip [ 2; 6; 10; 2 ] [ 64L; 128L; 256L; 512L ] 4 512L 49408L 77L 512L
                            )
                            |> List.filter (fun (k, _) -> k <> "head.fc.bias"),
                            783
                        ]

                    for source, src, keys, count in full do
                        use model = new GraphModule(Dsl.Tests.Support.graph src, 0L)
                        let convention = NameConvention.For source

                        let mapped =
                            [
                                for KeyValue(name, t) in model.state_dict () ->
                                    let m = convention.Map(name, t.shape)
                                    m.Theirs, List.ofArray m.TheirShape
                            ]

                        Expect.equal (List.length keys) count (sprintf "%s: the reference's %d keys" source count)

                        Expect.equal
                            (Set.ofList mapped)
                            (Set.ofList keys)
                            (sprintf "%s: the same keys and shapes" source)
                }

            yield
                test "export --names timm then import --from timm is the identity" {
                    withTempDir "dsl-import-" (fun dir ->
                        let src =
                            "open fastvit\nmodel m : image[3, 32, 32] = fastvit fastvitSA12 (classes = 10)\n"

                        let file = Path.Combine(dir, "m.dsl")
                        File.WriteAllText(file, src)
                        let weights = Path.Combine(dir, "m.safetensors")

                        let e =
                            CliTests.dsl
                                [
                                    "export"
                                    file
                                    "--format"
                                    "safetensors"
                                    "--names"
                                    "timm"
                                    "--seed"
                                    "7"
                                    "--out"
                                    weights
                                ]

                        Expect.equal e.Code 0 e.Err

                        let again =
                            CliTests.dsl [ "export"; file; "--format"; "safetensors"; "--out"; weights ]

                        Expect.equal again.Code 1 "never over an existing safetensors file"
                        let out = Path.Combine(dir, "imported")
                        let i = CliTests.dsl [ "import"; file; "--from"; "timm"; weights; "--out"; out ]
                        Expect.equal i.Code 0 (i.Out + i.Err)
                        use original = new GraphModule(Dsl.Tests.Support.graph src, 7L)
                        use loaded = Checkpoint.Load(Path.Combine(out, "checkpoint"), optimizer = false)
                        let state = original.state_dict ()
                        Expect.equal (set loaded.Weights.Keys) (set state.Keys) "the same names"

                        for KeyValue(name, t) in state do
                            Expect.isTrue
                                (t.equal(loaded.Weights[name]).all().item<bool>())
                                (sprintf "%s is the same" name))
                }

            yield
                test "a missing or unused key is an error unless --ignore names it" {
                    withTempDir "dsl-import-" (fun dir ->
                        let file = Path.Combine(dir, "m.dsl")
                        File.WriteAllText(file, "open vit\nmodel m : image[3, 64, 64] = vit vitTiny16\n")
                        let weights = Path.Combine(dir, "timm.safetensors")

                        let keys =
                            (timmVit 192L 12 16L 16L 1000L |> List.filter (fun (k, _) -> k <> "head.bias"))
                            @ [ "cls_token", [ 1L; 1L; 192L ] ]

                        writeStateDict weights keys
                        let out = Path.Combine(dir, "imported")
                        let args = [ "import"; file; "--from"; "timm"; weights; "--out"; out ]
                        let r = CliTests.dsl args
                        Expect.equal r.Code 1 "refused"
                        Expect.stringContains r.Out "unused    cls_token [1, 1, 192]" "the unused key and its shape"
                        Expect.stringContains r.Out "missing   head.bias [1000]" "the missing key and its shape"
                        Expect.stringContains r.Err "1 missing and 1 unused" r.Err
                        Expect.isFalse (Directory.Exists out) "nothing written"

                        let ok =
                            CliTests.dsl (args @ [ "--ignore"; "cls_token"; "--ignore"; "head\\.bias" ])

                        Expect.equal ok.Code 0 (ok.Out + ok.Err)
                        Expect.stringContains ok.Out "(ignored)" "ignored keys are still reported"

                        let unknown =
                            CliTests.dsl [ "import"; file; "--from"; "keras"; weights; "--out"; out ]

                        Expect.equal unknown.Code 1 "an unknown convention"
                        Expect.stringContains unknown.Err "known: torch, timm" unknown.Err)
                }
        ]
