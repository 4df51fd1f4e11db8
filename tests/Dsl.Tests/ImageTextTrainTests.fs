/// Image-text training (issue 4): the three objectives against their formulas, running one side
/// of a dual encoder, stored augmentations, train blocks for captions data, and `dsl train`,
/// `dsl eval`, `dsl reinforce` end to end on a small generated caption set.
module Dsl.Tests.ImageTextTrainTests

open System
open System.IO
open Expecto
open SixLabors.ImageSharp
open SixLabors.ImageSharp.PixelFormats
open TorchSharp
open Dsl.Runtime.Data
open Dsl.Runtime.Emit
open Dsl.Runtime.Training
open Dsl.Tests.Support

let private withTempDir = withTempDir "dsl-imagetext-train-"

let private rows (t: torch.Tensor) =
    let a = t.data<float32>().ToArray() |> Array.map float
    let cols = int t.shape[1]
    Array.init (int t.shape[0]) (fun i -> a[i * cols .. i * cols + cols - 1])

let private dot (a: float[]) (b: float[]) =
    Array.fold2 (fun s x y -> s + x * y) 0.0 a b

let private logSoftmax (xs: float[]) =
    let m = Array.max xs
    let lse = m + log (xs |> Array.sumBy (fun x -> exp (x - m)))
    xs |> Array.map (fun x -> x - lse)

let private unit (g: torch.Generator) n d =
    let t = torch.randn ([| n; d |], generator = g)
    t / t.norm (1, true)

/// −(1/B) Σ_i Σ_j P[i, j] · log softmax_j(s · a_i · b_j), by hand.
let private crossTo (p: float[][]) (a: float[][]) (b: float[][]) s =
    let n = a.Length

    [
        for i in 0 .. n - 1 ->
            let logits = b |> Array.map (fun bj -> s * dot a[i] bj) |> logSoftmax
            -(Array.fold2 (fun acc pij l -> acc + pij * l) 0.0 p[i] logits)
    ]
    |> List.average

let private identity n =
    Array.init n (fun i -> Array.init n (fun j -> if i = j then 1.0 else 0.0))

let private teacherDistribution (teachers: (float[][] * float[][]) list) s =
    let n = (fst teachers.Head).Length

    let one (a: float[][], b: float[][]) =
        a
        |> Array.map (fun ai -> b |> Array.map (fun bj -> s * dot ai bj) |> logSoftmax |> Array.map exp)

    let all = teachers |> List.map one

    Array.init n (fun i -> Array.init n (fun j -> all |> List.averageBy (fun p -> p[i][j])))

