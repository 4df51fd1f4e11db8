/// Runs one stage in this process through the functions the CLI commands use (Run.trainModel,
/// Run.evaluateModel, Transform.reparamInto, Benchmark.MeasureForward): no `dsl` is spawned and
/// no output parsed. Each stage runs in its own folder and reports its metrics by name.
module Dsl.Cli.Experiments.Stages

open Dsl.Cli
open System
open System.IO
open Dsl
open Dsl.Ir
open Dsl.Experiment
open Dsl.Runtime
open Dsl.Runtime.Bench
open Dsl.Runtime.Data
open Dsl.Runtime.Checkpoints
open Dsl.Runtime.Emit
open Dsl.Runtime.Generation
open Dsl.Runtime.Training
open Dsl.Runtime.Transforms
open TorchSharp
open Dsl.Cli.Report
open Dsl.Cli.Session
open Dsl.Cli.Experiments.Plan
open Dsl.Cli.Experiments.Store

/// What a stage is run with.
type StageContext =
    {
        File: string
        Checked: Compiler.Checked
        Store: Store
        /// The keys of every planned stage, by name.
        Keys: Map<string, string>
        /// Where progress goes: the stage's log, and its live line.
        Log: TextWriter
        Progress: string -> unit
    }

let private setting (s: Stage) name =
    s.Settings |> List.tryFind (fun (n, _) -> n = name) |> Option.map snd

let private number s name fallback =
    match setting s name with
    | Some(Values.VNum(x, _)) -> x
    | _ -> fallback

let private flag s name =
    match setting s name with
    | Some(Values.VBool b) -> b
    | _ -> false

let private text s name =
    match setting s name with
    | Some(Values.VStr t) -> Some t
    | _ -> None

let private count s name =
    setting s name
    |> Option.map (function
        | Values.VNum(x, _) -> int x
        | _ -> 0)

/// A stage's trained (or transformed) model: the checked file it is declared in, its graph,
/// its recipe and its checkpoint folder.
type private Source =
    {
        File: string
        Checked: Compiler.Checked
        Graph: Graph
        Checkpoint: string
    }

let private uses (s: Stage) role =
    s.Uses |> List.tryFind (fun (r, _) -> r = role) |> Option.map snd

let rec private sourceOf (ctx: StageContext) (used: Stage) : Source =
    let dir = ctx.Store.Dir ctx.Keys[used.Name]

    match used.Kind, uses used "from" with
    // A transform's output trained further: that model's file and graph, this run's weights.
    | "train", Some from ->
        { sourceOf ctx from with
            Checkpoint = Path.Combine(dir, "run", "checkpoint")
        }
    | "train", None ->
        {
            File = ctx.File
            Checked = ctx.Checked
            Graph = used.Model.Value.Graph
            Checkpoint = Path.Combine(dir, "run", "checkpoint")
        }
    | _, _ ->
        // A transform's output is a model file of its own, with the recipe beside it.
        let file = Path.Combine(dir, "model", "model.dsl")
        let c = Compiler.checkFile file

        if not c.Diagnostics.IsEmpty then
            fail "%s" (c.Diagnostics |> List.map Diagnostics.format |> String.concat "\n")

        {
            File = file
            Checked = c
            Graph = snd c.Models.Head
            Checkpoint = Path.Combine(dir, "model", "checkpoint")
        }

/// The numbers of the last record in a run's metrics.jsonl that has `key`.
let private lastRecordWith (metricsPath: string) (key: string) =
    File.ReadLines metricsPath
    |> Seq.filter (fun l -> l.Trim() <> "")
    |> Seq.map (fun l -> Text.Json.JsonDocument.Parse(l).RootElement.Clone())
    |> Seq.filter (fun e -> e.TryGetProperty(key) |> fst)
    |> Seq.tryLast
    |> Option.map (fun e ->
        [
            for p in e.EnumerateObject() do
                if p.Value.ValueKind = Text.Json.JsonValueKind.Number then
                    p.Name, p.Value.GetDouble()
        ])
    |> Option.defaultValue []

