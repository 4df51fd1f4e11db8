/// Phase 7: experiments. An `experiment` declaration is an expression evaluated in the file's
/// bindings plus the experiment builtins (`Stage.train`, `Stage.eval`, `Stage.bench`,
/// `Stage.transform`, `metric`, `table`, `plot`) and its models (a model's name is the model; a
/// family's name applied to values is an instance). Its value is a graph of stages: a stage
/// holds the stages it uses, so the graph is acyclic by construction (a value can only refer to
/// values made before it), and sweeps are list comprehensions. Every mistake is located here,
/// before anything runs: an unknown model, metric or column, a setting of the wrong type, two
/// different stages with one name, an instance whose shapes do not check.
module Dsl.Experiment

open System
open Dsl.Syntax
open Dsl.Diagnostics
open Dsl.Ir
open Dsl.Values
open Dsl.Elaborate

/// A model as an experiment names it: a declared model or an instance of a family.
type ModelRef =
    {
        /// The instance name (`vlm fastvithd 512`), the family's name for a plain model.
        Name: string
        Family: string
        Graph: Graph
        Span: Span
    }

/// A setting a stage overrides, as the language value given.
type Setting = string * Value

type Stage =
    {
        /// train, eval, bench or transform.
        Kind: string
        Name: string
        /// The model a train or bench stage runs (a transform's or eval's is its source's).
        Model: ModelRef option
        /// The stages whose results this one reads (a checkpoint to evaluate, initial weights).
        Uses: (string * Stage) list
        Settings: Setting list
        /// The second model a stage names: a compare's b, a prune's or subclone's declared target.
        Target: ModelRef option
        Span: Span
    }

/// A number a stage reports, read when the stage is done.
type MetricRef =
    {
        Stage: Stage
        Metric: string
        Span: Span
    }

/// A number computed from other cells once the stages are done (`derived (fun a b -> a / b) [x; y]`):
/// a ratio, a difference, a speed-up.
type Derived =
    {
        Fn: Value
        Args: Value list
        Span: Span
    }

/// A training's evaluations as rows (`curve trained "test_loss"`): one row per logged step, with
/// the columns `step` and `Column` (the metric's values) after the given fields; read when the
/// stage is done.
type Curve =
    {
        Stage: Stage
        Metric: string
        Column: string
        Fields: (string * Value) list
        Span: Span
    }

/// The first logged step at which a training's metric is at or below a target (`stepsTo trained
/// "test_loss" target`), the target a number, a metric or a derived number; `never` if none is.
type StepsTo =
    {
        Stage: Stage
        Metric: string
        Target: Value
        Span: Span
    }

/// A row of a table or plot: a record of cells, or a curve's rows.
type Row =
    | Fields of (string * Value) list
    | CurveRows of Curve

/// The columns a row has.
let rowColumns (r: Row) =
    match r with
    | Fields fs -> fs |> List.map fst
    | CurveRows c -> (c.Fields |> List.map fst) @ [ "step"; c.Column ]

type Table =
    {
        Name: string
        Columns: string list
        Rows: Row list
        /// A folder (relative to the file) that gets a copy of the table's files, e.g. docs/.
        Dir: string option
        Span: Span
    }

type Plot =
    {
        Name: string
        Kind: string
        X: string
        Y: string
        Series: string option
        LogX: bool
        LogY: bool
        Title: string
        XLabel: string
        YLabel: string
        Rows: Row list
        Dir: string option
        Span: Span
    }

type Experiment =
    {
        Name: string
        /// Every stage, each after the stages it uses.
        Stages: Stage list
        Tables: Table list
        Plots: Plot list
        Span: Span
    }

/// What each kind of stage reports. An eval's further metrics are its objective's declared ones.
let stageMetrics (s: Stage) (declared: string list) =
    match s.Kind with
    // test_*: the last evaluation during training (every `evalSteps`, and at each epoch's end).
    | "train" ->
        [
            "loss"
            "steps"
            "seconds"
            "params"
            // Throughput over the steps; a language model's in tokens and as MFU; the process's
            // peak resident memory during the stage; the share of a step spent in allreduce.
            "images_per_s"
            "tokens_per_s"
            "mfu"
            "peak_gflops"
            "peak_rss_mb"
            "allreduce_share"
            "test_loss"
            "test_accuracy"
            "test_top5"
        ]
        @ (declared |> List.map (fun d -> "test_" + d))
        |> List.distinct
    | "eval" -> [ "loss"; "accuracy"; "top5"; "count"; "per_s"; "linear_probe" ] @ declared
    | "bench" ->
        [
            "median_ms"
            "p10_ms"
            "p90_ms"
            "per_s"
            "params"
            "train_ms"
            "train_p10_ms"
            "train_p90_ms"
            // A language model's (token ids in): tokens/s and MFU, forward and training step.
            "tokens_per_s"
            "mfu"
            "peak_gflops"
            "train_tokens_per_s"
            "train_mfu"
        ]
    | "transform" -> [ "params"; "nodes"; "params_before"; "nodes_before" ]
    | "data" -> [ "train"; "test"; "seconds" ]
    | "generate" ->
        [
            "tokens"
            "tokens_per_s"
            "seconds"
            "cached_per_s"
            "uncached_per_s"
            "cache_ratio"
        ]
    | "compare" ->
        [
            "forward_a_ms"
            "forward_b_ms"
            "forward_ratio"
            "train_a_ms"
            "train_b_ms"
            "train_ratio"
            "params_a"
            "params_b"
        ]
    | _ -> []

