/// `train` blocks to typed recipes: every field is evaluated at compile time and checked here,
/// so a misspelt optimizer or a negative batch size is a located error before any data is read.
module Dsl.Recipe

open Dsl.Syntax
open Dsl.Diagnostics
open Dsl.Values
open Dsl.Eval
open Dsl.Elaborate
open Dsl.ParamGroups

type Augment =
    | RandomCrop of size: int * pad: int
    | HFlip of p: float

/// A field of a record the data declares (`Field.image [1; 28; 28]`, `Field.label 10`, …):
/// its kind, its shape per record and, for labels and masks, the number of classes.
type FieldDecl =
    {
        Name: string
        /// image, mask, depth, label, tensor or tokens.
        Type: string
        Shape: int list
        /// Labels and masks: how many classes (0: not declared).
        Classes: int
        Span: Span
    }

type DataSpec =
    {
        Kind: string
        /// Fashion-MNIST directory ("" = the Debian package's location), the image-folder root,
        /// or the training manifest of an image–text set (`captions`).
        Path: string
        /// Image-folder test root or test manifest ("" = none).
        Test: string
        Size: int
        Channels: int
        Augment: Augment list
        /// `captions`: the folder `dsl reinforce` writes and reinforced training reads ("" = none).
        Reinforced: string
        /// `captions` with `reinforced`: how many teachers' embeddings it stores (each record's
        /// `teachers` list; `dsl reinforce` checks its --teacher count against it).
        Teachers: int
        /// `corpus`: plain, lines or fortunes; bytes or gpt2; the share of documents held out.
        Format: string
        Tokenizer: string
        Validation: float
        /// `records`: the fields every record holds, as declared (checked against the files when loaded).
        Fields: FieldDecl list
        /// `records`: further manifests (same fields) mixed into training with their weights; the
        /// main manifest has the rest of the weight (a replay buffer, a data mix).
        Mix: (string * float) list
        /// `records`: training records per epoch drawn from the mixture (0: the main manifest's count).
        EpochSize: int
    }

/// A loss or metrics function as written in a train block. Two are equal when their text is
/// (a printed recipe read back is the same recipe), since functions have no equality of their own.
[<CustomEquality; NoComparison>]
type Expression =
    {
        Fn: Value
        Span: Span
        /// The text in the file ("" when the source was not read from a file).
        Source: string
    }

    override x.Equals(o) =
        match o with
        | :? Expression as e -> e.Source = x.Source
        | _ -> false

    override x.GetHashCode() = x.Source.GetHashCode()

/// `teacher = { name = "big"; checkpoint = "runs/big/checkpoint" }`: another model of the file,
/// run frozen (eval mode, no gradient) on the same batch inside each step, its outputs the third
/// argument of the loss (knowledge distillation, Hinton et al. 2015).
type TeacherSpec =
    {
        Model: string
        /// The checkpoint folder, relative to the .dsl file.
        Checkpoint: string
        Span: Span
    }

/// The objective of a train block. Image–text objectives need `captions` data.
type LossSpec =
    /// Label-smoothed cross-entropy on class logits.
    | CrossEntropy of smoothing: float
    /// CLIP's symmetric InfoNCE (MobileCLIP, arXiv 2311.17049; apple/ml-mobileclip) on a dual encoder's image/text/logit_scale outputs.
    | ClipLoss
    /// MobileCLIP's (1 − λ)·CLIP + λ·distillation against stored teacher embeddings, summed
    /// over the ground-truth and a synthetic caption (MobileCLIP, arXiv 2311.17049; apple/ml-mobileclip).
    | MobileclipLoss of lambda: float * teacherScale: float
    /// CatLIP's multi-label BCE over caption-mined synsets, batch-mean reduction (CatLIP, arXiv 2404.15653; apple/corenet projects/catlip).
    | CatlipLoss
    /// Next-token cross-entropy of a decoder, plus zLoss · mean(logsumexp(logits)²) (OpenLM, §4.2).
    | NextToken of zLoss: float
    /// `loss = fun out r -> …`: an expression over the model's outputs and the record's fields,
    /// elaborated to its own graph once the model and the data's schema are known (Objective.fs).
    | Objective of Expression

type OptimizerSpec =
    {
        Kind: string
        Lr: float
        WeightDecay: float
        Beta1: float
        Beta2: float
        Eps: float
        Momentum: float
        Nesterov: bool
    }

type ScheduleSpec =
    {
        Kind: string
        Warmup: int
        MinLr: float
    }

