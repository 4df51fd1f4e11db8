/// The shipped model library, checked from its variant tables: every variant elaborates and has
/// exactly the parameter count its reference implementation gives, counted layer by layer here,
/// and that count rounds to the published figure (FastViT, arXiv 2303.14189; apple/ml-fastvit
/// models/fastvit.py, 1000-class head; MobileCLIP; MobileOne; FastVLM).
module Dsl.Tests.LibraryTests

open Expecto
open Dsl
open Dsl.Ir
open Dsl.Tests.Support

/// Parameter counts written out layer by layer from the reference implementations (timm
/// timm/models/fastvit.py and apple/ml-fastvit models/fastvit.py for FastViT; apple/ml-mobileclip
/// mci.py for MCi and FastViTHD; apple/ml-mobileone mobileone.py; ml-mobileclip text_encoder.py),
/// independent of the Dsl library: the library must match them exactly.
module Reference =
    let bn (c: int64) = 2L * c

    /// timm's SqueezeExcite(rd_divisor = 1) / ml-fastvit's SEBlock: 1×1 convs with bias c → rd → c.
    let se (c: int64) (rd: int64) = c * rd + rd + rd * c + c

    /// MobileOneBlock, train-time: BN skip when the shape is kept, `branches` k×k conv-BN, a 1×1
    /// conv-BN scale branch when k > 1, SE (ratio 1/16, rounded to nearest).
    let mobileOne (cin: int64) cout k stride groups scale branches useSe =
        let perGroup = cin / groups

        (if cin = cout && stride = 1L then bn cin else 0L)
        + branches * (cout * perGroup * k * k + bn cout)
        + (if k > 1L && scale then cout * perGroup + bn cout else 0L)
        + (if useSe then se cout ((cout + 8L) / 16L) else 0L)

    /// ReparamLargeKernelConv (groups = cin, so one input channel per filter): 7×7 and 3×3
    /// conv-BN, SE with ratio 1/4 when asked.
    let largeKernel cout useSe =
        cout * 49L
        + bn cout
        + cout * 9L
        + bn cout
        + (if useSe then se cout (cout / 4L) else 0L)

    /// ConvMlp: depthwise 7×7 conv-BN, 1×1 conv (bias) to d·ratio, 1×1 conv (bias) back.
    let convMlp (d: int64) (ratio: int64) =
        let h = d * ratio
        d * 49L + bn d + d * h + h + h * d + d

    /// RepMixerBlock: RepMixer (norm = BN skip; mixer = BN skip + dw 3×3 conv-BN + dw 1×1
    /// conv-BN; layer scale d), then ConvMlp and its layer scale.
    let repMixerBlock d ratio =
        bn d + (bn d + d * 9L + bn d + d + bn d) + d + convMlp d ratio + d

    /// AttentionBlock: norm (BN or channel LayerNorm: 2d), qkv without bias, proj with bias,
    /// two layer scales, ConvMlp.
    let attentionBlock d ratio =
        bn d + d * 3L * d + d * d + d + d + convMlp d ratio + d

    type FastVit =
        {
            Layers: int64 list
            Dims: int64 list
            Ratio: int64
            /// Stages with a RepCPE and attention blocks.
            Attention: int list
            /// Stages whose downsampling has SE.
            DownSe: int list
            StemScale: bool
        }

    /// Stem, stages and final_conv (dw 3×3 MobileOneBlock C → 2C with SE).
    let features (v: FastVit) =
        let c0 = v.Dims.Head

        let stem =
            mobileOne 3L c0 3L 2L 1L v.StemScale 1L false
            + mobileOne c0 c0 3L 2L c0 v.StemScale 1L false
            + mobileOne c0 c0 1L 1L 1L v.StemScale 1L false

        let stage i =
            let d = v.Dims[i]
            let attention = List.contains i v.Attention

            (if i > 0 then
                 largeKernel d (List.contains i v.DownSe) + mobileOne d d 1L 1L 1L true 1L false
             else
                 0L)
            + (if attention then d * 49L + d else 0L)
            + v.Layers[i]
              * (if attention then
                     attentionBlock d v.Ratio
                 else
                     repMixerBlock d v.Ratio)

        let c = List.last v.Dims

        stem
        + List.sum (List.init v.Layers.Length stage)
        + mobileOne c (2L * c) 3L 1L c true 1L true

    /// Re-parameterised as timm's reparameterize_model leaves it: every MobileOneBlock and
    /// large-kernel conv one conv with bias (SE kept), RepMixer one dw 3×3 conv with bias, RepCPE
    /// the same size; ConvMlp and attention blocks untouched.
    let deployFeatures (v: FastVit) =
        let conv cout perGroup k = cout * perGroup * k * k + cout
        let c0 = v.Dims.Head

        let stage i =
            let d = v.Dims[i]
            let attention = List.contains i v.Attention

            (if i > 0 then
                 conv d 1L 7L
                 + (if List.contains i v.DownSe then se d (d / 4L) else 0L)
                 + conv d d 1L
             else
                 0L)
            + (if attention then d * 49L + d else 0L)
            + v.Layers[i]
              * (if attention then
                     attentionBlock d v.Ratio
                 else
                     conv d 1L 3L + convMlp d v.Ratio + d)

        let c = List.last v.Dims

        conv c0 3L 3L
        + conv c0 1L 3L
        + conv c0 c0 1L
        + List.sum (List.init v.Layers.Length stage)
        + conv (2L * c) 1L 3L
        + se (2L * c) ((2L * c + 8L) / 16L)

    /// Dsl's pass folds more than timm's: in every block the ConvMlp's depthwise conv-BN becomes
    /// one conv with bias (−d) and the layer scale after fc2 folds into fc2 (−d).
    let dslDeployFeatures (v: FastVit) =
        deployFeatures v - 2L * List.sum (List.map2 (*) v.Layers v.Dims)

    let classifierOf (classes: int64) (v: FastVit) features =
        features + 2L * List.last v.Dims * classes + classes

    let classifier v features = classifierOf 1000L v features

    /// GlobalPool2D's projection is a bare [2C, dim] parameter in ml-mobileclip (timm's
    /// fastvit_mci3 makes it a Linear with bias, 125,235,648 for FastViTHD).
    let clipHead (v: FastVit) dim features = features + 2L * List.last v.Dims * dim

    let fastvitBase =
        {
            Layers = [ 2L; 2L; 6L; 2L ]
            Dims = [ 64L; 128L; 256L; 512L ]
            Ratio = 4L
            Attention = []
            DownSe = []
            StemScale = true
        }

    let t8 =
        { fastvitBase with
            Layers = [ 2L; 2L; 4L; 2L ]
            Dims = [ 48L; 96L; 192L; 384L ]
            Ratio = 3L
        }

    let sa12 = { fastvitBase with Attention = [ 3 ] }

    let mciBase =
        { sa12 with
            Ratio = 3L
            DownSe = [ 2; 3 ]
        }

    /// MobileOne deploy form (apple/ml-mobileone): stage0 a 3×3 s2 conv; per block a dw 3×3 and
    /// a 1×1 conv with bias, SE (SEBlock, int(c/16)) on the last blocks of stages 3 and 4 when
    /// enabled; the linear head.
    let mobileoneDeploy (layers: int64 list) (widths: float list) useSe =
        let planes =
            List.mapi (fun i (w: float) -> int64 (float (64 * pown 2 i) * w)) widths

        let stem = min 64L planes.Head
        let ins = stem :: List.take 3 planes

        let seBlocks =
            if useSe then
                [ 0L; 0L; layers[2] / 2L; layers[3] ]
            else
                [ 0L; 0L; 0L; 0L ]

        let stage i =
            List.sum
                [
                    for j in 0L .. layers[i] - 1L do
                        let c = if j = 0L then ins[i] else planes[i]
                        let p = planes[i]
                        let gated = j >= layers[i] - seBlocks[i]
                        c * 9L + c + (if gated then se c (c / 16L) else 0L)
                        p * c + p + (if gated then se p (p / 16L) else 0L)
                ]

        stem * 3L * 9L
        + stem
        + List.sum (List.init 4 stage)
        + List.last planes * 1000L
        + 1000L

    /// CLIP's text transformer: token and position embeddings, pre-norm blocks (qkv and proj
    /// with bias, MLP 4×), final LayerNorm, projection to 512 without bias.
    let textTransformer (vocabulary: int64) (context: int64) (w: int64) layers =
        let block =
            bn w
            + 3L * w * w
            + 3L * w
            + w * w
            + w
            + bn w
            + w * 4L * w
            + 4L * w
            + 4L * w * w
            + w

        vocabulary * w + context * w + layers * block + bn w + w * 512L

    /// CLIP's ViT image tower (open_clip transformer.py VisionTransformer): conv1 without bias,
    /// class embedding, positions for grid² + 1 tokens, ln_pre, pre-norm blocks (the text
    /// transformer's), ln_post, projection to `dim` without bias.
    let clipVisual (w: int64) layers (patch: int64) (grid: int64) (dim: int64) =
        let block = 2L * w + 3L * w * w + 3L * w + w * w + w + 2L * w + 8L * w * w + 5L * w

        w * 3L * patch * patch
        + w
        + (grid * grid + 1L) * w
        + 2L * w
        + layers * block
        + 2L * w
        + w * dim

    /// MCt's text RepMixer block: BN skip (norm); mixer = BN skip + dw 1×11 conv-BN; layer scale;
    /// ConvFFN with a dw 1×11 conv-BN and 1×1 convs (4×); layer scale.
    let textRepMixer (w: int64) =
        bn w
        + (bn w + w * 11L + bn w)
        + w
        + (w * 11L + bn w + w * 4L * w + 4L * w + 4L * w * w + w)
        + w