/// A training on several ranks (data parallelism over Open MPI) cannot run in this process:
/// mpirun starts `dsl train` once per rank with the stage's settings, as `dsl train --procs N`
/// does, and the stage reads the run's metrics.jsonl back as numbers (rank 0 alone writes it).
let private trainOnRanks
    (ctx: StageContext)
    (s: Stage)
    (file: string)
    (modelName: string)
    (graph: Graph)
    (r: Recipe.TrainRecipe)
    (init: string option)
    (runDir: string)
    (ranks: int)
    =
    let given name flag =
        match setting s name with
        | Some(Values.VNum(x, _)) -> [ flag; x.ToString(Globalization.CultureInfo.InvariantCulture) ]
        | _ -> []

    let arguments =
        [
            "train"
            file
            "--model"
            modelName
            "--out"
            runDir
            "--seed"
            string r.Seed
            "--epochs"
            string r.Epochs
            "--batch"
            string r.Batch
        ]
        @ given "steps" "--max-steps"
        @ given "lr" "--lr"
        @ given "evalSteps" "--eval-steps"
        @ (init |> Option.map (fun i -> [ "--init"; i ]) |> Option.defaultValue [])

    let psi = Run.mpirunCommand ranks arguments
    psi.RedirectStandardOutput <- true
    psi.RedirectStandardError <- true

    // The stage's threads are shared among its ranks; otherwise each rank takes its share of the cores.
    match setting s "threads" with
    | Some(Values.VNum(n, _)) -> psi.Environment["DSL_THREADS"] <- string (max 1 (int n / ranks))
    | _ -> ()

    ctx.Log.WriteLine(sprintf "mpirun -np %d dsl %s" ranks (String.concat " " arguments))
    let clock = Diagnostics.Stopwatch.StartNew()

    let code =
        try
            use proc = new Diagnostics.Process(StartInfo = psi)
            let lines = Collections.Concurrent.ConcurrentQueue<string>()

            proc.OutputDataReceived.Add(fun e ->
                if not (isNull e.Data) then
                    lines.Enqueue e.Data)

            proc.ErrorDataReceived.Add(fun e ->
                if not (isNull e.Data) then
                    lines.Enqueue e.Data)

            proc.Start() |> ignore
            proc.BeginOutputReadLine()
            proc.BeginErrorReadLine()
            proc.WaitForExit()

            for l in lines do
                ctx.Log.WriteLine l

            ctx.Log.Flush()
            proc.ExitCode
        with :? ComponentModel.Win32Exception ->
            fail
                "%s: Stage.train (ranks = %d): mpirun not found; install the Debian packages openmpi-bin and libopenmpi-dev"
                file
                ranks

    if code <> 0 then
        fail
            "%s: Stage.train (ranks = %d) of '%s': mpirun exited with %d (the ranks' output is in the stage's log)"
            file
            ranks
            modelName
            code

    let metricsPath = Path.Combine(runDir, "metrics.jsonl")
    let step = lastRecordWith metricsPath "loss"

    let value name =
        step |> List.tryFind (fun (n, _) -> n = name) |> Option.map snd

    let parameters = float (paramCount graph)

    let tested =
        lastRecordWith metricsPath "test_loss"
        |> List.filter (fun (n, _) -> n.StartsWith "test_")

    [
        "loss", value "loss" |> Option.defaultValue nan
        "steps", value "step" |> Option.defaultValue 0.0
        "seconds", clock.Elapsed.TotalSeconds
        "params", parameters
        "images_per_s", value "images_per_s" |> Option.defaultValue nan
        match value "tokens_per_s", value "mfu" with
        | Some tokens, Some mfu ->
            "tokens_per_s", tokens
            "mfu", mfu
            // The log keeps the utilisation; the peak it was measured against follows from it.
            "peak_gflops", 6.0 * parameters * tokens / mfu / 1e9
        | _ -> ()
        // Rank 0's process's peak, from its log.
        "peak_rss_mb", value "peak_rss_mb" |> Option.defaultValue nan
        // One rank logs no exchange: it spent none.
        "allreduce_share", value "allreduce_share" |> Option.defaultValue 0.0
    ]
    @ tested