type TrainRecipe =
    {
        Model: string
        Data: DataSpec
        Loss: LossSpec
        Optimizer: OptimizerSpec
        Schedule: ScheduleSpec
        Epochs: int
        Batch: int
        EvalBatch: int
        Clip: float
        Accumulate: int
        Seed: int
        /// Save a checkpoint every this many optimizer steps as well as at epoch ends (0: epoch ends only).
        SaveEvery: int
        /// How many of the newest checkpoints a run keeps (0: all).
        Keep: int
        Span: Span
        /// Where the `data` field's value is, for errors about what the data gives.
        DataSpan: Span
        /// `inputs = { image = "image"; metadata = "meta" }`: which field feeds which model input
        /// (model input, fields, where it is written); an input not named here takes the field of its
        /// name. Several fields (`text = [ "caption"; "synthetic" ]`) feed the input one after another
        /// in one pass, and the outputs computed from it come back per field.
        Inputs: (string * string list * Span) list
        /// `metrics = fun out r -> { … }`: reported by evaluation, elaborated like the loss.
        Metrics: Expression option
        /// A frozen model whose outputs the loss reads (`fun out r teacher -> …`).
        Teacher: TeacherSpec option
        /// `freeze`: globs over parameter names that do not train, with where each is written.
        Freeze: (string * Span) list
        /// `paramGroups`: the first group whose path matches a parameter sets its lr and weight decay.
        Groups: ParamGroupSpec list
        /// Also decay 1-D parameters (norm weights, biases); off, as in timm.
        DecayNormAndBias: bool
        /// BatchNorm statistics over every rank's batch in a data-parallel run (SyncBatchNorm); off.
        SyncBatchNorm: bool
    }

let private fields =
    [
        "data"
        "loss"
        "optimizer"
        "schedule"
        "epochs"
        "batch"
        "evalBatch"
        "clip"
        "accumulate"
        "seed"
        "saveEvery"
        "keep"
        "inputs"
        "metrics"
        "teacher"
        "freeze"
        "paramGroups"
        "decayNormAndBias"
        "syncBatchNorm"
    ]

let private kindOf what (allowed: string list) (v, span) =
    match v with
    | VRecord fs ->
        match fs |> List.tryFind (fun (k, _) -> k = "kind") with
        | Some(_, VStr k) when List.contains k allowed ->
            k, (fun name -> fs |> List.find (fun (n, _) -> n = name) |> snd, span)
        | Some(_, VStr k) -> errorf span "%s: '%s' is not one of %s" what k (String.concat ", " allowed)
        | _ -> errorf span "%s must be one of %s" what (String.concat ", " allowed)
    | VError -> quietStop ()
    | other -> errorf span "%s must be one of %s, got %s" what (String.concat ", " allowed) (describe other)

let private augment (v, span) =
    match kindOf "an augmentation" [ "randomCrop"; "hflip" ] (v, span) with
    | "randomCrop", f -> RandomCrop(asPositiveInt "randomCrop" "size" (f "size"), asInt "randomCrop" "pad" (f "pad"))
    | _, f ->
        let p = asFloat "hflip" "p" (f "p")

        if p < 0.0 || p > 1.0 then
            errorf span "hflip: p must be in [0, 1], got %g" p

        HFlip p

/// The kinds a declared field may have, and whether its values are class indices.
let fieldTypes = [ "image"; "mask"; "depth"; "label"; "tensor"; "tokens" ]

/// `fields = { image = Field.image [1; 28; 28]; label = Field.label 10 }`: a record of field declarations.
let private fieldsOf (v, span) =
    match v with
    | VRecord fs when not fs.IsEmpty ->
        fs
        |> List.map (fun (name, d) ->
            match d with
            | VRecord parts when parts |> List.exists (fun (k, _) -> k = "field") ->
                let get k =
                    parts |> List.find (fun (n, _) -> n = k) |> snd

                let ty = asString "a field" "field" (get "field", span)
                let shape = asIntList ("Field." + ty) "shape" (get "shape", span)

                if shape |> List.exists (fun n -> n <= 0) then
                    errorf span "field '%s': every dimension must be positive, got %A" name shape

                match ty, shape with
                | "image", [ c; _; _ ] when c = 1 || c = 3 -> ()
                | "image", _ -> errorf span "field '%s': an image is [C, H, W] with C = 1 or 3, got %A" name shape
                | "mask", [ _; _ ] -> ()
                | "mask", _ -> errorf span "field '%s': a mask is [H, W], got %A" name shape
                | "depth", [ 1; _; _ ] -> ()
                | "depth", _ -> errorf span "field '%s': a depth map is [1, H, W], got %A" name shape
                | _ -> ()

                {
                    Name = name
                    Type = ty
                    Shape = shape
                    Classes = asInt ("Field." + ty) "classes" (get "classes", span)
                    Span = span
                }
            | VError -> quietStop ()
            | other ->
                errorf
                    span
                    "field '%s' must be declared with Field.image, Field.mask, Field.depth, Field.label, Field.tensor or Field.tokens, got %s"
                    name
                    (describe other))
    | VError -> quietStop ()
    | other ->
        errorf
            span
            "records: fields must be a record of field declarations, e.g. { image = Field.image [1; 28; 28]; label = Field.label 10 }, got %s"
            (describe other)

