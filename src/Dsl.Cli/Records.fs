/// `dsl train` and `dsl eval` with a loss written in the language: the recipe's data as records
/// of the fields its schema names (Objective.schemaOf), and the task that runs the model and then
/// the loss graph on them.
module Dsl.Cli.Records

open System
open Dsl
open Dsl.Ir
open Dsl.Recipe
open Dsl.Runtime.Data
open Dsl.Runtime.Emit
open Dsl.Runtime.Training
open Dsl.Cli.Report
open Dsl.Cli.Session

/// The runtime's schema of a field the compiler knows.
let fieldSchema (f: Objective.Field) (ignoreIndex: int64) =
    let kind =
        match f.Type with
        | "image" -> FieldKind.Image
        | "mask" -> FieldKind.Mask
        | "depth" -> FieldKind.Depth
        | "label" -> FieldKind.Label
        | "tokens" -> FieldKind.Tokens
        | _ -> FieldKind.Tensor

    FieldSchema(f.Name, kind, f.Dims |> List.map (fun d -> int64 (known d)) |> Array.ofList, f.Classes, ignoreIndex)

/// A `records` manifest (a path relative to the file) read as the fields the objective declares.
let private readManifest (file: string) (o: Objective.Objective) (path: string) =
    let declared =
        o.Fields
        |> List.map (fun f -> fieldSchema f DenseManifest.DefaultIgnoreIndex)
        |> Array.ofList

    try
        RecordManifest.Load(relativeTo file path, declared)
    with :? DataError as e ->
        fail "%s: error: %s" file e.Message

/// The main manifest's records, or with `mix` sources a sample of `epochSize` records (default
/// the main manifest's count) drawn from all of them by weight, from the run's seed.
let private mixed (file: string) (r: TrainRecipe) (o: Objective.Objective) (main: RecordSet) =
    if r.Data.Mix.IsEmpty then
        main
    else
        let others = r.Data.Mix |> List.map (fun (m, _) -> readManifest file o m)
        let sources = main :: others

        try
            let weights = (1.0 - List.sumBy snd r.Data.Mix) :: (r.Data.Mix |> List.map snd)

            let size =
                if r.Data.EpochSize > 0 then
                    r.Data.EpochSize
                else
                    main.Count

            let counts = RecordMixture.Counts(Array.ofList weights, size)

            printfn
                "mixing %s: %s"
                (plural size "record")
                ((r.Data.Path :: (r.Data.Mix |> List.map fst), List.ofArray counts, sources)
                 |||> List.map3 (fun path count s -> sprintf "%d of %s (%d records)" count path s.Count)
                 |> String.concat ", ")

            RecordMixture.Mix(Array.ofList sources, Array.ofList weights, size, int64 r.Seed)
        finally
            for s in sources do
                s.Dispose()