/// The data builders a `Stage.data` runs (`dsl data …`), with the settings each takes.
let dataBuilders =
    [
        "fashion-captions",
        [
            "captions", "an int"
            "synthetic", "an int"
            "trainLimit", "an int"
            "testLimit", "an int"
            "seed", "an int"
        ]
        "fashion-scenes", [ "size", "an int"; "train", "an int"; "test", "an int"; "seed", "an int" ]
        "fashion-metadata",
        [
            "train", "an int"
            "test", "an int"
            "seed", "an int"
            "groupAccuracy", "a number"
        ]
        "catlip-labels", [ "manifest", "a string"; "vocabularySize", "an int"; "vocabulary", "a string" ]
        "bible-kjv", [ "bible", "a string"; "documents", "a string" ]
    ]

/// What `Stage.reinforce` takes besides its teachers (`dsl reinforce`'s options).
let reinforceSettings =
    [ "augmentations", "an int"; "batch", "an int"; "seed", "an int" ]

/// The settings each kind takes, with the kind of value each must be.
let private settingKinds =
    Map.ofList
        [
            "train",
            [
                "seed", "an int"
                "lr", "a number"
                "steps", "an int"
                "epochs", "an int"
                "batch", "an int"
                "evalSteps", "an int"
                "threads", "an int"
                "ranks", "an int"
            ]
            "eval", [ "batch", "an int"; "probe", "a bool" ]
            "bench",
            [
                "batch", "an int"
                "deploy", "a bool"
                "warmup", "an int"
                "repeats", "an int"
                "trainStep", "a bool"
                "threads", "an int"
            ]
            "transform",
            [
                "channels", "a number"
                "width", "a number"
                "hidden", "a number"
                "heads", "a number"
                "blocks", "a number"
                "criterion", "a string"
                "scale", "a bool"
                "batches", "an int"
            ]
            "data",
            ("out", "a string") :: (dataBuilders |> List.collect snd) @ reinforceSettings
            |> List.distinctBy fst
            "generate",
            [
                "prompt", "a string"
                "tokens", "an int"
                "temperature", "a number"
                "topK", "an int"
                "seed", "an int"
                "cache", "a bool"
                "rounds", "an int"
            ]
            "compare",
            [
                "batch", "an int"
                "against", "a string"
                "deploy", "a bool"
                "warmup", "an int"
                "repeats", "an int"
                "rounds", "an int"
                "threads", "an int"
            ]
        ]

let transforms = [ "reparam"; "prune"; "subclone" ]

/// What `Stage.compare … (against = …)` times a model against: the hand-written TorchSharp
/// convnet (src/Dsl.Runtime/Bench/ReferenceConvnet.cs), or the same model trained with
/// F.cross_entropy called directly instead of its objective graph, or its ONNX export run in
/// ONNX Runtime (forward only).
let baselines = [ "handwritten"; "hostLoss"; "onnxruntime" ]

let private unset = VHost(box "unset", "unset")

let private isUnset v =
    match v with
    | VHost(:? string as s, _) when s = "unset" -> true
    | _ -> false

/// Settings for which 0 means something (no warm-up, greedy decoding, no top-k cut).
let private zeroAllowed = [ "warmup"; "temperature"; "topK" ]

let private checkSetting kind (name, (v: Value, span: Span)) =
    let expected = settingKinds[kind] |> List.find (fun (n, _) -> n = name) |> snd

    let fits =
        match expected, v with
        | "an int", VNum(_, true) -> true
        | "a number", VNum _ -> true
        | "a string", VStr _ -> true
        | "a bool", VBool _ -> true
        | _ -> false

    match v with
    | VError -> quietStop ()
    | _ when not fits -> errorf span "Stage.%s: setting '%s' must be %s, got %s" kind name expected (describe v)
    | VNum(x, _) when x < 0.0 && List.contains name zeroAllowed ->
        errorf span "Stage.%s: setting '%s' must be 0 or more, got %s" kind name (show v)
    | VNum(x, _) when x <= 0.0 && name <> "seed" && not (List.contains name zeroAllowed) ->
        errorf span "Stage.%s: setting '%s' must be positive, got %s" kind name (show v)
    | _ -> name, v

