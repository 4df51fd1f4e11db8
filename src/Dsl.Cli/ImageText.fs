/// `dsl train` and `dsl eval` on `captions` data, and `dsl reinforce`: CLIP, MobileCLIP's
/// reinforced training and CatLIP driven from a train block (CatLIP, arXiv 2404.15653; apple/corenet projects/catlip; MobileCLIP, arXiv 2311.17049; apple/ml-mobileclip).
module Dsl.Cli.ImageText

open System
open System.IO
open System.Text.Json
open Argu
open Dsl
open Dsl.Ir
open Dsl.Recipe
open Dsl.Runtime.Bench
open Dsl.Runtime.Data
open Dsl.Runtime.Emit
open Dsl.Runtime.Training
open Dsl.Cli.Args
open Dsl.Cli.Report
open Dsl.Cli.Session

let located (file: string) (r: TrainRecipe) fmt =
    Printf.ksprintf (fun s -> fail "%s:%d:%d: error: %s" file r.Span.Start.Line r.Span.Start.Col s) fmt

/// A manifest at the recipe's size; a model whose image input differs is a located error.
let loadSet (file: string) (r: TrainRecipe) (g: Graph) (manifest: string) =
    let c, h, w = imageInput r g

    if (r.Data.Channels, r.Data.Size, r.Data.Size) <> (c, h, w) then
        located
            file
            r
            "the data gives images [%d, %d, %d] but model '%s' takes image[%d, %d, %d]; set size and channels in the data"
            r.Data.Channels
            r.Data.Size
            r.Data.Size
            g.Name
            c
            h
            w

    let set = ImageTextManifest.Load(relativeTo file manifest, c, h, w)

    if set.Skipped > 0 then
        eprintfn "warning: %s" set.SkipSummary

    set

let testSet file (r: TrainRecipe) g =
    if r.Data.Test = "" then
        None
    else
        Some(loadSet file r g r.Data.Test)

/// What the image–text evaluator reports as the test loss: CLIP's, unless CatLIP's BCE trains it.
let objectiveOf (r: TrainRecipe) =
    match r.Loss with
    | CatlipLoss -> ImageTextObjective(ImageTextObjectiveKind.MultiLabel)
    | MobileclipLoss(lambda, scale) -> ImageTextObjective(ImageTextObjectiveKind.Reinforced, lambda, scale)
    | ClipLoss
    | Objective _ -> ImageTextObjective(ImageTextObjectiveKind.Clip)
    | CrossEntropy _
    | NextToken _ -> fail "error: captions data trains an image–text objective"

let private cropOf (r: TrainRecipe) =
    r.Data.Augment
    |> List.tryPick (function
        | Recipe.RandomCrop(size, pad) -> Some(Dsl.Runtime.Data.RandomCrop(size, pad))
        | _ -> None)
    |> Option.toObj

/// The data's reinforced folder (stored augmentations and teacher embeddings), when it names one.
let reinforcedOf file (r: TrainRecipe) =
    if r.Data.Reinforced = "" then
        None
    else
        try
            Some(ReinforcedSet.Load(relativeTo file r.Data.Reinforced, cropOf r))
        with
        | :? DataError as e -> located file r "%s" e.Message
        | :? Dsl.Runtime.Checkpoints.CheckpointError as e -> located file r "%s" e.Message

/// Zero-shot accuracy and retrieval of an image–text model on a test set.
let private evaluateOn file (r: TrainRecipe) (g: Graph) (model: GraphModule) test =
    Benchmark.UseAllCores() |> ignore
    ImageTextEvaluator.Evaluate(model, test, imagePipeline r g, objectiveOf r, r.EvalBatch)

/// The same on the recipe's test manifest (what an experiment's eval stage reports).
let evaluate file (r: TrainRecipe) (g: Graph) (model: GraphModule) =
    use test =
        match testSet file r g with
        | Some t -> t
        | None -> fail "%s: error: the train block of '%s' names no test manifest" file g.Name

    evaluateOn file r g model test

/// The linear-probe accuracy of frozen image features: a linear classifier fitted on the
/// training manifest's images, scored on the test manifest's (`dsl eval --probe`).
let probeOn file (r: TrainRecipe) (g: Graph) (model: GraphModule) test =
    use train = loadSet file r g r.Data.Path
    LinearProbe.Run(model, train, test, imagePipeline r g, r.EvalBatch)

/// The same on the recipe's test manifest (an experiment's `Stage.eval … (probe = true)`).
let probe file (r: TrainRecipe) (g: Graph) (model: GraphModule) =
    use test =
        match testSet file r g with
        | Some t -> t
        | None -> fail "%s: error: the train block of '%s' names no test manifest" file g.Name

    probeOn file r g model test