/// Library entry -> the source that builds it, the reference train-time and deploy counts, and
/// the published figures (millions) with the digits they are published to: FastViT, arXiv
/// 2303.14189 (apple/ml-fastvit, timm); MobileCLIP, arXiv 2311.17049 (apple/ml-mobileclip);
/// FastVLM, arXiv 2412.13303; MobileOne, Vasu et al. 2023, Table 8 (1000 classes at 224 px).
let fastvitPublished =
    let classifier = Reference.classifier

    [
        "fastvitT8", Reference.t8, 4.03, 4.00
        "fastvitT12",
        { Reference.fastvitBase with
            Ratio = 3L
        },
        7.55,
        7.51
        "fastvitS12", Reference.fastvitBase, 9.47, 9.43
        "fastvitSA12", Reference.sa12, 11.58, 11.55
        "fastvitSA24",
        { Reference.sa12 with
            Layers = [ 4L; 4L; 12L; 4L ]
        },
        21.55,
        21.50
        "fastvitSA36",
        { Reference.sa12 with
            Layers = [ 6L; 6L; 18L; 6L ]
        },
        31.53,
        31.46
        "fastvitMA36",
        { Reference.sa12 with
            Layers = [ 6L; 6L; 18L; 6L ]
            Dims = [ 76L; 152L; 304L; 608L ]
        },
        44.07,
        43.98
    ]
    |> List.map (fun (name, v, train, deploy) ->
        name,
        classifier v (Reference.features v),
        (classifier v (Reference.dslDeployFeatures v), classifier v (Reference.deployFeatures v)),
        train,
        deploy)