/// `mix = [ { manifest = "replay.jsonl"; weight = 0.3 } ]`: each weight in (0, 1), together
/// below 1 so that the main manifest keeps a share.
let private mixOf span (v: Value) =
    let sources =
        match v with
        | VList items ->
            items
            |> List.map (fun item ->
                match item with
                | VRecord fs ->
                    match fs |> List.tryFind (fun (k, _) -> k <> "manifest" && k <> "weight") with
                    | Some(k, _) ->
                        errorf span "records: mix: unknown field '%s'; a source has a manifest and a weight" k
                    | None -> ()

                    let manifest =
                        match fs |> List.tryFind (fun (k, _) -> k = "manifest") with
                        | Some(_, VStr m) when m <> "" -> m
                        | _ -> errorf span "records: mix: each source needs manifest = \"file.jsonl\""

                    let weight =
                        match fs |> List.tryFind (fun (k, _) -> k = "weight") with
                        | Some(_, VNum(w, _)) when w > 0.0 && w < 1.0 -> w
                        | Some(_, w) ->
                            errorf
                                span
                                "records: mix: the weight of '%s' must be in (0, 1), got %s"
                                manifest
                                (describe w)
                        | None -> errorf span "records: mix: '%s' needs a weight in (0, 1)" manifest

                    manifest, weight
                | other ->
                    errorf
                        span
                        "records: mix: a source is { manifest = \"file.jsonl\"; weight = 0.3 }, got %s"
                        (describe other))
        | other -> errorf span "records: mix must be a list of { manifest; weight } sources, got %s" (describe other)

    let total = sources |> List.sumBy snd

    if total >= 1.0 then
        errorf
            span
            "records: mix: the weights add up to %g; they must stay below 1, the main manifest having the rest"
            total

    sources

let private data (v, span) =
    let kind, f =
        kindOf "data" [ "fashionMnist"; "imageFolder"; "captions"; "corpus"; "records" ] (v, span)

    /// A corpus string field that must be one of `allowed`; "" for other kinds of data.
    let corpusChoice name (allowed: string list) =
        if kind <> "corpus" then
            ""
        else
            match asString kind name (f name) with
            | s when List.contains s allowed -> s
            | s -> errorf span "corpus: %s '%s' is not one of %s" name s (String.concat ", " allowed)

    // Text has no images: no augmentations, size or channels; records declare theirs per field.
    let images = kind <> "corpus" && kind <> "records"
    let fieldDecls = if kind = "records" then fieldsOf (f "fields") else []

    let augments =
        if images || kind = "records" then
            asList kind "augment" (f "augment") |> List.map (fun a -> augment (a, span))
        else
            []

    let size =
        if images then
            asPositiveInt kind "size" (f "size")
        else
            match fieldDecls |> List.tryFind (fun d -> d.Type = "image") with
            | Some d -> List.last d.Shape
            | None -> 0

    // Augmentations run on images at the data's size, and the model sees what they return.
    for a in augments do
        match a with
        | RandomCrop(crop, pad) when crop <> size ->
            errorf span "randomCrop %d (pad = %d): the crop must keep the data's size %d" crop pad size
        | _ -> ()

    {
        Kind = kind
        Path =
            match kind with
            | "fashionMnist" -> asString kind "dir" (f "dir")
            | "captions" -> asString kind "manifest" (f "manifest")
            | "corpus" -> asString kind "file" (f "file")
            | "records" -> asString kind "manifest" (f "manifest")
            | _ -> asString kind "path" (f "path")
        Test =
            if kind = "fashionMnist" || kind = "corpus" then
                ""
            else
                asString kind "test" (f "test")
        Size = size
        Channels =
            if images then
                asPositiveInt kind "channels" (f "channels")
            else
                match fieldDecls |> List.tryFind (fun d -> d.Type = "image") with
                | Some d -> d.Shape.Head
                | None -> 0
        Augment = augments
        Reinforced =
            if kind = "captions" then
                asString kind "reinforced" (f "reinforced")
            else
                ""
        Teachers =
            if kind = "captions" then
                let n = asInt kind "teachers" (f "teachers")
                let reinforced = asString kind "reinforced" (f "reinforced")

                if reinforced <> "" && n < 1 then
                    errorf
                        span
                        "captions: reinforced data stores the embeddings of teachers = N teachers (the --teacher count of `dsl reinforce`); say how many"

                if reinforced = "" && n <> 0 then
                    errorf span "captions: teachers = %d counts the teachers of reinforced data; set reinforced too" n

                n
            else
                0
        Format = corpusChoice "format" [ "plain"; "lines"; "fortunes" ]
        Tokenizer = corpusChoice "tokenizer" [ "bytes"; "gpt2" ]
        Validation =
            if kind = "corpus" then
                let v = asFloat kind "validation" (f "validation")

                if v < 0.0 || v >= 1.0 then
                    errorf span "corpus: validation must be in [0, 1), got %g" v

                v
            else
                0.0
        Fields = fieldDecls
        Mix = if kind = "records" then mixOf span (fst (f "mix")) else []
        EpochSize =
            if kind = "records" then
                match asInt kind "epochSize" (f "epochSize") with
                | n when n < 0 ->
                    errorf span "records: epochSize must be 0 (the main manifest's count) or more, got %d" n
                | n -> n
            else
                0
    }

