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
        /// `corpus`: plain, lines or fortunes; bytes or gpt2; the share of documents held out.
        Format: string
        Tokenizer: string
        Validation: float
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
        /// `freeze`: globs over parameter names that do not train, with where each is written.
        Freeze: (string * Span) list
        /// `paramGroups`: the first group whose path matches a parameter sets its lr and weight decay.
        Groups: ParamGroupSpec list
        /// Also decay 1-D parameters (norm weights, biases); off, as in timm.
        DecayNormAndBias: bool
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
        "freeze"
        "paramGroups"
        "decayNormAndBias"
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

let private data (v, span) =
    let kind, f =
        kindOf "data" [ "fashionMnist"; "imageFolder"; "captions"; "corpus" ] (v, span)

    /// A corpus string field that must be one of `allowed`; "" for other kinds of data.
    let corpusChoice name (allowed: string list) =
        if kind <> "corpus" then
            ""
        else
            match asString kind name (f name) with
            | s when List.contains s allowed -> s
            | s -> errorf span "corpus: %s '%s' is not one of %s" name s (String.concat ", " allowed)

    // Text has no images: no augmentations, size or channels.
    let images = kind <> "corpus"

    let augments =
        if images then
            asList kind "augment" (f "augment") |> List.map (fun a -> augment (a, span))
        else
            []

    let size = if images then asPositiveInt kind "size" (f "size") else 0

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
                0
        Augment = augments
        Reinforced =
            if kind = "captions" then
                asString kind "reinforced" (f "reinforced")
            else
                ""
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
    }

let private loss (v, span) =
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
        errorf (snd lossValue) "captions data trains an image–text objective: clipLoss, mobileclipLoss or catlipLoss"
    | "captions", MobileclipLoss _ when spec.Reinforced = "" ->
        errorf
            (snd dataValue)
            "mobileclipLoss reads stored teacher embeddings: set the data's reinforced folder (written by `dsl reinforce`)"
    | kind, (ClipLoss | MobileclipLoss _ | CatlipLoss) when kind <> "captions" ->
        errorf (snd lossValue) "%s data has no captions; image–text objectives need `captions` data" kind
    | "corpus", objective when not objective.IsNextToken ->
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
            Freeze = ParamGroups.freeze (values.TryFind "freeze") (source "freeze")
            Groups = ParamGroups.groups (values.TryFind "paramGroups") (source "paramGroups")
            DecayNormAndBias = asBool "train" "decayNormAndBias" (get "decayNormAndBias" (VBool false))
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