let mciPublished =
    [
        "mci0",
        "mci mci0",
        { Reference.mciBase with
            Layers = [ 2L; 6L; 10L; 2L ]
        },
        512L,
        11.41,
        Some 11.36
        "mci1",
        "mci mci1",
        { Reference.mciBase with
            Layers = [ 4L; 12L; 20L; 4L ]
        },
        512L,
        21.54,
        Some 21.46
        "mci2",
        "mci mci2",
        { Reference.mciBase with
            Layers = [ 4L; 12L; 24L; 4L ]
            Dims = [ 80L; 160L; 320L; 640L ]
        },
        512L,
        35.81,
        Some 35.70
        // FastVLM publishes FastViTHD as "125M"; its deploy count is not published.
        "fastvitHD",
        "mci fastvitHD (dim = 768)",
        { Reference.fastvitBase with
            Layers = [ 2L; 12L; 24L; 4L; 2L ]
            Dims = [ 96L; 192L; 384L; 768L; 1536L ]
            Attention = [ 3; 4 ]
            StemScale = false
        },
        768L,
        125.0,
        None
    ]

let mobileonePublished =
    [
        "mobileoneS0", [ 2L; 8L; 10L; 1L ], [ 0.75; 1.0; 1.0; 2.0 ], false, 2.1
        "mobileoneS1", [ 2L; 8L; 10L; 1L ], [ 1.5; 1.5; 2.0; 2.5 ], false, 4.8
        "mobileoneS2", [ 2L; 8L; 10L; 1L ], [ 1.5; 2.0; 2.5; 4.0 ], false, 7.8
        "mobileoneS3", [ 2L; 8L; 10L; 1L ], [ 2.0; 2.5; 3.0; 4.0 ], false, 10.1
        "mobileoneS4", [ 2L; 8L; 10L; 1L ], [ 3.0; 3.5; 3.5; 4.0 ], true, 14.8
    ]