let private train (ctx: StageContext) (p: Planned) (dir: string) =
    let s = p.Stage

    // A model of the file, or a transform's output with the recipe printed beside it (whose
    // data paths are relative to that file), starting from the transform's weights.
    let file, checkd, graph, recipe, init =
        match uses s "from" with
        | Some from ->
            let src = sourceOf ctx from

            let asIts =
                { s with
                    Model = s.Model |> Option.map (fun m -> { m with Name = src.Graph.Name })
                }

            src.File, src.Checked, src.Graph, Plan.recipeOf src.Checked asIts, Some src.Checkpoint
        | None ->
            ctx.File,
            ctx.Checked,
            s.Model.Value.Graph,
            p.Recipe,
            uses s "init" |> Option.map (fun u -> (sourceOf ctx u).Checkpoint)

    let r =
        match recipe with
        | Some r -> r
        | None -> fail "%s: model '%s' has no train block" file graph.Name

    let runDir = Path.Combine(dir, "run")

    let ranks =
        match setting s "ranks" with
        | Some(Values.VNum(n, _)) -> int n
        | _ -> 1

    if ranks > 1 then
        let modelName =
            match uses s "from" with
            | Some _ -> graph.Name
            | None -> s.Model.Value.Name

        trainOnRanks ctx s file modelName graph r init runDir ranks
    else

        let options = trainOptions r graph runDir
        setting s "lr" |> Option.iter (fun _ -> options.Lr <- number s "lr" options.Lr)

        setting s "steps"
        |> Option.iter (fun _ -> options.MaxSteps <- Nullable(int64 (number s "steps" 0.0)))

        setting s "evalSteps"
        |> Option.iter (fun _ -> options.EvalEverySteps <- int (number s "evalSteps" 0.0))

        let request: Run.TrainRequest =
            {
                File = file
                Checked = checkd
                Graph = graph
                Recipe = r
                OutDir = runDir
                DataDir = None
                Device = Some "cpu"
                Options = options
                Init = init
                Resume = false
                Overwrite = false
                World = Distributed.World.Single
            }

        let started (st: Run.TrainStart) =
            ctx.Log.WriteLine(sprintf "training %s on %s, batch %d, seed %d" graph.Name st.Examples r.Batch r.Seed)

        let clock = Diagnostics.Stopwatch.StartNew()
        let mutable logged = -1000.0

        let withProgress _ (run: (TrainProgress -> unit) -> TrainResult) =
            run (fun pr ->
                let line =
                    sprintf
                        "step %d/%d  loss %.4f  ETA %s"
                        pr.Step
                        pr.TotalSteps
                        pr.Loss
                        (pr.Eta.ToString(@"hh\:mm\:ss"))

                ctx.Progress line

                if clock.Elapsed.TotalSeconds - logged >= 10.0 || pr.Step = pr.TotalSteps then
                    logged <- clock.Elapsed.TotalSeconds
                    ctx.Log.WriteLine line
                    ctx.Log.Flush())

        let reset = Dsl.Runtime.Bench.PeakMemory.Reset()
        let result, _ = Run.trainModel request started withProgress

        let peakMemory =
            if reset then
                [ "peak_rss_mb", Dsl.Runtime.Bench.PeakMemory.Bytes() / 1048576.0 ]
            else
                []

        // The last evaluation during training, as the log's test_* (a curve reads every one).
        let tested =
            match result.LastEvaluation with
            | null -> []
            | e -> [ for struct (name, value) in e.Metrics() -> "test_" + name, value ]

        // Throughput over the run's steps; a language model's also in tokens and as MFU.
        let throughput =
            match result.Throughput with
            | null -> []
            | t ->
                [
                    "images_per_s", t.ImagesPerSecond
                    if t.TokensPerSecond.HasValue then
                        "tokens_per_s", t.TokensPerSecond.Value
                        "mfu", t.Mfu.GetValueOrDefault nan
                        "peak_gflops", result.PeakFlops / 1e9
                    // One process spends none of its step in an exchange.
                    "allreduce_share", t.AllreduceShare.GetValueOrDefault 0.0
                ]

        [
            "loss", result.FinalLoss
            "steps", float result.Steps
            "seconds", result.Elapsed.TotalSeconds
            "params", float (paramCount graph)
        ]
        @ throughput
        @ peakMemory
        @ tested

let private evaluate (ctx: StageContext) (p: Planned) =
    let src = sourceOf ctx (uses p.Stage "checkpoint").Value

    let r =
        match Compiler.pickRecipe src.Checked src.Graph.Name, p.Recipe with
        | Some r, Some planned -> { r with EvalBatch = planned.EvalBatch }
        | Some r, None -> r
        | None, _ -> fail "%s: model '%s' has no train block to evaluate with" src.File src.Graph.Name

    use model = new GraphModule(src.Graph, 0L)
    loadWeights model src.Checkpoint |> ignore
    ctx.Progress "evaluating"
    let e = Run.evaluateModel src.File src.Checked r src.Graph model None

    // The linear probe of frozen image features, for image–text models (CatLIP, arXiv 2404.15653).
    let probe =
        if not (flag p.Stage "probe") then
            []
        elif r.Data.Kind <> "captions" then
            fail
                "%s: Stage.eval: probe = true needs image–text (captions) data; '%s' trains on %s"
                src.File
                src.Graph.Name
                r.Data.Kind
        else
            ctx.Progress "fitting the linear probe"
            [ "linear_probe", ImageText.probe src.File r src.Graph model ]

    [ for struct (name, value) in e.Metrics() -> name, value ]
    @ [ "count", float e.Count; "per_s", e.ImagesPerSecond ]
    @ probe