let private lossTests =
    testList
        "objectives"
        [
            test "CLIP InfoNCE is the mean of the two directions' cross-entropies" {
                use g = new torch.Generator(1UL)
                use img = unit g 6 4
                use txt = unit g 6 4
                use scale = torch.tensor 7.0f
                let got = ImageTextLosses.Clip(img, txt, scale).item<float32>() |> float
                let a, b = rows img, rows txt
                let expected = (crossTo (identity 6) a b 7.0 + crossTo (identity 6) b a 7.0) / 2.0
                Expect.floatClose Accuracy.medium got expected "InfoNCE"
            }

            test "the distillation term targets the teachers' softmaxes averaged after softmax" {
                use g = new torch.Generator(2UL)
                use img = unit g 5 4
                use txt = unit g 5 4
                use scale = torch.tensor 3.0f
                let teachers = [ unit g 5 3, unit g 5 3; unit g 5 6, unit g 5 6 ]

                let got =
                    ImageTextLosses
                        .Distill(
                            img,
                            txt,
                            scale,
                            [| fst teachers[0]; fst teachers[1] |],
                            [| snd teachers[0]; snd teachers[1] |],
                            [| 10.0; 10.0 |]
                        )
                        .item<float32>()
                    |> float

                let asRows = teachers |> List.map (fun (a, b) -> rows a, rows b)
                let pImg = teacherDistribution asRows 10.0
                let pTxt = teacherDistribution (asRows |> List.map (fun (a, b) -> b, a)) 10.0
                let a, b = rows img, rows txt
                let expected = (crossTo pImg a b 3.0 + crossTo pTxt b a 3.0) / 2.0
                Expect.floatClose Accuracy.medium got expected "L_D"
            }

            test "the reinforced loss is CLIP at λ = 0, distillation at λ = 1 and their mix between" {
                use g = new torch.Generator(3UL)
                use img = unit g 4 4
                use txt = unit g 4 4
                use scale = torch.tensor 5.0f
                let ti, tt = unit g 4 4, unit g 4 4

                let at lambda =
                    ImageTextLosses.Reinforced(lambda, img, txt, scale, [| ti |], [| tt |], [| 100.0 |]).item<float32>()
                    |> float

                let clip = ImageTextLosses.Clip(img, txt, scale).item<float32>() |> float

                let distill =
                    ImageTextLosses.Distill(img, txt, scale, [| ti |], [| tt |], [| 100.0 |]).item<float32>()
                    |> float

                Expect.floatClose Accuracy.high (at 0.0) clip "λ = 0"
                Expect.floatClose Accuracy.medium (at 1.0) distill "λ = 1"
                Expect.floatClose Accuracy.medium (at 0.75) (0.25 * clip + 0.75 * distill) "λ = 0.75"
            }

            test "CatLIP's BCE is summed over classes and batch and divided by the batch size" {
                use g = new torch.Generator(4UL)
                use logits = torch.randn ([| 3L; 5L |], generator = g)

                use targets =
                    torch
                        .tensor(
                            [|
                                1.0f
                                0.0f
                                0.0f
                                1.0f
                                0.0f
                                0.0f
                                0.0f
                                0.0f
                                0.0f
                                0.0f
                                1.0f
                                1.0f
                                1.0f
                                1.0f
                                1.0f
                            |]
                        )
                        .reshape(3L, 5L)

                let got = ImageTextLosses.MultiLabel(logits, targets).item<float32>() |> float
                let z = rows logits
                let y = rows targets
                let sigmoid x = 1.0 / (1.0 + exp -x)

                let expected =
                    [
                        for b in 0..2 do
                            for c in 0..4 ->
                                let p = sigmoid z.[b].[c]
                                -(y.[b].[c] * log p + (1.0 - y.[b].[c]) * log (1.0 - p))
                    ]
                    |> List.sum
                    |> fun s -> s / 3.0

                Expect.floatClose Accuracy.medium got expected "batch-mean BCE"
            }

            test "the logit scale is exp(logit_scale), clamped at 100" {
                use small = torch.tensor 2.6592600f
                use large = torch.tensor 6.0f

                Expect.floatClose
                    Accuracy.medium
                    (ImageTextLosses.Scale(small).item<float32>() |> float)
                    (1.0 / 0.07)
                    "init"

                Expect.equal (ImageTextLosses.Scale(large).item<float32>()) 100.0f "clamped"
            }
        ]

/// A dual encoder small enough to train in a test: 1×8×8 images, 6 tokens.
let dualSource =
    """
open clip
open vit

let imageTower = conv 8 (k = 3) >> relu >> globalAvgPool >> linear 16

model tiny (image : image[1, 8, 8]) (text : tokens[6]) =
    let features = image |> imageTower
    let tokens = text |> named "token_embedding" (embedding 50257 16) |> positionalEmbedding |> vitBlock 2
    let out = clipOutputs (features |> named "image_projection" (linear 16)) (tokens |> selectWhere 50256 text |> linear 16)
    { image = out.image; text = out.text; logit_scale = out.logit_scale; features = features }
"""

