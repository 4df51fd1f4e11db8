/// `dsl run FILE`: plans the experiment, runs every stage whose key is not done (up to --jobs at
/// once, each on its share of the cores), then writes results.jsonl, the tables and the plots.
/// A failing stage is reported with its log; the stages that do not use it go on; exit 1.
module Dsl.Cli.Experiments.Runner

open Dsl.Cli
open System
open System.Collections.Concurrent
open System.Collections.Generic
open System.IO
open System.Text.RegularExpressions
open System.Threading
open Spectre.Console
open Dsl
open Dsl.Experiment
open Dsl.Cli.Report
open Dsl.Cli.Experiments.Plan
open Dsl.Cli.Experiments.Store
open Dsl.Cli.Experiments.Results

type RunOptions =
    {
        Out: string option
        Jobs: int
        DryRun: bool
        Force: string list
    }

let private interactive () =
    not Console.IsOutputRedirected
    && Environment.GetEnvironmentVariable "CI" |> String.IsNullOrEmpty

/// A --force pattern: a stage's name, or a pattern with `*`.
let private matches (pattern: string) (name: string) =
    let rx = "^" + (Regex.Escape pattern).Replace("\\*", ".*") + "$"
    Regex.IsMatch(name, rx)

let rec private messageOf (e: exn) =
    match e with
    | UserError msg -> msg
    | Diagnostics.DslError ds -> ds |> List.map Diagnostics.format |> String.concat "\n"
    | :? AggregateException as a when a.InnerExceptions.Count = 1 -> messageOf a.InnerException
    | e when not (isNull e.InnerException) && e.Message = "internal compiler error" -> messageOf e.InnerException
    | e -> e.Message

let private short (key: string) = key.Substring(0, 12)

/// A stage is done when the store holds its result and, for a data stage, its output still
/// carries the marker of its key (deleted or rebuilt by another key: it runs again).
let isDone (store: Store) (p: Planned) =
    store.IsDone p.Key
    && p.Outputs
       |> List.forall (fun o ->
           let m = markerOf o

           (File.Exists o || Directory.Exists o)
           && File.Exists m
           && File.ReadAllText(m).Trim() = p.Key)

/// The folder an experiment's results go to: by default `runs/<file>/<experiment>`, since many
/// files name their experiment `main` and their results must not overwrite each other's.
let outDir (file: string) (o: RunOptions) (e: Experiment) =
    o.Out
    |> Option.defaultValue (Path.Combine("runs", Path.GetFileNameWithoutExtension file, e.Name))

/// Prints the plan: every stage, its key, and whether it is done.
let printPlan (store: Store) (planned: Planned list) (forced: string -> bool) =
    let t = Table().AddColumns("stage", "kind", "key", "status")

    for p in planned do
        let status =
            match isDone store p, forced p.Stage.Name with
            | true, true -> "done, forced: runs again"
            | true, false -> "done"
            | false, _ -> "to run"

        t.AddRow(Markup.Escape p.Stage.Name, p.Stage.Kind, short p.Key, status)
        |> ignore

    AnsiConsole.Write t

    let todo =
        planned
        |> List.filter (fun p -> not (isDone store p) || forced p.Stage.Name)
        |> List.length

    printfn "%d of %s to run" todo (plural planned.Length "stage")

