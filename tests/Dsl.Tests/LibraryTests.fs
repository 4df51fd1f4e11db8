/// The shipped model library, checked from its variant tables: every FastViT variant elaborates
/// and has the parameter count published for it (FastViT, arXiv 2303.14189; apple/ml-fastvit models/fastvit.py, 1000-class head).
module Dsl.Tests.LibraryTests

open Expecto
open Dsl
open Dsl.Ir
open Dsl.Tests.Support

/// Variant name in dsl/lib/fastvit.dsl -> published train-time and re-parameterised parameter
/// counts (millions, FastViT, arXiv 2303.14189; apple/ml-fastvit models/fastvit.py).
let fastvitPublished =
    [
        "fastvitT8", 4.03, 4.00
        "fastvitT12", 7.55, 7.51
        "fastvitS12", 9.47, 9.43
        "fastvitSA12", 11.58, 11.55
        "fastvitSA24", 21.55, 21.50
        "fastvitSA36", 31.53, 31.46
        "fastvitMA36", 44.07, 43.98
    ]

/// MobileCLIP image encoders with their CLIP projection (MobileCLIP, arXiv 2311.17049; apple/ml-mobileclip; arXiv 2412.13303): name, source,
/// train-time and re-parameterised millions (FastViTHD's deploy count is not published).
let mciPublished =
    [
        "mci0", "mci mci0", 11.41, Some 11.36
        "mci1", "mci mci1", 21.54, Some 21.46
        "mci2", "mci mci2", 35.81, Some 35.70
        "fastvitHD", "mci fastvitHD (dim = 768)", 125.07, None
    ]

/// MobileOne (apple/ml-mobileone; Vasu et al. 2023, Table 8): the published counts are of the
/// re-parameterised network, 1000 classes at 224 px, rounded to 0.1M. (The train-time forms
/// come to timm's 5.29M for S0 and 14.95M for S4.)
let mobileonePublished =
    [
        "mobileoneS0", 2.1
        "mobileoneS1", 4.8
        "mobileoneS2", 7.8
        "mobileoneS3", 10.1
        "mobileoneS4", 14.8
    ]

/// MobileCLIP's text encoders with the CLIP vocabulary (49408) and context (77), projection to
/// 512 included (MobileCLIP, arXiv 2311.17049; apple/ml-mobileclip): MCt of S0 and the 12-layer base of S1/S2.
let textPublished = [ "mct", 42.44; "clipText", 63.43 ]

/// Every library entry whose counts are published: name, source, train-time and deploy millions,
/// and the unit the publication rounds to.
let publishedCounts =
    [
        for v, train, deploy in fastvitPublished ->
            v, "open fastvit\nmodel m : image[3, 64, 64] = fastvit " + v, Some train, Some deploy, 0.01
        for name, source, train, deploy in mciPublished ->
            name, "open fastvit\nmodel m : image[3, 64, 64] = " + source, Some train, deploy, 0.01
        for v, deploy in mobileonePublished ->
            v, "open mobileone\nmodel m : image[3, 224, 224] = mobileoneNet " + v, None, Some deploy, 0.1
        for v, train in textPublished -> v, "open clip\nmodel m : tokens[77] = textEncoder " + v, Some train, None, 0.01
    ]

/// Within 0.5% of the published count, or within its rounding when that is coarser.
let private near rounding (published: float) (count: float) =
    abs (count - published) <= max (published * 0.005) (rounding / 2.0)

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
                    for name, source, train, deploy, rounding in publishedCounts do
                        let g () = graph (source + "\n")

                        match train with
                        | Some millions ->
                            test (sprintf "%s has %.2fM parameters" name millions) {
                                let count = float (paramCount (g ())) / 1e6
                                Expect.isTrue (near rounding millions count) (sprintf "%s: %.3fM" name count)
                            }
                        | None -> ()

                        match deploy with
                        | Some millions ->
                            test (sprintf "%s re-parameterised has %.2fM parameters" name millions) {
                                let deployed, _ = Dsl.Passes.Reparam.reparameterize (g ())
                                let count = float (paramCount deployed) / 1e6

                                Expect.isTrue
                                    (near rounding millions count)
                                    (sprintf "%s deploy form: %.3fM" name count)
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

            test "a variant is a record: a new one is one line" {
                let g =
                    graph
                        "open fastvit\nlet tiny = { fastvitT8 with layers = [ 1; 1; 1; 1 ]; dims = [ 8; 16; 32; 64 ]; mixers = attentionLast }\nmodel m : image[1, 64, 64] -> logits[10] = fastvit tiny (classes = 10)\n"

                Expect.equal (shapeOf g "stages.3.blocks.0") "[B, 64, 2, 2]" "64 px -> 2×2"
            }

            test "a misspelt variant field is located in the user's file" {
                expectError
                    "open fastvit\nlet v = { fastvitT8 with dimz = [ 8 ] }\n"
                    "2:26"
                    "the record has no field 'dimz' to replace; did you mean 'dims'?"
            }
        ]
