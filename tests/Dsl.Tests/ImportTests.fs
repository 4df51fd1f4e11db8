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