/// Runs the stages to do; every outcome by stage name.
let private schedule
    (file: string)
    (c: Compiler.Checked)
    (store: Store)
    (planned: Planned list)
    (forced: string -> bool)
    (jobs: int)
    (world: Dsl.Runtime.Distributed.World)
    (onChange: Dictionary<string, Outcome> -> unit)
    =
    let outcomes = Dictionary<string, Outcome>()
    // Under mpirun the planned stages are dealt round-robin to the ranks, which share the store:
    // a rank runs its own and waits for the others' to appear there (done, or failed in this run).
    let rankOf =
        planned |> List.mapi (fun i p -> p.Stage.Name, i % world.Size) |> Map.ofList

    let mine (p: Planned) = rankOf[p.Stage.Name] = world.Rank
    let remote = HashSet<string>()
    let runStart = DateTime.UtcNow
    let keys = planned |> List.map (fun p -> p.Stage.Name, p.Key) |> Map.ofList

    for p in planned do
        if isDone store p && not (forced p.Stage.Name) then
            outcomes[p.Stage.Name] <- Cached(store.Read p.Key)

    let completions = new BlockingCollection<string * Outcome>()
    let started = HashSet<string>(outcomes.Keys)
    let mutable running = 0
    let threadsEach = max 1 (Runtime.Threads.Count / jobs)
    let live = interactive ()

    let runAll (lineFor: string -> (string -> unit) * (unit -> unit)) =
        let start (p: Planned) =
            started.Add p.Stage.Name |> ignore
            running <- running + 1
            let update, finish = lineFor p.Stage.Name

            if not live then
                printfn "run   %s" p.Stage.Name

            let work () =
                // A stage's own `threads` (a sweep over thread counts) wins over the --jobs share.
                match p.Stage.Settings |> List.tryFind (fun (n, _) -> n = "threads") with
                | Some(_, Values.VNum(n, _)) -> Runtime.Threads.ForThisJob(min (int n) Environment.ProcessorCount)
                | _ when jobs > 1 -> Runtime.Threads.ForThisJob threadsEach
                | _ -> ()

                let dir = store.Begin p.Key
                let log = new StreamWriter(Path.Combine(dir, "log.txt"))

                if world.Size > 1 then
                    log.WriteLine(sprintf "rank %d of %d" world.Rank world.Size)

                let clock = Diagnostics.Stopwatch.StartNew()

                let outcome =
                    try
                        let ctx: Stages.StageContext =
                            {
                                File = file
                                Checked = c
                                Store = store
                                Keys = keys
                                Log = log
                                Progress = update
                            }

                        let metrics = Stages.run ctx p dir
                        log.Dispose()

                        let result =
                            {
                                Name = p.Stage.Name
                                Kind = p.Stage.Kind
                                Key = p.Key
                                Settings = [ for n, v in p.Stage.Settings -> n, Values.show v ]
                                Metrics = metrics
                                Seconds = clock.Elapsed.TotalSeconds
                            }

                        store.Commit(p.Key, dir, result)
                        Ran result
                    with e ->
                        let msg = messageOf e

                        try
                            log.WriteLine(sprintf "error: %s" msg)
                            log.WriteLine(e.ToString())
                            log.Dispose()
                        with _ ->
                            ()

                        Failed(msg, store.Fail(p.Key, dir))

                finish ()
                completions.Add((p.Stage.Name, outcome))

            // A large stack: elaboration and the passes recurse over deep graphs.
            let t = Thread(work, 64 * 1024 * 1024)
            t.IsBackground <- true
            t.Start()

        let mutable going = true

        while going do
            let mutable changed = true

            while changed do
                changed <- false

                for p in planned do
                    if not (started.Contains p.Stage.Name) && running < jobs then
                        let used =
                            p.Stage.Uses |> List.map (fun (_, u) -> u.Name, outcomes.TryGetValue u.Name)

                        match used |> List.tryFind (fun (_, (found, o)) -> found && (resultOf o).IsNone) with
                        | Some(u, _) ->
                            started.Add p.Stage.Name |> ignore
                            outcomes[p.Stage.Name] <- Blocked u
                            changed <- true
                        | None when used |> List.forall (fun (_, (found, _)) -> found) && not (mine p) ->
                            started.Add p.Stage.Name |> ignore
                            remote.Add p.Stage.Name |> ignore
                            changed <- true
                        | None when used |> List.forall (fun (_, (found, _)) -> found) ->
                            start p
                            changed <- true
                        | None -> ()

            // Another rank's stages, found in the store: done, or failed since this run began.
            let arrived () =
                [
                    for p in planned do
                        if remote.Contains p.Stage.Name then
                            let log = store.FailedLog p.Key

                            if isDone store p then
                                yield p.Stage.Name, Ran(store.Read p.Key)
                            elif File.Exists log && File.GetLastWriteTimeUtc log >= runStart then
                                yield p.Stage.Name, Failed(sprintf "failed on rank %d" rankOf[p.Stage.Name], log)
                ]

            if running = 0 && remote.Count = 0 then
                going <- false
            else
                let mutable taken = Unchecked.defaultof<string * Outcome>

                let name, outcome =
                    match completions.TryTake(&taken, (if remote.Count = 0 then -1 else 500)) with
                    | true ->
                        running <- running - 1
                        taken
                    | false ->
                        match arrived () with
                        | (name, outcome) :: _ ->
                            remote.Remove name |> ignore
                            name, outcome
                        | [] -> "", Blocked ""

                if name <> "" then
                    outcomes[name] <- outcome

                    if not live then
                        match outcome with
                        | Ran r -> printfn "done  %s (%.1f s)" name r.Seconds
                        | Failed(msg, log) -> printfn "FAIL  %s: %s (log: %s)" name msg log
                        | _ -> ()
                    else
                        match outcome with
                        | Failed(msg, log) ->
                            AnsiConsole.MarkupLine(
                                sprintf
                                    "[red]failed[/] %s: %s (log: %s)"
                                    (Markup.Escape name)
                                    (Markup.Escape msg)
                                    (Markup.Escape log)
                            )
                        | _ -> ()

                    onChange outcomes

    if live then
        AnsiConsole
            .Progress()
            .AutoClear(true)
            .Columns(TaskDescriptionColumn(), SpinnerColumn(), ElapsedTimeColumn())
            .Start(fun pctx ->
                runAll (fun name ->
                    let task = pctx.AddTask(Markup.Escape name, true, 1.0)

                    (fun line -> task.Description <- Markup.Escape(name + "  " + line)),
                    (fun () ->
                        task.Value <- 1.0
                        task.StopTask())))
    else
        runAll (fun _ -> ignore, ignore)

    outcomes