let private forwardTests =
    testList
        "one side of a dual encoder"
        [
            test "ForwardOutputs runs the text side alone, equal to the full forward's text output" {
                use model = new GraphModule(graph dualSource, 5L)
                model.eval ()
                use images = torch.rand ([| 3L; 1L; 8L; 8L |])
                use tokens = torch.randint (50257L, [| 3L; 6L |])
                let all = model.Forward(images, tokens)
                let text = model.ForwardOutputs([| "text" |], readOnlyDict [ "text", tokens ])
                let textIndex = model.OutputNames |> Seq.findIndex ((=) "text")
                Expect.isTrue (all[textIndex].allclose(text[0])) "same text embeddings"

                for t in Array.append all text do
                    t.Dispose()
            }

            test "the two sides may run on batches of different sizes" {
                use model = new GraphModule(graph dualSource, 5L)
                use images = torch.rand ([| 3L; 1L; 8L; 8L |])
                use tokens = torch.randint (50257L, [| 5L; 6L |])

                let out =
                    model.ForwardOutputs([| "image"; "text" |], readOnlyDict [ "image", images; "text", tokens ])

                Expect.equal out[0].shape [| 3L; 16L |] "three images"
                Expect.equal out[1].shape [| 5L; 16L |] "five texts"

                for t in out do
                    t.Dispose()
            }

            test "an output whose input is not given, or an unknown output, is an ArgumentException naming it" {
                use model = new GraphModule(graph dualSource, 5L)

                Expect.throwsC (fun () -> model.ForwardOutputs([| "image" |], readOnlyDict []) |> ignore) (fun e ->
                    Expect.stringContains e.Message "need input 'image'" "names the input")

                Expect.throwsC (fun () -> model.ForwardOutputs([| "logits" |], readOnlyDict []) |> ignore) (fun e ->
                    Expect.stringContains e.Message "no output 'logits'" "names the output")
            }

            test "the live tensor count is the same before and after a partial forward" {
                use model = new GraphModule(graph dualSource, 5L)
                use tokens = torch.randint (50257L, [| 2L; 6L |])
                let before = DisposeScopeManager.Statistics.TensorStatistics.ThreadTotalLiveCount

                let out =
                    model.ForwardOutputs([| "text"; "logit_scale" |], readOnlyDict [ "text", tokens ])

                for t in out do
                    t.Dispose()

                Expect.equal
                    DisposeScopeManager.Statistics.TensorStatistics.ThreadTotalLiveCount
                    before
                    "nothing left behind"
            }
        ]

let private augmentationTests =
    testList
        "stored augmentations"
        [
            test "replaying stored crop offsets and flips gives the crops RandomCrop and HorizontalFlip make" {
                use g = new torch.Generator(6UL)
                use batch = torch.rand ([| 4L; 2L; 6L; 6L |], generator = g)
                let crop = RandomCrop(6, 2)

                let stored =
                    StoredAugmentations.Sample(4, 6L, 6L, [| crop :> IAugment; HorizontalFlip(0.5) |], g)

                for r in 0..3 do
                    Expect.isTrue
                        (stored.Parameters[r, 0] >= 0L && stored.Parameters[r, 0] <= 4L)
                        "top within the padded image"

                use replayed = stored.Apply(batch, [| 0L; 1L; 2L; 3L |])

                for i in 0..3 do
                    use one = batch.narrow (0, int64 i, 1L)

                    use cropped =
                        crop.ApplyAt(one, [| stored.Parameters[i, 0] |], [| stored.Parameters[i, 1] |])

                    use expected =
                        if stored.Parameters[i, 2] = 1L then
                            cropped.flip 3
                        else
                            cropped.alias ()

                    use got = replayed.narrow (0, int64 i, 1L)
                    Expect.isTrue (got.equal(expected).all().item<bool>()) $"sample {i}"

                use t = stored.ToTensor()
                let back = StoredAugmentations.FromTensor(t, crop)
                Expect.equal back.Parameters stored.Parameters "round trip through a tensor"
            }

            test "offsets outside the padded image are refused" {
                use batch = torch.zeros (1L, 1L, 4L, 4L)

                Expect.throwsT<ArgumentOutOfRangeException>
                    (fun () -> RandomCrop(4, 1).ApplyAt(batch, [| 3L |], [| 0L |]) |> ignore)
                    "top 3 > 2·1 + 4 − 4"
            }
        ]