let asStage what (v: Value, span: Span) =
    match v with
    | VHost(:? Stage as s, _) -> s
    | VError -> quietStop ()
    | other -> errorf span "%s must be a stage (Stage.train, Stage.eval, …), got %s" what (describe other)

let private asModel what (v: Value, span: Span) =
    match v with
    | VHost(:? ModelRef as m, _) -> m
    | VError -> quietStop ()
    | VFun f -> errorf span "%s: model '%s' needs more parameters" what f.Name
    | other -> errorf span "%s must be a model, got %s" what (describe other)

let private settingText (n, v) = sprintf "%s=%s" n (show v)

let private stageValue (s: Stage) =
    VHost(box s, sprintf "the stage '%s'" s.Name)

/// Builds a stage value from a builtin's arguments.
let private stage kind (model: ModelRef option) uses (a: Map<string, Value * Span>) (span: Span) defaultName =
    let settings =
        settingKinds[kind]
        |> List.choose (fun (n, _) ->
            match a.TryFind n with
            | Some(v, _) when isUnset v -> None
            | Some(v, s) -> Some(checkSetting kind (n, (v, s)))
            | None -> None)

    let name =
        match a.TryFind "name" with
        | Some(VStr n, _) when n.Trim() <> "" -> n
        | Some(v, s) when not (isUnset v) ->
            errorf s "Stage.%s: name must be a non-empty string, got %s" kind (describe v)
        | _ -> String.concat " " (defaultName :: List.map settingText settings)

    stageValue
        {
            Kind = kind
            Name = name
            Model = model
            Uses = uses
            Settings = settings
            Target = None
            Span = span
        }

let private optionals (kind: string) =
    ("name", unset) :: (settingKinds[kind] |> List.map (fun (n, _) -> n, unset))

/// The data stages a stage reads (one, or a list): their outputs must exist before it runs.
let private dataUses what (v: Value, span: Span) =
    let one v =
        match asStage (what + ": data") (v, span) with
        | t when t.Kind = "data" -> "data", t
        | t -> errorf span "%s: data is a Stage.data, not a %s stage" what t.Kind

    match v with
    | _ when isUnset v -> []
    | VList xs -> xs |> List.map one
    | v -> [ one v ]

/// A string naming one of `choices` (a transform, a data builder), or a located error.
let private oneOf what (noun: string) (choices: string list) (v: Value, sp: Span) =
    match v with
    | VStr k when List.contains k choices -> k
    | VStr k -> errorf sp "%s: unknown %s '%s'%s" what noun k (didYouMean k choices)
    | v -> errorf sp "%s: the %s is a string (%s), got %s" what noun (String.concat ", " choices) (describe v)