/// The text a span covers in its file, so a printed recipe repeats a loss expression as written
/// ("" when the file cannot be read again, e.g. a source given as a string).
let private sourceText (span: Span) =
    try
        if System.IO.File.Exists span.File then
            let lines = System.IO.File.ReadAllLines span.File
            let s, e = span.Start, span.End

            if s.Line = e.Line then
                lines[s.Line - 1].Substring(s.Col - 1, e.Col - s.Col)
            else
                [
                    yield lines[s.Line - 1].Substring(s.Col - 1)
                    yield! lines[s.Line .. e.Line - 2]
                    yield lines[e.Line - 1].Substring(0, e.Col - 1)
                ]
                |> String.concat "\n"
        else
            ""
    with _ ->
        ""

let private loss (v, span) =
    match v with
    | VFun _ ->
        Objective
            {
                Fn = v
                Span = span
                Source = sourceText span
            }
    | _ ->
        match kindOf "loss" [ "crossEntropy"; "clipLoss"; "mobileclipLoss"; "catlipLoss"; "nextToken" ] (v, span) with
        | "nextToken", f ->
            let z = asFloat "nextToken" "zLoss" (f "zLoss")

            if z < 0.0 then
                errorf span "nextToken: zLoss must not be negative, got %g" z

            NextToken z
        | "crossEntropy", f ->
            let s = asFloat "crossEntropy" "smoothing" (f "smoothing")

            if s < 0.0 || s >= 1.0 then
                errorf (snd (f "smoothing")) "crossEntropy: smoothing must be in [0, 1), got %g" s

            CrossEntropy s
        | "mobileclipLoss", f ->
            let lambda = asFloat "mobileclipLoss" "lambda" (f "lambda")
            let scale = asFloat "mobileclipLoss" "teacherScale" (f "teacherScale")

            if lambda < 0.0 || lambda > 1.0 then
                errorf span "mobileclipLoss: lambda must be in [0, 1], got %g" lambda

            if scale <= 0.0 then
                errorf span "mobileclipLoss: teacherScale must be positive, got %g" scale

            MobileclipLoss(lambda, scale)
        | "clipLoss", _ -> ClipLoss
        | _ -> CatlipLoss

let private optimizer (v, span) =
    let kind, f = kindOf "optimizer" [ "adamw"; "sgd" ] (v, span)
    let num name = asFloat kind name (f name)
    let lr = num "lr"

    if lr <= 0.0 then
        errorf span "%s: lr must be positive, got %g" kind lr

    if kind = "adamw" then
        {
            Kind = kind
            Lr = lr
            WeightDecay = num "weightDecay"
            Beta1 = num "beta1"
            Beta2 = num "beta2"
            Eps = num "eps"
            Momentum = 0.0
            Nesterov = false
        }
    else
        {
            Kind = kind
            Lr = lr
            WeightDecay = num "weightDecay"
            Beta1 = 0.0
            Beta2 = 0.0
            Eps = 0.0
            Momentum = num "momentum"
            Nesterov = asBool kind "nesterov" (f "nesterov")
        }