let private recipeTests =
    let withData data loss =
        dualSource
        + sprintf "\ntrain tiny {\n    data = %s\n    loss = %s\n}\n" data loss

    testList
        "captions train blocks"
        [
            test "captions data with crossEntropy is a located error" {
                expectError
                    (withData "captions \"train.jsonl\" (size = 8)" "crossEntropy")
                    "15:12"
                    "image–text objective"
            }

            test "mobileclipLoss without reinforced data is a located error" {
                expectError
                    (withData "captions \"train.jsonl\" (size = 8)" "mobileclipLoss (lambda = 0.75)")
                    "14:12"
                    "dsl reinforce"
            }

            test "reinforced data without its teacher count is a located error" {
                expectError
                    (withData "captions \"t.jsonl\" (size = 8) (reinforced = \"r\")" "mobileclipLoss (lambda = 0.5)")
                    "14:12"
                    "say how many"
            }

            test "an image–text objective on Fashion-MNIST is a located error" {
                expectError (withData "fashionMnist (size = 8)" "clipLoss") "15:12" "need `captions` data"
            }

            test "lambda outside [0, 1] is a located error" {
                expectError
                    (withData
                        "captions \"t.jsonl\" (size = 8) (reinforced = \"r\") (teachers = 2)"
                        "mobileclipLoss (lambda = 1.5)")
                    "15:12"
                    "lambda must be in [0, 1]"
            }

            test "a captions recipe prints back as source that gives the same recipe" {
                let src =
                    withData
                        "captions \"train.jsonl\" (test = \"test.jsonl\") (augment = [ randomCrop 8 (pad = 1); hflip ]) (size = 8) (reinforced = \"r\") (teachers = 2)"
                        "mobileclipLoss (lambda = 0.5) (teacherScale = 50.0)"

                let c = check src
                Expect.isEmpty c.Diagnostics "compiles"
                let r = c.Recipes.Head
                let printed = Dsl.Print.recipe r
                let again = check (dualSource + "\n" + printed)
                Expect.isEmpty again.Diagnostics printed

                Expect.equal
                    { again.Recipes.Head with
                        Span = r.Span
                        DataSpan = r.DataSpan
                    }
                    r
                    "same recipe"
            }
        ]

/// Four classes of 8×8 grey images (a bright quadrant each) with captions naming the class.
let writeCaptionSet (dir: string) (count: int) (withLabels: bool) =
    let names = [| "alpha"; "beta"; "gamma"; "delta" |]
    Directory.CreateDirectory(Path.Combine(dir, "images")) |> ignore

    let records =
        [
            for i in 0 .. count - 1 ->
                let cls = i % 4
                use image = new Image<L8>(8, 8, L8 20uy)

                for y in 0..3 do
                    for x in 0..3 do
                        image[x + 4 * (cls % 2), y + 4 * (cls / 2)] <- L8(byte (200 + i % 50))

                let path = sprintf "images/%03d.png" i
                image.SaveAsPng(Path.Combine(dir, path))

                ImageTextRecord(
                    path,
                    [| sprintf "a photo of a %s." names[cls]; sprintf "the %s" names[cls] |],
                    [| sprintf "a bright %s square on grey" names[cls] |],
                    Nullable cls,
                    (if withLabels then [| cls; 4 |] else null)
                )
        ]

    ImageTextManifest.Write(Path.Combine(dir, "set.jsonl"), records)
    ClassPrompts(names, [| "a photo of a {}."; "the {}" |]).Write dir

let private trainer dir steps =
    let o =
        TrainOptions(Epochs = 100, BatchSize = 8, Lr = 3e-3, OutDir = dir, EvalBatchSize = 16, Seed = 1L)

    o.MaxSteps <- Nullable(int64 steps)
    o

let private pipeline () =
    ImagePipeline([||], [| RandomCrop(8, 1) :> IAugment; HorizontalFlip() |], [| Normalize([| 0.5f |], [| 0.5f |]) |])

/// A train block on captions data with `loss` and further data options, checked: the model and its objective.
let private captionObjective loss (options: string) =
    let c =
        check (
            dualSource
            + sprintf "train tiny {\n    data = captions \"set.jsonl\" (size = 8) %s\n    loss = %s\n}\n" options loss
        )

    Expect.isEmpty (c.Diagnostics |> List.map Dsl.Diagnostics.format) "checks"
    snd c.Models.Head, (Dsl.Compiler.pickObjective c "tiny").Value

