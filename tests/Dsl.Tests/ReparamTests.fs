/// Structural re-parameterisation (dsl/Passes/Reparam.fs, FastViT, arXiv 2303.14189; apple/ml-fastvit models/fastvit.py): the deploy graph
/// computes the same function as the train-time graph in eval mode, with fewer parameters and no
/// BatchNorm left where it folds.
module Dsl.Tests.ReparamTests

open Expecto
open FsCheck
open FsCheck.FSharp
open TorchSharp
open Dsl
open Dsl.Ir
open Dsl.Passes
open Dsl.Runtime.Emit
open Dsl.Runtime.Transforms
open Dsl.Tests.Support

/// Non-trivial BatchNorm statistics/affines and layer scales, so that every fold matters (the
/// ONNX tests use it too).
let randomise (m: GraphModule) (generator: torch.Generator) =
    use _ = torch.no_grad ()
    let state = m.state_dict ()

    let set name (low: float) (high: float) =
        let t = state[name]
        use r = torch.rand (t.shape, generator = generator) * (high - low) + low
        t.copy_ r |> ignore

    for n in m.Graph.Nodes do
        match n.Op with
        | BatchNorm _ ->
            set n.Params["weight"] 0.5 1.5
            set n.Params["bias"] -0.5 0.5
            set n.Params["running_mean"] -0.5 0.5
            set n.Params["running_var"] 0.5 1.5
        | LayerScale _ -> set n.Params["gamma"] 0.5 1.5
        | _ -> ()

let private countOps (pred: Op -> bool) (g: Graph) =
    g.Nodes |> List.filter (fun n -> pred n.Op) |> List.length

let private isBn =
    function
    | BatchNorm _ -> true
    | _ -> false

/// Builds the model, randomises it, reparameterises it and returns (max |Δ|, tolerance, deploy graph).
let private compare (g: Graph) (batch: int64) =
    use m = new GraphModule(g, 11L)
    // Own generator: the test draws the same statistics and input on every run.
    use generator = new torch.Generator(7UL)
    randomise m generator
    m.eval ()
    use deploy = WeightMapEvaluator.Reparameterize m
    use _ = torch.no_grad ()

    // One random tensor per input (token ids below 100 for token inputs); every output compared.
    let inputs =
        g.Inputs
        |> List.map (fun (_, id) ->
            let shape =
                batch :: (g.Nodes[id].Shape |> List.tail |> List.map (known >> int64))
                |> List.toArray

            match g.Nodes[id].Op with
            | Input(_, TokensInput) -> torch.randint (0L, 100L, shape, generator = generator)
            | _ -> torch.randn (shape, generator = generator))
        |> List.toArray

    let ys = m.Forward inputs
    let ys2 = deploy.Forward inputs

    let diff =
        Array.map2 (fun (a: torch.Tensor) (b: torch.Tensor) -> (a - b).abs().max().item<float32>() |> float) ys ys2
        |> Array.max

    let scale =
        ys |> Array.map (fun y -> y.abs().max().item<float32>() |> float) |> Array.max

    let tol = 1e-4 * max 1.0 scale

    for t in Array.concat [ inputs; ys; ys2 ] do
        t.Dispose()

    diff, tol, deploy.Graph

let private equivalent (g: Graph) =
    let diff, tol, g2 = compare g 2L
    diff <= tol && paramCount g2 <= paramCount g

let private roundTrips (g: Graph) =
    let printed = Print.model g
    let again = snd (Compiler.checkSource "printed.dsl" printed).Models.Head
    IrJson.write false again = IrJson.write false g

let private languageModels =
    [
        "conv-BN chain",
        "model m : image[3, 16, 16] = conv 8 >> batchnorm >> relu >> conv 8 (k = 5) (bias = true) >> batchnorm\n"
        "MobileOne, RepMixer, RepCPE",
        "open fastvit\nmodel m : image[8, 16, 16] = mobileOne 8 (groups = 8) >> mobileOne 16 (k = 3) (stride = 2) >> repMixerBlock >> repCpe >> mobileOne 16 (k = 1)\n"
        "large-kernel conv and patch embed",
        "open fastvit\nmodel m : image[8, 16, 16] = largeKernelConv 8 (k = 5) >> patchEmbed 8 >> repMixer (k = 5)\n"
        "two conv branches, grouped",
        "open fastvit\nmodel m : image[8, 12, 12] = mobileOne 8 (k = 5) (groups = 2) (branches = 2)\n"
        // "same" with even kernels pads one more at the end; the 2×2 branch sits inside the 4×4.
        "even kernels with asymmetric \"same\" padding",
        "model m : image[3, 9, 9] = fun x -> (x |> conv 4 (k = 2) (bias = false) |> batchnorm) + (x |> conv 4 (k = 4) (bias = false) |> batchnorm)\n"
    ]