let private stageBuiltins (c: Compiler.Checked) =
    VRecord
        [
            "train",
            hostFn "Stage.train" [ "model" ] (("init", unset) :: ("data", unset) :: optionals "train") (fun _ a s ->
                let init =
                    match a["init"] with
                    | v, _ when isUnset v -> []
                    | v -> [ "init", asStage "Stage.train: init" v ]

                match fst a["model"] with
                // A transform's output trained further (a pruned model fine-tuned): its graph
                // and recipe, starting from its weights.
                | VHost(:? Stage as t, _) when t.Kind = "transform" ->
                    if not init.IsEmpty then
                        errorf
                            (snd a["init"])
                            "Stage.train: a transform's output starts from its own weights; drop init"

                    stage "train" t.Model ([ "from", t ] @ dataUses "Stage.train" a["data"]) a s (t.Name + " / train")
                | VHost(:? Stage as t, _) ->
                    errorf
                        (snd a["model"])
                        "Stage.train trains a model or a transform stage's output, not a %s stage"
                        t.Kind
                | _ ->
                    let m = asModel "Stage.train: the model" a["model"]
                    stage "train" (Some m) (init @ dataUses "Stage.train" a["data"]) a s m.Name)
            "eval",
            hostFn "Stage.eval" [ "trained" ] (optionals "eval") (fun _ a s ->
                let t = asStage "Stage.eval: what it evaluates" a["trained"]

                if t.Kind <> "train" && t.Kind <> "transform" then
                    errorf (snd a["trained"]) "Stage.eval evaluates a train or transform stage, not a %s stage" t.Kind

                stage "eval" t.Model [ "checkpoint", t ] a s (t.Name + " / eval"))
            "bench",
            hostFn "Stage.bench" [ "model" ] (optionals "bench") (fun _ a s ->
                match fst a["model"] with
                | VHost(:? Stage as t, _) when t.Kind = "transform" ->
                    stage "bench" t.Model [ "checkpoint", t ] a s (t.Name + " / bench")
                | _ ->
                    let m = asModel "Stage.bench: the model" a["model"]
                    stage "bench" (Some m) [] a s (m.Name + " / bench"))
            "generate",
            hostFn "Stage.generate" [ "model" ] (optionals "generate") (fun _ a s ->
                match fst a["model"] with
                | VHost(:? Stage as t, _) when t.Kind = "train" || t.Kind = "transform" ->
                    stage "generate" t.Model [ "checkpoint", t ] a s (t.Name + " / generate")
                | VHost(:? Stage as t, _) ->
                    errorf
                        (snd a["model"])
                        "Stage.generate continues from a model or a train or transform stage, not a %s stage"
                        t.Kind
                | _ ->
                    let m = asModel "Stage.generate: the model" a["model"]
                    stage "generate" (Some m) [] a s (m.Name + " / generate"))
            "data",
            hostFn "Stage.data" [ "builder" ] (("from", unset) :: optionals "data") (fun _ a s ->
                let builders = dataBuilders |> List.map fst

                let builder = oneOf "Stage.data" "data builder" builders a["builder"]

                let takes =
                    ("out"
                     :: (dataBuilders |> List.find (fun (b, _) -> b = builder) |> snd |> List.map fst))

                for n, _ in settingKinds["data"] do
                    match a.TryFind n with
                    | Some(v, sp) when not (isUnset v) && not (List.contains n takes) ->
                        errorf sp "Stage.data: '%s' takes no setting '%s'%s" builder n (didYouMean n takes)
                    | _ -> ()

                match a.TryFind "documents" with
                | Some(v, sp) when not (isUnset v) ->
                    oneOf "Stage.data bible-kjv" "kind of document" [ "books"; "verses" ] (v, sp)
                    |> ignore
                | _ -> ()

                match a.TryFind "out" with
                | Some(VStr o, _) when o.Trim() <> "" -> ()
                | Some(v, sp) when not (isUnset v) -> errorf sp "Stage.data: out must be a path, got %s" (describe v)
                | _ -> errorf s "Stage.data: give out = \"…\", where '%s' writes (relative to this file)" builder

                match stage "data" None (dataUses "Stage.data" a["from"]) a s ("data " + builder) with
                | VHost(:? Stage as st, d) ->
                    VHost(
                        box
                            { st with
                                Settings = ("builder", VStr builder) :: st.Settings
                            },
                        d
                    )
                | v -> v)
            "reinforce",
            // MobileCLIP's dataset reinforcement (arXiv 2311.17049): a data stage that writes the
            // teachers' embeddings where the model's captions data declares its reinforced folder.
            hostFn
                "Stage.reinforce"
                [ "model" ]
                (("teachers", unset)
                 :: ("data", unset)
                 :: ("name", unset)
                 :: (reinforceSettings |> List.map (fun (n, _) -> n, unset)))
                (fun _ a s ->
                    let m = asModel "Stage.reinforce: the model" a["model"]
                    let at = snd a["model"]

                    let r =
                        match Compiler.pickRecipe c m.Name with
                        | Some r when r.Data.Kind = "captions" && r.Data.Reinforced <> "" -> r
                        | Some r when r.Data.Kind = "captions" ->
                            errorf
                                at
                                "Stage.reinforce: the captions data of '%s' declares no reinforced folder (reinforced = \"…\")"
                                m.Name
                        | Some r ->
                            errorf at "Stage.reinforce: '%s' trains on %s data, not captions" m.Name r.Data.Kind
                        | None -> errorf at "Stage.reinforce: model '%s' has no train block" m.Name

                    let teachers =
                        match a["teachers"] with
                        | v, _ when isUnset v ->
                            errorf s "Stage.reinforce needs (teachers = [ … ]), the trained teachers"
                        | VList ts, sp ->
                            ts
                            |> List.map (fun t ->
                                match asStage "Stage.reinforce: a teacher" (t, sp) with
                                | t when t.Kind = "train" || t.Kind = "transform" -> "teacher", t
                                | t ->
                                    errorf
                                        sp
                                        "Stage.reinforce: a teacher is a train or transform stage, not a %s stage"
                                        t.Kind)
                        | v, sp -> errorf sp "Stage.reinforce: teachers is a list of stages, got %s" (describe v)

                    if teachers.IsEmpty then
                        errorf (snd a["teachers"]) "Stage.reinforce needs at least one teacher"

                    if r.Data.Teachers <> 0 && teachers.Length <> r.Data.Teachers then
                        errorf
                            (snd a["teachers"])
                            "Stage.reinforce: the data of '%s' declares teachers = %d, and %d are given"
                            m.Name
                            r.Data.Teachers
                            teachers.Length

                    let a = a.Add("out", (VStr r.Data.Reinforced, at))

                    match
                        stage
                            "data"
                            (Some m)
                            (teachers @ dataUses "Stage.reinforce" a["data"])
                            a
                            s
                            ("reinforce " + m.Name)
                    with
                    | VHost(:? Stage as st, d) ->
                        VHost(
                            box
                                { st with
                                    Settings = ("builder", VStr "reinforce") :: st.Settings
                                },
                            d
                        )
                    | v -> v)
            "compare",
            hostFn "Stage.compare" [ "a" ] (("b", unset) :: optionals "compare") (fun _ a s ->
                let side role =
                    match a[role] with
                    | VHost(:? Stage as t, _), _ when t.Kind = "train" || t.Kind = "transform" -> t.Model, [ role, t ]
                    | v -> Some(asModel (sprintf "Stage.compare: %s" role) v), []

                let ma, ua = side "a"

                let mb, ub =
                    match a["b"] with
                    | v, _ when isUnset v -> None, []
                    | _ -> side "b"

                // A host-side baseline of the runtime instead of a second model.
                let against =
                    match a["against"] with
                    | v, _ when isUnset v -> None
                    | v, sp ->
                        let k = oneOf "Stage.compare" "baseline" baselines (v, sp)

                        // ONNX Runtime runs the model's own export, in either form.
                        for other in (if k = "onnxruntime" then [ "b" ] else [ "b"; "deploy" ]) do
                            match a[other] with
                            | o, osp when not (isUnset o) ->
                                errorf osp "Stage.compare: against = \"%s\" is the other side; drop '%s'" k other
                            | _ -> ()

                        Some k

                let nameOf (m: ModelRef option) (u: (string * Stage) list) =
                    match u, m, against with
                    | [ _, t ], _, _ -> t.Name
                    | _, Some m, _ -> m.Name
                    | _, None, Some k -> k
                    | _, None, None -> "its deploy form"

                let extra = mb |> Option.map (fun m -> "b", VStr m.Name) |> Option.toList

                match stage "compare" ma (ua @ ub) a s (nameOf ma ua + " vs " + nameOf mb ub) with
                | VHost(:? Stage as st, d) ->
                    VHost(
                        box
                            { st with
                                Settings = extra @ st.Settings
                                Target = mb
                            },
                        d
                    )
                | v -> v)
            "transform",
            hostFn "Stage.transform" [ "trained"; "transform" ] (("into", unset) :: optionals "transform") (fun _ a s ->
                let t = asStage "Stage.transform: what it transforms" a["trained"]

                let kind = oneOf "Stage.transform" "transform" transforms a["transform"]

                if t.Kind <> "train" && t.Kind <> "transform" then
                    errorf
                        (snd a["trained"])
                        "Stage.transform transforms a train or transform stage, not a %s stage"
                        t.Kind

                let target =
                    match a["into"] with
                    | v, _ when isUnset v -> None
                    | _, sp when kind = "reparam" ->
                        errorf sp "Stage.transform: reparam keeps the model; 'into' is for prune and subclone"
                    | v -> Some(asModel "Stage.transform: into" v)

                let into = target |> Option.map (fun m -> "into", VStr m.Name) |> Option.toList

                let sized =
                    [
                        "channels"
                        "width"
                        "hidden"
                        "heads"
                        "blocks"
                        "criterion"
                        "scale"
                        "batches"
                    ]
                    |> List.filter (fun n -> a.TryFind n |> Option.exists (fst >> isUnset >> not))

                if kind = "reparam" && not sized.IsEmpty then
                    errorf (snd a[sized.Head]) "Stage.transform: reparam takes no setting '%s'" sized.Head

                let suffix =
                    match into with
                    | [ _, VStr m ] -> " " + m
                    | _ -> ""

                match stage "transform" t.Model [ "checkpoint", t ] a s (t.Name + " / " + kind + suffix) with
                | VHost(:? Stage as st, d) ->
                    VHost(
                        box
                            { st with
                                Settings = ("transform", VStr kind) :: into @ st.Settings
                                Target = target
                            },
                        d
                    )
                | v -> v)
        ]

