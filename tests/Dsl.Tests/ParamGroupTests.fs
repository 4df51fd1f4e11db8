/// `freeze`, `paramGroups` and `decayNormAndBias` in train blocks: compile-time checks, what the
/// optimizers do with a group's lr and weight decay (against hand-computed AdamW and SGD steps),
/// and resuming a run with groups.
module Dsl.Tests.ParamGroupTests

open System
open System.IO
open Expecto
open TorchSharp
open Dsl.Runtime.Data
open Dsl.Runtime.Emit
open Dsl.Runtime.Checkpoints
open Dsl.Runtime.Training
open Dsl.Tests.Support

/// A conv + BatchNorm encoder and a linear head: encoder.conv.weight [4, 1, 3, 3],
/// encoder.bn.weight [4], encoder.bn.bias [4], head.weight [4, 64], head.bias [4].
let private model =
    """
model tiny : image[1, 4, 4] -> logits[4] =
    named "encoder" (named "conv" (conv 4 (k = 3) (bias = false)) >> named "bn" batchnorm >> relu)
    >> flatten >> named "head" (linear 4)
"""

let private withTrain (fields: string) =
    model
    + sprintf
        "\ntrain tiny {\n    data = imageFolder \"unused\"\n    optimizer = adamw (lr = 1e-2, weightDecay = 0.05)\n    batch = 16\n    epochs = 2\n%s}\n"
        fields

/// The model and recipe of a source that must compile, and its options as `dsl train` makes them.
let private compiled (src: string) (outDir: string) =
    let c = check src

    if not c.Diagnostics.IsEmpty then
        failtestf "unexpected diagnostics:\n%s" (c.Diagnostics |> List.map Dsl.Diagnostics.format |> String.concat "\n")

    let g = snd c.Models.Head
    let r = c.Recipes.Head
    g, r, Dsl.Cli.Session.trainOptions r g outDir

/// 4 classes of 4×4 grey images: class c lights up quadrant c, plus uniform noise.
let private quadrants (count: int) (seed: int64) =
    use gen = new torch.Generator(uint64 seed)
    let labels = torch.arange(int64 count, dtype = torch.int64).remainder(4L.ToScalar())
    let images = torch.rand ([| int64 count; 1L; 4L; 4L |], generator = gen)
    use noGrad = torch.no_grad ()
    images.mul_ (0.3.ToScalar()) |> ignore

    for i in 0 .. count - 1 do
        let c = int64 (i % 4)

        images.select(0, int64 i).narrow(1, (c / 2L) * 2L, 2L).narrow(2, (c % 2L) * 2L, 2L).add_(0.7.ToScalar())
        |> ignore

    new LabeledImages(images, labels, [| "tl"; "tr"; "bl"; "br" |])

/// The bits of every float32 value of a tensor: equal arrays are byte-identical tensors.
let private bits (t: torch.Tensor) =
    t.detach().cpu().data<float32>().ToArray()
    |> Array.map BitConverter.SingleToInt32Bits

let private parameterBits (m: GraphModule) =
    m.named_parameters ()
    |> Seq.map (fun struct (name, p) -> name, bits p)
    |> Map.ofSeq

let private parameterOf (m: GraphModule) (name: string) =
    m.named_parameters ()
    |> Seq.pick (fun struct (n, p) -> if n = name then Some p else None)

let private values (t: torch.Tensor) =
    t.detach().cpu().data<float32>().ToArray() |> Array.map float

let private close (actual: float[]) (expected: float[]) (tolerance: float) (what: string) =
    Expect.equal actual.Length expected.Length $"{what}: length"

    Array.iteri2
        (fun i a e -> Expect.isLessThanOrEqual (abs (a - e)) tolerance $"{what}[{i}]: {a} vs expected {e}")
        actual
        expected

// ---- A linear model whose first AdamW step is computed by hand ----

/// logits = W·x + b on the 4 pixels of a 1×2×2 image, 2 classes.
let private linearSource =
    "model lin : image[1, 2, 2] -> logits[2] = flatten >> named \"fc\" (linear 2)\n"

let private w0 = [| 0.5; -0.25; 0.75; -1.0; 0.125; 0.375; -0.5; 0.25 |] // [2, 4], row-major
let private b0 = [| 0.3; -0.6 |]