/// A random stack of library blocks, tracking the channel count.
let private architecture =
    gen {
        let! cin = Gen.elements [ 4; 8 ]
        let! n = Gen.choose (1, 4)

        let block c =
            gen {
                let! choice = Gen.choose (0, 4)
                let! width = Gen.elements [ 4; 8; 12 ]
                let! k = Gen.elements [ 1; 3; 5 ]
                let! stride = Gen.elements [ 1; 2 ]
                let! depthwise = Gen.elements [ false; true ]
                let! branches = Gen.choose (0, 2)

                match choice with
                | 0
                | 1 ->
                    let cout = if depthwise then c else width
                    let groups = if depthwise then c else 1
                    // A lone BatchNorm (no conv branch at all) is not folded: give k = 1 blocks a conv.
                    let branches = if branches = 0 && k = 1 then 1 else branches

                    return
                        sprintf
                            "mobileOne %d (k = %d) (stride = %d) (groups = %d) (branches = %d)"
                            cout
                            k
                            stride
                            groups
                            branches,
                        cout
                | 2 -> return sprintf "repMixer (k = %d)" (if k = 1 then 3 else k), c
                | 3 -> return "repCpe", c
                | _ -> return sprintf "largeKernelConv %d (k = 5) (stride = %d)" c stride, c
            }

        let rec blocks i c acc =
            gen {
                if i = 0 then
                    return List.rev acc
                else
                    let! b, c2 = block c
                    return! blocks (i - 1) c2 (b :: acc)
            }

        let! bs = blocks n cin []
        return sprintf "open fastvit\nmodel m : image[%d, 16, 16] = %s\n" cin (String.concat " >> " bs)
    }

let private config =
    { FsCheckConfig.defaultConfig with
        maxTest = 25
    }