let private metricValue (m: MetricRef) =
    VHost(box m, sprintf "the metric '%s' of '%s'" m.Metric m.Stage.Name)

/// A row is a record (its fields are the columns) or a curve (its rows).
let private rowsOf what (v: Value, span: Span) =
    match v with
    | VList rows ->
        rows
        |> List.map (function
            | VRecord fields -> Fields fields
            | VHost(:? Curve as c, _) -> CurveRows c
            | VError -> quietStop ()
            | other -> errorf span "%s: every row is a record of columns or a curve, got %s" what (describe other))
    | VHost(:? Curve as c, _) -> [ CurveRows c ]
    | VError -> quietStop ()
    | other -> errorf span "%s: the rows are a list of records, got %s" what (describe other)

let private requireColumn what (rows: Row list) (col: string) span =
    for r in rows do
        let columns = rowColumns r

        if not (List.contains col columns) then
            errorf span "%s: no column '%s' in a row%s" what col (didYouMean col columns)

let private str what (v: Value, span) =
    match v with
    | VStr s -> s
    | VError -> quietStop ()
    | other -> errorf span "%s must be a string, got %s" what (describe other)

let private flag what (v: Value, span) =
    match v with
    | VBool b -> b
    | VError -> quietStop ()
    | other -> errorf span "%s must be a bool, got %s" what (describe other)