let private xs =
    [|
        [| 1.0; 0.0; 0.5; 0.25 |]
        [| 0.0; 1.0; 0.25; 0.75 |]
        [| 0.5; 0.5; 1.0; 0.0 |]
        [| 0.25; 0.75; 0.0; 1.0 |]
    |]

let private ys = [| 0; 1; 1; 0 |]

/// The gradient of the batch-mean cross-entropy of softmax(W·x + b): (softmax − onehot)/N
/// times xᵀ for W, summed over the batch for b.
let private handGradient () =
    let n = float xs.Length
    let gw = Array.zeroCreate 8
    let gb = Array.zeroCreate 2

    for i in 0 .. xs.Length - 1 do
        let logits =
            Array.init 2 (fun r -> b0[r] + Array.sum (Array.init 4 (fun c -> w0[r * 4 + c] * xs[i][c])))

        let top = Array.max logits
        let e = logits |> Array.map (fun l -> exp (l - top))
        let z = Array.sum e

        for r in 0..1 do
            let d = (e[r] / z - (if ys[i] = r then 1.0 else 0.0)) / n
            gb[r] <- gb[r] + d

            for c in 0..3 do
                gw[r * 4 + c] <- gw[r * 4 + c] + d * xs[i][c]

    gw, gb

/// torch.optim.AdamW's first step on a parameter in double precision: decoupled decay
/// p·(1 − lr·wd), then the bias-corrected moment step (Loshchilov and Hutter 2019, Algorithm 2).
let private adamwFirstStep (lr: float) (wd: float) (p0: float[]) (g: float[]) =
    let b1, b2, eps = 0.9, 0.999, 1e-8

    Array.map2
        (fun p gj ->
            let m = (1.0 - b1) * gj
            let v = (1.0 - b2) * gj * gj
            let mHat = m / (1.0 - b1)
            let denom = sqrt v / sqrt (1.0 - b2) + eps
            p * (1.0 - lr * wd) - lr * mHat / denom)
        p0
        g

let private linearData () =
    let images =
        torch.tensor(xs |> Array.concat |> Array.map float32).view(int64 xs.Length, 1L, 2L, 2L)

    new LabeledImages(images, torch.tensor (ys |> Array.map int64), [| "a"; "b" |])

/// One AdamW step (lr 0.1, weight decay 0.5) of the linear model from W0, b0 on the whole batch.
let private linearStep (configure: TrainOptions -> unit) =
    let g = graph linearSource
    use m = new GraphModule(g, 0L)
    use data = linearData ()

    do
        use _ = torch.no_grad ()

        (parameterOf m "fc.weight").copy_(torch.tensor(w0 |> Array.map float32).view(2L, 4L))
        |> ignore

        (parameterOf m "fc.bias").copy_(torch.tensor (b0 |> Array.map float32))
        |> ignore

    let dir = tempDir ()

    try
        let o =
            TrainOptions(
                Epochs = 1,
                BatchSize = 4,
                Optimizer = "adamw",
                Lr = 0.1,
                WeightDecay = 0.5,
                Schedule = "constant",
                OutDir = dir
            )

        configure o
        Trainer(m, o).Train(classify m o data null) |> ignore
        values (parameterOf m "fc.weight"), values (parameterOf m "fc.bias")
    finally
        Directory.Delete(dir, true)