let private bench (ctx: StageContext) (p: Planned) =
    let s = p.Stage

    let g =
        match uses s "checkpoint" with
        | Some u -> (sourceOf ctx u).Graph
        | None -> s.Model.Value.Graph

    let batch = int64 (number s "batch" 1.0)
    let warmup = int (number s "warmup" 1.0)
    let repeats = int (number s "repeats" 10.0)
    use trained = new GraphModule(g, 0L)

    // The deploy form (branches and BatchNorms folded), as FastVLM and MobileOne time it.
    let deployed =
        if flag s "deploy" then
            Some(WeightMapEvaluator.Reparameterize trained)
        else
            None

    use _deployed =
        match deployed with
        | Some d -> d :> IDisposable
        | None ->
            { new IDisposable with
                member _.Dispose() = ()
            }

    let timed = deployed |> Option.defaultValue trained

    use _ = torch.NewDisposeScope()
    let inputs = RandomInputs.For(timed.Graph, batch, timed.Device)
    ctx.Progress(sprintf "timing %d + %d runs" warmup repeats)

    // With trainStep, also a training step (forward, the train block's loss or a stand-in as
    // `dsl bench` uses, backward), as `dsl bench` times it.
    let stats, step =
        if flag s "trainStep" then
            let loss = Run.trainStepLoss ctx.Checked timed.Graph (int batch) timed.Device

            let r =
                Benchmark.Measure((fun xs -> timed.Forward xs), timed, inputs, loss, warmup, repeats)

            r.Forward, Some r.TrainStep
        else
            Benchmark.MeasureForward((fun xs -> timed.Forward xs), timed, inputs, warmup, repeats), None

    ctx.Log.WriteLine(sprintf "forward, batch %d, %d threads: median %.3f ms" batch Threads.Count stats.MedianMs)

    step
    |> Option.iter (fun t -> ctx.Log.WriteLine(sprintf "train step: median %.3f ms" t.MedianMs))

    // A language model's forward in tokens and as model FLOPs utilisation: 2·N per token forward,
    // 6·N for a training step (PaLM), over a matmul peak measured now on the same threads.
    let tokenMetrics =
        match Run.tokensPerExample timed.Graph with
        | None -> []
        | Some t ->
            let peak = MatmulPeak.FlopsPerSecond()
            let n = paramCount timed.Graph
            let forward = float batch * t * 1000.0 / stats.MedianMs

            [
                "tokens_per_s", forward
                "mfu", MatmulPeak.Utilisation(n, forward, peak, false)
                "peak_gflops", peak / 1e9
                match step with
                | Some st ->
                    let train = float batch * t * 1000.0 / st.MedianMs
                    "train_tokens_per_s", train
                    "train_mfu", MatmulPeak.Utilisation(n, train, peak, true)
                | None -> ()
            ]

    [
        "median_ms", stats.MedianMs
        "p10_ms", stats.P10Ms
        "p90_ms", stats.P90Ms
        "per_s", float batch * 1000.0 / stats.MedianMs
        "params", float (paramCount timed.Graph)
    ]
    @ (match step with
       | Some t -> [ "train_ms", t.MedianMs; "train_p10_ms", t.P10Ms; "train_p90_ms", t.P90Ms ]
       | None -> [])
    @ tokenMetrics

/// A fraction to remove (0.3) or a size to keep (64), as the language number is written.
let private amount s name =
    setting s name
    |> Option.map (function
        | Values.VNum(x, true) -> Passes.Prune.Keep(int x)
        | Values.VNum(x, _) -> Passes.Prune.Remove x
        | _ -> Passes.Prune.Remove 0.0)

let private transform (ctx: StageContext) (p: Planned) (dir: string) =
    let s = p.Stage
    let src = sourceOf ctx (uses s "checkpoint").Value
    let out = Path.Combine(dir, "model")

    let before, after =
        match text s "transform" with
        | Some "reparam" ->
            ctx.Progress "re-parameterising"
            src.Graph, Transform.reparamInto src.Checked src.File src.Graph src.Checkpoint out
        | Some kind ->
            ctx.Progress(sprintf "%s: ranking units" kind)

            // The declared target (`model child = subclone parent (…)`) when the stage names one.
            let picked =
                match s.Target with
                | Some m -> m.Graph
                | None -> src.Graph

            let request: Transform.ShrinkRequest =
                {
                    Targets =
                        {
                            Channels = amount s "channels"
                            Width = amount s "width"
                            Hidden = amount s "hidden"
                            Heads = amount s "heads"
                            Blocks = amount s "blocks"
                        }
                    Criterion = text s "criterion"
                    Scale = flag s "scale"
                    Name = None
                    Checkpoint = src.Checkpoint
                    Out = out
                    Batches = count s "batches" |> Option.defaultValue 8
                }

            let parent, shrunk, described =
                Transform.shrinkInto kind src.Checked src.File picked request

            ctx.Log.WriteLine(sprintf "%s → %s (%s)" parent.Name shrunk.Name described)
            parent, shrunk
        | None -> fail "dsl run: stage '%s' names no transform" s.Name

    [
        "params", float (paramCount after)
        "nodes", float after.Nodes.Length
        "params_before", float (paramCount before)
        "nodes_before", float before.Nodes.Length
    ]