let plotKinds = [ "line"; "bar"; "scatter" ]

let private dirOf (a: Map<string, Value * Span>) =
    match a["dir"] with
    | v, _ when isUnset v -> None
    | VStr d, _ when d.Trim() <> "" -> Some d
    | v, sp -> errorf sp "dir must be a folder name, got %s" (describe v)

/// The series a training logs (its loss and learning rate every few steps, its test_* metrics
/// at each evaluation), named by a curve or a steps-to-target.
let private trainSeries (metricsOf: Stage -> string list) (st: Stage) =
    [ "loss"; "lr" ] @ (metricsOf st |> List.filter (fun m -> m.StartsWith "test_"))

let private resultBuiltins (metricsOf: Stage -> string list) =
    let seriesOf what (a: Map<string, Value * Span>) =
        let st = asStage (what + ": the stage") a["stage"]

        if st.Kind <> "train" then
            errorf (snd a["stage"]) "%s reads a training's log: a train stage, not a %s stage" what st.Kind

        let name = str (what + ": the name") a["name"]
        let known = trainSeries metricsOf st

        if not (List.contains name known) then
            errorf
                (snd a["name"])
                "%s: a train stage logs no '%s'%s (it logs %s)"
                what
                name
                (didYouMean name known)
                (String.concat ", " known)

        st, name

    [
        "metric",
        hostFn "metric" [ "stage"; "name" ] [] (fun _ a s ->
            let st = asStage "metric: the stage" a["stage"]
            let name = str "metric: the name" a["name"]
            let known = metricsOf st

            if not (List.contains name known) then
                errorf
                    (snd a["name"])
                    "metric: %s %s stage reports no '%s'%s (it reports %s)"
                    (if "aeiou".Contains st.Kind[0] then "an" else "a")
                    st.Kind
                    name
                    (didYouMean name known)
                    (String.concat ", " known)

            metricValue { Stage = st; Metric = name; Span = s })
        "curve",
        hostFn "curve" [ "stage"; "name" ] [ "fields", VRecord []; "column", unset ] (fun _ a s ->
            let st, name = seriesOf "curve" a

            let fields =
                match a["fields"] with
                | VRecord fs, _ -> fs
                | v, sp -> errorf sp "curve: fields is a record of columns, got %s" (describe v)

            let column =
                match a["column"] with
                | v, _ when isUnset v -> name
                | v -> str "curve: column" v

            for n, _ in fields do
                if n = "step" || n = column then
                    errorf (snd a["fields"]) "curve: the field '%s' is a column the curve writes itself" n

            VHost(
                box
                    {
                        Curve.Stage = st
                        Metric = name
                        Column = column
                        Fields = fields
                        Span = s
                    },
                sprintf "the curve '%s' of '%s'" name st.Name
            ))
        "stepsTo",
        hostFn "stepsTo" [ "stage"; "name"; "target" ] [] (fun _ a s ->
            let st, name = seriesOf "stepsTo" a

            match a["target"] with
            | (VNum _ | VHost((:? MetricRef | :? Derived), _)), _ -> ()
            | VError, _ -> quietStop ()
            | v, sp -> errorf sp "stepsTo: the target is a number or a metric, got %s" (describe v)

            VHost(
                box
                    {
                        StepsTo.Stage = st
                        Metric = name
                        Target = fst a["target"]
                        Span = s
                    },
                sprintf "the steps of '%s' to its target" st.Name
            ))
        "derived",
        hostFn "derived" [ "fn"; "args" ] [] (fun _ a s ->
            match a["fn"], a["args"] with
            | (VFun _ as f, _), (VList xs, _) -> VHost(box { Fn = f; Args = xs; Span = s }, "a derived number")
            | (VFun _, _), (v, sp) -> errorf sp "derived: the arguments are a list, got %s" (describe v)
            | (v, sp), _ -> errorf sp "derived: the first argument is a function, got %s" (describe v))
        "table",
        hostFn "table" [ "name"; "rows" ] [ "columns", unset; "dir", unset ] (fun _ a s ->
            let name = str "table: the name" a["name"]
            let rows = rowsOf "table" a["rows"]

            let columns =
                match a["columns"] with
                | v, _ when isUnset v ->
                    match rows with
                    | r :: _ -> rowColumns r
                    | [] -> []
                | VList cs, sp -> cs |> List.map (fun c -> str "table: a column" (c, sp))
                | v, sp -> errorf sp "table: columns are a list of strings, got %s" (describe v)

            for c in columns do
                requireColumn (sprintf "table '%s'" name) rows c (snd a["columns"])

            VHost(
                box
                    {
                        Name = name
                        Columns = columns
                        Rows = rows
                        Dir = dirOf a
                        Span = s
                    },
                "a table"
            ))
        "plot",
        hostFn
            "plot"
            [ "name"; "rows" ]
            [
                "x", unset
                "y", unset
                "series", unset
                "kind", VStr "line"
                "logX", VBool false
                "logY", VBool false
                "title", VStr ""
                "xLabel", VStr ""
                "yLabel", VStr ""
                "dir", unset
            ]
            (fun _ a s ->
                let name = str "plot: the name" a["name"]
                let rows = rowsOf "plot" a["rows"]

                let column key =
                    match a[key] with
                    | v, _ when isUnset v -> errorf s "plot '%s' needs (%s = \"COLUMN\")" name key
                    | v ->
                        let c = str (sprintf "plot: %s" key) v
                        requireColumn (sprintf "plot '%s'" name) rows c (snd v)
                        c

                let series =
                    match a["series"] with
                    | v, _ when isUnset v -> None
                    | v ->
                        let c = str "plot: series" v
                        requireColumn (sprintf "plot '%s'" name) rows c (snd v)
                        Some c

                let kind = str "plot: kind" a["kind"]

                if not (List.contains kind plotKinds) then
                    errorf (snd a["kind"]) "plot: unknown kind '%s'%s" kind (didYouMean kind plotKinds)

                let x = column "x"
                let y = column "y"

                VHost(
                    box
                        {
                            Name = name
                            Kind = kind
                            X = x
                            Y = y
                            Series = series
                            LogX = flag "plot: logX" a["logX"]
                            LogY = flag "plot: logY" a["logY"]
                            Title = str "plot: title" a["title"]
                            XLabel =
                                (match str "plot: xLabel" a["xLabel"] with
                                 | "" -> x
                                 | l -> l)
                            YLabel =
                                (match str "plot: yLabel" a["yLabel"] with
                                 | "" -> y
                                 | l -> l)
                            Rows = rows
                            Dir = dirOf a
                            Span = s
                        },
                    "a plot"
                ))
    ]