/// The end of a run: every stage with its status, time and first metrics.
let private summary (planned: Planned list) (outcomes: Dictionary<string, Outcome>) =
    let t = Table().AddColumns("stage", "status", "s", "metrics")

    for p in planned do
        let status, secs, metrics =
            match outcomes.TryGetValue p.Stage.Name with
            | true, Ran r -> "ran", sprintf "%.1f" r.Seconds, r.Metrics
            | true, Cached r -> "cached", sprintf "%.1f" r.Seconds, r.Metrics
            | true, Failed(_, log) -> "FAILED: " + log, "", []
            | true, Blocked u -> "not run: " + u + " failed", "", []
            | _ -> "", "", []

        let shown =
            metrics
            |> List.truncate 4
            |> List.map (fun (n, x) ->
                sprintf "%s %s" n (x.ToString("0.####", Globalization.CultureInfo.InvariantCulture)))
            |> String.concat ", "

        t.AddRow(Markup.Escape p.Stage.Name, Markup.Escape status, secs, Markup.Escape shown)
        |> ignore

    AnsiConsole.Write t

/// Runs experiment `e` of the checked file; the exit code.
let run (file: string) (c: Compiler.Checked) (e: Experiment) (o: RunOptions) : int =
    let root = outDir file o e
    let store = Store root
    let planClock = Diagnostics.Stopwatch.StartNew()
    let planned = plan c file e
    checkPublished file e

    for f in o.Force do
        if not (planned |> List.exists (fun p -> matches f p.Stage.Name)) then
            fail
                "dsl run: --force %s: no stage of experiment '%s' is named so%s"
                f
                e.Name
                (Diagnostics.didYouMean f (planned |> List.map (fun p -> p.Stage.Name)))

    let forced name =
        o.Force |> List.exists (fun f -> matches f name)

    if o.DryRun then
        printPlan store planned forced
        printfn "planned in %.0f ms" planClock.Elapsed.TotalMilliseconds
        0
    else
        // Under mpirun, the ranks share out the stages (a world of one outside it).
        use world = Dsl.Runtime.Distributed.World.FromEnvironment()

        if not world.IsRoot then
            // Rank 0 alone reports and writes the results; a failure still reaches stderr.
            Console.SetOut TextWriter.Null

        use _lock =
            if world.IsRoot then
                store.Lock()
            else
                { new IDisposable with
                    member _.Dispose() = ()
                }

        if world.IsRoot then
            store.ClearTemporaries()

        // No rank begins a stage before rank 0 has cleared what a killed run left.
        world.Barrier()

        let jsonl = Path.Combine(root, "results.jsonl")

        let record (outcomes: Dictionary<string, Outcome>) =
            writeJsonl
                jsonl
                [
                    for p in planned ->
                        p.Stage,
                        p.Key,
                        (match outcomes.TryGetValue p.Stage.Name with
                         | true, x -> Some x
                         | _ -> None)
                ]

        let plannedMs = planClock.Elapsed.TotalMilliseconds

        let record outcomes =
            if world.IsRoot then
                record outcomes

        let outcomes = schedule file c store planned forced o.Jobs world record
        record outcomes

        let find name =
            match outcomes.TryGetValue name with
            | true, x -> Some x
            | _ -> None

        summary planned outcomes

        let count f =
            outcomes.Values |> Seq.filter f |> Seq.length

        printfn
            "%s: %d ran, %d cached; planned in %.0f ms"
            (plural planned.Length "stage")
            (count (function
                | Ran _ -> true
                | _ -> false))
            (count (function
                | Cached _ -> true
                | _ -> false))
            plannedMs

        printfn "wrote %s" jsonl

        // A generate stage's continuation is a file of its own in the store.
        for p in planned do
            let text = Path.Combine(store.Dir p.Key, "generated.txt")

            if p.Stage.Kind = "generate" && File.Exists text then
                printfn "text of '%s': %s" p.Stage.Name (Path.GetRelativePath(Environment.CurrentDirectory, text))

        let mutable incomplete = false

        for t in (if world.IsRoot then e.Tables else []) do
            let paths, missing = writeTable root file find t
            printfn "wrote %s" (String.concat ", " paths)

            for m in missing do
                incomplete <- true
                eprintfn "table %s: %s" t.Name m

        for p in (if world.IsRoot then e.Plots else []) do
            let paths, missing = writePlot root file find p

            if not paths.IsEmpty then
                printfn "wrote %s" (String.concat ", " paths)

            for m in missing do
                incomplete <- true
                eprintfn "plot %s: %s" p.Name m

        let failed =
            outcomes.Values
            |> Seq.filter (function
                | Failed _
                | Blocked _ -> true
                | _ -> false)
            |> Seq.length

        if failed > 0 then
            eprintfn "%s did not finish; a rerun retries only those" (plural failed "stage")
            1
        elif incomplete then
            1
        else
            0