/// Builds a data set into a sibling of its declared output, then puts it in place by renames.
/// The marker beside it says "building" while the renames run and holds this stage's key only
/// after them, so a build killed at any point never looks done, and is never taken for what
/// no data stage made. Never writes over what no data stage made.
let private data (ctx: StageContext) (p: Planned) =
    let s = p.Stage
    let out = p.Outputs.Head
    let marker = markerOf out

    if (File.Exists out || Directory.Exists out) && not (File.Exists marker) then
        fail "%s: %s exists and no dsl run made it; move it away or give the data stage another out" ctx.File out

    Directory.CreateDirectory(Path.GetDirectoryName out) |> ignore
    let tmp = sprintf "%s.tmp-%s" out (Guid.NewGuid().ToString("N").Substring(0, 8))
    Directory.CreateDirectory tmp |> ignore
    let clock = Diagnostics.Stopwatch.StartNew()
    let builder = (text s "builder").Value
    ctx.Progress(sprintf "building %s" builder)
    let seed = count s "seed" |> Option.defaultValue 0

    // Folder builders write into tmp; catlip-labels writes one manifest (and its vocabulary),
    // bible-kjv one corpus file.
    let folder = builder <> "catlip-labels" && builder <> "bible-kjv"

    let built =
        if folder then
            tmp
        else
            Path.Combine(tmp, Path.GetFileName out)

    let train, test =
        match builder with
        | "fashion-captions" ->
            let r =
                FashionCaptions.Build(
                    FashionMnist.DefaultDirectory,
                    tmp,
                    Text.WordNet.Load Text.WordNet.DefaultDirectory,
                    FashionCaptionOptions(
                        Captions = (count s "captions" |> Option.defaultValue 3),
                        Synthetic = (count s "synthetic" |> Option.defaultValue 2),
                        TrainLimit = Option.toNullable (count s "trainLimit"),
                        TestLimit = Option.toNullable (count s "testLimit"),
                        Seed = seed
                    )
                )

            r.Train.Count, r.Test.Count
        | "fashion-scenes" ->
            let size = count s "size" |> Option.defaultValue 64

            if size < 28 then
                fail "%s: data fashion-scenes: size %d is smaller than a Fashion-MNIST item (28)" ctx.File size

            let r =
                FashionScenes.Build(
                    FashionMnist.DefaultDirectory,
                    tmp,
                    FashionScenesOptions(
                        Size = size,
                        Train = (count s "train" |> Option.defaultValue 10000),
                        Test = (count s "test" |> Option.defaultValue 2000),
                        Seed = seed
                    )
                )

            r.Train, r.Test
        | "fashion-metadata" ->
            let accuracy =
                match setting s "groupAccuracy" with
                | Some(Values.VNum(x, _)) -> x
                | _ -> 0.8

            if not (accuracy >= 0.0 && accuracy <= 1.0) then
                fail "%s: data fashion-metadata: groupAccuracy %g is not a probability" ctx.File accuracy

            let r =
                FashionMetadata.Build(
                    FashionMnist.DefaultDirectory,
                    tmp,
                    FashionMetadataOptions(
                        Train = (count s "train" |> Option.defaultValue 60000),
                        Test = (count s "test" |> Option.defaultValue 10000),
                        Seed = seed,
                        GroupAccuracy = accuracy
                    )
                )

            r.Train, r.Test
        | "catlip-labels" ->
            let path name =
                text s name |> Option.map (Session.relativeTo ctx.File)

            let manifest =
                match path "manifest" with
                | Some m -> m
                | None -> fail "%s: data catlip-labels: give manifest = \"…\", the captions to label" ctx.File

            let vocabulary =
                match path "vocabulary", count s "vocabularySize" with
                | Some _, Some _ -> fail "%s: data catlip-labels: give vocabularySize or vocabulary, not both" ctx.File
                | Some v, None -> Data.Reuse v
                | None, size -> Data.Mine(Option.defaultValue 1000 size)

            let records, _, _ =
                Data.catlipLabelsInto
                    manifest
                    built
                    (Path.GetDirectoryName(Path.GetFullPath out))
                    vocabulary
                    Text.WordNet.DefaultDirectory

            records.Count, 0
        | "bible-kjv" ->
            let program =
                text s "bible"
                |> Option.map (Session.relativeTo ctx.File)
                |> Option.defaultValue Text.BibleKjv.DefaultProgram

            let books = Text.BibleKjv.Read program

            match text s "documents" with
            | Some "verses" -> Text.BibleKjv.WriteVerses(built, books)
            | _ -> Text.BibleKjv.Write(built, books)

            books.Count, 0
        | "reinforce" ->
            let r = p.Recipe.Value

            let teachers =
                s.Uses
                |> List.filter (fun (role, _) -> role = "teacher")
                |> List.map (fun (_, t) ->
                    let src = sourceOf ctx t

                    ({
                        File = src.File
                        Graph = src.Graph
                        Checkpoint = src.Checkpoint
                    }
                    : ImageText.Teacher))

            use set =
                ImageText.reinforceWith
                    ctx.File
                    r
                    s.Model.Value.Graph
                    teachers
                    (count s "augmentations" |> Option.defaultValue 5)
                    (count s "batch" |> Option.defaultValue r.EvalBatch)
                    (int64 r.Seed)

            set.Save built
            set.Meta.Count, 0
        | other -> fail "dsl run: unknown data builder '%s'" other

    ctx.Log.WriteLine(
        sprintf "%s: %d training and %d test items in %.1f s" builder train test clock.Elapsed.TotalSeconds
    )

    DurableFile.WriteAllText(marker, "building " + p.Key)

    // The result goes in place: a folder whole, or each file the builder wrote beside `out`.
    let place (from: string) (dest: string) =
        if Directory.Exists dest then
            let old = sprintf "%s.old-%s" dest (Guid.NewGuid().ToString("N").Substring(0, 8))
            Directory.Move(dest, old)
            Directory.Move(from, dest)
            Directory.Delete(old, true)
        elif Directory.Exists from then
            Directory.Move(from, dest)
        else
            File.Move(from, dest, true)

    if folder then
        place tmp out
    else
        for f in Directory.GetFiles tmp do
            place f (Path.Combine(Path.GetDirectoryName out, Path.GetFileName f))

        Directory.Delete(tmp, true)

    DurableFile.WriteAllText(marker, p.Key)

    [
        "train", float train
        "test", float test
        "seconds", clock.Elapsed.TotalSeconds
    ]

