module Dsl.Tests.TrainTests

open System
open System.IO
open Expecto
open Dsl.Tests.Support
open TorchSharp
open Dsl.Ir
open Dsl.Runtime.Data
open Dsl.Runtime.Emit
open Dsl.Runtime.Checkpoints
open Dsl.Runtime.Training
open Dsl.Tests.EmitTests
open Dsl.Tests.EmitTests.Graphs

/// A small residual convnet for 1×8×8 images and 4 classes, with BatchNorm, DropPath and
/// Dropout so that every random stream and every buffer takes part in the resume test.
let private patternNet () =
    let image c s = [ batch; k c; k s; k s ]

    let conv inC outC =
        Conv
            {
                Dims = 2
                InChannels = inC
                OutChannels = outC
                Kernel = [ 3; 3 ]
                Stride = [ 1; 1 ]
                Padding = [ 1; 1 ]
                PaddingEnd = [ 1; 1 ]
                Dilation = [ 1; 1 ]
                Groups = 1
                Bias = false
            }

    let bn =
        [ "weight"; "bias"; "running_mean"; "running_var"; "num_batches_tracked" ]
        |> List.map (fun p -> p, $"stem.bn.{p}")

    {
        Name = "patterns"
        Inputs = [ "image", 0 ]
        Outputs = [ "logits", 10 ]
        Nodes =
            [
                node 0 (Input("image", ImageInput)) [] (image 1 8) "image" []
                node 1 (conv 1 8) [ 0 ] (image 8 8) "stem.conv" [ "weight", "stem.conv.weight" ]
                node 2 (BatchNorm(8, 1e-5, 0.1)) [ 1 ] (image 8 8) "stem.bn" bn
                node 3 (Act Relu) [ 2 ] (image 8 8) "stem.act" []
                node 4 (conv 8 8) [ 3 ] (image 8 8) "block.conv" [ "weight", "block.conv.weight" ]
                node 5 (DropPath 0.2) [ 4 ] (image 8 8) "block.drop" []
                node 6 Add [ 3; 5 ] (image 8 8) "block" []
                node
                    7
                    (Pool
                        {
                            Kind = MaxPool
                            Kernel = [ 2; 2 ]
                            Stride = [ 2; 2 ]
                            Padding = [ 0; 0 ]
                            CeilMode = false
                            CountIncludePad = true
                        })
                    [ 6 ]
                    (image 8 4)
                    "pool"
                    []
                node 8 Flatten [ 7 ] [ batch; k 128 ] "flat" []
                node 9 (Dropout 0.1) [ 8 ] [ batch; k 128 ] "drop" []
                node
                    10
                    (Linear(128, 4, true))
                    [ 9 ]
                    [ batch; k 4 ]
                    "head"
                    [ "weight", "head.weight"; "bias", "head.bias" ]
            ]
        Params =
            [
                trainable "stem.conv.weight" [ 8; 1; 3; 3 ] (Normal(0.0, 0.3))
                trainable "stem.bn.weight" [ 8 ] Ones
                trainable "stem.bn.bias" [ 8 ] Zeros
                param "stem.bn.running_mean" [ 8 ] Zeros Buffer Float32
                param "stem.bn.running_var" [ 8 ] Ones Buffer Float32
                param "stem.bn.num_batches_tracked" [] Zeros Buffer Int64
                trainable "block.conv.weight" [ 8; 8; 3; 3 ] (TruncNormal 0.1)
                trainable "head.weight" [ 4; 128 ] (TruncNormal 0.05)
                trainable "head.bias" [ 4 ] Zeros
            ]
    }

/// 4 classes of 8×8 images: class c lights up quadrant c, plus Gaussian noise.
let private patterns (count: int) (seed: int64) =
    use g = new torch.Generator(uint64 seed)
    let labels = torch.arange(int64 count, dtype = torch.int64).remainder(4L.ToScalar())
    let images = torch.zeros (int64 count, 1L, 8L, 8L)
    use noGrad = torch.no_grad ()

    for c in 0L .. 3L do
        use mask = labels.eq(c.ToScalar()).view(-1L, 1L, 1L, 1L)
        use quadrant = torch.zeros (1L, 1L, 8L, 8L)

        quadrant.narrow(2, (c / 2L) * 4L, 4L).narrow(3, (c % 2L) * 4L, 4L).fill_(1.0.ToScalar())
        |> ignore

        use lit = mask.to_type (torch.float32) * quadrant
        images.add_ (lit) |> ignore

    use noise = torch.randn ([| int64 count; 1L; 8L; 8L |], generator = g)

    images.add_(noise.mul (0.3.ToScalar())).clamp_(0.0.ToScalar(), 1.0.ToScalar())
    |> ignore

    new LabeledImages(images, labels, [| "tl"; "tr"; "bl"; "br" |])

