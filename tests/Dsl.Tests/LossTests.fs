/// The objective's losses (`Loss.…`, dsl/Losses.fs): each against a computation written out here
/// from its formula — on a small case worked by hand and on random tensors with plain TorchSharp
/// arithmetic (no torch.nn.functional loss) — and their shape rules' located errors.
module Dsl.Tests.LossTests

open Expecto
open TorchSharp
open Dsl.Runtime.Emit
open Dsl.Tests.Support

/// Runs a model whose outputs are losses: each output by name, as a double.
let private losses (src: string) (inputs: torch.Tensor[]) =
    use m = new GraphModule(graph src, 1L)
    m.eval ()
    let outputs = m.Forward inputs

    let values =
        List.zip
            (List.ofSeq m.OutputNames)
            (outputs
             |> Array.map (fun t -> t.shape, t.item<float32>() |> float)
             |> List.ofArray)

    for t in outputs do
        t.Dispose()

    values
    |> List.map (fun (name, (shape, v)) ->
        Expect.isEmpty shape (sprintf "%s: a loss has shape []" name)
        name, v)
    |> Map.ofList

let private near (name: string) (expected: float) (actual: float) =
    Expect.isLessThan
        (abs (actual - expected))
        (1e-5 * max 1.0 (abs expected))
        (sprintf "%s: %g against %g" name actual expected)

/// log Σ exp, by hand.
let private lse (xs: float list) =
    let m = List.max xs
    m + log (xs |> List.sumBy (fun x -> exp (x - m)))