/// TorchSharp against ONNX Runtime on the model's export (deploy form with `deploy`),
/// forward only: a is TorchSharp, b ONNX Runtime, the ratio b / a; no training step to time.
let private onnxRuntime (ctx: StageContext) (p: Planned) (dir: string) =
    let s = p.Stage
    use m = new GraphModule(s.Model.Value.Graph, 0L)

    use deployed =
        if flag s "deploy" then
            WeightMapEvaluator.Reparameterize m
        else
            null

    let timed = if isNull deployed then m else deployed
    let rounds = int (number s "rounds" 10.0)
    ctx.Progress(sprintf "timing %d alternating rounds against onnxruntime" rounds)

    let t =
        OnnxTiming.time
            timed.Graph
            timed
            (Path.Combine(dir, "model.onnx"))
            (int64 (number s "batch" 1.0))
            rounds
            (int (number s "warmup" 3.0))
            (int (number s "repeats" 5.0))

    ctx.Log.WriteLine(
        sprintf "exported %d ONNX nodes of %s: forward %.3f vs %.3f ms" t.Nodes timed.Graph.Name t.TorchMs t.OnnxMs
    )

    [
        "forward_a_ms", t.TorchMs
        "forward_b_ms", t.OnnxMs
        "forward_ratio", t.Ratio
        "train_a_ms", nan
        "train_b_ms", nan
        "train_ratio", nan
        "params_a", float (paramCount s.Model.Value.Graph)
        "params_b", float (paramCount timed.Graph)
    ]