/// MobileCLIP's text encoders, CLIP vocabulary (49408) and context (77), projection to 512:
/// MCt of S0 (4 transformer layers between two text RepMixer blocks) and the 12-layer base.
let textPublished =
    [
        "mct", Reference.textTransformer 49408L 77L 512L 4L + 2L * Reference.textRepMixer 512L, 42.44
        "clipText", Reference.textTransformer 49408L 77L 512L 12L, 63.43
    ]

/// Whole dual encoders, with the learnable logit scale: MobileCLIP-S0 (apple/ml-mobileclip's
/// README publishes 11.4M + 42.4M for its image and text towers) and open_clip's ViT-B-16
/// (149.62M in open_clip's model table).
let dualPublished =
    let mci0 =
        { Reference.mciBase with
            Layers = [ 2L; 6L; 10L; 2L ]
        }

    [
        "mobileclipS0",
        "open clip\nmodel m (image : image[3, 256, 256]) (text : tokens[77]) = mobileclip mobileclipS0 image text",
        Reference.clipHead mci0 512L (Reference.features mci0)
        + Reference.textTransformer 49408L 77L 512L 4L
        + 2L * Reference.textRepMixer 512L
        + 1L,
        53.8,
        1
        "openclipViTB16",
        "open clip\nmodel m (image : image[3, 224, 224]) (text : tokens[77]) = openclip openclipViTB16 image text",
        Reference.clipVisual 768L 12L 16L 14L 512L
        + Reference.textTransformer 49408L 77L 512L 12L
        + 1L,
        149.62,
        2
    ]

/// Every library entry with a reference count: name, source, exact train-time and deploy
/// counts where the reference gives them, and the published figures with their decimals.
let publishedCounts =
    [
        for v, train, deploy, trainM, deployM in fastvitPublished ->
            v,
            "open fastvit\nmodel m : image[3, 64, 64] = fastvit " + v,
            Some(train, train, trainM),
            Some(fst deploy, snd deploy, deployM),
            2
        for name, source, v, dim, trainM, deployM in mciPublished ->
            name,
            "open fastvit\nmodel m : image[3, 64, 64] = " + source,
            (let count = Reference.clipHead v dim (Reference.features v) in Some(count, count, trainM)),
            deployM
            |> Option.map (fun m ->
                Reference.clipHead v dim (Reference.dslDeployFeatures v),
                Reference.clipHead v dim (Reference.deployFeatures v),
                m),
            (if name = "fastvitHD" then 0 else 2)
        for v, layers, widths, se, deployM in mobileonePublished ->
            v,
            "open mobileone\nmodel m : image[3, 224, 224] = mobileoneNet " + v,
            None,
            (let count = Reference.mobileoneDeploy layers widths se in Some(count, count, deployM)),
            1
        for v, count, trainM in textPublished ->
            v, "open clip\nmodel m : tokens[77] = textEncoder " + v, Some(count, count, trainM), None, 2
        for v, source, count, millions, decimals in dualPublished ->
            v, source, Some(count, count, millions), None, decimals
    ]

/// A count rounded to the published number of decimals of millions, as the publication rounds.
let roundedMillions (decimals: int) (count: int64) =
    System.Math.Round(float count / 1e6, decimals, System.MidpointRounding.AwayFromZero)

/// timm's ViT parameter counts at 224 px with a 1000-class head; they include a class token and
/// its position (2·D), which the average-pool variant in dsl/lib/vit.dsl does not have.
let vitTimm =
    [
        "vitTiny16", 192, 5_717_416L
        "vitSmall16", 384, 22_050_664L
        "vitBase16", 768, 86_567_656L
    ]

let private fastvit variant size =
    graph (sprintf "open fastvit\nmodel m : image[3, %d, %d] = fastvit %s\n" size size variant)

let private outputShape (g: Graph) =
    showShape g.Nodes[snd g.Outputs.Head].Shape

let private shapeOf (g: Graph) (path: string) =
    g.Nodes
    |> List.filter (fun n -> n.Path = path)
    |> List.last
    |> fun n -> showShape n.Shape