/// `dsl run FILE [--experiment E] [--out DIR] [--jobs N] [--dry-run] [--force STAGE…]`.
let command (args: Argu.ParseResults<Args.RunArgs>) =
    let clock = Diagnostics.Stopwatch.StartNew()
    let file = args.GetResult Args.RunArgs.File
    let c = checkedOrExit file

    let experiments =
        match Experiment.check c c.ExperimentDefs with
        | found, [] -> found
        | _, ds ->
            printDiagnostics ds
            exit 1

    let e =
        match args.TryGetResult Args.RunArgs.Experiment, experiments with
        | _, [] -> fail "%s: error: the file declares no experiment" file
        | None, e :: _ -> e
        | Some n, es ->
            match es |> List.tryFind (fun e -> e.Name = n) with
            | Some e -> e
            | None ->
                let names = es |> List.map (fun e -> e.Name)

                fail
                    "%s: error: no experiment '%s'%s (experiments here: %s)"
                    file
                    n
                    (Diagnostics.didYouMean n names)
                    (String.concat ", " names)

    let checkedMs = clock.Elapsed.TotalMilliseconds

    let code =
        run
            file
            c
            e
            {
                Out = args.TryGetResult Args.RunArgs.Out
                Jobs = args.GetResult(Args.RunArgs.Jobs, 1)
                DryRun = args.Contains Args.RunArgs.Dry_Run
                Force = args.GetResult(Args.RunArgs.Force, [])
            }

    // The runner's own cost is part of what a rerun costs: bench/runner.dsl measures it with this.
    printfn "checked in %.0f ms, all done in %.0f ms" checkedMs clock.Elapsed.TotalMilliseconds
    code