/// A model against a host baseline of the runtime (`Stage.compare … (against = …)`), with the
/// compare stage's metrics: a is the model, b the baseline, ratios b / a.
let private compareAgainst (ctx: StageContext) (p: Planned) (baseline: string) =
    let s = p.Stage
    let g = s.Model.Value.Graph
    let batch = int64 (number s "batch" 1.0)
    let rounds = int (number s "rounds" 10.0)
    let warmup = int (number s "warmup" 3.0)
    let repeats = int (number s "repeats" 5.0)
    ctx.Progress(sprintf "timing %d alternating rounds against %s" rounds baseline)

    let r, paramsB =
        match baseline with
        | "handwritten" ->
            let own =
                use reference = ReferenceConvnet.Create()
                reference.parameters () |> Seq.sumBy (fun t -> t.numel ()) |> float

            // The hand-written network mirrors examples/fashion/convnet.dsl, not any model.
            if own <> float (paramCount g) then
                fail
                    "%s: stage '%s': the hand-written convnet mirrors examples/fashion/convnet.dsl (%.0f parameters); model '%s' has %d"
                    ctx.File
                    s.Name
                    own
                    g.Name
                    (paramCount g)

            let r =
                try
                    Baselines.AgainstReference(g, batch, rounds, warmup, repeats)
                with :? ArgumentException as e ->
                    fail "%s: stage '%s': %s" ctx.File s.Name e.Message

            r, own
        | _ ->
            let smoothing =
                match p.Recipe |> Option.map (fun r -> r.Loss) with
                | Some(Recipe.LossSpec.CrossEntropy smoothing) -> smoothing
                | _ ->
                    fail
                        "%s: stage '%s': against = \"hostLoss\" needs a train block with loss = crossEntropy"
                        ctx.File
                        s.Name

            let objective =
                match Compiler.pickObjective ctx.Checked g.Name with
                | Some o -> o
                | None -> fail "%s: stage '%s': model '%s' has no objective" ctx.File s.Name g.Name

            Baselines.AgainstHostLoss(g, objective.Loss, smoothing, batch, rounds, warmup, repeats),
            float (paramCount g)

    ctx.Log.WriteLine(
        sprintf
            "batch %d, %d threads: forward %.3f vs %.3f ms, train step %.3f vs %.3f ms (%s)"
            batch
            Threads.Count
            r.ForwardA
            r.ForwardB
            r.TrainStepA
            r.TrainStepB
            baseline
    )

    [
        "forward_a_ms", r.ForwardA
        "forward_b_ms", r.ForwardB
        "forward_ratio", r.ForwardRatioBA
        "train_a_ms", r.TrainStepA
        "train_b_ms", r.TrainStepB
        "train_ratio", r.TrainStepRatioBA
        "params_a", float (paramCount g)
        "params_b", paramsB
    ]

/// Two models timed side by side on the same inputs (PairedComparison: alternating rounds; the
/// ratios are b / a, the median of the rounds'). Without b, a's train form against its deploy
/// form; with deploy = true, both in deploy form.
let private compareModels (ctx: StageContext) (p: Planned) =
    let s = p.Stage

    let graphOf role (m: ModelRef option) =
        match uses s role with
        | Some u -> (sourceOf ctx u).Graph
        | None -> m.Value.Graph

    let batch = int (number s "batch" 1.0)
    let deploy = flag s "deploy"
    let ga = graphOf "a" s.Model
    use a = new GraphModule(ga, 0L)

    let deployOf (m: GraphModule) = WeightMapEvaluator.Reparameterize m

    let da = if deploy then Some(deployOf a) else None

    use _ =
        da
        |> Option.map (fun d -> d :> IDisposable)
        |> Option.defaultValue
            { new IDisposable with
                member _.Dispose() = ()
            }

    let timedA = da |> Option.defaultValue a

    let b =
        match s.Target, uses s "b" with
        | None, None -> deployOf a
        | m, _ ->
            let gb = graphOf "b" m

            let shapes (x: Graph) (ends: (string * int) list) =
                ends |> List.map (fun (_, i) -> x.Nodes[i].Shape)

            if
                shapes ga ga.Inputs <> shapes gb gb.Inputs
                || shapes ga ga.Outputs <> shapes gb gb.Outputs
            then
                fail "%s: stage '%s': '%s' does not take and give what '%s' does" ctx.File s.Name gb.Name ga.Name

            let mb = new GraphModule(gb, 0L)

            if deploy then
                use trained = mb
                deployOf trained
            else
                mb

    use b = b
    use _ = torch.NewDisposeScope()
    let inputs = RandomInputs.For(timedA.Graph, int64 batch, timedA.Device)
    let loss = Run.trainStepLoss ctx.Checked timedA.Graph batch timedA.Device
    let rounds = int (number s "rounds" 10.0)
    ctx.Progress(sprintf "timing %d alternating rounds" rounds)

    let r =
        Run.comparePaired timedA b inputs loss rounds (int (number s "warmup" 3.0)) (int (number s "repeats" 5.0))

    ctx.Log.WriteLine(
        sprintf
            "batch %d, %d threads: forward %.3f vs %.3f ms (ratio %.3f), train step ratio %.3f"
            batch
            Threads.Count
            r.ForwardB
            r.ForwardA
            r.ForwardRatio
            r.TrainStepRatio
    )

    // PairedComparison's A is the first function it was given: here b.
    [
        "forward_a_ms", r.ForwardB
        "forward_b_ms", r.ForwardA
        "forward_ratio", r.ForwardRatio
        "train_a_ms", r.TrainStepB
        "train_b_ms", r.TrainStepA
        "train_ratio", r.TrainStepRatio
        "params_a", float (paramCount timedA.Graph)
        "params_b", float (paramCount b.Graph)
    ]