let private schedule (v, span) =
    let kind, f = kindOf "schedule" [ "cosine"; "linearDecay"; "constant" ] (v, span)
    let warmup = asInt kind "warmup" (f "warmup")

    if warmup < 0 then
        errorf span "%s: warmup must be non-negative, got %d" kind warmup

    {
        Kind = kind
        Warmup = warmup
        MinLr =
            if kind = "constant" then
                0.0
            else
                asFloat kind "minLr" (f "minLr")
    }

let ofTrainDef (t: TrainDef) : TrainRecipe =
    let ctx =
        {
            Builder = None
            Depth = 0
            Calls = []
            Steps = ref 0L
        }

    let seen = System.Collections.Generic.HashSet()

    let values =
        t.Fields
        |> List.map (fun (name, span, e) ->
            if not (List.contains name fields) then
                errorf span "unknown train field '%s'%s" name (didYouMean name fields)

            if not (seen.Add name) then
                errorf span "train field '%s' is given twice" name

            name, (eval ctx t.Env e, spanOf e))
        |> Map.ofList

    let get name dflt =
        values.TryFind name |> Option.defaultWith (fun () -> dflt, t.Span)

    let source name =
        t.Fields |> List.tryPick (fun (n, _, e) -> if n = name then Some e else None)

    let positive name dflt =
        asPositiveInt "train" name (get name (VNum(float dflt, true)))

    let natural name dflt =
        let v = get name (VNum(float dflt, true))
        let n = asInt "train" name v

        if n < 0 then
            errorf (snd v) "train: %s must be 0 or more, got %d" name n

        n

    let lossValue =
        get "loss" (VRecord [ "kind", VStr "crossEntropy"; "smoothing", VNum(0.0, false) ])

    let dataValue =
        match values.TryFind "data" with
        | Some v -> v
        | None -> errorf t.Span "train %s: the 'data' field is required" t.Model

    let defaults kind fs = VRecord(("kind", VStr kind) :: fs)
    let spec = data dataValue
    let objective = loss lossValue

    // Which data feeds which objective is known here, before any data is read.
    match spec.Kind, objective with
    | "captions", CrossEntropy _ ->
        errorf
            (snd lossValue)
            "captions data trains an image–text objective: clipLoss, mobileclipLoss, catlipLoss or a loss expression over its records (image, caption, …)"
    | "captions", MobileclipLoss _ when spec.Reinforced = "" ->
        errorf
            (snd dataValue)
            "mobileclipLoss reads stored teacher embeddings: set the data's reinforced folder (written by `dsl reinforce`)"
    | kind, (ClipLoss | MobileclipLoss _ | CatlipLoss) when kind <> "captions" ->
        errorf (snd lossValue) "%s data has no captions; image–text objectives need `captions` data" kind
    | "records", objective when not objective.IsObjective ->
        errorf
            (snd lossValue)
            "records data trains with a loss expression over its fields, e.g. loss = fun out r -> Loss.crossEntropy out r.label"
    | "corpus", objective when not objective.IsNextToken && not objective.IsObjective ->
        errorf (snd lossValue) "corpus data trains a language model: use nextToken"
    | kind, NextToken _ when kind <> "corpus" -> errorf (snd lossValue) "nextToken needs `corpus` data, not %s" kind
    | _ -> ()

    let recipe =
        {
            Model = t.Model
            Data = spec
            Loss = objective
            Optimizer =
                optimizer (
                    get
                        "optimizer"
                        (defaults
                            "adamw"
                            [
                                "lr", VNum(1e-3, false)
                                "weightDecay", VNum(0.01, false)
                                "beta1", VNum(0.9, false)
                                "beta2", VNum(0.999, false)
                                "eps", VNum(1e-8, false)
                            ])
                )
            Schedule = schedule (get "schedule" (defaults "constant" [ "warmup", VNum(0.0, true) ]))
            Epochs = positive "epochs" 1
            Batch = positive "batch" 64
            EvalBatch = positive "evalBatch" 256
            Clip = asFloat "train" "clip" (get "clip" (VNum(0.0, false)))
            Accumulate = positive "accumulate" 1
            Seed = asInt "train" "seed" (get "seed" (VNum(0.0, true)))
            SaveEvery = natural "saveEvery" 0
            Keep = natural "keep" 3
            Span = t.Span
            DataSpan = snd dataValue
            Inputs =
                match values.TryFind "inputs" with
                | None -> []
                | Some(VRecord fs, span) ->
                    fs
                    |> List.map (fun (input, field) ->
                        match field with
                        | VStr name -> input, [ name ], span
                        | VList(_ :: _ as values) when
                            values
                            |> List.forall (function
                                | VStr _ -> true
                                | _ -> false)
                            ->
                            let names =
                                values
                                |> List.choose (function
                                    | VStr n -> Some n
                                    | _ -> None)

                            if List.distinct names <> names then
                                errorf span "inputs: '%s' names a field twice" input

                            input, names, span
                        | other ->
                            errorf
                                span
                                "inputs: '%s' must name a data field (a string) or several (a list of strings), got %s"
                                input
                                (describe other))
                | Some(v, span) ->
                    errorf
                        span
                        "inputs must be a record binding model inputs to data fields, e.g. { image = \"image\" }, got %s"
                        (describe v)
            Metrics =
                match values.TryFind "metrics" with
                | None -> None
                | Some(VFun _ as m, span) ->
                    Some
                        {
                            Fn = m
                            Span = span
                            Source = sourceText span
                        }
                | Some(v, span) ->
                    errorf
                        span
                        "metrics must be a function of the outputs and the record, e.g. fun out r -> { accuracy = Metric.accuracy out r.label }, got %s"
                        (describe v)
            Teacher =
                match values.TryFind "teacher" with
                | None -> None
                | Some(VRecord fs, span) ->
                    let text name =
                        match fs |> List.tryFind (fun (k, _) -> k = name) with
                        | Some(_, VStr v) when v <> "" -> v
                        | Some(_, v) -> errorf span "teacher: '%s' must be a non-empty string, got %s" name (describe v)
                        | None ->
                            errorf
                                span
                                "teacher: '%s' is required, e.g. { name = \"big\"; checkpoint = \"runs/big/checkpoint\" }"
                                name

                    match fs |> List.tryFind (fun (k, _) -> k <> "name" && k <> "checkpoint") with
                    | Some(k, _) ->
                        errorf
                            span
                            "teacher: unknown field '%s'; a teacher has a name (a model of the file) and a checkpoint"
                            k
                    | None -> ()

                    Some
                        {
                            Model = text "name"
                            Checkpoint = text "checkpoint"
                            Span = span
                        }
                | Some(v, span) ->
                    errorf
                        span
                        "teacher must be a record { name = \"model\"; checkpoint = \"folder\" }, got %s"
                        (describe v)
            Freeze = ParamGroups.freeze (values.TryFind "freeze") (source "freeze")
            Groups = ParamGroups.groups (values.TryFind "paramGroups") (source "paramGroups")
            DecayNormAndBias = asBool "train" "decayNormAndBias" (get "decayNormAndBias" (VBool false))
            SyncBatchNorm = asBool "train" "syncBatchNorm" (get "syncBatchNorm" (VBool false))
        }

    // The schedule decays from the peak lr to minLr; a floor above the peak is no schedule.
    if recipe.Schedule.MinLr > recipe.Optimizer.Lr then
        errorf
            t.Span
            "train %s: the schedule's minLr %g is above the optimizer's lr %g"
            t.Model
            recipe.Schedule.MinLr
            recipe.Optimizer.Lr

    recipe

/// Classes of the data kinds whose labels are known before any data is read.
let private knownClasses = Map [ "fashionMnist", 10 ]

/// A classifier's labels must index its logits: `-> logits[5]` cannot train on Fashion-MNIST's
/// 10 classes (libtorch would stop at the first label ≥ 5). Other data is checked when it is
/// loaded, before the first step.
let labelsFit (r: TrainRecipe) (g: Ir.Graph) : Diagnostic list =
    match r.Loss, Map.tryFind r.Data.Kind knownClasses, g.Outputs with
    | CrossEntropy _, Some classes, (_, id) :: _ ->
        match g.Nodes[id].Shape with
        | [ _; Ir.Known logits ] when logits < classes ->
            [
                diagnostic
                    r.DataSpan
                    (sprintf
                        "%s has %d classes but model '%s' gives logits[%d]; its head needs %d logits"
                        r.Data.Kind
                        classes
                        g.Name
                        logits
                        classes)
            ]
        | _ -> []
    | _ -> []
