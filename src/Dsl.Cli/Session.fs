/// What `train`, `eval`, `predict` and `bench` share: turning a checked file into a runtime model,
/// its data and its trainer options, and loading checkpoints with their names checked.
module Dsl.Cli.Session

open System
open System.IO
open Dsl
open Dsl.Ir
open Dsl.Recipe
open Dsl.Runtime.Checkpoints
open Dsl.Runtime.Data
open Dsl.Runtime.Emit
open Dsl.Runtime.Training
open Dsl.Cli.Report

/// Per-channel statistics applied to inputs after augmentation. Fashion-MNIST's are measured on
/// its training set; other image sets are centred at 0.5.
let private normalization (data: DataSpec) channels =
    if data.Kind = "fashionMnist" then
        Normalize(Array.create channels 0.2860f, Array.create channels 0.3530f)
    else
        Normalize(Array.create channels 0.5f, Array.create channels 0.5f)

/// The source hash stored with checkpoints: the graph's JSON without spans, so reformatting a
/// file keeps it while any change to the architecture or names changes it.
let sourceHash (g: Graph) =
    Checkpoint.SourceHash(IrJson.write false g)

/// `--device`: cpu, cuda, or by default cuda when a CUDA build of TorchSharp finds a GPU.
let deviceOf (name: string option) =
    match name with
    | Some "cpu" -> TorchSharp.torch.CPU
    | Some "cuda" when TorchSharp.torch.cuda.is_available () -> TorchSharp.torch.CUDA
    | Some "cuda" -> fail "error: --device cuda: no CUDA device is available (this build uses TorchSharp-cpu)"
    | Some other -> fail "error: --device must be cpu or cuda, got '%s'" other
    | None ->
        if TorchSharp.torch.cuda.is_available () then
            TorchSharp.torch.CUDA
        else
            TorchSharp.torch.CPU

let recipeOrExit (c: Compiler.Checked) (g: Graph) =
    match Compiler.pickRecipe c g.Name with
    | Some r -> r
    | None -> fail "%s: error: model '%s' has no train block" c.File g.Name

/// The model's image input [C, H, W]. A classifier has exactly that one input; an image–text
/// model (captions data) also has a token input, and CatLIP's has only the image.
let imageInput (r: TrainRecipe) (g: Graph) =
    let images = g.Inputs |> List.filter (fun (_, id) -> g.Nodes[id].Shape.Length = 4)

    match images, g.Inputs.Length with
    | [ (name, id) ], n when n = 1 || r.Data.Kind = "captions" ->
        match g.Nodes[id].Shape with
        | [ _; Known c; Known h; Known w ] -> c, h, w
        | shape ->
            fail "model '%s': input '%s' is %s; training needs one image input [C, H, W]" g.Name name (showShape shape)
    | _, 1 ->
        let name, id = g.Inputs.Head

        fail
            "model '%s': input '%s' is %s; training needs one image input [C, H, W]"
            g.Name
            name
            (showShape g.Nodes[id].Shape)
    | _, n when r.Data.Kind = "captions" ->
        fail
            "model '%s' has %d inputs; image–text training needs one image input [C, H, W] and at most one token input"
            g.Name
            n
    | _, n -> fail "model '%s' has %d inputs; image classification training needs exactly one" g.Name n

let relativeTo (file: string) (path: string) =
    if Path.IsPathRooted path then
        path
    else
        Path.Combine(Path.GetDirectoryName(Path.GetFullPath file), path)

/// Loads the train or test split the recipe names; None when an image folder has no test split.
let loadData (file: string) (r: TrainRecipe) (g: Graph) (dataDir: string option) (train: bool) : LabeledImages option =
    let c, h, w = imageInput r g

    let data =
        match r.Data.Kind with
        | "fashionMnist" ->
            let dir =
                match dataDir with
                | Some d -> d
                | None when r.Data.Path <> "" -> relativeTo file r.Data.Path
                | None -> FashionMnist.DefaultDirectory

            Some(FashionMnist.Load(dir, train))
        | _ ->
            let root = dataDir |> Option.defaultValue (relativeTo file r.Data.Path)

            let test =
                if r.Data.Test = "" then
                    None
                else
                    Some(relativeTo file r.Data.Test)

            match train, test with
            | true, _ -> Some(ImageFolder.Load(root, c, h, w))
            | false, Some t -> Some(ImageFolder.Load(t, c, h, w))
            | false, None -> None

    // Fashion-MNIST is stored as 1×28×28; its recipe's `size` and `channels` say what the
    // pipeline delivers after resizing (see evalTransforms), and that must be the model's input.
    match data with
    | Some d when
        r.Data.Kind = "fashionMnist"
        && (r.Data.Channels, r.Data.Size, r.Data.Size) <> (c, h, w)
        ->
        d.Dispose()

        fail
            "%s:%d:%d: error: the data gives images [%d, %d, %d] but model '%s' takes image[%d, %d, %d]; set size and channels in the data"
            file
            r.Span.Start.Line
            r.Span.Start.Col
            r.Data.Channels
            r.Data.Size
            r.Data.Size
            g.Name
            c
            h
            w
    | Some d when d.Skipped > 0 ->
        eprintfn "warning: %s" d.SkipSummary
        Some d
    | d -> d

/// Fashion-MNIST's 1×28×28 resized to the model's input when they differ (e.g. a 3×64×64
/// encoder): the first transform, so augmentations see images at the data's declared size.
let private resizeTransforms (r: TrainRecipe) (g: Graph) : IAugment list =
    let c, h, w = imageInput r g

    if r.Data.Kind = "fashionMnist" && (c, h, w) <> (1, 28, 28) then
        [ Resize(c, h, w) :> IAugment ]
    else
        []

