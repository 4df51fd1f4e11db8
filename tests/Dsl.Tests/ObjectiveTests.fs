/// Losses written in the language (`loss = fun out r -> …`, dsl/Objective.fs, ObjectiveTask):
/// the same training as the host tasks on a fixed seed, records data from a manifest, and the
/// located errors of binding a model to data.
module Dsl.Tests.ObjectiveTests

open System
open System.IO
open Expecto
open TorchSharp
open Dsl
open Dsl.Runtime.Data
open Dsl.Runtime.Emit
open Dsl.Runtime.Text
open Dsl.Runtime.Training
open Dsl.Tests.Support

/// The model and objective of a source that must compile cleanly.
let private compile (src: string) =
    let c = check src

    if not c.Diagnostics.IsEmpty then
        failtestf "unexpected diagnostics:\n%s" (c.Diagnostics |> List.map Diagnostics.format |> String.concat "\n")

    let name, g = c.Models.Head

    match Compiler.pickObjective c name with
    | Some o -> g, o
    | None -> failtest "the train block has no loss expression"

/// 4 classes of 8×8 images: class c lights quadrant c, plus noise (same seed, same tensors).
let private quadrants (count: int) (seed: int64) =
    use g = new torch.Generator(uint64 seed)
    let labels = torch.arange(int64 count, dtype = torch.int64).remainder(4L.ToScalar())

    let images =
        torch.rand([| int64 count; 1L; 8L; 8L |], generator = g).mul(0.3.ToScalar())

    use noGrad = torch.no_grad ()

    for i in 0 .. count - 1 do
        let c = int64 (i % 4)

        images[int64 i].narrow(1, (c / 2L) * 4L, 4L).narrow(2, (c % 2L) * 4L, 4L).add_(0.7.ToScalar())
        |> ignore

    new LabeledImages(images, labels, [| "tl"; "tr"; "bl"; "br" |])

let private options dir =
    TrainOptions(
        Epochs = 2,
        BatchSize = 16,
        Lr = 5e-3,
        WeightDecay = 0.05,
        Schedule = "cosine",
        WarmupSteps = 2,
        Seed = 7L,
        // A run folder of its own: two runs compared never share one.
        OutDir = Path.Combine(dir, Guid.NewGuid().ToString("N")),
        LogEvery = 1
    )

/// The loss of every step of a run of `task` from the model's seed-3 initial weights.
let private stepLosses (g: Ir.Graph) (o: TrainOptions) (task: ITrainingTask) =
    use model = new GraphModule(g, 3L)
    let losses = ResizeArray<float>()
    Trainer(model, o).Train(task, fun p -> losses.Add p.Loss) |> ignore
    List.ofSeq losses

let private sameLosses (host: float list) (expression: float list) =
    Expect.equal expression.Length host.Length "as many steps"
    Expect.isGreaterThan host.Length 10 "enough steps to compare"

    for i, (h, e) in List.indexed (List.zip host expression) do
        Expect.isLessThanOrEqual
            (abs (h - e))
            (1e-6 * max 1.0 (abs h))
            (sprintf "step %d: host %.9f, expression %.9f" (i + 1) h e)

let private classifier =
    """
model m : image[1, 8, 8] -> logits[4] = conv 8 (k = 3) >> relu >> flatten >> linear 4
train m {
    data = imageFolder "unused" (size = 8) (channels = 1)
    loss = fun out r -> Loss.crossEntropy out r.label (smoothing = 0.1)
}
"""

let private languageModel =
    """
model lm : tokens[6] -> logits[6, 257] = embedding 257 16 >> linear 257
train lm {
    data = corpus "unused.txt"
    loss = fun out r -> Loss.crossEntropy out r.targets (axis = -1) + 0.01 * Loss.zLoss out
}
"""

/// The classification task as host code computed it before it became the prelude's
/// `classificationLoss`: kept here as the reference the language's objectives are held to.
let private referenceClassification (data: LabeledImages) (smoothing: float) =
    { new ITrainingTask with
        member _.Count = data.Count

        member _.Loss(model, indices, augment, options) =
            let images =
                Augments.Run(Batches.Take(data.Images, indices), options.Augmentations, augment)

            let labels = Batches.Take(data.Labels, indices).``to`` model.Device
            let logits = model.Forward([| images |])[0]
            torch.nn.functional.cross_entropy (logits, labels, label_smoothing = smoothing)

        member _.Evaluate(_, _) = null
        member _.Check _ = ()
    }

/// The next-token task as host code computed it before it became the prelude's `nextTokenLoss`:
/// rows [N, T + 1], inputs the first T ids, targets the last T, plus zLoss · mean(logsumexp²).
let private referenceNextToken (data: PackedSequences) (zLoss: float) =
    { new ITrainingTask with
        member _.Count = int data.Train.shape[0]

        member _.Loss(model, indices, _, _) =
            let rows = Batches.Take(data.Train, indices).``to`` model.Device
            let logits = model.Forward([| rows.narrow (1, 0, int64 data.Length) |])[0]
            let targets = rows.narrow (1, 1, int64 data.Length)
            let vocabulary = logits.shape[logits.shape.Length - 1]

            let ce =
                torch.nn.functional.cross_entropy (logits.reshape (-1L, vocabulary), targets.reshape (-1L))

            if zLoss > 0.0 then
                ce + logits.logsumexp(-1).square().mean() * zLoss.ToScalar()
            else
                ce

        member _.Evaluate(_, _) = null
        member _.Check _ = ()
    }