/// A model's name in an experiment: the model itself, or for a family a function of its
/// parameters that gives the instance.
let private modelValue (c: Compiler.Checked) (m: ModelDef) : Value =
    let refOf (g: Graph) span =
        VHost(
            box
                {
                    Name = g.Name
                    Family = m.Name
                    Graph = g
                    Span = span
                },
            sprintf "the model '%s'" g.Name
        )

    if isFamily m then
        let bare =
            m.Params
            |> List.choose (function
                | PVar(n, _) -> Some n
                | POpt _ -> None)

        let opts =
            m.Params
            |> List.choose (function
                | POpt(n, _, _) -> Some(n, unset)
                | PVar _ -> None)

        hostFn m.Name bare opts (fun _ a s ->
            let given = bare |> List.map (fun n -> a[n])

            let named =
                opts
                |> List.choose (fun (n, _) ->
                    match a[n] with
                    | v, _ when isUnset v -> None
                    | v, sp -> Some(n, v, sp))

            refOf (Compiler.instanceOf c m given named s) s)
    else
        match c.Models |> List.tryFind (fun (n, _) -> n = m.Name) with
        | Some(_, g) -> refOf g m.Span
        | None -> VError

/// What makes two stage values the same computation.
let rec identity (s: Stage) =
    sprintf
        "%s|%s|%s|%s"
        s.Kind
        (s.Model |> Option.map (fun m -> m.Name) |> Option.defaultValue "")
        (s.Settings |> List.map settingText |> String.concat ",")
        (s.Uses |> List.map (fun (r, u) -> r + "=" + identity u) |> String.concat ",")

/// The stages a result needs, each after what it uses, without repeats: stages with one name
/// are one stage when they are the same computation, a located error otherwise.
let private ordered (roots: Stage list) =
    let byName = Collections.Generic.Dictionary<string, Stage>()
    let order = ResizeArray<Stage>()

    let rec visit (s: Stage) =
        for _, u in s.Uses do
            visit u

        match byName.TryGetValue s.Name with
        | true, seen when identity seen = identity s -> ()
        | true, seen ->
            raise (
                DslError
                    [
                        { diagnostic
                              s.Span
                              (sprintf "two different stages are named '%s'; give one another (name = \"…\")" s.Name) with
                            Notes = [ seen.Span, "the other stage of that name" ]
                        }
                    ]
            )
        | _ ->
            byName[s.Name] <- s
            order.Add s

    for r in roots do
        visit r

    List.ofSeq order

let rec private stagesIn (v: Value) : Stage list =
    match v with
    | VHost(:? Stage as s, _) -> [ s ]
    | VHost(:? MetricRef as m, _) -> [ m.Stage ]
    | VHost(:? Derived as d, _) -> d.Args |> List.collect stagesIn
    | VHost(:? StepsTo as t, _) -> t.Stage :: stagesIn t.Target
    | VList xs
    | VTuple xs -> xs |> List.collect stagesIn
    | VRecord fs -> fs |> List.collect (snd >> stagesIn)
    | _ -> []