/// `dsl eval` on captions data: the objective's test loss, zero-shot accuracy, retrieval recalls
/// and, with --probe, the linear-probe accuracy of frozen image features.
let eval
    file
    (r: TrainRecipe)
    (g: Graph)
    (model: GraphModule)
    (meta: Dsl.Runtime.Checkpoints.CheckpointMeta)
    json
    probe
    =
    use test =
        match testSet file r g with
        | Some t -> t
        | None -> fail "%s: error: the train block of '%s' names no test manifest" file g.Name

    let e = evaluateOn file r g model test

    let probeAccuracy = if probe then Some(probeOn file r g model test) else None

    if json then
        let metrics =
            [
                for struct (name, value) in e.Metrics() ->
                    (if name = "accuracy" then "zero_shot_top1"
                     elif name = "top5" then "zero_shot_top5"
                     else name),
                    box value
            ]

        printfn
            "%s"
            (jsonLine (
                [ "model", box g.Name; "step", box meta.Step; "count", box e.Count ]
                @ metrics
                @ (probeAccuracy |> Option.map (fun p -> "linear_probe", box p) |> Option.toList)
                @ [ "images_per_s", box e.ImagesPerSecond ]
            ))
    else
        printfn "%s at step %d on %d test images: %s" g.Name meta.Step e.Count (metricsLine e)

        probeAccuracy
        |> Option.iter (fun p -> printfn "linear probe: %.2f%%" (100.0 * p))

    0

/// `dsl reinforce`: runs the teachers once over the training manifest and stores, per image, N
/// augmentations (as parameters) with each teacher's image embedding of each, and each
/// teacher's embedding of every caption and synthetic caption (MobileCLIP, arXiv 2311.17049; apple/ml-mobileclip).
/// A teacher whose embeddings reinforcement stores: its graph and checkpoint, and where it is
/// declared (for messages and for the set's record of its teachers).
type Teacher =
    {
        File: string
        Graph: Graph
        Checkpoint: string
    }

/// MobileCLIP's dataset reinforcement (arXiv 2311.17049, §3): every training image of the
/// recipe's captions data under `count` seeded augmentations, with each teacher's image and
/// caption embeddings, computed once (`dsl reinforce`, an experiment's `Stage.reinforce`).
let reinforceWith file (r: TrainRecipe) (g: Graph) (teachers: Teacher list) count batch seed =
    if r.Data.Kind <> "captions" then
        located file r "reinforcement needs captions data in the train block of '%s'" g.Name

    if teachers.IsEmpty then
        fail "error: give at least one teacher"

    if r.Data.Teachers <> 0 && teachers.Length <> r.Data.Teachers then
        located
            file
            r
            "the data declares teachers = %d, and %d teachers were given; the loss reads as many teachers as the data declares"
            r.Data.Teachers
            teachers.Length

    Benchmark.UseAllCores() |> ignore
    use train = loadSet file r g r.Data.Path
    let pipeline = imagePipeline r g
    let channels, h, w = imageInput r g

    let models =
        teachers
        |> List.map (fun t ->
            let model = new GraphModule(t.Graph, 0L)
            loadWeights model t.Checkpoint |> ignore
            let encoder = DualEncoder.Of model

            match encoder.ContrastiveProblem() with
            | null -> ()
            | problem -> fail "%s: error: teacher %s" t.File problem

            let tshape =
                t.Graph.Nodes[snd (t.Graph.Inputs |> List.find (fun (n, _) -> n = encoder.ImageInput))].Shape

            if tshape.Tail <> [ Known channels; Known h; Known w ] then
                fail
                    "%s: error: teacher '%s' takes images %s but the data gives [%d, %d, %d]"
                    t.File
                    t.Graph.Name
                    (showShape tshape)
                    channels
                    h
                    w

            sprintf "%s:%s@%s" t.File t.Graph.Name t.Checkpoint, encoder)

    try
        Reinforcer.Run(
            train,
            relativeTo file r.Data.Path,
            pipeline,
            ResizeArray(models |> List.map snd),
            ResizeArray(models |> List.map fst),
            count,
            batch,
            seed
        )
    finally
        for _, e in models do
            e.Model.Dispose()

let reinforce (args: ParseResults<ReinforceArgs>) =
    args.TryGetResult ReinforceArgs.Max_Pixels
    |> Option.iter (fun n -> Dsl.Runtime.Data.ImageLimits.CommandLine <- Nullable n)

    let file = args.GetResult ReinforceArgs.File
    let c = checkedOrExit file
    let g = modelOrExit c (args.TryGetResult ReinforceArgs.Model)
    let r = recipeOrExit c g

    if r.Data.Kind <> "captions" then
        located file r "dsl reinforce needs captions data in the train block of '%s'" g.Name

    let count = args.GetResult(ReinforceArgs.Augmentations, 5)

    let out =
        match args.TryGetResult ReinforceArgs.Out, r.Data.Reinforced with
        | Some o, _ -> o
        | None, "" -> fail "error: give --out, or set the data's reinforced folder in %s" file
        | None, folder -> relativeTo file folder

    let teachers = args.GetResults ReinforceArgs.Teacher

    if teachers.IsEmpty then
        fail "error: give at least one --teacher FILE MODEL CHECKPOINT"

    let teachers =
        teachers
        |> List.map (fun (tfile, tname, checkpoint) ->
            let tc = checkedOrExit tfile

            {
                File = tfile
                Graph = modelOrExit tc (Some tname)
                Checkpoint = checkpoint
            })

    let clock = Diagnostics.Stopwatch.StartNew()

    use set =
        reinforceWith
            file
            r
            g
            teachers
            count
            (args.GetResult(ReinforceArgs.Batch, r.EvalBatch))
            (int64 (args.GetResult(ReinforceArgs.Seed, r.Seed)))

    set.Save out

    printfn
        "reinforced %d images × %d augmentations with %d teacher(s) in %.0f s → %s"
        set.Meta.Count
        count
        teachers.Length
        clock.Elapsed.TotalSeconds
        out

    0