let private tempDir () =
    Directory.CreateTempSubdirectory("dsl-train-").FullName

let private options outDir =
    TrainOptions(
        Epochs = 3,
        BatchSize = 32,
        Optimizer = "adamw",
        Lr = 1e-2,
        WeightDecay = 0.05,
        Schedule = "cosine",
        WarmupSteps = 3,
        MinLr = 1e-4,
        Seed = 11L,
        OutDir = outDir,
        LogEvery = 4
    )

let private augmentations: IAugment list =
    [ RandomCrop(8, 1); HorizontalFlip(0.5); Normalize([| 0.5f |], [| 0.5f |]) ]

let private close (actual: float) (expected: float) tolerance message =
    Expect.isLessThanOrEqual (abs (actual - expected)) tolerance $"{message}: {actual} vs {expected}"

[<Tests>]
let tests =
    testList
        "TrainTests"
        [
            test "loss decreases on separable data within 60 steps" {
                use train = patterns 256 1L
                use testSet = patterns 64 2L
                use model = new GraphModule(patternNet (), 3L)
                let dir = tempDir ()

                try
                    let losses = ResizeArray<float>()
                    let o = options dir
                    o.Epochs <- 8
                    o.MaxSteps <- Nullable 60L

                    let result =
                        Trainer(model, o).Train(classify model o train testSet, fun p -> losses.Add p.Loss)

                    Expect.equal result.Steps 60L "stopped at MaxSteps"
                    let first = losses |> Seq.take 5 |> Seq.average
                    let last = losses |> Seq.skip 55 |> Seq.average

                    Expect.isLessThan
                        last
                        (first * 0.5)
                        $"mean loss of the last 5 steps ({last}) below half the first 5 ({first})"

                    let accuracy =
                        result.LastEvaluation |> Option.ofObj |> Option.map (fun e -> e.Accuracy)

                    Expect.isGreaterThan (accuracy |> Option.defaultValue 0.0) 0.9 "test accuracy after 7 epochs"
                    let lines = File.ReadAllLines(Path.Combine(dir, "metrics.jsonl"))

                    Expect.isTrue
                        (lines |> Array.exists (fun l -> l.Contains "\"test_top5\""))
                        "metrics.jsonl has epoch evaluations"

                    Expect.isTrue
                        (lines |> Array.exists (fun l -> l.Contains "\"images_per_s\""))
                        "metrics.jsonl has step records"

                    use saved = Checkpoint.Load(Path.Combine(dir, "checkpoint"))
                    Expect.equal saved.Meta.Step 60L "the final checkpoint is at the last step"
                finally
                    Directory.Delete(dir, true)
            }

            test "a token model's run reports tokens/s and its model FLOPs utilisation against a measured matmul peak" {
                use train = patterns 64 1L
                use model = new GraphModule(patternNet (), 3L)
                let dir = tempDir ()

                try
                    let o = options dir
                    o.MaxSteps <- Nullable 4L
                    let plain = Trainer(model, o).Train(classify model o train null)
                    Expect.isFalse plain.Throughput.TokensPerSecond.HasValue "an image model reports no tokens"
                    Expect.isTrue (Double.IsNaN plain.PeakFlops) "nor a peak"
                    let o = options (Path.Combine(dir, "tokens"))
                    o.MaxSteps <- Nullable 4L
                    o.TokensPerExample <- 8L
                    let result = Trainer(model, o).Train(classify model o train null)
                    let t = result.Throughput

                    Expect.isGreaterThanOrEqual
                        t.TokensPerSecond.Value
                        (8.0 * t.ImagesPerSecond)
                        "tokens = examples × 8, over the steps' time alone"

                    Expect.isGreaterThan result.PeakFlops 1e8 "a matmul peak above 0.1 GFLOP/s"
                    let n = model.parameters () |> Seq.sumBy (fun p -> p.numel ())

                    Expect.floatClose
                        Accuracy.high
                        t.Mfu.Value
                        (6.0 * float n * t.TokensPerSecond.Value / result.PeakFlops)
                        "MFU = 6 · parameters · tokens/s / peak"

                    let last =
                        File.ReadAllLines(Path.Combine(dir, "tokens", "metrics.jsonl")) |> Array.last

                    Expect.stringContains last "\"tokens_per_s\"" "logged per step"
                    Expect.stringContains last "\"mfu\"" "with the utilisation"
                    Expect.isFalse (last.Contains "allreduce_share") "one process exchanges nothing"
                finally
                    Directory.Delete(dir, true)
            }

            test "a peak of resident memory starts afresh at a reset: a freed 256 MB tensor is not in the next one" {
                Expect.isTrue (Dsl.Runtime.Bench.PeakMemory.Reset()) "Linux lets a process reset its peak"

                do
                    use big = torch.ones ([| 64L * 1024L * 1024L |]) // 256 MB of float32, every page written
                    Expect.isGreaterThan (big.sum().item<float32>()) 6e7f "the tensor is resident"

                let withBig = Dsl.Runtime.Bench.PeakMemory.Bytes()
                Expect.isTrue (Dsl.Runtime.Bench.PeakMemory.Reset()) "and again"
                let after = Dsl.Runtime.Bench.PeakMemory.Bytes()
                Expect.isLessThan after (withBig - 200.0 * 1048576.0) "the freed tensor's pages are not in the new peak"
            }

            test "the live tensor count stays flat over 200 training steps" {
                use train = patterns 128 1L
                use testSet = patterns 32 2L
                use model = new GraphModule(patternNet (), 3L)
                let dir = tempDir ()

                try
                    let o = options dir
                    o.Epochs <- 50
                    o.MaxSteps <- Nullable 200L
                    o.Augmentations <- augmentations
                    o.EvalTransforms <- [ Normalize([| 0.5f |], [| 0.5f |]) :> IAugment ]
                    let live = Collections.Generic.Dictionary<int64, int64>()

                    let record (p: TrainProgress) =
                        if p.Step = 10L || p.Step = 200L then
                            live[p.Step] <- DisposeScopeManager.Statistics.TensorStatistics.ThreadTotalLiveCount

                    Trainer(model, o).Train(classify model o train testSet, record) |> ignore
                    Expect.equal live[200L] live[10L] "live tensors after step 200 = after step 10"
                finally
                    Directory.Delete(dir, true)
            }

            test "a resumed run ends bit-identical to an uninterrupted one" {
                use train = patterns 256 1L

                let run dir seed (maxSteps: int64 option) resume =
                    let model = new GraphModule(patternNet (), seed)
                    let o = options dir
                    o.Augmentations <- augmentations
                    o.GradClip <- 1.0
                    o.LabelSmoothing <- 0.1
                    o.MaxSteps <- Option.toNullable maxSteps
                    o.Resume <- resume
                    Trainer(model, o).Train(classify model o train null) |> ignore
                    model

                let straightDir, resumedDir = tempDir (), tempDir ()

                try
                    // 3 epochs of 8 steps: stop mid-epoch (step 12), resume into a model with other initial weights.
                    use straight = run straightDir 3L None false
                    (run resumedDir 3L (Some 12L) false).Dispose()
                    use resumed = run resumedDir 99L None true
                    let expected = straight.state_dict ()

                    for KeyValue(name, t) in resumed.state_dict () do
                        Expect.isTrue (identical t expected[name]) $"{name} is bit-identical"

                    use a = Checkpoint.Load(Path.Combine(straightDir, "checkpoint"))
                    use b = Checkpoint.Load(Path.Combine(resumedDir, "checkpoint"))
                    Expect.equal b.Meta.Step 24L "resumed to the end"

                    Expect.sequenceEqual
                        (b.OptimizerState.Keys |> Seq.sort)
                        (a.OptimizerState.Keys |> Seq.sort)
                        "optimizer state keys"

                    for KeyValue(name, t) in a.OptimizerState do
                        Expect.isTrue (identical t b.OptimizerState[name]) $"optimizer {name} is bit-identical"
                finally
                    Directory.Delete(straightDir, true)
                    Directory.Delete(resumedDir, true)
            }

            test "resuming into a changed model is a CheckpointError listing the difference, before any step" {
                use train = patterns 64 1L
                let dir = tempDir ()

                // The block's 3×3 convolution made 1×1: same names, one shape differs.
                let changed =
                    let g = patternNet ()

                    { g with
                        Nodes =
                            g.Nodes
                            |> List.map (fun n ->
                                match n.Op with
                                | Conv c when n.Id = 4 ->
                                    { n with
                                        Op =
                                            Conv
                                                { c with
                                                    Kernel = [ 1; 1 ]
                                                    Padding = [ 0; 0 ]
                                                }
                                    }
                                | _ -> n)
                        Params =
                            g.Params
                            |> List.map (fun p ->
                                if p.Name = "block.conv.weight" then
                                    { p with Shape = [ 8; 8; 1; 1 ] }
                                else
                                    p)
                    }

                try
                    let o = options dir
                    o.MaxSteps <- Nullable 2L
                    use first = new GraphModule(patternNet (), 1L)
                    Trainer(first, o).Train(classify first o train null) |> ignore
                    use model = new GraphModule(changed, 1L)
                    let resumed = options dir
                    resumed.Resume <- true
                    let mutable steps = 0

                    let e =
                        Expect.throwsC
                            (fun () ->
                                Trainer(model, resumed)
                                    .Train(classify model resumed train null, (fun _ -> steps <- steps + 1))
                                |> ignore)
                            id

                    Expect.isTrue (e :? CheckpointError) (e.GetType().Name + ": " + e.Message)

                    Expect.stringContains
                        e.Message
                        "block.conv.weight: checkpoint [8, 8, 3, 3], model [8, 8, 1, 1]"
                        "names the parameter and both shapes"

                    Expect.equal steps 0 "no step ran"
                finally
                    Directory.Delete(dir, true)
            }

            test
                "labels beyond the logits are a DataError naming both numbers, before any step, in training and in evaluation" {
                use train = patterns 64 1L
                let dir = tempDir ()

                try
                    use model =
                        new GraphModule(
                            Dsl.Tests.Support.graph "model few : image[1, 8, 8] -> logits[3] = flatten >> linear 3\n",
                            1L
                        )

                    let o = options dir
                    o.MaxSteps <- Nullable 2L
                    let mutable steps = 0

                    let e =
                        Expect.throwsC
                            (fun () ->
                                Trainer(model, o).Train(classify model o train null, (fun _ -> steps <- steps + 1))
                                |> ignore)
                            id

                    Expect.isTrue (e :? DataError) (e.GetType().Name + ": " + e.Message)
                    Expect.stringContains e.Message "class ids 0 to 3" "the data's classes"
                    Expect.stringContains e.Message "give 3 classes" "the model's logits"
                    Expect.equal steps 0 "no step ran"

                    let eval =
                        Expect.throwsC (fun () -> (classify model o train train).Evaluate(model, o) |> ignore) id

                    Expect.isTrue (eval :? DataError) (eval.GetType().Name + ": " + eval.Message)
                finally
                    Directory.Delete(dir, true)
            }

            test "AdamW matches a hand-computed update" {
                let lr, b1, b2, eps, wd = 0.1, 0.9, 0.999, 1e-8, 0.5

                use weight =
                    torch.nn.Parameter(torch.tensor([| 1.0f; -2.0f; 3.0f; 0.5f |]).view(2L, 2L))

                use bias = torch.nn.Parameter(torch.tensor ([| 0.25f; -0.75f |]))

                use optimizer =
                    new AdamW([ struct ("w", weight); struct ("b", bias) ], b1, b2, eps, wd)

                let grads =
                    [
                        [| 0.1; -0.2; 0.3; 0.0 |], [| 1.0; -1.0 |]
                        [| -0.4; 0.5; 0.1; 2.0 |], [| 0.5; 0.25 |]
                    ]
                // Plain double-precision AdamW; weight decay only for the 2-D weight.
                let expect (p0: float[]) (gs: float[] list) decays =
                    let p, m, v = Array.copy p0, Array.zeroCreate p0.Length, Array.zeroCreate p0.Length

                    gs
                    |> List.iteri (fun i g ->
                        let t = float (i + 1)

                        for j in 0 .. p.Length - 1 do
                            if decays then
                                p[j] <- p[j] * (1.0 - lr * wd)

                            m[j] <- b1 * m[j] + (1.0 - b1) * g[j]
                            v[j] <- b2 * v[j] + (1.0 - b2) * g[j] * g[j]
                            let mHat = m[j] / (1.0 - b1 ** t)
                            let denom = sqrt v[j] / sqrt (1.0 - b2 ** t) + eps
                            p[j] <- p[j] - lr * mHat / denom)

                    p

                for (gw, gb) in grads do
                    weight.grad <- torch.tensor(gw |> Array.map float32).view(2L, 2L)
                    bias.grad <- torch.tensor (gb |> Array.map float32)
                    optimizer.Step lr

                let actual (t: torch.Tensor) =
                    t.data<float32>().ToArray() |> Array.map float

                let expectedWeight = expect [| 1.0; -2.0; 3.0; 0.5 |] (grads |> List.map fst) true
                let expectedBias = expect [| 0.25; -0.75 |] (grads |> List.map snd) false
                Array.iter2 (fun a e -> close a e 1e-6 "weight") (actual weight) expectedWeight
                Array.iter2 (fun a e -> close a e 1e-6 "bias (not decayed)") (actual bias) expectedBias
                Expect.equal optimizer.StepCount 2L "two steps"
                let state = optimizer.State()

                Expect.sequenceEqual
                    (state.Keys |> Seq.sort)
                    [ "exp_avg.b"; "exp_avg.w"; "exp_avg_sq.b"; "exp_avg_sq.w"; "step" ]
                    "state keys"

                Expect.equal (state["step"].item<int64>()) 2L "step in the state"

                for t in state.Values do
                    t.Dispose()
            }

            test "SgdMomentum with Nesterov matches a hand-computed update" {
                let lr, mu, wd = 0.1, 0.9, 0.01
                use weight = torch.nn.Parameter(torch.tensor([| 1.0f; -1.0f |]).view(1L, 2L))
                use optimizer = new SgdMomentum([ struct ("w", weight) ], mu, true, wd)
                let grads = [ [| 0.5; -0.25 |]; [| 0.1; 0.3 |] ]
                let p, buf = [| 1.0; -1.0 |], [| 0.0; 0.0 |]

                grads
                |> List.iteri (fun i g ->
                    for j in 0..1 do
                        let d = g[j] + wd * p[j]
                        buf[j] <- if i = 0 then d else mu * buf[j] + d
                        p[j] <- p[j] - lr * (d + mu * buf[j]))

                for g in grads do
                    weight.grad <- torch.tensor(g |> Array.map float32).view(1L, 2L)
                    optimizer.Step lr

                let actual = weight.data<float32>().ToArray() |> Array.map float
                Array.iter2 (fun a e -> close a e 1e-6 "weight") actual p
            }

            test "cosine schedule: linear warmup from ~0 to lr, then down to min lr at the last step" {
                let lr, minLr, total, warmup = 0.1, 0.001, 100L, 10L

                let at step =
                    LrSchedule.Cosine(step, lr, total, warmup, minLr)

                close (at 0L) (lr / 10.0) 1e-12 "first warmup step"
                close (at 4L) (lr / 2.0) 1e-12 "warmup is linear"
                close (at 9L) lr 1e-12 "warmup ends at lr"
                close (at 10L) lr 1e-12 "decay starts at lr"
                close (at 99L) minLr 1e-12 "ends at min lr"
                close (at 150L) minLr 1e-12 "stays at min lr"
                let decaying = [ 10L .. 99L ] |> List.map at
                Expect.isTrue (decaying |> List.pairwise |> List.forall (fun (a, b) -> b <= a)) "monotone after warmup"
                close (LrSchedule.Linear(54L, lr, total, warmup, minLr)) ((lr + minLr) / 2.0) 1e-3 "linear midpoint"
                close (LrSchedule.Constant(50L, lr, warmup)) lr 1e-12 "constant"
                let fromKind = LrSchedule.Create("cosine", lr, total, warmup, minLr)
                close (fromKind.Invoke 42L) (at 42L) 0.0 "Create gives the same function"
            }
        ]
