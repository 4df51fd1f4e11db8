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
open Dsl.Runtime.Emit
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

/// A stage's trained (or transformed) model: the checked file it is declared in, its graph,
/// its recipe and its checkpoint folder.
type private Source =
    {
        File: string
        Checked: Compiler.Checked
        Graph: Graph
        Checkpoint: string
    }

let private sourceOf (ctx: StageContext) (used: Stage) : Source =
    let dir = ctx.Store.Dir ctx.Keys[used.Name]

    match used.Kind with
    | "train" ->
        {
            File = ctx.File
            Checked = ctx.Checked
            Graph = used.Model.Value.Graph
            Checkpoint = Path.Combine(dir, "run", "checkpoint")
        }
    | _ ->
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

let private uses (s: Stage) role =
    s.Uses |> List.tryFind (fun (r, _) -> r = role) |> Option.map snd

let private train (ctx: StageContext) (p: Planned) (dir: string) =
    let s = p.Stage
    let m = s.Model.Value

    let r =
        match p.Recipe with
        | Some r -> r
        | None -> fail "%s: model '%s' has no train block" ctx.File m.Family

    let runDir = Path.Combine(dir, "run")
    let options = trainOptions r m.Graph runDir
    setting s "lr" |> Option.iter (fun _ -> options.Lr <- number s "lr" options.Lr)

    setting s "steps"
    |> Option.iter (fun _ -> options.MaxSteps <- Nullable(int64 (number s "steps" 0.0)))

    let init = uses s "init" |> Option.map (fun u -> (sourceOf ctx u).Checkpoint)

    let request: Run.TrainRequest =
        {
            File = ctx.File
            Checked = ctx.Checked
            Graph = m.Graph
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
        ctx.Log.WriteLine(sprintf "training %s on %s, batch %d, seed %d" m.Name st.Examples r.Batch r.Seed)

    let clock = Diagnostics.Stopwatch.StartNew()
    let mutable logged = -1000.0

    let withProgress _ (run: (TrainProgress -> unit) -> TrainResult) =
        run (fun pr ->
            let line =
                sprintf "step %d/%d  loss %.4f  ETA %s" pr.Step pr.TotalSteps pr.Loss (pr.Eta.ToString(@"hh\:mm\:ss"))

            ctx.Progress line

            if clock.Elapsed.TotalSeconds - logged >= 10.0 || pr.Step = pr.TotalSteps then
                logged <- clock.Elapsed.TotalSeconds
                ctx.Log.WriteLine line
                ctx.Log.Flush())

    let result, _ = Run.trainModel request started withProgress

    [
        "loss", result.FinalLoss
        "steps", float result.Steps
        "seconds", result.Elapsed.TotalSeconds
        "params", float (paramCount m.Graph)
    ]

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

    [ for struct (name, value) in e.Metrics() -> name, value ]
    @ [ "count", float e.Count; "per_s", e.ImagesPerSecond ]

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

    let stats =
        Benchmark.MeasureForward((fun xs -> timed.Forward xs), timed, inputs, warmup, repeats)

    ctx.Log.WriteLine(sprintf "forward, batch %d, %d threads: median %.3f ms" batch Threads.Count stats.MedianMs)

    [
        "median_ms", stats.MedianMs
        "p10_ms", stats.P10Ms
        "p90_ms", stats.P90Ms
        "per_s", float batch * 1000.0 / stats.MedianMs
        "params", float (paramCount timed.Graph)
    ]

let private transform (ctx: StageContext) (p: Planned) (dir: string) =
    let src = sourceOf ctx (uses p.Stage "checkpoint").Value
    ctx.Progress "re-parameterising"

    let deployed =
        Transform.reparamInto src.Checked src.File src.Graph src.Checkpoint (Path.Combine(dir, "model"))

    [
        "params", float (paramCount deployed)
        "nodes", float deployed.Nodes.Length
        "params_before", float (paramCount src.Graph)
        "nodes_before", float src.Graph.Nodes.Length
    ]

/// Runs the stage in `dir`; its metrics by name.
let run (ctx: StageContext) (p: Planned) (dir: string) : (string * float) list =
    Benchmark.UseAllCores() |> ignore

    match p.Stage.Kind with
    | "train" -> train ctx p dir
    | "eval" -> evaluate ctx p
    | "bench" -> bench ctx p
    | "transform" -> transform ctx p dir
    | other -> fail "dsl run: unknown stage kind '%s'" other