/// One caption index per image, uniform over its captions, as the former host task drew them.
let private pick (indices: int64[]) (captions: Collections.Generic.IReadOnlyList<string[]>) (g: torch.Generator) =
    let draws =
        torch.rand(int64 indices.Length, generator = g).data<float32>().ToArray()

    indices
    |> Array.mapi (fun i image ->
        let count = captions[int image].Length
        image, int64 (min (int (draws[i] * float32 count)) (count - 1)))

let private texts (picks: (int64 * int64)[]) (captions: Collections.Generic.IReadOnlyList<string[]>) =
    picks |> Array.map (fun (i, c) -> captions[int i][int c])

/// `steps` steps of a fresh model (seed 2) on `task`: the losses and the trained model.
let private runSteps g dir steps (task: ITrainingTask) (record: TrainProgress -> unit) =
    let model = new GraphModule(g, 2L)
    let o = trainer (Path.Combine(dir, Guid.NewGuid().ToString "N")) steps
    let losses = Collections.Generic.List<float>()

    Trainer(model, o)
        .Train(
            task,
            fun p ->
                losses.Add p.Loss
                record p
        )
    |> ignore

    List.ofSeq losses, model

/// The prelude's objective gives the former host task's losses, step for step, within float noise.
let private sameSteps (host: float list) (expression: float list) =
    Expect.equal expression.Length host.Length "as many steps"

    for i, (h, e) in List.indexed (List.zip host expression) do
        Expect.isLessThanOrEqual
            (abs (h - e))
            (1e-5 * max 1.0 (abs h))
            (sprintf "step %d: host %.7f, prelude %.7f" (i + 1) h e)