[<Tests>]
let tests =
    testList
        "reparam"
        [
            yield!
                [
                    for name, src in languageModels ->
                        test (sprintf "%s: same outputs, no BatchNorm, fewer parameters" name) {
                            let g = graph src
                            let diff, tol, g2 = compare g 3L
                            Expect.isLessThanOrEqual diff tol "max |y − y'|"
                            Expect.equal (countOps isBn g2) 0 "no BatchNorm left"
                            Expect.isLessThan (paramCount g2) (paramCount g) "fewer parameters"
                            Expect.isTrue (roundTrips g2) "printed deploy graph re-parses to the same IR"
                        }
                ]

            test "a lone BatchNorm or a conv shared by two consumers is left alone" {
                let g = graph "model m : image[4, 8, 8] = batchnorm >> residual (conv 4 >> relu)\n"

                let g2, map = Reparam.reparameterize g
                Expect.equal (IrJson.write false g2) (IrJson.write false g) "unchanged"
                Expect.isTrue (map |> List.forall (fun (n, e) -> e = Reparam.Old n)) "identity map"
            }

            test "misaligned branches are not summed, but each conv-BN still folds" {
                let g =
                    graph
                        "model m : image[4, 8, 8] = fun x -> (x |> conv 4 (k = 2) (stride = 2) (bias = false) |> batchnorm) + (x |> conv 4 (k = 1) (stride = 2) (bias = false) |> batchnorm)\n"

                let diff, tol, g2 = compare g 2L
                Expect.isLessThanOrEqual diff tol "max |y − y'|"
                Expect.equal (countOps (fun op -> op.IsConv) g2) 2 "two convs"
                Expect.equal (countOps (fun op -> op = Add) g2) 1 "the sum stays"
                Expect.equal (countOps isBn g2) 0 "no BatchNorm left"
            }

            test "RepMixer folds into one depthwise conv with the mixer's name" {
                let g = graph "open fastvit\nmodel m : image[8, 8, 8] = repMixer\n"
                let g2, _ = Reparam.reparameterize g
                let convs = g2.Nodes |> List.filter (fun n -> n.Op.IsConv)
                Expect.equal (convs |> List.map (fun n -> n.Path)) [ "mixer.conv_kxk.0.conv" ] "one conv"
                Expect.equal (g2.Nodes.Length) 2 "input and conv"

                match convs.Head.Op with
                | Conv c ->
                    Expect.equal (c.Groups, c.Kernel, c.Padding, c.Bias) (8, [ 3; 3 ], [ 1; 1 ], true) "depthwise 3×3"
                | _ -> ()
            }

            testPropertyWithConfig config "random library stacks reparameterise to the same function"
            <| Prop.forAll (Arb.fromGen architecture) (fun src ->
                let g = graph src
                let g2, _ = Reparam.reparameterize g
                equivalent g && roundTrips g2 && countOps isBn g2 = 0)

            yield!
                [
                    for variant in
                        List.map (fun (v, _, _, _, _) -> v) LibraryTests.fastvitPublished
                        @ [ "mci0"; "mci2" ]
                        @ List.map (fun (v, _, _, _, _) -> v) LibraryTests.mobileonePublished ->
                        test (sprintf "every library variant: %s re-parameterises to the same outputs at 64×64" variant) {
                            let lib, builder =
                                if variant.StartsWith "mci" then
                                    "fastvit", "mci"
                                elif variant.StartsWith "mobileone" then
                                    "mobileone", "mobileoneNet"
                                else
                                    "fastvit", "fastvit"

                            let g =
                                graph (sprintf "open %s\nmodel m : image[3, 64, 64] = %s %s\n" lib builder variant)

                            let diff, tol, deploy = compare g 1L
                            Expect.isLessThanOrEqual diff tol variant
                            Expect.isLessThan (paramCount deploy) (paramCount g) "fewer parameters"
                        }
                ]

            test "MobileCLIP's MCt text encoder re-parameterises to the same outputs" {
                let g =
                    graph
                        "open clip\nlet small = { mct with vocabulary = 100; eot = 99; width = 64; heads = 2 }\nmodel m : tokens[16] = textEncoder small (dim = 32)\n"

                let diff, tol, deploy = compare g 2L
                Expect.isLessThanOrEqual diff tol "max |y − y'|"
                Expect.equal (countOps isBn deploy) 0 "no BatchNorm left"
                Expect.isLessThan (paramCount deploy) (paramCount g) "fewer parameters"
            }

            test "the MobileCLIP example's dual-encoder student re-parameterises to the same outputs" {
                let c =
                    Compiler.checkFile (System.IO.Path.Combine(repoRoot.Value, "examples", "mobileclip", "student.dsl"))

                Expect.isEmpty c.Diagnostics "compiles"
                let g = c.Models |> List.find (fun (n, _) -> n = "studentReinforced") |> snd
                let diff, tol, deploy = compare g 3L
                Expect.isLessThanOrEqual diff tol "max |y − y'| over image, text and logit_scale"
                // The attention stage's pre-norm BatchNorm follows a residual sum, so no conv
                // absorbs it (timm's deploy FastViT keeps it too); every other one is folded.
                Expect.equal (countOps isBn deploy) 1 "only the attention block's norm is left"
                Expect.isLessThan (paramCount deploy) (paramCount g) "fewer parameters"
                Expect.isTrue (roundTrips deploy) "printed deploy graph re-parses"
            }

            test "FastViT-T8: the layer-by-layer counts before and after, same outputs at 64×64" {
                let g = graph "open fastvit\nmodel m : image[3, 64, 64] = fastvit fastvitT8\n"
                let diff, tol, g2 = compare g 2L
                let t8 = LibraryTests.Reference.t8

                let count features =
                    LibraryTests.Reference.classifier t8 features

                Expect.equal (paramCount g) (count (LibraryTests.Reference.features t8)) "train form"
                Expect.equal (paramCount g2) (count (LibraryTests.Reference.dslDeployFeatures t8)) "deploy form"
                Expect.isLessThanOrEqual diff tol "max |y − y'|"
                Expect.equal (countOps isBn g2) 0 "no BatchNorm left"
                Expect.isTrue (roundTrips g2) "printed deploy graph re-parses"
            }
        ]