/// The training records, the test records (if any) and what the caller disposes (the records among them).
let load (file: string) (r: TrainRecipe) (g: Graph) (o: Objective.Objective) (dataDir: string option) =
    match r.Data.Kind with
    | "corpus" ->
        let packed = Corpus.load file r g
        let classes = (o.Fields |> List.find (fun f -> f.Name = "tokens")).Classes

        let test =
            if packed.Validation.shape[0] > 0L then
                Some(RecordSet.OfPackedRows(packed.Validation, packed.Length, classes))
            else
                None

        let train = RecordSet.OfPackedRows(packed.Train, packed.Length, classes)

        train :> IRecords,
        test |> Option.map (fun t -> t :> IRecords),
        [ train :> IDisposable ]
        @ (test |> Option.map (fun t -> t :> IDisposable) |> Option.toList)
        @ [ packed :> IDisposable ]
    | "captions" when r.Loss = CatlipLoss ->
        // CatLIP: the images and their mined synsets as records; the sets keep the images.
        let records (set: ImageTextSet) split =
            try
                CatlipRecords.Of(set, g, split)
            with :? DataError as e ->
                fail "%s: error: %s" file e.Message

        let trainSet = ImageText.loadSet file r g r.Data.Path
        let testSet = ImageText.testSet file r g
        let train = records trainSet "training"
        let test = testSet |> Option.map (fun t -> records t "test")

        train :> IRecords,
        test |> Option.map (fun t -> t :> IRecords),
        [ train :> IDisposable; trainSet :> IDisposable ]
        @ (test |> Option.map (fun t -> t :> IDisposable) |> Option.toList)
        @ (testSet |> Option.map (fun t -> t :> IDisposable) |> Option.toList)
    | "captions" ->
        // CLIP and MobileCLIP: a caption (and a stored augmentation, a synthetic caption and
        // the teachers' embeddings of those) drawn per step; the test images are evaluated by
        // zero-shot accuracy and retrieval (evaluate below), not as records.
        let trainSet = ImageText.loadSet file r g r.Data.Path

        let reinforced =
            if o.Fields |> List.exists (fun f -> f.Name = "synthetic") then
                ImageText.reinforcedOf file r
            else
                None

        let records =
            try
                reinforced
                |> Option.iter (fun s ->
                    if s.Teachers <> r.Data.Teachers then
                        ImageText.located
                            file
                            r
                            "the data declares teachers = %d but %s stores the embeddings of %d (%s)"
                            r.Data.Teachers
                            r.Data.Reinforced
                            s.Teachers
                            (String.concat ", " s.Meta.Teachers))

                // T is the caption field's, which the objective's schema took from the model's token input.
                let caption = o.Fields |> List.find (fun f -> f.Name = "caption")
                ImageTextRecords(trainSet, imagePipeline r g, known caption.Dims.Head, Option.toObj reinforced)
            with :? DataError as e ->
                trainSet.Dispose()
                reinforced |> Option.iter (fun s -> s.Dispose())
                fail "%s: error: %s" file e.Message

        records :> IRecords,
        None,
        (trainSet :> IDisposable)
        :: (reinforced |> Option.map (fun s -> s :> IDisposable) |> Option.toList)
    | "records" ->
        let train = mixed file r o (readManifest file o r.Data.Path)

        let test =
            if r.Data.Test = "" then
                None
            else
                Some(readManifest file o r.Data.Test)

        train :> IRecords,
        test |> Option.map (fun t -> t :> IRecords),
        (train :> IDisposable)
        :: (test |> Option.map (fun t -> t :> IDisposable) |> Option.toList)
    | _ ->
        // Views of the labelled images, which the caller disposes with them.
        let train = (loadData file r g dataDir true).Value
        let test = loadData file r g dataDir false

        RecordSet.OfLabeledImages train :> IRecords,
        test |> Option.map (fun t -> RecordSet.OfLabeledImages t :> IRecords),
        (train :> IDisposable)
        :: (test |> Option.map (fun t -> t :> IDisposable) |> Option.toList)

/// Crops and flips of records data, applied to every spatial field together; image-only data
/// keeps the image pipeline of the train options, as classification does.
let private jointAugments (r: TrainRecipe) =
    if r.Data.Kind <> "records" || r.Data.Augment.IsEmpty then
        null
    else
        let pad =
            r.Data.Augment
            |> List.tryPick (function
                | RandomCrop(_, p) -> Some p
                | _ -> None)
            |> Option.defaultValue 0

        let flip =
            r.Data.Augment
            |> List.tryPick (function
                | HFlip p -> Some p
                | _ -> None)
            |> Option.defaultValue 0.0

        JointAugments(pad, flip)

/// The objective's teacher with its checkpoint's weights, on the trained model's device.
let private teacher (file: string) (o: Objective.Objective) (device: TorchSharp.torch.Device) =
    o.Teacher
    |> Option.map (fun t ->
        let m = new GraphModule(t.Graph, 0L, device)

        try
            loadWeights m (relativeTo file t.Checkpoint) |> ignore
        with :? Dsl.Runtime.Checkpoints.CheckpointError as e ->
            m.Dispose()
            fail "%s: error: teacher '%s': %s" file t.Graph.Name e.Message

        m, (t.Bindings |> List.map (snd >> List.head) |> Array.ofList :> Collections.Generic.IReadOnlyList<string>))