let private elaborate
    (c: Compiler.Checked)
    (metricsOf: Stage -> string list)
    (name, body: Expr, span: Span, env: Eval.Env)
    =
    let env =
        c.Defs
        |> List.fold (fun (e: Eval.Env) m -> e.Add(m.Name, ref (modelValue c m))) env

    let env =
        (("Stage", stageBuiltins c) :: resultBuiltins metricsOf)
        |> List.fold (fun (e: Eval.Env) (n, v) -> e.Add(n, ref v)) env

    let ctx =
        {
            Builder = None
            Depth = 0
            Calls = []
            Steps = ref 0L
        }

    let value = Eval.eval ctx env body
    let bodySpan = spanOf body

    let fields =
        match value with
        | VRecord fs -> fs
        | VList _ -> [ "stages", value ]
        | VError -> quietStop ()
        | other ->
            errorf
                bodySpan
                "experiment '%s' is a record { stages = …; tables = …; plots = … }, got %s"
                name
                (describe other)

    let allowed = [ "stages"; "tables"; "plots" ]

    for f, _ in fields do
        if not (List.contains f allowed) then
            errorf bodySpan "experiment '%s': unknown field '%s'%s" name f (didYouMean f allowed)

    let list field =
        match fields |> List.tryFind (fun (n, _) -> n = field) with
        | Some(_, VList xs) -> xs
        | Some(_, VError) -> quietStop ()
        | Some(_, other) -> errorf bodySpan "experiment '%s': %s is a list, got %s" name field (describe other)
        | None -> []

    let tables =
        list "tables"
        |> List.map (function
            | VHost(:? Table as t, _) -> t
            | other -> errorf bodySpan "experiment '%s': tables holds %s, not a table" name (describe other))

    let plots =
        list "plots"
        |> List.map (function
            | VHost(:? Plot as p, _) -> p
            | other -> errorf bodySpan "experiment '%s': plots holds %s, not a plot" name (describe other))

    let rowStages (r: Row) =
        match r with
        | Fields fs -> fs |> List.collect (snd >> stagesIn)
        | CurveRows c -> c.Stage :: (c.Fields |> List.collect (snd >> stagesIn))

    let roots =
        (list "stages"
         |> List.map (fun v -> asStage (sprintf "experiment '%s': every item of stages" name) (v, bodySpan)))
        @ (tables |> List.collect (fun t -> t.Rows |> List.collect rowStages))
        @ (plots |> List.collect (fun p -> p.Rows |> List.collect rowStages))

    // A table writes NAME.tsv and NAME.md, a plot NAME.png: names are unique within each.
    let unique what (results: (string * Span) list) =
        for n, sp in results do
            if results |> List.filter (fun (m, _) -> m = n) |> List.length > 1 then
                errorf sp "experiment '%s': two %s are named '%s' (their files would collide)" name what n

            if n.Trim() = "" || n.IndexOfAny(IO.Path.GetInvalidFileNameChars()) >= 0 then
                errorf sp "experiment '%s': the %s name '%s' is not a file name" name what n

    unique "tables" (tables |> List.map (fun t -> t.Name, t.Span))
    unique "plots" (plots |> List.map (fun p -> p.Name, p.Span))

    {
        Name = name
        Stages = ordered roots
        Tables = tables
        Plots = plots
        Span = span
    }

/// The metrics a stage reports: its kind's, and for an eval its objective's declared ones.
let metricsFor (c: Compiler.Checked) (s: Stage) =
    let declared =
        match s.Model with
        | Some m ->
            match Compiler.pickObjective c m.Name with
            | Some o ->
                match o.Metrics with
                | Some g -> g.Outputs |> List.map fst
                | None -> []
            | None -> []
        | None -> []

    stageMetrics s declared

/// Every experiment of a checked file, or the diagnostics of those that fail.
let check (c: Compiler.Checked) (experiments: (string * Expr * Span * Eval.Env) list) =
    let diags = ResizeArray<Diagnostic>()
    let found = ResizeArray<Experiment>()

    for e in experiments do
        try
            found.Add(elaborate c (metricsFor c) e)
        with DslError ds ->
            diags.AddRange ds

    List.ofSeq found, List.ofSeq diags |> List.distinct

/// The value of a derived cell, its arguments resolved (None if one is missing).
let evalDerived (d: Derived) (args: Value list) : Value =
    let ctx =
        {
            Builder = None
            Depth = 0
            Calls = []
            Steps = ref 0L
        }

    Eval.applyArgs ctx d.Fn (args |> List.map (fun v -> Eval.PosArg(v, d.Span))) d.Span