let private compare (ctx: StageContext) (p: Planned) (dir: string) =
    match text p.Stage "against" with
    | Some "onnxruntime" -> onnxRuntime ctx p dir
    | Some baseline -> compareAgainst ctx p baseline
    | None -> compareModels ctx p

/// A decoder continues a prompt (`dsl generate`): a trained stage's weights and its corpus
/// tokenizer, or a model's random weights from a one-token prompt. The text goes to
/// `generated.txt` in the stage's folder. With `rounds`, greedy generation is also timed with and
/// without the KV cache in alternating rounds (`dsl bench --generate`).
let private generate (ctx: StageContext) (p: Planned) (dir: string) =
    let s = p.Stage

    let file, graph, checkpoint, recipe =
        match uses s "checkpoint" with
        | Some u ->
            let src = sourceOf ctx u
            src.File, src.Graph, Some src.Checkpoint, Compiler.pickRecipe src.Checked src.Graph.Name
        | None -> ctx.File, s.Model.Value.Graph, None, p.Recipe

    let vocabulary =
        match graph.Nodes[snd graph.Outputs.Head].Shape with
        | [ _; _; Known v ] -> v
        | sh -> fail "%s: Stage.generate: model '%s' gives %s, not logits [B, T, V]" file graph.Name (showShape sh)

    let tokenizer =
        match recipe with
        | Some r when r.Data.Kind = "corpus" -> Some(Generate.tokenizerFor file graph r)
        | _ -> None

    let prompt, stop =
        match tokenizer, text s "prompt" with
        | Some t, p -> Generate.promptIds t (Option.defaultValue "" p), Nullable(int64 t.EndOfText)
        | None, None -> [| 0L |], Nullable()
        | None, Some _ ->
            fail
                "%s: Stage.generate: model '%s' has no corpus train block, so no tokenizer for a prompt"
                file
                graph.Name

    use model = new GraphModule(graph, 0L)
    checkpoint |> Option.iter (fun c -> loadWeights model c |> ignore)
    let tokens = count s "tokens" |> Option.defaultValue 100
    ctx.Progress(sprintf "generating %d tokens" tokens)

    use sampler =
        new TokenSampler(
            number s "temperature" 0.0,
            count s "topK" |> Option.defaultValue 0,
            int64 (count s "seed" |> Option.defaultValue 0),
            int64 vocabulary
        )

    let cache =
        match setting s "cache" with
        | Some(Values.VBool b) -> b
        | _ -> true

    let result = TextGeneration.Generate(model, prompt, tokens, sampler, stop, cache)

    match tokenizer with
    | Some t ->
        let generated = t.Decode(Seq.append (Seq.tail prompt) result.Tokens)
        DurableFile.WriteAllText(Path.Combine(dir, "generated.txt"), generated + "\n")
        ctx.Log.WriteLine generated
    | None -> ()

    ctx.Log.WriteLine(sprintf "%d new tokens in %.2f s (stopped: %s)" result.Tokens.Count result.Seconds result.Stop)

    let timing =
        match count s "rounds" with
        | Some rounds ->
            ctx.Progress(sprintf "timing %d rounds with and without the cache" rounds)
            let t = Run.timeGeneration model vocabulary prompt tokens rounds

            [
                "cached_per_s", t.CachedPerSecond
                "uncached_per_s", t.UncachedPerSecond
                "cache_ratio", t.Ratio
            ]
        | None -> []

    [
        "tokens", float result.Tokens.Count
        "tokens_per_s", result.TokensPerSecond
        "seconds", result.Seconds
    ]
    @ timing

/// Runs the stage in `dir`; its metrics by name.
let run (ctx: StageContext) (p: Planned) (dir: string) : (string * float) list =
    Benchmark.UseAllCores() |> ignore

    match p.Stage.Kind with
    | "train" -> train ctx p dir
    | "eval" -> evaluate ctx p
    | "bench" -> bench ctx p
    | "transform" -> transform ctx p dir
    | "data" -> data ctx p
    | "compare" -> compare ctx p dir
    | "generate" -> generate ctx p dir
    | other -> fail "dsl run: unknown stage kind '%s'" other