let private records (dir: string) (lines: string list) =
    let path = Path.Combine(dir, "records.jsonl")
    File.WriteAllLines(path, lines)
    path

/// One tensor in a safetensors file: an 8-byte little-endian header length, the JSON header, the bytes.
let private writeSafetensors (path: string) (name: string) (dtype: string) (shape: int list) (bytes: byte[]) =
    let header =
        sprintf
            """{"%s":{"dtype":"%s","shape":[%s],"data_offsets":[0,%d]}}"""
            name
            dtype
            (shape |> List.map string |> String.concat ",")
            bytes.Length
        |> Text.Encoding.UTF8.GetBytes

    File.WriteAllBytes(path, Array.concat [ BitConverter.GetBytes(int64 header.Length); header; bytes ])

/// A `records` data set of values only: 3 numbers and a label, the label the sign pattern of the first two.
let private tabular (count: int) =
    let rng = Random(5)

    [
        for _ in 1..count do
            let x = [ for _ in 1..3 -> rng.NextDouble() * 2.0 - 1.0 ]
            let label = (if x[0] > 0.0 then 1 else 0) + (if x[1] > 0.0 then 2 else 0)

            sprintf
                """{"meta": [%s], "label": %d}"""
                (x
                 |> List.map (fun v -> v.ToString("R", Globalization.CultureInfo.InvariantCulture))
                 |> String.concat ", ")
                label
    ]

let private tabularSchema =
    [|
        FieldSchema("meta", FieldKind.Tensor, [| 3L |])
        FieldSchema("label", FieldKind.Label, [||], 4)
    |]