let private normalizeFor (r: TrainRecipe) (g: Graph) : IAugment =
    let c, _, _ = imageInput r g
    normalization r.Data c

/// What evaluation applies: the resize, then normalisation.
let evalTransforms (r: TrainRecipe) (g: Graph) : IAugment list =
    resizeTransforms r g @ [ normalizeFor r g ]

let private randomAugments (r: TrainRecipe) : IAugment list =
    r.Data.Augment
    |> List.map (function
        | RandomCrop(size, pad) -> RandomCrop(size, pad) :> IAugment
        | HFlip p -> HorizontalFlip p :> IAugment)

/// The three stages images go through, kept apart for reinforced training's stored augmentations.
let imagePipeline (r: TrainRecipe) (g: Graph) =
    ImagePipeline(ResizeArray(resizeTransforms r g), ResizeArray(randomAugments r), ResizeArray [ normalizeFor r g ])

let trainOptions (r: TrainRecipe) (g: Graph) (outDir: string) : TrainOptions =
    let augments = randomAugments r
    // Text has no image pipeline; records crop and flip all spatial fields together
    // (Records.fs), so only the normalisation is left for their image field.
    let records = r.Data.Kind = "records"
    let images = r.Data.Kind <> "corpus"

    let recordsNormalize: IAugment list =
        if r.Data.Channels > 0 then
            [ normalization r.Data r.Data.Channels ]
        else
            []

    TrainOptions(
        Epochs = r.Epochs,
        BatchSize = r.Batch,
        Optimizer = r.Optimizer.Kind,
        Lr = r.Optimizer.Lr,
        WeightDecay = r.Optimizer.WeightDecay,
        Momentum = r.Optimizer.Momentum,
        Nesterov = r.Optimizer.Nesterov,
        Betas = struct (r.Optimizer.Beta1, r.Optimizer.Beta2),
        Eps = r.Optimizer.Eps,
        Schedule =
            (if r.Schedule.Kind = "linearDecay" then
                 LrSchedule.LinearKind
             else
                 r.Schedule.Kind),
        WarmupSteps = r.Schedule.Warmup,
        MinLr = r.Schedule.MinLr,
        GradClip = r.Clip,
        LabelSmoothing =
            (match r.Loss with
             | CrossEntropy s -> s
             | _ -> 0.0),
        AccumulationSteps = r.Accumulate,
        SaveEvery = r.SaveEvery,
        Keep = r.Keep,
        Seed = int64 r.Seed,
        Augmentations =
            ResizeArray(
                if records then
                    recordsNormalize
                elif images then
                    resizeTransforms r g @ augments @ [ normalizeFor r g ]
                else
                    []
            ),
        EvalTransforms =
            ResizeArray(
                if records then recordsNormalize
                elif images then evalTransforms r g
                else []
            ),
        EvalBatchSize = r.EvalBatch,
        OutDir = outDir,
        SourceHash = sourceHash g,
        DecayNormAndBias = r.DecayNormAndBias,
        SyncBatchNorm = r.SyncBatchNorm,
        Freeze = ResizeArray(r.Freeze |> List.map fst),
        ParamGroups =
            ResizeArray(
                r.Groups
                |> List.map (fun p ->
                    ParamGroup(
                        p.Path,
                        Option.toNullable p.Lr,
                        Option.toNullable p.LrScale,
                        Option.toNullable p.WeightDecay
                    ))
            )
    )

/// `dsl train`'s lines for a block with `freeze` or `paramGroups`: each group's pattern,
/// parameters, peak lr and weight decay, then the frozen ones (none without either field).
let groupLines (options: TrainOptions) (g: Graph) : string list =
    if options.Freeze.Count = 0 && options.ParamGroups.Count = 0 then
        []
    else
        g.Params
        |> List.filter (fun p -> p.Kind = Trainable)
        |> List.map (fun p -> struct (p.Name, p.Shape |> List.map int64 |> Array.ofList))
        |> fun ps -> ParameterGroups.Describe(options, ps)
        |> List.ofSeq

/// Stops with every missing, unexpected and differently shaped parameter unless the
/// checkpoint's weights fit the model by name and shape.
let private requireFit (model: GraphModule) (dir: string) (loaded: LoadedCheckpoint) =
    let differences = CheckpointFit.Differences(loaded.Weights, model.state_dict ())

    if differences.Count > 0 then
        fail "%s: error: %s" dir (CheckpointFit.Describe(model.Graph.Name, differences))

/// `train --resume`: the run folder's checkpoint must be this model's and fit it, checked
/// before the data is loaded (the trainer checks again when it restores).
let requireResumable (model: GraphModule) (dir: string) =
    use loaded = Checkpoint.Load dir

    if loaded.Meta.Model <> model.Graph.Name then
        fail
            "%s: error: the checkpoint is of model '%s', not '%s'; resume needs the run's own model (or another --out)"
            dir
            loaded.Meta.Model
            model.Graph.Name

    requireFit model dir loaded
    loaded.Meta.Step

/// Copies a checkpoint's weights into the model; every name and shape must match.
let loadWeights (model: GraphModule) (dir: string) =
    // Weights only: a checkpoint copied without its optimizer state still evaluates.
    use loaded = Checkpoint.Load(dir, optimizer = false)
    let expected = model.state_dict ()
    requireFit model dir loaded
    use _ = TorchSharp.torch.no_grad ()

    for KeyValue(name, t) in expected do
        t.copy_ (loaded.Weights[name]) |> ignore

    if loaded.Meta.SourceHash <> sourceHash model.Graph then
        eprintfn
            "warning: %s was trained from a different version of model '%s' (its names and shapes still fit)"
            dir
            model.Graph.Name

    loaded.Meta