[<Tests>]
let tests =
    testList
        "param groups"
        [
            test
                "frozen parameters stay byte-identical over 3 steps while the others change, and are not in the optimizer" {
                let dir = tempDir ()

                try
                    let g, r, o =
                        compiled (withTrain "    freeze = [ \"encoder.conv.*\"; \"*.bn*\" ]\n") dir

                    Expect.equal (r.Freeze |> List.map fst) [ "encoder.conv.*"; "*.bn*" ] "the recipe's patterns"
                    Expect.sequenceEqual o.Freeze [ "encoder.conv.*"; "*.bn*" ] "the options' patterns"
                    o.MaxSteps <- Nullable 3L
                    use m = new GraphModule(g, 1L)
                    use data = quadrants 64 1L
                    let before = parameterBits m
                    let result = Trainer(m, o).Train(classify m o data null)
                    Expect.equal result.Steps 3L "three steps"
                    let after = parameterBits m

                    for name in [ "encoder.conv.weight"; "encoder.bn.weight"; "encoder.bn.bias" ] do
                        Expect.equal after[name] before[name] $"{name} (frozen) is byte-identical"

                    for name in [ "head.weight"; "head.bias" ] do
                        Expect.notEqual after[name] before[name] $"{name} (trained) changed"

                    Expect.isTrue
                        (m.parameters () |> Seq.forall (fun p -> p.requires_grad))
                        "requires_grad is restored after the run"

                    use saved = Checkpoint.Load(Path.Combine(dir, "checkpoint"))

                    Expect.sequenceEqual
                        (saved.OptimizerState.Keys |> Seq.sort)
                        [
                            "exp_avg.head.bias"
                            "exp_avg.head.weight"
                            "exp_avg_sq.head.bias"
                            "exp_avg_sq.head.weight"
                            "step"
                        ]
                        "the optimizer holds only the trained parameters"
                finally
                    Directory.Delete(dir, true)
            }

            test "a group with lr 0 leaves its parameters byte-identical (its decay too) while the rest train" {
                let dir = tempDir ()

                try
                    let g, _, o =
                        compiled (withTrain "    paramGroups = [ { path = \"head.*\"; lr = 0.0 } ]\n") dir

                    o.MaxSteps <- Nullable 3L
                    use m = new GraphModule(g, 1L)
                    use data = quadrants 64 1L
                    let before = parameterBits m
                    Trainer(m, o).Train(classify m o data null) |> ignore
                    let after = parameterBits m
                    Expect.equal after["head.weight"] before["head.weight"] "head.weight (lr 0, decay 0.05) unchanged"
                    Expect.equal after["head.bias"] before["head.bias"] "head.bias (lr 0) unchanged"
                    Expect.notEqual after["encoder.conv.weight"] before["encoder.conv.weight"] "the encoder trains"
                finally
                    Directory.Delete(dir, true)
            }

            test
                "a group's weight decay 0 vs 0.1 differs by AdamW's decoupled decay lr·wd·W0, each equal to the hand-computed step" {
                let gw, gb = handGradient ()
                let lr = 0.1

                let withDecay wd =
                    linearStep (fun o -> o.ParamGroups <- [ ParamGroup("fc.weight", WeightDecay = Nullable wd) ])

                let w0decay, b0decay = withDecay 0.0
                let w1decay, b1decay = withDecay 0.1
                close w0decay (adamwFirstStep lr 0.0 w0 gw) 1e-6 "W with the group's wd 0"
                close w1decay (adamwFirstStep lr 0.1 w0 gw) 1e-6 "W with the group's wd 0.1"
                // Decoupled decay: the same gradient step, minus lr·wd·W0 (Loshchilov and Hutter 2019).
                close (Array.map2 (-) w0decay w1decay) (w0 |> Array.map (fun w -> lr * 0.1 * w)) 1e-6 "the difference"
                // The bias is in no group: the optimizer's decay 0.5, which 1-D parameters do not get.
                close b0decay (adamwFirstStep lr 0.0 b0 gb) 1e-6 "b (wd 0 group run)"
                Expect.equal b1decay b0decay "the bias does not depend on the weight's group"
            }

            test "biases are not decayed by default; decayNormAndBias decays them" {
                let gw, gb = handGradient ()
                let lr, wd = 0.1, 0.5
                let w, b = linearStep ignore
                close w (adamwFirstStep lr wd w0 gw) 1e-6 "W decayed by the optimizer's 0.5"
                close b (adamwFirstStep lr 0.0 b0 gb) 1e-6 "b not decayed"
                let _, bDecayed = linearStep (fun o -> o.DecayNormAndBias <- true)
                close bDecayed (adamwFirstStep lr wd b0 gb) 1e-6 "b decayed with decayNormAndBias"

                let _, r, o =
                    compiled (withTrain "    decayNormAndBias = true\n") (Path.GetTempPath())

                Expect.isTrue r.DecayNormAndBias "the recipe's field"
                Expect.isTrue o.DecayNormAndBias "reaches TrainOptions"
            }

            test "an SGD group's lrScale scales its first step and leaves the others' alone" {
                let step (groups: ParamGroup list) =
                    linearStep (fun o ->
                        o.Optimizer <- "sgd"
                        o.Momentum <- 0.0
                        o.WeightDecay <- 0.0
                        o.ParamGroups <- groups)

                let gw, gb = handGradient ()
                let w, b = step [ ParamGroup("fc.weight", LrScale = Nullable 0.25) ]
                // SGD: p − lr·scale·g (torch.optim.SGD with the group's lr).
                close w (Array.map2 (fun p g -> p - 0.1 * 0.25 * g) w0 gw) 1e-6 "W at a quarter of the lr"
                close b (Array.map2 (fun p g -> p - 0.1 * g) b0 gb) 1e-6 "b at the optimizer's lr"
            }

            test "an absolute group lr follows the schedule by the optimizer lr's factor" {
                let gw, _ = handGradient ()

                let w, _ =
                    linearStep (fun o ->
                        o.Optimizer <- "sgd"
                        o.Momentum <- 0.0
                        o.WeightDecay <- 0.0
                        // Warmup over 4 steps: step 0 runs at a quarter of every group's peak lr.
                        o.WarmupSteps <- 4
                        o.ParamGroups <- [ ParamGroup("fc.*", Lr = Nullable 0.4) ])

                close w (Array.map2 (fun p g -> p - 0.4 / 4.0 * g) w0 gw) 1e-6 "W at 0.4 / 4"
            }

            test "a pattern that matches no parameter is an error at the pattern, with did-you-mean" {
                expectError
                    (withTrain "    freeze = [ \"head.*\"; \"encodr.*\" ]\n")
                    "11:26"
                    "freeze: 'encodr.*' matches no trainable parameter of model 'tiny'; did you mean 'encoder.*'?"

                expectError
                    (withTrain "    paramGroups = [ { path = \"head.wieght\"; lr = 0.1 } ]\n")
                    "11:30"
                    "paramGroups: 'head.wieght' matches no trainable parameter of model 'tiny'; did you mean 'head.weight'?"

                // A pattern that reaches only a buffer trains nothing: it is no match either.
                expectError (withTrain "    freeze = [ \"*.running_mean\" ]\n") "11:16" "matches no trainable parameter"

                expectError
                    (withTrain
                        "    paramGroups = [ { path = \"head.*\"; lr = 0.1 }; { path = \"head.bias\"; weightDecay = 0.0 } ]\n")
                    "11:61"
                    "every parameter 'head.bias' matches is frozen or in an earlier group"

                expectError
                    (withTrain "    paramGroups = [ { path = \"head.*\"; lr = 0.1; lrScale = 2.0 } ]\n")
                    "11:50"
                    "give lr (absolute) or lrScale (relative), not both"

                expectError
                    (withTrain "    paramGroups = [ { path = \"head.*\"; wd = 0.0 } ]\n")
                    "11:40"
                    "unknown field 'wd'"

                expectError (withTrain "    freeze = [ \"*\" ]\n") "11:16" "nothing would train"
            }

            test "a recipe with groups prints back as source that gives the same groups" {
                let src =
                    withTrain
                        "    freeze = [ \"encoder.conv.*\" ]\n    paramGroups = [ { path = \"head.*\"; lrScale = 0.5 }; { path = \"*.bias\"; weightDecay = 0.0 } ]\n    decayNormAndBias = true\n"

                let r = (check src).Recipes.Head
                let printed = Dsl.Print.recipe r
                let again = check (model + "\n" + printed)
                Expect.isEmpty again.Diagnostics printed
                let r2 = again.Recipes.Head
                Expect.equal (r2.Freeze |> List.map fst) (r.Freeze |> List.map fst) "freeze"

                let groups (r: Dsl.Recipe.TrainRecipe) =
                    r.Groups |> List.map (fun g -> g.Path, g.Lr, g.LrScale, g.WeightDecay)

                Expect.equal (groups r2) [ "head.*", None, Some 0.5, None; "*.bias", None, None, Some 0.0 ] "groups"
                Expect.isTrue r2.DecayNormAndBias "decayNormAndBias"
            }

            test "a resumed run with freeze and groups ends byte-identical to an uninterrupted one" {
                use data = quadrants 64 1L

                let fields =
                    "    freeze = [ \"encoder.conv.*\" ]\n    paramGroups = [ { path = \"head.*\"; lrScale = 0.5 }; { path = \"*.bias\"; weightDecay = 0.0 } ]\n    schedule = cosine (warmup = 2)\n"

                let run dir seed (maxSteps: int64 option) resume =
                    let g, _, o = compiled (withTrain fields) dir
                    let m = new GraphModule(g, seed)
                    o.MaxSteps <- Option.toNullable maxSteps
                    o.Resume <- resume
                    Trainer(m, o).Train(classify m o data null) |> ignore
                    m

                let straightDir, resumedDir = tempDir (), tempDir ()

                try
                    // 2 epochs of 4 steps: stop at step 3, resume into a model with other initial weights.
                    use straight = run straightDir 3L None false
                    (run resumedDir 3L (Some 3L) false).Dispose()
                    use resumed = run resumedDir 99L None true
                    Expect.equal (parameterBits resumed) (parameterBits straight) "parameters byte-identical"

                    use a = Checkpoint.Load(Path.Combine(straightDir, "checkpoint"))
                    use b = Checkpoint.Load(Path.Combine(resumedDir, "checkpoint"))
                    Expect.equal b.Meta.Step 8L "resumed to the end"

                    Expect.sequenceEqual
                        (b.OptimizerState.Keys |> Seq.sort)
                        (a.OptimizerState.Keys |> Seq.sort)
                        "optimizer state keys"

                    for KeyValue(name, t) in a.OptimizerState do
                        Expect.equal
                            (bits (t.to_type torch.float32))
                            (bits (b.OptimizerState[name].to_type torch.float32))
                            $"optimizer {name}"

                    Expect.equal
                        a.Meta.Extra["param_groups"]
                        "{ path = head.*; lrScale = 0.5 }; { path = *.bias; weightDecay = 0 }"
                        "the checkpoint records the groups"

                    Expect.equal a.Meta.Extra["freeze"] "encoder.conv.*" "and the frozen patterns"
                finally
                    Directory.Delete(straightDir, true)
                    Directory.Delete(resumedDir, true)
            }

            test "resuming with other groups than the checkpoint's is refused, naming the setting" {
                use data = quadrants 64 1L
                let dir = tempDir ()

                try
                    let g, _, o =
                        compiled (withTrain "    paramGroups = [ { path = \"head.*\"; lrScale = 0.5 } ]\n") dir

                    o.MaxSteps <- Nullable 2L
                    use m = new GraphModule(g, 1L)
                    Trainer(m, o).Train(classify m o data null) |> ignore

                    let _, _, changed =
                        compiled (withTrain "    paramGroups = [ { path = \"head.*\"; lrScale = 2.0 } ]\n") dir

                    changed.Resume <- true

                    let e =
                        Expect.throwsC (fun () -> Trainer(m, changed).Train(classify m changed data null) |> ignore) id

                    Expect.isTrue (e :? CheckpointError) (e.GetType().Name + ": " + e.Message)

                    Expect.stringContains
                        e.Message
                        "param_groups: checkpoint { path = head.*; lrScale = 0.5 }"
                        "names the groups"
                finally
                    Directory.Delete(dir, true)
            }

            test "dsl train prints one line per group and the frozen parameters" {
                let source =
                    """
model tiny : image[1, 28, 28] -> logits[10] =
    named "encoder" (conv 4 (k = 3) (stride = 4) >> relu) >> flatten >> named "head" (linear 10)
train tiny {
    data = fashionMnist { augment = [] }
    optimizer = adamw (lr = 1e-2, weightDecay = 0.05)
    freeze = [ "encoder.*" ]
    paramGroups = [ { path = "head.weight"; lr = 0.1 }; { path = "head.bias"; lrScale = 0.5; weightDecay = 0.01 } ]
    batch = 16
}
"""

                let dir, file, data = Dsl.Tests.CliTests.fashionSetup source 32 16

                try
                    let r =
                        Dsl.Tests.CliTests.dsl
                            [
                                "train"
                                file
                                "--data"
                                data
                                "--out"
                                Path.Combine(dir, "run")
                                "--max-steps"
                                "1"
                            ]

                    Expect.equal r.Code 0 (r.Out + r.Err)
                    // encoder: conv 1→4, 3×3, stride 4 on 28×28 → 4×7×7 = 196 features; head 196·10 + 10.
                    Expect.stringContains
                        r.Out
                        "group head.weight: 1 tensor (1,960 values), lr 0.1, wd 0.05"
                        "head.weight"

                    Expect.stringContains r.Out "group head.bias: 1 tensor (10 values), lr 0.005, wd 0.01" "head.bias"
                    Expect.stringContains r.Out "frozen encoder.*: 2 tensors (40 values)" "the frozen encoder"
                    Expect.isFalse (r.Out.Contains "group (other)") "no parameter is left for the optimizer's own group"
                finally
                    Directory.Delete(dir, true)
            }
        ]
