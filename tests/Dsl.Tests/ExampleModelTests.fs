/// The five models of examples/models, written as a new user would (ResNet-18, U-Net, ConvNeXt-T,
/// GPT-2, an image + metadata fusion): each checks, has the parameter count of the PyTorch
/// reference (the published total, or one computed here from the layer formulas), and runs.
module Dsl.Tests.ExampleModelTests

open System.IO
open Expecto
open TorchSharp
open Dsl
open Dsl.Ir
open Dsl.Runtime.Emit
open Dsl.Tests.Support

let private models file =
    let c =
        Compiler.checkFile (Path.Combine(repoRoot.Value, "examples", "models", file))

    if not c.Diagnostics.IsEmpty then
        failtestf "%s:\n%s" file (c.Diagnostics |> List.map Diagnostics.format |> String.concat "\n")

    c.Models |> Map.ofList

/// Trainable parameters, as PyTorch's sum(p.numel() for p in model.parameters()).
let private count (g: Graph) =
    g.Params
    |> List.filter (fun p -> p.Kind = Trainable)
    |> List.sumBy (fun p -> p.Shape |> List.fold (fun a d -> a * int64 d) 1L)

/// U-Net with padded 3×3 convs without bias (BatchNorm follows: 2 per channel), 2×2
/// up-convolutions with bias, and a 1×1 head with bias, from the layer formulas.
let private unetCount (cin: int) (widths: int list) (classes: int) =
    let conv3 i o = int64 (9 * i * o)
    let bn c = int64 (2 * c)
    let double i o = conv3 i o + bn o + conv3 o o + bn o
    let w = Array.ofList widths

    let down =
        [ for i in 0 .. w.Length - 1 -> double (if i = 0 then cin else w[i - 1]) w[i] ]
        |> List.sum

    let up =
        [
            for i in 0 .. w.Length - 2 -> int64 (w[i + 1] * w[i] * 4 + w[i]) + double (2 * w[i]) w[i]
        ]
        |> List.sum

    down + up + int64 (w[0] * classes + classes)

/// The fusion model from the layer formulas: conv-BN pairs without bias, a 1×1 conv to the
/// width, the metadata MLP, q/k/v/proj and the MLP of the block, four LayerNorms, the head.
let private fusionCount (cin: int) (encoder: int list) (width: int) (meta: int) (queries: int) (classes: int) =
    let linear i o = int64 (i * o + o)
    let convBn i o = int64 (9 * i * o + 2 * o)

    let encoderCount =
        encoder
        |> List.fold (fun (prev, total) c -> c, total + convBn prev c + convBn c c) (cin, 0L)
        |> snd

    let toWidth = int64 (List.last encoder * width + width)
    let metadata = linear meta width + linear width (queries * width)
    let attention = 4L * linear width width
    let mlp = linear width (4 * width) + linear (4 * width) width
    let norms = 4L * int64 (2 * width)

    encoderCount
    + toWidth
    + metadata
    + attention
    + mlp
    + norms
    + linear width classes

[<Tests>]
let tests =
    testList
        "example models"
        [
            test "parameter counts equal the PyTorch references" {
                // torchvision resnet18, timm convnext_tiny, Hugging Face gpt2 (tied embeddings).
                Expect.equal (count ((models "resnet18.dsl").["resnet18"])) 11_689_512L "ResNet-18"
                Expect.equal (count ((models "convnext.dsl").["convnextT"])) 28_589_128L "ConvNeXt-T"
                Expect.equal (count ((models "gpt2.dsl").["gpt2"])) 124_439_808L "GPT-2 small"
                let unets = models "unet.dsl"
                Expect.equal (count unets["unet"]) (unetCount 1 [ 64; 128; 256; 512; 1024 ] 2) "U-Net"
                Expect.equal (count unets["unetSmall"]) (unetCount 1 [ 16; 32; 64 ] 10) "small U-Net"
                let fusions = models "fusion.dsl"
                Expect.equal (count fusions["fusion"]) (fusionCount 3 [ 64; 128; 256; 384 ] 384 32 8 1000) "fusion"
                Expect.equal (count fusions["fusionTiny"]) (fusionCount 1 [ 16; 32 ] 64 8 4 10) "small fusion"
            }

            test "the U-Net up-convolves with convTranspose2d and keeps the input's size" {
                let g = (models "unet.dsl").["unet"]
                let ups = g.Nodes |> List.filter (fun n -> n.Op.IsConvTranspose)
                Expect.equal ups.Length 4 "four up-convolutions"
                Expect.equal g.Nodes[snd g.Outputs.Head].Shape [ batch; Known 2; Known 256; Known 256 ] "output size"
            }

            test "ConvNeXt's layer scale is one γ per channel on the channels-last axis" {
                let g = (models "convnext.dsl").["convnextT"]

                let scales =
                    g.Nodes
                    |> List.choose (fun n ->
                        match n.Op with
                        | LayerScale(c, axis) -> Some(c, axis, n.Shape.Length)
                        | _ -> None)

                Expect.equal scales.Length 18 "one per block (3 + 3 + 9 + 3)"

                for c, axis, rank in scales do
                    Expect.equal axis (rank - 1) "the last axis of [B, H, W, C]"
                    Expect.contains [ 96; 192; 384; 768 ] c "a stage width"
            }

            test "GPT-2's declared initialisation gives a first loss near ln 257 on byte tokens" {
                let g = (models "gpt2.dsl").["gpt2Tiny"]
                use m = new GraphModule(g, 0L)
                m.eval ()
                torch.manual_seed 7L |> ignore
                use ids = torch.randint (0L, 257L, [| 4L; 65L |])
                use inputs = ids.narrow (1L, 0L, 64L)
                use targets = ids.narrow (1L, 1L, 64L)
                let logits = (m.Forward [| inputs |]).[0]

                use loss =
                    torch.nn.functional.cross_entropy (logits.reshape (-1L, 257L), targets.reshape (-1L))

                let first = loss.item<float32>() |> float
                Expect.isLessThan (abs (first - log 257.0)) 0.1 (sprintf "first loss %g, ln 257 = %g" first (log 257.0))

                let residual =
                    g.Params
                    |> List.filter (fun p -> p.Name.EndsWith "attn.proj.weight" || p.Name.EndsWith "c_proj.weight")

                Expect.isNonEmpty residual "residual projections"

                for p in residual do
                    Expect.equal p.Init (Normal(0.0, 0.02 / sqrt 8.0)) (p.Name + ": N(0, 0.02/√(2L))")
            }

            test "every small variant runs forward to its declared shape" {
                let run (file: string) (name: string) (inputs: torch.Tensor[]) (expected: int64[]) =
                    use m = new GraphModule((models file).[name], 0L)
                    m.eval ()
                    use out = (m.Forward inputs).[0]
                    Expect.equal out.shape expected (file + " " + name)

                use image = torch.rand (2L, 1L, 28L, 28L)
                run "resnet18.dsl" "resnetSmall" [| image |] [| 2L; 10L |]
                run "convnext.dsl" "convnextSmall" [| image |] [| 2L; 10L |]
                run "unet.dsl" "unetSmall" [| image |] [| 2L; 10L; 28L; 28L |]
                use metadata = torch.randn (2L, 8L)
                run "fusion.dsl" "fusionTiny" [| image; metadata |] [| 2L; 10L |]
            }
        ]