[<Tests>]
let tests =
    testList
        "library"
        [
            yield!
                [
                    for name, source, train, deploy, decimals in publishedCounts do
                        let g () = graph (source + "\n")

                        let check label (count: int64) (expected: int64, reference: int64, published: float) =
                            Expect.equal count expected (sprintf "%s%s: the layer-by-layer count" name label)

                            Expect.equal
                                (roundedMillions decimals reference)
                                published
                                (sprintf
                                    "%s%s: the reference's count (%d) rounds to the published %.*fM"
                                    name
                                    label
                                    reference
                                    decimals
                                    published)

                        match train with
                        | Some(expected, reference, millions) ->
                            test (sprintf "%s has %.*fM parameters (%d exactly)" name decimals millions expected) {
                                check "" (paramCount (g ())) (expected, reference, millions)
                            }
                        | None -> ()

                        match deploy with
                        | Some(expected, reference, millions) ->
                            test (
                                sprintf
                                    "%s re-parameterised has %.*fM parameters (%d exactly)"
                                    name
                                    decimals
                                    millions
                                    expected
                            ) {
                                let deployed, _ = Dsl.Passes.Reparam.reparameterize (g ())
                                check " deploy form" (paramCount deployed) (expected, reference, millions)
                            }
                        | None -> ()
                ]

            test "FastViTHD emits 16/64/144/256 tokens of 3072 channels at 256/512/768/1024 px, MCi 4× as many" {
                for size, tokens in [ 256, 16; 512, 64; 768, 144; 1024, 256 ] do
                    let hd =
                        graph (sprintf "open fastvit\nmodel m : image[3, %d, %d] = fastvitTokens fastvitHD\n" size size)

                    Expect.equal (outputShape hd) (sprintf "[B, %d, 3072]" tokens) (sprintf "FastViTHD at %d px" size)

                    let mci =
                        graph (sprintf "open fastvit\nmodel m : image[3, %d, %d] = fastvitTokens mci2\n" size size)

                    Expect.equal (outputShape mci) (sprintf "[B, %d, 1280]" (4 * tokens)) (sprintf "MCi2 at %d px" size)
            }

            yield!
                [
                    for variant, dim, timm in vitTimm ->
                        test (sprintf "%s has timm's parameter count less its class token" variant) {
                            let g =
                                graph (
                                    sprintf "open vit\nmodel m : image[3, 224, 224] -> logits[1000] = vit %s\n" variant
                                )

                            Expect.equal (paramCount g) (timm - 2L * int64 dim) variant
                        }
                ]

            test "a ViT-B/16 emits 16× the tokens of FastViTHD at the same resolution" {
                for size in [ 256; 512 ] do
                    let vit =
                        graph (sprintf "open vit\nmodel m : image[3, %d, %d] = vitEncoder vitBase16\n" size size)

                    let hd =
                        graph (sprintf "open fastvit\nmodel m : image[3, %d, %d] = fastvitTokens fastvitHD\n" size size)

                    let tokens (g: Graph) = g.Nodes[snd g.Outputs.Head].Shape[1]
                    Expect.equal (tokens vit) (Known(16 * known (tokens hd))) (sprintf "%d px" size)
            }

            test "FastViT has output stride 32 and timm's parameter names" {
                let g = fastvit "fastvitSA12" 256
                Expect.equal (shapeOf g "stages.3.blocks.1") "[B, 512, 8, 8]" "256 px -> 8×8 before conv_exp"
                Expect.equal (shapeOf g "final_conv") "[B, 1024, 8, 8]" "conv_exp doubles the channels"
                Expect.equal (shapeOf g "head.fc") "[B, 1000]" "classifier"
                let names = g.Params |> List.map (fun p -> p.Name) |> set

                for expected in
                    [
                        "stem.0.conv_kxk.0.conv.weight"
                        "stem.0.conv_scale.bn.running_var"
                        "stem.2.identity.weight"
                        "stages.1.downsample.proj.0.large_conv.conv.weight"
                        "stages.1.downsample.proj.0.small_conv.bn.bias"
                        "stages.0.blocks.0.token_mixer.mixer.conv_kxk.0.conv.weight"
                        "stages.0.blocks.0.token_mixer.norm.identity.running_mean"
                        "stages.0.blocks.0.token_mixer.layer_scale.gamma"
                        "stages.0.blocks.1.mlp.conv.conv.weight"
                        "stages.0.blocks.1.mlp.fc1.weight"
                        "stages.3.pos_emb.pos_enc.weight"
                        "stages.3.blocks.0.token_mixer.qkv.weight"
                        "stages.3.blocks.0.layer_scale_2.gamma"
                        "final_conv.se.fc1.weight"
                        "head.fc.weight"
                    ] do
                    Expect.isTrue (names.Contains expected) expected

                Expect.isFalse
                    (names.Contains "stages.3.blocks.0.token_mixer.qkv.bias")
                    "FastViT attention has no q/k/v bias"
            }

            test "examples/fastvit/fashion.dsl has the layer-by-layer counts the README quotes" {
                let c =
                    Compiler.checkFile (System.IO.Path.Combine(repoRoot.Value, "examples", "fastvit", "fashion.dsl"))

                Expect.isEmpty c.Diagnostics "compiles"
                let g = snd c.Models.Head
                // FastViT-T8's layout at widths 16…128 with an attention last stage, 10 classes.
                let v =
                    { Reference.t8 with
                        Dims = [ 16L; 32L; 64L; 128L ]
                        Attention = [ 3 ]
                    }

                let train = Reference.classifierOf 10L v (Reference.features v)
                let deploy = Reference.classifierOf 10L v (Reference.dslDeployFeatures v)
                Expect.equal (paramCount g) train "train form"
                Expect.equal (paramCount (fst (Dsl.Passes.Reparam.reparameterize g))) deploy "deploy form"

                let readme =
                    System.IO.File.ReadAllText(System.IO.Path.Combine(repoRoot.Value, "README.md"))

                let n (x: int64) =
                    x.ToString("N0", System.Globalization.CultureInfo.InvariantCulture)

                Expect.stringContains readme (sprintf "`examples/fastvit/fashion.dsl`, %s parameters" (n train)) "train"
                Expect.stringContains readme (sprintf "deploy form (%s parameters" (n deploy)) "deploy"
            }

            test "a variant is a record: a new one is one line" {
                let g =
                    graph
                        "open fastvit\nlet tiny = { fastvitT8 with layers = [ 1; 1; 1; 1 ]; dims = [ 8; 16; 32; 64 ]; mixers = attentionLast }\nmodel m : image[1, 64, 64] -> logits[10] = fastvit tiny (classes = 10)\n"

                Expect.equal (shapeOf g "stages.3.blocks.0") "[B, 64, 2, 2]" "64 px -> 2×2"
            }

            test "a backbone returns its stages as named outputs, on the classifier's own weights" {
                let variant = "{ fastvitT8 with mixers = attentionLast }"

                let backbone =
                    graph (
                        sprintf
                            "open fastvit\nmodel b (image : image[3, 64, 64]) =\n    let f = image |> fastvitStages %s\n    { c3 = f.stage1; c5 = f.stage3 }\n"
                            variant
                    )

                let features =
                    graph (sprintf "open fastvit\nmodel f : image[3, 64, 64] = fastvitFeatures %s\n" variant)

                let classifier =
                    graph (
                        sprintf
                            "open fastvit\nmodel c : image[3, 64, 64] -> logits[10] = fastvit %s (classes = 10)\n"
                            variant
                    )

                Expect.equal (backbone.Outputs |> List.map fst) [ "c3"; "c5" ] "the chosen stages, by name"

                Expect.equal
                    (backbone.Outputs |> List.map (fun (_, i) -> showShape backbone.Nodes[i].Shape))
                    [ "[B, 96, 8, 8]"; "[B, 384, 2, 2]" ]
                    "strides 8 and 32"

                let names (g: Graph) =
                    g.Params |> List.map (fun p -> p.Name) |> set

                Expect.equal (names backbone) (names features) "the features' parameters, named alike"
                Expect.isTrue (Set.isSubset (names backbone) (names classifier)) "so the classifier's weights load"

                // The last stage's output is the features' output, weight for weight.
                use fm = new Dsl.Runtime.Emit.GraphModule(features, 3L)
                use bm = new Dsl.Runtime.Emit.GraphModule(backbone, 4L)
                bm.load_state_dict (fm.state_dict ()) |> ignore
                fm.eval ()
                bm.eval ()
                use _ = TorchSharp.torch.no_grad ()
                use x = TorchSharp.torch.randn (2L, 3L, 64L, 64L)
                let expected = fm.Forward [| x |]
                let actual = bm.Forward [| x |]

                Expect.isTrue
                    (expected[0].allclose(actual[1], rtol = 1e-5, atol = 1e-6))
                    "stage 3 of the backbone is the features"
            }

            test "a misspelt variant field is located in the user's file" {
                expectError
                    "open fastvit\nlet v = { fastvitT8 with dimz = [ 8 ] }\n"
                    "2:26"
                    "the record has no field 'dimz' to replace; did you mean 'dims'?"
            }
        ]