/// Image–text training is measured as image–text models are (zero-shot accuracy, retrieval
/// recall and CLIP's test loss), whichever objective trains it; the loss's steps are the objective's.
let private imageTextEvaluation file (r: TrainRecipe) (g: Graph) (steps: ObjectiveTask) =
    let test = ImageText.testSet file r g
    let pipeline = imagePipeline r g
    let objective = ImageText.objectiveOf r

    { new ITrainingTask with
        member _.Count = steps.Count

        member _.Loss(model, indices, augment, options) =
            steps.Loss(model, indices, augment, options)

        member _.Evaluate(model, options) =
            match test with
            | Some t -> ImageTextEvaluator.Evaluate(model, t, pipeline, objective, options.EvalBatchSize)
            | None -> null

        member _.Check model = steps.Check model
    },
    test |> Option.map (fun t -> t :> IDisposable) |> Option.toList

/// The task of a loss expression and what the caller disposes after training.
let task
    (file: string)
    (r: TrainRecipe)
    (g: Graph)
    (o: Objective.Objective)
    (dataDir: string option)
    (device: TorchSharp.torch.Device)
    =
    let frozen = teacher file o device
    let train, test, owned = load file r g o dataDir

    let t =
        new ObjectiveTask(
            train,
            Option.toObj test,
            o.Loss,
            o.Bindings
            |> List.map (fun (_, fs) -> Array.ofList fs :> Collections.Generic.IReadOnlyList<string>)
            |> Array.ofList,
            jointAugments r,
            ?metricsGraph = o.Metrics,
            ?teacher = Option.map fst frozen,
            ?teacherFields = Option.map snd frozen
        )

    let task, evaluation =
        if r.Data.Kind = "captions" && r.Loss <> CatlipLoss then
            imageTextEvaluation file r g t
        else
            t :> ITrainingTask, []

    task,
    [ t :> IDisposable ]
    @ evaluation
    @ (frozen |> Option.map (fun (m, _) -> m :> IDisposable) |> Option.toList)
    @ owned

/// `dsl eval` of a model whose train block has a loss expression: the loss's numbers and the
/// declared metrics over the held-out records (for `records` data only its test manifest is read).
let evaluate
    (file: string)
    (r: TrainRecipe)
    (g: Graph)
    (o: Objective.Objective)
    (dataDir: string option)
    (model: GraphModule)
    =
    let test, owned =
        match r.Data.Kind with
        | "records" when r.Data.Test = "" -> None, []
        | "records" ->
            let test = readManifest file o r.Data.Test
            Some(test :> IRecords), [ test :> IDisposable ]
        | "fashionMnist"
        | "imageFolder" ->
            // Only the test images: the training set is not read to evaluate.
            match loadData file r g dataDir false with
            | Some images -> Some(RecordSet.OfLabeledImages images :> IRecords), [ images :> IDisposable ]
            | None -> None, []
        | _ ->
            let _, test, owned = load file r g o dataDir
            test, owned

    use _owned =
        { new IDisposable with
            member _.Dispose() =
                for d in owned do
                    d.Dispose()
        }

    match test with
    | None -> fail "%s: error: the train block of '%s' names no test data" file g.Name
    | Some test ->
        let frozen = teacher file o model.Device

        use _teacher =
            { new IDisposable with
                member _.Dispose() =
                    frozen |> Option.iter (fun (m, _) -> m.Dispose())
            }

        // Evaluation reads only the test records; they stand in as the task's training set.
        use t =
            new ObjectiveTask(
                test,
                test,
                o.Loss,
                o.Bindings
                |> List.map (fun (_, fs) -> Array.ofList fs :> Collections.Generic.IReadOnlyList<string>)
                |> Array.ofList,
                null,
                ?metricsGraph = o.Metrics,
                ?teacher = Option.map fst frozen,
                ?teacherFields = Option.map snd frozen
            )

        // The evaluation transforms of training (the image normalisation), not a bare default.
        match t.Evaluate(model, trainOptions r g "") with
        | null -> fail "%s: error: the test data of '%s' is empty" file g.Name
        | e -> e