let private taskTests =
    testList
        "image-text training"
        [
            test
                "CLIP: the prelude's clipContrastiveLoss trains step for step as the former host task, lowers the loss, evaluates zero-shot and retrieval, and keeps the live tensor count flat" {
                withTempDir (fun dir ->
                    writeCaptionSet dir 32 false
                    use set = ImageTextManifest.Load(Path.Combine(dir, "set.jsonl"), 1, 8, 8)
                    let g, o = captionObjective "clipLoss" ""

                    // The host task's CLIP step before it became the prelude's: kept as the reference.
                    let tokenizer = Dsl.Runtime.Text.TextTokenizer.Gpt2 6

                    let reference =
                        { new ITrainingTask with
                            member _.Count = set.Count

                            member _.Loss(model, indices, augment, _) =
                                let captions = pick indices set.Captions augment
                                let images = pipeline().Train(Batches.Take(set.Images, indices), augment)

                                let image, text, scale =
                                    DualEncoder
                                        .Of(model)
                                        .EncodePairs(images, tokenizer.Batch(texts captions set.Captions))
                                        .ToTuple()

                                ImageTextLosses.Clip(image, text, scale)

                            member _.Evaluate(_, _) = null
                            member _.Check _ = ()
                        }

                    let live = Collections.Generic.Dictionary<int64, int64>()

                    let record (p: TrainProgress) =
                        if p.Step = 10L || p.Step = 40L then
                            live[p.Step] <- DisposeScopeManager.Statistics.TensorStatistics.ThreadTotalLiveCount

                    let records = ImageTextRecords(set, pipeline (), 6)
                    use task = new ObjectiveTask(records, null, o.Loss, boundFields o, null)
                    let host, _ = runSteps g dir 40 reference ignore
                    let expression, model = runSteps g dir 40 task record
                    use model = model
                    sameSteps host expression
                    Expect.isLessThan (List.last expression) (List.head expression) "the loss went down"
                    Expect.equal live[40L] live[10L] "live tensors after step 40 = after step 10"

                    let e =
                        ImageTextEvaluator.Evaluate(
                            model,
                            set,
                            pipeline (),
                            ImageTextObjective(ImageTextObjectiveKind.Clip),
                            16
                        )

                    Expect.isFalse (Double.IsNaN e.Accuracy) "zero-shot accuracy measured"
                    Expect.isGreaterThan e.Accuracy 0.25 "better than chance on its own training images"

                    for key in [ "i2t_r1"; "i2t_r5"; "t2i_r1"; "t2i_r5" ] do
                        Expect.isTrue (e.Extra.ContainsKey key) key

                    let probe = LinearProbe.Run(model, set, set, pipeline (), 16)
                    Expect.isGreaterThan probe 0.5 "a linear probe separates four quadrants")
            }

            test
                "MobileCLIP: dsl reinforce's stored teacher embeddings replay, and the prelude's mobileclipReinforcedLoss trains step for step as the former host task" {
                withTempDir (fun dir ->
                    writeCaptionSet dir 8 false
                    use set = ImageTextManifest.Load(Path.Combine(dir, "set.jsonl"), 1, 8, 8)
                    use teacher = new GraphModule(graph dualSource, 9L)
                    use second = new GraphModule(graph dualSource, 4L)
                    let p = pipeline ()

                    use reinforced =
                        Reinforcer.Run(
                            set,
                            "set.jsonl",
                            p,
                            [| DualEncoder.Of teacher; DualEncoder.Of second |],
                            [| "teacher"; "second" |],
                            3,
                            5,
                            4L
                        )

                    reinforced.Save(Path.Combine(dir, "r"))
                    use loaded = ReinforcedSet.Load(Path.Combine(dir, "r"), RandomCrop(8, 1))
                    Expect.equal loaded.Meta.Count 8 "eight images"
                    Expect.equal loaded.TeacherImages[0].shape [| 24L; 16L |] "3 augmentations each"
                    Expect.equal loaded.TeacherCaptions[0].shape [| 16L; 16L |] "2 captions each"
                    teacher.eval ()

                    do
                        use _ = torch.no_grad ()
                        use g = new torch.Generator(0UL)
                        use image = set.Images.narrow (0, 5L, 1L)
                        use replayed = p.Replay(image, loaded.Augmentations, [| 5L * 3L + 2L |], g)
                        use embedding = (DualEncoder.Of teacher).EncodeImages replayed
                        use stored = loaded.TeacherImages[0].narrow(0, 17L, 1L)
                        Expect.isTrue (embedding.allclose (stored, 1e-5, 1e-5)) "image row 5·3 + 2"

                    let g, o =
                        captionObjective "mobileclipLoss (lambda = 0.75)" "(reinforced = \"r\") (teachers = 2)"

                    let tokenizer = Dsl.Runtime.Text.TextTokenizer.Gpt2 6
                    let meta = loaded.Meta

                    // The host task's reinforced step before it became the prelude's: kept as the reference.
                    let reference =
                        { new ITrainingTask with
                            member _.Count = set.Count

                            member _.Loss(model, indices, augment, _) =
                                let images = Batches.Take(set.Images, indices)

                                let draws =
                                    torch.rand(int64 indices.Length, generator = augment).data<float32>().ToArray()

                                let augmentRows =
                                    indices
                                    |> Array.mapi (fun i image ->
                                        image * int64 meta.AugmentationsPerImage
                                        + min
                                            (int64 (draws[i] * float32 meta.AugmentationsPerImage))
                                            (int64 meta.AugmentationsPerImage - 1L))

                                let captions = pick indices set.Captions augment
                                let synthetic = pick indices set.Synthetic augment
                                let prepared = p.Replay(images, loaded.Augmentations, augmentRows, augment)

                                let image, text, scale =
                                    DualEncoder
                                        .Of(model)
                                        .EncodePairs(
                                            prepared,
                                            tokenizer.Batch(
                                                Array.append
                                                    (texts captions set.Captions)
                                                    (texts synthetic set.Synthetic)
                                            )
                                        )
                                        .ToTuple()

                                let n = int64 indices.Length

                                let rows (stored: Collections.Generic.IReadOnlyList<torch.Tensor>) (at: int64[]) =
                                    use at = torch.tensor at

                                    [| for t in stored -> t.index_select (0L, at) |]
                                    :> Collections.Generic.IReadOnlyList<_>

                                let teacherImages = rows loaded.TeacherImages augmentRows
                                let scales = [| 100.0; 100.0 |]

                                let stream
                                    (part: int64)
                                    (stored: Collections.Generic.IReadOnlyList<torch.Tensor>)
                                    (picks: (int64 * int64)[])
                                    maxRows
                                    =
                                    ImageTextLosses.Reinforced(
                                        0.75,
                                        image,
                                        text.narrow (0L, part * n, n),
                                        scale,
                                        teacherImages,
                                        rows stored [| for i, c in picks -> i * int64 maxRows + c |],
                                        scales
                                    )

                                stream 0L loaded.TeacherCaptions captions meta.MaxCaptions
                                + stream 1L loaded.TeacherSynthetic synthetic meta.MaxSynthetic

                            member _.Evaluate(_, _) = null
                            member _.Check _ = ()
                        }

                    let records = ImageTextRecords(set, p, 6, loaded)
                    Expect.equal records.Teachers 2 "two teachers' embeddings per record"
                    use task = new ObjectiveTask(records, null, o.Loss, boundFields o, null)
                    let host, _ = runSteps g dir 12 reference ignore
                    let expression, model = runSteps g dir 12 task ignore
                    model.Dispose()
                    sameSteps host expression)
            }

            test
                "CatLIP: the prelude's catlipMultiLabelLoss trains step for step as the former host task, and lowers the BCE" {
                withTempDir (fun dir ->
                    writeCaptionSet dir 32 true
                    use set = ImageTextManifest.Load(Path.Combine(dir, "set.jsonl"), 1, 8, 8)

                    let c =
                        Dsl.Tests.Support.check
                            "model cat : image[1, 8, 8] -> logits[5] = conv 8 (k = 3) >> relu >> globalAvgPool >> linear 5\ntrain cat {\n    data = captions \"set.jsonl\" (size = 8)\n    loss = catlipLoss\n}\n"

                    Expect.isEmpty (c.Diagnostics |> List.map Dsl.Diagnostics.format) "checks"
                    let g = snd c.Models.Head
                    let o = (Dsl.Compiler.pickObjective c "cat").Value

                    // The host task's CatLIP step before it became the prelude's: kept as the reference.
                    let reference =
                        { new ITrainingTask with
                            member _.Count = set.Count

                            member _.Loss(model, indices, augment, _) =
                                let logits =
                                    model.Forward(pipeline().Train(Batches.Take(set.Images, indices), augment))[0]

                                let targets =
                                    CatlipLabels
                                        .MultiHot(
                                            [| for i in indices -> set.SynsetLabels[int i] |],
                                            int logits.shape[1]
                                        )
                                        .``to``
                                        model.Device

                                ImageTextLosses.MultiLabel(logits, targets)

                            member _.Evaluate(_, _) = null
                            member _.Check _ = ()
                        }

                    let run (task: ITrainingTask) =
                        use model = new GraphModule(g, 2L)
                        let o = trainer (Path.Combine(dir, Guid.NewGuid().ToString "N")) 40
                        o.Augmentations <- [ RandomCrop(8, 1); HorizontalFlip(); Normalize([| 0.5f |], [| 0.5f |]) ]
                        o.EvalTransforms <- [ Normalize([| 0.5f |], [| 0.5f |]) ]
                        let losses = Collections.Generic.List<float>()
                        let result = Trainer(model, o).Train(task, fun p -> losses.Add p.Loss)
                        List.ofSeq losses, result

                    let host, _ = run reference
                    use records = CatlipRecords.Of(set, g, "training")

                    use task =
                        new ObjectiveTask(records, records, o.Loss, (Support.fieldsOf [ "image" ]), null)

                    let expression, result = run task
                    sameSteps host expression

                    Expect.isLessThan (List.last expression) (List.head expression) "the loss went down"
                    Expect.isTrue (Double.IsNaN result.LastEvaluation.Accuracy) "no accuracy for multi-label"
                    Expect.isGreaterThan result.LastEvaluation.Loss 0.0 "test BCE measured")
            }

            test "a label index beyond the model's logits is refused before training" {
                withTempDir (fun dir ->
                    writeCaptionSet dir 4 true
                    use set = ImageTextManifest.Load(Path.Combine(dir, "set.jsonl"), 1, 8, 8)
                    let g = graph "model cat : image[1, 8, 8] -> logits[3] = globalAvgPool >> linear 3"

                    Expect.throwsC (fun () -> CatlipRecords.Of(set, g, "training").Dispose()) (fun e ->
                        Expect.isTrue (e :? DataError) (e.GetType().Name)
                        Expect.stringContains e.Message "(5 synsets) but model 'cat' gives logits[3]" "names both"))
            }
        ]