[<Tests>]
let tests =
    testList
        "objectives"
        [
            test "classification: the built-in crossEntropy and an expression train exactly as the former host task" {
                let g, o = compile classifier
                Expect.equal o.Bindings [ "input", [ "image" ] ] "the one image input takes the image field"

                let _, builtin =
                    compile (
                        classifier.Replace(
                            "fun out r -> Loss.crossEntropy out r.label (smoothing = 0.1)",
                            "crossEntropy (smoothing = 0.1)"
                        )
                    )

                use hostData = quadrants 96 1L
                use exprData = quadrants 96 1L

                withTempDir "dsl-objective-" (fun dir ->
                    let opts () =
                        let t = options dir
                        t.Augmentations <- [ RandomCrop(8, 1); HorizontalFlip(0.5); Normalize([| 0.5f |], [| 0.5f |]) ]
                        t

                    let host = stepLosses g (opts ()) (referenceClassification hostData 0.1)
                    use records = RecordSet.OfLabeledImages exprData

                    use task =
                        new ObjectiveTask(records, null, o.Loss, (Support.fieldsOf [ "image" ]), null)

                    sameLosses host (stepLosses g (opts ()) task)

                    use library =
                        new ObjectiveTask(records, null, builtin.Loss, (Support.fieldsOf [ "image" ]), null)

                    sameLosses host (stepLosses g (opts ()) library))
            }

            test
                "next token: the built-in nextToken and an expression with z-loss train exactly as the former host task" {
                let g, o = compile languageModel
                Expect.equal o.Bindings [ "input", [ "tokens" ] ] "the tokens input takes the tokens field"

                let _, builtin =
                    compile (
                        languageModel.Replace(
                            "fun out r -> Loss.crossEntropy out r.targets (axis = -1) + 0.01 * Loss.zLoss out",
                            "nextToken (zLoss = 0.01)"
                        )
                    )

                let documents =
                    [
                        for i in 0..40 -> String.replicate (1 + i % 5) (sprintf "line %d of the corpus. " i)
                    ]

                use packed =
                    PackedSequences.Pack(documents, (fun s -> ByteTokens.Encode s), ByteTokens.EndOfText, 6, 0.0, 1L)

                withTempDir "dsl-objective-" (fun dir ->
                    let opts () =
                        let t = options dir
                        t.MaxSteps <- Nullable 20L
                        t

                    let host = stepLosses g (opts ()) (referenceNextToken packed 0.01)
                    use records = RecordSet.OfPackedRows(packed.Train, 6, ByteTokens.Vocabulary)

                    use task =
                        new ObjectiveTask(records, null, o.Loss, (Support.fieldsOf [ "tokens" ]), null)

                    sameLosses host (stepLosses g (opts ()) task)

                    use library =
                        new ObjectiveTask(records, null, builtin.Loss, (Support.fieldsOf [ "tokens" ]), null)

                    sameLosses host (stepLosses g (opts ()) library))
            }

            test "a loss record minimises 'loss' and evaluation reports every number beside it" {
                let g, o =
                    compile (
                        classifier.Replace(
                            "loss = fun out r -> Loss.crossEntropy out r.label (smoothing = 0.1)",
                            "loss = fun out r -> { loss = Loss.crossEntropy out r.label; z = Loss.zLoss out }"
                        )
                    )

                Expect.equal (o.Loss.Outputs |> List.map fst) [ "loss"; "z" ] "loss first"
                use data = quadrants 32 1L
                use test = quadrants 32 2L
                use train = RecordSet.OfLabeledImages data
                use held = RecordSet.OfLabeledImages test

                use task =
                    new ObjectiveTask(train, held, o.Loss, (Support.fieldsOf [ "image" ]), null)

                use model = new GraphModule(g, 3L)
                let r = (task :> ITrainingTask).Evaluate(model, TrainOptions(EvalBatchSize = 10))
                // By hand: the same forward pass, cross-entropy and mean logsumexp² over all 32.
                model.eval ()
                use noGrad = torch.no_grad ()
                let logits = model.Forward(test.Images)[0]

                let ce =
                    torch.nn.functional.cross_entropy(logits, test.Labels).item<float32>() |> float

                let z = logits.logsumexp(1).square().mean().item<float32>() |> float
                Expect.floatClose Accuracy.medium r.Loss ce "mean loss over batches of 10, 10, 10, 2"
                Expect.floatClose Accuracy.medium r.Extra["z"] z "the other number, averaged the same way"
            }

            test "records data: values from a manifest train a model through a loss expression" {
                withTempDir "dsl-objective-" (fun dir ->
                    let src =
                        """
model mlp : tensor[3] -> logits[4] = linear 32 >> relu >> linear 4
train mlp {
    data = records "records.jsonl" (fields = { meta = Field.tensor [3]; label = Field.label 4 })
    loss = fun out r -> Loss.crossEntropy out r.label
}
"""

                    let g, o = compile src
                    Expect.equal o.Bindings [ "input", [ "meta" ] ] "the only float field feeds the tensor input"
                    let path = records dir (tabular 256)
                    use data = RecordManifest.Load(path, tabularSchema)
                    Expect.equal data.Count 256 "every line"
                    Expect.equal (data["meta"].shape) [| 256L; 3L |] "meta [N, 3]"

                    use task =
                        new ObjectiveTask(data, null, o.Loss, (Support.fieldsOf [ "meta" ]), null)

                    let t = options dir
                    t.Epochs <- 6
                    t.Lr <- 1e-2
                    let losses = stepLosses g t task
                    let first = losses |> List.take 5 |> List.average
                    let last = losses |> List.rev |> List.take 5 |> List.average
                    Expect.isLessThan last (first * 0.5) (sprintf "the loss halves: %.3f → %.3f" first last))
            }

            test "records manifests: rows of safetensors files, and shards read in name order as one set" {
                withTempDir "dsl-objective-" (fun dir ->
                    // Two shards, each with its own embeddings file (float16 in one, to be widened),
                    // written byte by byte as the safetensors format lays them out.
                    writeSafetensors
                        (Path.Combine(dir, "a.safetensors"))
                        "emb"
                        "F32"
                        [ 3; 2 ]
                        ([| 0.0f .. 5.0f |] |> Array.collect BitConverter.GetBytes)

                    writeSafetensors
                        (Path.Combine(dir, "b.safetensors"))
                        "teacher"
                        "F16"
                        [ 2; 2 ]
                        ([| 10.0f .. 13.0f |]
                         |> Array.collect (fun v -> BitConverter.GetBytes(Half.op_Explicit v)))

                    File.WriteAllLines(
                        Path.Combine(dir, "part-0.jsonl"),
                        [
                            """{"emb": {"safetensors": "a.safetensors", "row": 2}, "label": 0}"""
                            """{"emb": [7, 8], "label": 1}"""
                            """{"emb": {"safetensors": "a.safetensors", "row": 0}, "label": 2}"""
                        ]
                    )

                    File.WriteAllLines(
                        Path.Combine(dir, "part-1.jsonl"),
                        [
                            """{"emb": {"safetensors": "b.safetensors", "key": "teacher", "row": 1}, "label": 3}"""
                        ]
                    )

                    let schema =
                        [|
                            FieldSchema("emb", FieldKind.Tensor, [| 2L |])
                            FieldSchema("label", FieldKind.Label, [||], 4)
                        |]

                    use set = RecordManifest.Load(Path.Combine(dir, "part-*.jsonl"), schema)
                    Expect.equal set.Count 4 "3 + 1 records"

                    Expect.equal
                        (set["emb"].data<float32>().ToArray())
                        [| 4.0f; 5.0f; 7.0f; 8.0f; 0.0f; 1.0f; 12.0f; 13.0f |]
                        "row 2 of a, the inline values, row 0 of a, row 1 of b"

                    Expect.equal (set["label"].data<int64>().ToArray()) [| 0L; 1L; 2L; 3L |] "shards in name order"

                    let expectError (line: string) (fragment: string) =
                        File.WriteAllLines(Path.Combine(dir, "bad.jsonl"), [ line ])

                        try
                            RecordManifest.Load(Path.Combine(dir, "bad.jsonl"), schema).Dispose()
                            failtest "expected a DataError"
                        with :? DataError as e ->
                            Expect.stringContains e.Message "bad.jsonl:1" "names the line"
                            Expect.stringContains e.Message fragment "says what is wrong"

                    expectError
                        """{"emb": {"safetensors": "a.safetensors", "row": 3}, "label": 0}"""
                        "which has 3 rows"

                    expectError
                        """{"emb": {"safetensors": "a.safetensors", "key": "x", "row": 0}, "label": 0}"""
                        "has no tensor 'x' (it has emb)"

                    expectError
                        """{"emb": {"safetensors": "none.safetensors", "row": 0}, "label": 0}"""
                        "file not found"

                    expectError
                        """{"emb": {"file": "a.safetensors", "row": 0}, "label": 0}"""
                        "must name a safetensors file"

                    expectError
                        """{"emb": {"safetensors": "a.safetensors", "row": -1}, "label": 0}"""
                        "non-negative integer"

                    Expect.throwsC
                        (fun () -> RecordManifest.Load(Path.Combine(dir, "none-*.jsonl"), schema).Dispose())
                        (fun e -> Expect.stringContains e.Message "no shard matches" "an empty pattern is an error"))
            }

            test "records manifests: a bad line is one error naming the line and the field" {
                withTempDir "dsl-objective-" (fun dir ->
                    let expectError (lines: string list) (where: string) (fragment: string) =
                        let path = records dir lines

                        try
                            RecordManifest.Load(path, tabularSchema).Dispose()
                            failtest "expected a DataError"
                        with :? DataError as e ->
                            Expect.stringContains e.Message where "names the line"
                            Expect.stringContains e.Message fragment "says what is wrong"

                    let good = """{"meta": [0.5, 1, -2], "label": 3}"""

                    expectError
                        [ good; """{"meta": [0.5, 1], "label": 3}""" ]
                        "records.jsonl:2"
                        "an array of 3 numbers"

                    expectError
                        [ good; """{"meta": [0.5, 1, 2], "label": 4}""" ]
                        "records.jsonl:2"
                        "outside the 4 classes"

                    expectError [ good; ""; """{"label": 1}""" ] "records.jsonl:3" "no 'meta'"
                    expectError [ good; """{"meta": [0.5, "x", 2], "label": 1}""" ] "records.jsonl:2" "not a number"
                    expectError [ "{nope" ] "records.jsonl:1" "not JSON"
                    expectError [] "records.jsonl" "no lines")
            }

            test
                "several fields into one input: one pass, its outputs per field, the others whole; mixing them is located" {
                let dual (fuse: string) =
                    sprintf
                        """
model d (image : image[1, 8, 8]) (text : tokens[4]) =
    let t = text |> embedding 50257 8 |> selectToken 0
    { image = image |> flatten |> linear 8; text = t; scale = param [] (init = 1.0)%s }
train d {
    data = captions "c.jsonl" (size = 8) (reinforced = "r") (teachers = 1)
    inputs = { text = [ "caption"; "synthetic" ] }
    loss = fun out r -> Loss.infoNce out.image out.text.caption + Loss.infoNce out.image out.text.synthetic (scale = out.scale)
}
"""
                        fuse

                let c = check (dual "")
                Expect.isEmpty (c.Diagnostics |> List.map Diagnostics.format) "checks"
                let o = (Compiler.pickObjective c "d").Value

                Expect.equal
                    o.Bindings
                    [ "image", [ "image" ]; "text", [ "caption"; "synthetic" ] ]
                    "both captions feed text"

                Expect.equal
                    (o.Loss.Inputs |> List.map fst |> List.filter (fun n -> n.StartsWith "out."))
                    [ "out.image"; "out.text.caption"; "out.text.synthetic"; "out.scale" ]
                    "text per field, image and scale whole"

                Expect.equal
                    (o.Fields |> List.map (fun f -> f.Name))
                    [
                        "image"
                        "caption"
                        "synthetic"
                        "teachers.0.image"
                        "teachers.0.caption"
                        "teachers.0.synthetic"
                    ]
                    "reinforced captions give r.teachers"

                expectError
                    (dual "; both = t + (image |> flatten |> linear 8)")
                    "7:14"
                    "output 'both' is computed from input 'text', which takes several fields, and from 'image'"

                expectError
                    ((dual "").Replace("[ \"caption\"; \"synthetic\" ]", "[ \"caption\"; \"synthetc\" ]"))
                    "7:14"
                    "inputs: the data has no field 'synthetc'"
            }

            test "binding a model to data: each mistake is located" {
                let twoInputs =
                    """
model f (image : image[1, 8, 8]) (meta : tensor[3]) : logits[4] = (image |> flatten |> linear 4) + (meta |> linear 4)
train f {
    data = imageFolder "x" (size = 8) (channels = 1)
    loss = fun out r -> Loss.crossEntropy out r.label
}
"""

                expectError
                    twoInputs
                    "3:1"
                    "input 'meta' is bound to no data field; the data gives image: image[1, 8, 8], label: label"

                expectError
                    (classifier.Replace("imageFolder \"unused\" (size = 8) (channels = 1)", "fashionMnist (size = 16)"))
                    "4:12"
                    "field 'image' is [1, 16, 16] per record but model 'm' input 'input' takes [1, 8, 8]"

                expectError
                    (classifier.Replace("imageFolder \"unused\" (size = 8) (channels = 1)", "fashionMnist (size = 8)"))
                    "5:25"
                    "field 'label' has 10 classes but the logits give 4 on axis 1; the head needs 10"

                expectError
                    (classifier.Replace("Loss.crossEntropy out r.label (smoothing = 0.1)", "out"))
                    "5:12"
                    "the loss 'loss' must be one number (shape []), got [B, 4]"

                expectError
                    (classifier.Replace("Loss.crossEntropy out r.label (smoothing = 0.1)", "Loss.mse out r.label"))
                    "5:25"
                    "Loss.mse: the second argument must be float values, but [B] holds integer indices"

                expectError
                    (classifier.Replace("    loss =", "    inputs = { input = \"imgae\" }\n    loss ="))
                    "5:14"
                    "inputs: the data has no field 'imgae' (its fields: image, label)"

                expectError
                    (classifier.Replace(
                        "Loss.crossEntropy out r.label (smoothing = 0.1)",
                        "Loss.crossEntropy (out |> linear 4) r.label"
                    ))
                    "5:12"
                    "the function makes parameters (0.weight, 0.bias)"


                expectError
                    """
model lm : tokens[6] -> logits[6, 257] = embedding 257 16 >> linear 257
train lm {
    data = records "r.jsonl" (fields = { input = Field.tensor [6]; targets = Field.tokens [6] })
    loss = fun out r -> Loss.crossEntropy out r.targets (axis = -1)
}
"""
                    "4:12"
                    "field 'input' holds float values but model 'lm' input 'input' takes token ids"
            }

            test "a teacher runs frozen in the step: its outputs are the loss's third argument, by hand" {
                let src =
                    """
model small : tensor[3] -> logits[4] = linear 8 >> relu >> linear 4
model big : tensor[3] -> logits[4] = linear 32 >> relu >> linear 4
train small {
    data = records "r.jsonl" (fields = { meta = Field.tensor [3]; label = Field.label 4 })
    teacher = { name = "big"; checkpoint = "runs/big/checkpoint" }
    loss = fun out r teacher -> { loss = Loss.distill out teacher (temperature = 2.0); ce = Loss.crossEntropy out r.label }
    metrics = fun out r teacher -> { agree = Metric.accuracy out (argmax teacher) }
}
"""

                let c = check src
                Expect.isEmpty c.Diagnostics "checks"
                let g = c.Models |> List.find (fun (n, _) -> n = "small") |> snd
                let o = (Compiler.pickObjective c "small").Value
                let t = o.Teacher.Value
                Expect.equal t.Graph.Name "big" "the teacher's graph"
                Expect.equal t.Checkpoint "runs/big/checkpoint" "its checkpoint as written"
                Expect.equal t.Bindings [ "input", [ "meta" ] ] "bound by the student's rules"

                Expect.equal
                    (o.Loss.Inputs |> List.map fst)
                    [ "out.output"; "data.meta"; "data.label"; "teacher.output" ]
                    "outputs, fields, then the teacher's outputs"

                withTempDir "dsl-objective-" (fun dir ->
                    use data = RecordManifest.Load(records dir (tabular 64), tabularSchema)
                    use teacher = new GraphModule(t.Graph, 11L)
                    teacher.train ()

                    let before =
                        teacher.state_dict ()
                        |> Seq.map (fun kv -> kv.Key, kv.Value.clone ())
                        |> List.ofSeq

                    use task =
                        new ObjectiveTask(
                            data,
                            data,
                            o.Loss,
                            Support.fieldsOf [ "meta" ],
                            null,
                            o.Metrics.Value,
                            teacher,
                            [| "meta" |]
                        )

                    Expect.isFalse teacher.training "the teacher is put in eval mode"
                    use model = new GraphModule(g, 3L)
                    let indices = [| 0L .. 15L |]
                    use gen = new torch.Generator(1UL)

                    // By hand: T²·KL(softmax(t/T) ‖ softmax(s/T)) summed over classes, mean over the batch.
                    let byHand =
                        use noGrad = torch.no_grad ()
                        let x = data["meta"].index_select(0, torch.tensor indices)
                        let s = (model.Forward([| x |])[0]).div(2.0.ToScalar())
                        let tt = (teacher.Forward([| x |])[0]).div(2.0.ToScalar())
                        let p = tt.softmax 1

                        (p * (p.log () - s.log_softmax 1)).sum(1).mean().mul(4.0.ToScalar()).item<float32>()
                        |> float

                    let loss =
                        (task :> ITrainingTask).Loss(model, indices, gen, TrainOptions()).item<float32>()
                        |> float

                    Expect.floatClose Accuracy.medium loss byHand "the distillation loss against the teacher"

                    let opts = options dir
                    opts.Epochs <- 2
                    stepLosses g opts task |> ignore

                    let after = teacher.state_dict ()

                    for name, w in before do
                        Expect.isTrue (w.equal(after[name]).all().item<bool>()) (sprintf "teacher %s unchanged" name)

                    let r = (task :> ITrainingTask).Evaluate(model, TrainOptions(EvalBatchSize = 10))
                    Expect.isTrue (r.Extra.ContainsKey "agree" && r.Extra.ContainsKey "ce") "metrics over the teacher"
                    Expect.isTrue (r.IsShare "agree" && not (r.IsShare "ce")) "an accuracy is a share, a loss is not")
            }

            test "a teacher's mistakes are located" {
                let student =
                    """
model small : tensor[3] -> logits[4] = linear 4
model big : tensor[3] -> logits[4] = linear 32 >> relu >> linear 4
train small {
    data = records "r.jsonl" (fields = { meta = Field.tensor [3]; label = Field.label 4 })
    teacher = { name = "big"; checkpoint = "ck" }
    loss = fun out r teacher -> Loss.distill out teacher
}
"""

                expectError
                    (student.Replace("\"big\"; checkpoint", "\"bgi\"; checkpoint"))
                    "6:15"
                    "teacher: unknown model 'bgi'"

                expectError
                    (student.Replace("\"big\"; checkpoint", "\"small\"; checkpoint"))
                    "6:15"
                    "teacher: 'small' is the model being trained"

                expectError (student.Replace("; checkpoint = \"ck\"", "")) "6:15" "teacher: 'checkpoint' is required"

                expectError
                    """
model m : image[1, 8, 8] -> logits[4] = flatten >> linear 4
model t : image[1, 8, 8] -> logits[4] = flatten >> linear 4
train m {
    data = imageFolder "x" (size = 8) (channels = 1)
    teacher = { name = "t"; checkpoint = "ck" }
    loss = crossEntropy
}
"""
                    "6:15"
                    "a teacher's outputs are read by a loss expression"

                expectError
                    (student.Replace("tensor[3] -> logits[4] = linear 32", "tensor[5] -> logits[4] = linear 32"))
                    "5:12"
                    "field 'meta' is [3] per record but model 'big' input 'input' takes [5]"
            }

            test "dsl train with a teacher checkpoint, then dsl eval of the loss expression and metrics" {
                withTempDir "dsl-objective-" (fun dir ->
                    File.WriteAllLines(Path.Combine(dir, "train.jsonl"), tabular 256)
                    File.WriteAllLines(Path.Combine(dir, "test.jsonl"), tabular 64)
                    let file = Path.Combine(dir, "kd.dsl")

                    File.WriteAllText(
                        file,
                        """
model big : tensor[3] -> logits[4] = linear 32 >> relu >> linear 4
model small : tensor[3] -> logits[4] = linear 4
train big {
    data = records "train.jsonl" (test = "test.jsonl") (fields = { meta = Field.tensor [3]; label = Field.label 4 })
               (mix = [ { manifest = "test.jsonl"; weight = 0.25 } ]) (epochSize = 128)
    loss = fun out r -> Loss.crossEntropy out r.label
    optimizer = adamw (lr = 1e-2)
    epochs = 4
    batch = 32
}
train small {
    data = records "train.jsonl" (test = "test.jsonl") (fields = { meta = Field.tensor [3]; label = Field.label 4 })
    teacher = { name = "big"; checkpoint = "runs/big/checkpoint" }
    loss = fun out r teacher -> 0.5 * Loss.crossEntropy out r.label + 0.5 * Loss.distill out teacher (temperature = 2.0)
    metrics = fun out r teacher -> { accuracy = Metric.accuracy out r.label; agree = Metric.accuracy out (argmax teacher) }
    optimizer = adamw (lr = 2e-2)
    epochs = 8
    batch = 32
}
"""
                    )

                    let run args =
                        let r = CliTests.dsl args

                        Expect.isFalse
                            (r.Err.Contains "   at " || r.Out.Contains "   at ")
                            (sprintf "no stack trace:\n%s%s" r.Out r.Err)

                        r

                    let big = Path.Combine(dir, "runs", "big")

                    let noTeacher =
                        run [ "train"; file; "--model"; "small"; "--out"; Path.Combine(dir, "runs", "x") ]

                    Expect.equal noTeacher.Code 1 "a missing teacher checkpoint is refused"
                    Expect.stringContains noTeacher.Err "runs/big/checkpoint" "naming where it was looked for"
                    let trained = run [ "train"; file; "--model"; "big"; "--out"; big ]
                    Expect.equal trained.Code 0 (sprintf "the teacher trains:\n%s%s" trained.Out trained.Err)

                    Expect.stringContains
                        trained.Out
                        "mixing 128 records: 96 of train.jsonl (256 records), 32 of test.jsonl (64 records)"
                        "the teacher trains on a weighted mixture"

                    Expect.stringContains trained.Out "on 128 images" "an epoch of the mixture's size"
                    let small = Path.Combine(dir, "runs", "small")
                    let student = run [ "train"; file; "--model"; "small"; "--out"; small ]

                    Expect.equal
                        student.Code
                        0
                        (sprintf "the student trains against it:\n%s%s" student.Out student.Err)

                    Expect.stringContains student.Out "agree" "its metrics are reported"

                    let e =
                        run
                            [
                                "eval"
                                file
                                "--model"
                                "small"
                                "--checkpoint"
                                Path.Combine(small, "checkpoint")
                                "--json"
                            ]

                    Expect.equal e.Code 0 (sprintf "dsl eval:\n%s%s" e.Out e.Err)
                    use json = Text.Json.JsonDocument.Parse(e.Out.Trim())

                    let value (name: string) =
                        json.RootElement.GetProperty(name).GetDouble()

                    Expect.equal (json.RootElement.GetProperty("count").GetInt32()) 64 "every test record"
                    Expect.isGreaterThan (value "accuracy") 0.5 "the student learned the signs (chance 0.25)"
                    Expect.isGreaterThan (value "agree") 0.5 "and agrees with its teacher"
                    Expect.isGreaterThan (value "loss") 0.0 "the loss as trained")
            }

            test "a two-headed dense model trains on fashion-scenes from the CLI and dsl eval reports mIoU and depth" {
                withTempDir "dsl-objective-" (fun dir ->
                    let fashion = Path.Combine(dir, "fashion")
                    Directory.CreateDirectory fashion |> ignore
                    CliTests.writeFashionLike fashion "train" 60
                    CliTests.writeFashionLike fashion "t10k" 20
                    let scenes = Path.Combine(dir, "scenes")

                    let made =
                        CliTests.dsl
                            [
                                "data"
                                "fashion-scenes"
                                "--out"
                                scenes
                                "--fashion"
                                fashion
                                "--size"
                                "32"
                                "--train"
                                "64"
                                "--test"
                                "16"
                            ]

                    Expect.equal made.Code 0 (sprintf "fashion-scenes:\n%s%s" made.Out made.Err)
                    let file = Path.Combine(dir, "dense.dsl")

                    File.WriteAllText(
                        file,
                        """
let block c = conv c (k = 3) (padding = 1) >> relu
model dense (image : image[1, 32, 32]) =
    let f = image |> block 16 |> block 16
    { seg = f |> named "seg" (conv 11 (k = 1)); depth = f |> named "depth" (conv 1 (k = 1)) }
train dense {
    data = records "scenes/train.jsonl" (test = "scenes/test.jsonl") (augment = [ randomCrop 32 (pad = 2); hflip ])
               (fields = { image = Field.image [ 1; 32; 32 ]; mask = Field.mask 11 [ 32; 32 ]; depth = Field.depth [ 1; 32; 32 ] })
    loss = fun out r -> Loss.crossEntropy out.seg r.mask (ignoreIndex = 255) + 0.1 * Loss.maskedMean (abs (out.depth - r.depth)) (r.depth > 0.0)
    metrics = fun out r -> { miou = Metric.miou 11 out.seg r.mask; depthRmse = Metric.rmse out.depth r.depth }
    optimizer = adamw (lr = 3e-3)
    epochs = 3
    batch = 16
}
"""
                    )

                    let out = Path.Combine(dir, "run")
                    let trained = CliTests.dsl [ "train"; file; "--out"; out ]
                    Expect.equal trained.Code 0 (sprintf "dsl train:\n%s%s" trained.Out trained.Err)
                    Expect.stringContains trained.Out "miou" "the metrics after training"

                    let e =
                        CliTests.dsl [ "eval"; file; "--checkpoint"; Path.Combine(out, "checkpoint"); "--json" ]

                    Expect.equal e.Code 0 (sprintf "dsl eval:\n%s%s" e.Out e.Err)
                    use json = Text.Json.JsonDocument.Parse(e.Out.Trim())

                    let value (name: string) =
                        json.RootElement.GetProperty(name).GetDouble()

                    Expect.equal (json.RootElement.GetProperty("count").GetInt32()) 16 "every test scene"
                    Expect.isTrue (value "miou" > 0.0 && value "miou" <= 1.0) "mIoU is a share"
                    // Depths lie in [1, 10] m: an RMSE of the valid pixels is finite and below the range.
                    Expect.isTrue (value "depthRmse" > 0.0 && value "depthRmse" < 9.0) "depth RMSE in metres"

                    // The same numbers as the evaluation at the end of training (deterministic).
                    let last =
                        File.ReadAllLines(Path.Combine(out, "metrics.jsonl"))
                        |> Array.filter (fun l -> l.Contains "miou")
                        |> Array.last

                    use logged = Text.Json.JsonDocument.Parse last

                    let loggedMiou =
                        logged.RootElement.EnumerateObject()
                        |> Seq.find (fun p -> p.Name.EndsWith "miou")

                    Expect.floatClose
                        Accuracy.high
                        (loggedMiou.Value.GetDouble())
                        (value "miou")
                        "eval repeats training's evaluation")
            }

            test "a weighted mixture of record sets: exact shares, deterministic by seed, upsampling a small source" {
                Expect.equal (RecordMixture.Counts([| 0.7; 0.3 |], 10)) [| 7; 3 |] "7 : 3"
                Expect.equal (RecordMixture.Counts([| 1.0; 1.0; 1.0 |], 10)) [| 4; 3; 3 |] "the remainder to the first"

                Expect.equal
                    (RecordMixture.Counts([| 0.5; 0.25; 0.25 |], 3))
                    [| 1; 1; 1 |]
                    "largest remainders (.75, .75 over .5)"

                Expect.equal (RecordMixture.Counts([| 1.0; 1.0 |], 3)) [| 2; 1 |] "a tie goes to the earlier source"

                // Source A's records have meta[0] = i (0 … 31), source B's −1 − i (−1 … −4).
                let source (values: float32 list) =
                    let flat: float32[] =
                        values |> List.collect (fun v -> [ v; 0.0f; 0.0f ]) |> Array.ofList

                    let meta = torch.tensor(flat).reshape(int64 values.Length, 3L)
                    let label = torch.zeros ([| int64 values.Length |], dtype = torch.int64)

                    new RecordSet(tabularSchema, readOnlyDict [ "meta", meta; "label", label ])

                use a = source [ for i in 0..31 -> float32 i ]
                use b = source [ for i in 0..3 -> float32 (-1 - i) ]

                let firsts (seed: int64) =
                    use m = RecordMixture.Mix([| a; b |], [| 0.75; 0.25 |], 40, seed)
                    Expect.equal m.Count 40 "the size asked for"
                    m["meta"].select(1, 0L).data<float32>().ToArray() |> List.ofArray

                let drawn = firsts 7L
                let fromA = drawn |> List.filter (fun v -> v >= 0.0f)
                let fromB = drawn |> List.filter (fun v -> v < 0.0f)
                Expect.equal fromA.Length 30 "75% from A"
                Expect.equal (List.distinct fromA).Length 30 "A's records without repeats (30 of 32)"
                Expect.equal fromB.Length 10 "25% from B"

                for v in [ -1.0f; -2.0f; -3.0f; -4.0f ] do
                    let n = fromB |> List.filter ((=) v) |> List.length

                    Expect.isTrue
                        (n = 2 || n = 3)
                        (sprintf "B's record %g drawn 2 or 3 times (whole passes), got %d" v n)

                Expect.equal (firsts 7L) drawn "the same seed, the same records"
                Expect.notEqual (firsts 8L) drawn "another seed, another sample"

                let missing =
                    new RecordSet([| tabularSchema[0] |], readOnlyDict [ "meta", torch.zeros ([| 2L; 3L |]) ])

                Expect.throwsT<ArgumentException>
                    (fun () -> RecordMixture.Mix([| a; missing |], [| 0.5; 0.5 |], 4, 0L).Dispose())
                    "sources of other fields are refused"

                missing.Dispose()

                let recipe (mix: string) =
                    sprintf
                        """
model mlp : tensor[3] -> logits[4] = linear 4
train mlp {
    data = records "a.jsonl" (fields = { meta = Field.tensor [3]; label = Field.label 4 }) %s
    loss = fun out r -> Loss.crossEntropy out r.label
}
"""
                        mix

                expectError
                    (recipe
                        "(mix = [ { manifest = \"b.jsonl\"; weight = 0.6 }; { manifest = \"c.jsonl\"; weight = 0.4 } ])")
                    "4:12"
                    "records: mix: the weights add up to 1; they must stay below 1"

                expectError
                    (recipe "(mix = [ { manifest = \"b.jsonl\" } ])")
                    "4:12"
                    "records: mix: 'b.jsonl' needs a weight in (0, 1)"

                expectError (recipe "(epochSize = -1)") "4:12" "records: epochSize must be 0"

                withTempDir "dsl-objective-" (fun dir ->
                    let path = Path.Combine(dir, "mix.dsl")

                    File.WriteAllText(
                        path,
                        recipe "(mix = [ { manifest = \"b.jsonl\"; weight = 0.2 } ]) (epochSize = 500)"
                    )

                    let c = Compiler.checkFile path
                    Expect.isEmpty c.Diagnostics "checks"
                    let printed = Print.recipe c.Recipes.Head

                    Expect.stringContains
                        printed
                        "(mix = [ { manifest = \"b.jsonl\"; weight = 0.2 } ]) (epochSize = 500)"
                        "the mixture prints"

                    // A span ending in a field access ends after the field (it once ended at `r`).
                    Expect.stringContains
                        printed
                        "Loss.crossEntropy out r.label)"
                        "the loss as written, to its last field"

                    let again = Path.Combine(dir, "again.dsl")
                    File.WriteAllText(again, "model mlp : tensor[3] -> logits[4] = linear 4\n" + printed)
                    let c2 = Compiler.checkFile again

                    Expect.isEmpty
                        (c2.Diagnostics |> List.map Diagnostics.format)
                        ("the printed block checks:\n" + printed)

                    let mixOf (r: Recipe.TrainRecipe) =
                        r.Data.Path, r.Data.Mix, r.Data.EpochSize

                    Expect.equal (mixOf c2.Recipes.Head) (mixOf c.Recipes.Head) "and reads back the same mixture")
            }

            test "a recipe with a loss expression prints as a train block that reads back the same" {
                withTempDir "dsl-objective-" (fun dir ->
                    let path = Path.Combine(dir, "m.dsl")
                    File.WriteAllText(path, classifier)
                    let c = Compiler.checkFile path
                    Expect.isEmpty c.Diagnostics "checks"
                    let r = c.Recipes.Head
                    let printed = Print.recipe r

                    Expect.stringContains
                        printed
                        "loss = (fun out r -> Loss.crossEntropy out r.label (smoothing = 0.1))"
                        "the expression as written"

                    let again = Path.Combine(dir, "again.dsl")
                    File.WriteAllText(again, classifier.Substring(0, classifier.IndexOf "train") + printed)
                    let c2 = Compiler.checkFile again
                    Expect.isEmpty c2.Diagnostics "the printed block checks"

                    Expect.equal
                        c2.Recipes.Head
                        { r with
                            Span = c2.Recipes.Head.Span
                            DataSpan = c2.Recipes.Head.DataSpan
                        }
                        "the same recipe"

                    Expect.equal c2.Objectives.Length 1 "with its objective")
            }
        ]