[<Tests>]
let tests =
    testList
        "losses"
        [
            test "cross-entropy with smoothing and an ignored target, worked by hand" {
                // One record of 4 positions over 3 classes; position 3's target is ignored.
                let rows =
                    [ [ 1.0; 2.0; 3.0 ]; [ 1.0; 0.0; 0.0 ]; [ 0.5; -0.5; 2.0 ]; [ 9.0; 9.0; 9.0 ] ]

                let targets = [ 2; 0; 1; -100 ]

                use x =
                    torch.tensor (
                        rows |> List.concat |> List.map float32 |> Array.ofList,
                        dimensions = System.ReadOnlySpan<int64>([| 1L; 4L; 3L |])
                    )

                use t =
                    torch.tensor (
                        targets |> List.map int64 |> Array.ofList,
                        dimensions = System.ReadOnlySpan<int64>([| 1L; 4L |])
                    )

                let src =
                    "model m (x : tensor[4, 3]) (t : tokens[4]) =\n"
                    + "    { plain = Loss.crossEntropy (axis = -1) x t\n"
                    + "      smooth = Loss.crossEntropy (axis = -1) (smoothing = 0.1) x t }\n"

                let got = losses src [| x; t |]
                let kept = List.zip rows targets |> List.filter (fun (_, y) -> y <> -100)
                let nll (r: float list, y: int) = lse r - r[y]

                let uniform (r: float list) =
                    r |> List.averageBy (fun c -> lse r - c)

                near "plain" (kept |> List.averageBy nll) got["plain"]

                near "smooth" (kept |> List.averageBy (fun (r, y) -> 0.9 * nll (r, y) + 0.1 * uniform r)) got["smooth"]
            }

            test "regression, binary, distillation, z-loss and means against their formulas" {
                use x = torch.randn (5L, 4L, 3L)
                use y = torch.randn (5L, 4L, 3L)
                use p = torch.rand (5L, 4L, 3L)
                use mask = (torch.rand (5L, 4L, 1L)).gt(torch.tensor 0.5f).to_type torch.float32
                use none = torch.zeros (5L, 4L, 1L)

                let src =
                    "model m (x : tensor[4, 3]) (y : tensor[4, 3]) (p : tensor[4, 3]) (k : tensor[4, 1]) (z : tensor[4, 1]) =\n"
                    + "    { mse = Loss.mse x y; l1 = Loss.l1 x y; huber = Loss.smoothL1 x y (beta = 0.5)\n"
                    + "      bce = Loss.binaryCrossEntropy x p; kd = Loss.distill x y (axis = -1) (temperature = 2.0)\n"
                    + "      z = Loss.zLoss x; mean = Loss.mean x; masked = Loss.maskedMean x k; empty = Loss.maskedMean x z\n"
                    + "      sum = Loss.mse x y + 0.5 * Loss.l1 x y }\n"

                let got = losses src [| x; y; p; mask; none |]
                let v (t: torch.Tensor) = t.item<float32>() |> float
                let d = x - y
                let ad = d.abs ()
                near "mse" (v ((d * d).mean())) got["mse"]
                near "l1" (v (ad.mean ())) got["l1"]

                let huber = torch.where (ad.lt (torch.tensor 0.5f), d * d * 0.5f / 0.5f, ad - 0.25f)

                near "huber" (v (huber.mean ())) got["huber"]

                let bce =
                    x.clamp_min (0.0) - x * p + (torch.tensor 1.0f + (-(x.abs ())).exp()).log()

                near "bce" (v (bce.mean ())) got["bce"]

                let logSoftmax (t: torch.Tensor) = t - (t.exp().sum(-1L, true)).log()

                let ls, lt = logSoftmax (x / 2.0f), logSoftmax (y / 2.0f)
                near "kd" (v ((lt.exp () * (lt - ls)).sum(-1L).mean() * 4.0f)) got["kd"]
                let logsumexp = (x.exp().sum(-1L)).log()
                near "z" (v ((logsumexp * logsumexp).mean())) got["z"]
                near "mean" (v (x.mean ())) got["mean"]
                let weights = mask.expand_as x
                near "masked" (v ((x * weights).sum() / weights.sum ())) got["masked"]
                near "empty mask" 0.0 got["empty"]
                near "weighted sum" (got["mse"] + 0.5 * got["l1"]) got["sum"]
            }

            test "InfoNCE is CLIP's symmetric cross-entropy of the scaled similarities to the diagonal" {
                use a = torch.randn (6L, 8L)
                use b = torch.randn (6L, 8L)

                let src =
                    "model m (a : tensor[8]) (b : tensor[8]) =\n"
                    + "    { unscaled = Loss.infoNce a b; scaled = Loss.infoNce a b (scale = exp (param [] (init = 1.5))) }\n"

                let got = losses src [| a; b |]
                let logits = a.matmul (b.t ())

                let symmetric (l: torch.Tensor) =
                    let rows = (l.exp().sum(1L)).log() - l.diagonal ()
                    let cols = (l.exp().sum(0L)).log() - l.diagonal ()
                    ((rows.mean () + cols.mean ()) / 2.0f).item<float32>() |> float

                near "unscaled" (symmetric logits) got["unscaled"]
                near "scaled" (symmetric (logits * float32 (exp 1.5))) got["scaled"]
            }

            test "similarity is x·yᵀ across the batch, and soft cross-entropy −Σ p·log softmax, worked by hand" {
                // Two records: x = [1, 0], [0, 2]; y = [3, 1], [1, 1]. x·yᵀ = [[3, 1], [2, 2]].
                use x =
                    torch.tensor ([| 1.0f; 0.0f; 0.0f; 2.0f |], dimensions = System.ReadOnlySpan<int64>([| 2L; 2L |]))

                use y =
                    torch.tensor ([| 3.0f; 1.0f; 1.0f; 1.0f |], dimensions = System.ReadOnlySpan<int64>([| 2L; 2L |]))

                let src =
                    "model m (x : tensor[2]) (y : tensor[2]) =\n"
                    + "    let s = Loss.similarity x y\n"
                    + "    { total = Loss.mean s\n"
                    + "      soft = Loss.softCrossEntropy s (softmax (axis = 1) (Loss.similarity y x))\n"
                    + "      selfSoft = Loss.softCrossEntropy s (softmax (axis = 1) s) }\n"

                let got = losses src [| x; y |]
                // The mean of [[3, 1], [2, 2]] (its orientation shows in the cross-entropies below).
                near "mean" 2.0 got["total"]
                // Targets: softmax of y·xᵀ = [[3, 2], [1, 2]] per row.
                let softmax (r: float list) =
                    r |> List.map (fun v -> exp (v - lse r))

                let logits = [ [ 3.0; 1.0 ]; [ 2.0; 2.0 ] ]
                let targets = [ [ 3.0; 2.0 ]; [ 1.0; 2.0 ] ] |> List.map softmax

                let cross (p: float list list) =
                    List.zip logits p
                    |> List.averageBy (fun (l, q) -> List.zip l q |> List.sumBy (fun (v, w) -> -w * (v - lse l)))

                near "soft cross-entropy" (cross targets) got["soft"]
                // Against its own softmax it is the entropy: row 2 is uniform, ln 2.
                let entropy (r: float list) =
                    softmax r |> List.sumBy (fun q -> -q * log q)

                near "entropy" ((entropy logits[0] + log 2.0) / 2.0) got["selfSoft"]
            }

            test
                "MobileCLIP's distillation written in the prelude is the host formula (two teachers, averaged after softmax)" {
                use g = new torch.Generator(3UL)

                let unit n d =
                    torch.nn.functional.normalize (torch.randn ([| n; d |], generator = g), dim = 1L)

                use u = unit 5L 4L
                use v = unit 5L 4L
                use t1i = unit 5L 3L
                use t1t = unit 5L 3L
                use t2i = unit 5L 6L
                use t2t = unit 5L 6L

                let src =
                    "model m (u : tensor[4]) (v : tensor[4]) (a : tensor[3]) (b : tensor[3]) (c : tensor[6]) (d : tensor[6]) =\n"
                    + "    { kd = mobileclipDistill 10.0 u v (exp (param [] (init = 1.0))) [ { image = a; caption = b }; { image = c; caption = d } ] (fun t -> t.caption) }\n"

                let got = losses src [| u; v; t1i; t1t; t2i; t2t |]

                use expected =
                    Dsl.Runtime.Training.ImageTextLosses.Distill(
                        u,
                        v,
                        torch.tensor (float32 (exp 1.0)),
                        [| t1i; t2i |],
                        [| t1t; t2t |],
                        [| 10.0; 10.0 |]
                    )

                near "distillation" (expected.item<float32>() |> float) got["kd"]
            }

            test "a loss over shapes that do not fit is a located error" {
                let head =
                    "model m (x : tensor[4, 3]) (y : tensor[4]) (t : tokens[4]) (u : tokens[3]) =\n"

                expectError
                    (head + "    Loss.crossEntropy (axis = -1) x y\n")
                    "2:5"
                    "targets must be integer class indices"

                expectError (head + "    Loss.crossEntropy (axis = -1) x u\n") "2:5" "need targets [B, 4], got [B, 3]"

                expectError
                    (head + "    Loss.mse (x |> linear 1) y\n")
                    "2:5"
                    "the two shapes must be equal, got [B, 4, 1] and [B, 4]"

                expectError (head + "    Loss.crossEntropy (axis = 0) x t\n") "2:5" "axis 0 is not a non-batch axis"
                expectError (head + "    Loss.infoNce x x\n") "2:5" "expects two [B, D] embeddings"
                expectError (head + "    Loss.mean t\n") "2:5" "must be float values"
            }
        ]