let private cliTests =
    let studentFile (dir: string) loss reinforced =
        let src =
            dualSource
            + sprintf
                """
train tiny {
    data = captions "set.jsonl" (test = "set.jsonl") (augment = [ randomCrop 8 (pad = 1); hflip ]) (size = 8) (reinforced = "%s")%s
    loss = %s
    optimizer = adamw (lr = 3e-3)
    batch = 8
    evalBatch = 16
}
"""
                reinforced
                (if reinforced = "" then "" else " (teachers = 1)")
                loss

        let path = Path.Combine(dir, "student.dsl")
        File.WriteAllText(path, src)
        path

    testList
        "dsl train, eval and reinforce on captions"
        [
            test "train CLIP, evaluate with a probe, reinforce with it as the teacher, train the student" {
                withTempDir (fun dir ->
                    writeCaptionSet dir 16 false
                    let clip = studentFile dir "clipLoss" ""
                    let run = Path.Combine(dir, "run")
                    let trained = CliTests.dsl [ "train"; clip; "--out"; run; "--max-steps"; "4" ]
                    Expect.equal trained.Code 0 trained.Err
                    Expect.stringContains trained.Out "i2t_r1" "the evaluation line reports recalls"

                    let evaluated =
                        CliTests.dsl
                            [
                                "eval"
                                clip
                                "--checkpoint"
                                Path.Combine(run, "checkpoint")
                                "--json"
                                "--probe"
                            ]

                    Expect.equal evaluated.Code 0 evaluated.Err

                    use json = Text.Json.JsonDocument.Parse evaluated.Out

                    for key in
                        [
                            "zero_shot_top1"
                            "zero_shot_top5"
                            "i2t_r1"
                            "t2i_r5"
                            "linear_probe"
                            "loss"
                        ] do
                        Expect.isTrue (fst (json.RootElement.TryGetProperty key)) key

                    let student = studentFile dir "mobileclipLoss (lambda = 0.75)" "reinforced"

                    let missing =
                        CliTests.dsl [ "train"; student; "--out"; Path.Combine(dir, "s"); "--max-steps"; "2" ]

                    Expect.equal missing.Code 1 missing.Err
                    Expect.stringContains missing.Err "write it with `dsl reinforce`" "says how to make it"

                    let reinforced =
                        CliTests.dsl
                            [
                                "reinforce"
                                student
                                "--teacher"
                                clip
                                "tiny"
                                Path.Combine(run, "checkpoint")
                                "--augmentations"
                                "2"
                            ]

                    Expect.equal reinforced.Code 0 reinforced.Err

                    Expect.isTrue
                        (File.Exists(Path.Combine(dir, "reinforced", ReinforcedSet.TensorFile)))
                        "written to the data's folder"

                    let distilled =
                        CliTests.dsl [ "train"; student; "--out"; Path.Combine(dir, "s"); "--max-steps"; "2" ]

                    Expect.equal distilled.Code 0 distilled.Err)
            }

            test "a teacher whose checkpoint is missing is one located line, exit 1" {
                withTempDir (fun dir ->
                    writeCaptionSet dir 4 false
                    let student = studentFile dir "mobileclipLoss" "reinforced"

                    let r =
                        CliTests.dsl
                            [
                                "reinforce"
                                student
                                "--teacher"
                                student
                                "tiny"
                                Path.Combine(dir, "nothing")
                            ]

                    Expect.equal r.Code 1 r.Err
                    Expect.isFalse (r.Err.Contains "   at ") "no stack trace"
                    Expect.stringContains r.Err "nothing" "names the checkpoint")
            }
        ]

[<Tests>]
let tests =
    testList "ImageTextTrain" [ lossTests; forwardTests; augmentationTests; recipeTests; taskTests; cliTests ]
