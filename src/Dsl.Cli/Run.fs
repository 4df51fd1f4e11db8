/// `dsl train`, `dsl eval`, `dsl predict`, `dsl bench`: the runtime driven from a checked file.
module Dsl.Cli.Run

open System
open System.IO
open System.Text.Json
open Argu
open Spectre.Console
open TorchSharp
open Dsl
open Dsl.Ir
open Dsl.Runtime.Bench
open Dsl.Runtime.Checkpoints
open Dsl.Runtime.Distributed
open Dsl.Runtime.Data
open Dsl.Runtime.Emit
open Dsl.Runtime.Generation
open Dsl.Runtime.Training
open Dsl.Cli.Args
open Dsl.Cli.Report
open Dsl.Cli.Session

let private interactive () =
    not Console.IsOutputRedirected
    && Environment.GetEnvironmentVariable "CI" |> String.IsNullOrEmpty

/// What one training example is, for the throughput: an image (or image–text pair), or a row of
/// a corpus, counted in its tokens.
type ProgressUnit =
    {
        Name: string
        Short: string
        PerExample: int
    }

/// Progress as a live bar on a terminal, as one plain line every few seconds otherwise.
let withProgress (unit: ProgressUnit) (run: (TrainProgress -> unit) -> 'a) : 'a =
    let describe (p: TrainProgress) =
        sprintf
            "epoch %d  loss %.4f  lr %s  %.0f %s/s  ETA %s"
            (p.Epoch + 1)
            p.Loss
            (p.Lr.ToString("0.00e+00", Globalization.CultureInfo.InvariantCulture))
            (p.ImagesPerSecond * float unit.PerExample)
            unit.Short
            (p.Eta.ToString(@"hh\:mm\:ss"))

    // An evaluation at an epoch's end belongs to the epoch; one from --eval-steps to its step.
    let evalLine (p: TrainProgress) =
        let at =
            if p.EndsEpoch then
                sprintf "epoch %d (step %d)" (p.Epoch + 1) p.Step
            else
                sprintf "step %d" p.Step

        match p.Evaluation with
        | null -> None
        | e when not (isClassification e) -> Some(sprintf "%s: test %s" at (metricsLine e))
        | e ->
            Some(
                sprintf
                    "%s: test loss %.4f, accuracy %.2f%%, top-5 %.2f%%"
                    at
                    e.Loss
                    (100.0 * e.Accuracy)
                    (100.0 * e.Top5)
            )

    if interactive () then
        let mutable result = Unchecked.defaultof<'a>

        AnsiConsole
            .Progress()
            .Columns(TaskDescriptionColumn(), ProgressBarColumn(), PercentageColumn(), RemainingTimeColumn())
            .Start(fun ctx ->
                // The trainer's step plan sets the total with its first report.
                let task = ctx.AddTask("training", true, 1.0)

                result <-
                    run (fun p ->
                        task.MaxValue <- float p.TotalSteps
                        task.Value <- float p.Step
                        task.Description <- Markup.Escape(describe p)
                        evalLine p |> Option.iter (fun l -> AnsiConsole.MarkupLine(Markup.Escape l))))

        result
    else
        let clock = Diagnostics.Stopwatch.StartNew()
        let mutable last = -1000.0

        run (fun p ->
            if clock.Elapsed.TotalSeconds - last >= 10.0 || p.Step = p.TotalSteps then
                last <- clock.Elapsed.TotalSeconds
                printfn "step %d/%d  %s" p.Step p.TotalSteps (describe p)

            evalLine p |> Option.iter (printfn "%s"))

/// What is trained on: the records of the recipe's data under its objective (every objective,
/// the built-in ones included, is elaborated from the language); the second part is what the
/// caller disposes when done.
let trainingTask
    (file: string)
    (r: Recipe.TrainRecipe)
    (g: Graph)
    (model: GraphModule)
    (dataDir: string option)
    (objective: Objective.Objective option)
    : ITrainingTask * IDisposable list =
    match objective with
    | Some o -> Records.task file r g o dataDir model.Device
    | None -> fail "%s: error: the train block of '%s' gives no objective for %s data" file g.Name r.Data.Kind

/// A training run as decided by the command line or an experiment stage.
type TrainRequest =
    {
        File: string
        Checked: Compiler.Checked
        Graph: Graph
        Recipe: Recipe.TrainRecipe
        OutDir: string
        DataDir: string option
        Device: string option
        /// The trainer's settings (Session.trainOptions, then the caller's overrides).
        Options: TrainOptions
        /// A checkpoint whose weights the model starts from.
        Init: string option
        Resume: bool
        Overwrite: bool
        World: World
    }

/// What a run knows once its data is loaded, before its first step.
type TrainStart =
    {
        Examples: string
        ResumedAt: int64 option
    }

/// Trains in this process: the model, its data under its objective and the trainer, shared by
/// `dsl train` and the experiment runner; the caller renders `started` and the progress.
let trainModel
    (req: TrainRequest)
    (started: TrainStart -> unit)
    (runWithProgress: ProgressUnit -> ((TrainProgress -> unit) -> TrainResult) -> TrainResult)
    : TrainResult * int64 option =
    let file, c, g, r, options, outDir =
        req.File, req.Checked, req.Graph, req.Recipe, req.Options, req.OutDir

    Benchmark.UseAllCores() |> ignore

    // Training holds each weight with its gradient and the optimizer's state: refuse a model
    // that cannot fit before libtorch aborts on an allocation.
    let copies, state =
        match r.Optimizer.Kind with
        | "sgd" when r.Optimizer.Momentum = 0.0 -> 2, "no optimizer state"
        | "sgd" -> 3, "SGD's momentum"
        | _ -> 4, "AdamW's two moments"

    ModelTooLargeError.Check(g, ModelTooLargeError.AvailableBytes(), copies, state)

    use model = new GraphModule(g, int64 r.Seed, deviceOf req.Device)

    convolutionNote ()

    let resumedAt =
        match req.Init with
        | Some _ when options.Resume -> fail "dsl train: --init and --resume exclude each other"
        | Some dir ->
            loadWeights model dir |> ignore
            None
        | None when
            options.Resume
            && isNull (Checkpoint.Find options.CheckpointDir)
            && OutputFolder.IsRun outDir
            ->
            // Stopped (killed, say) before its first save: nothing is lost by starting it over.
            eprintfn "note: %s holds no checkpoint yet; the run starts again from step 0" outDir
            options.Resume <- false
            None
        | None when options.Resume -> Some(requireResumable model options.CheckpointDir)
        | None -> None

    let task, owned =
        trainingTask file r g model req.DataDir (Compiler.pickObjective c g.Name)

    use _owned =
        { new IDisposable with
            member _.Dispose() =
                for d in owned do
                    d.Dispose()
        }

    let unit: ProgressUnit =
        if r.Data.Kind = "corpus" then
            let tokens =
                match g.Nodes[snd g.Inputs.Head].Shape with
                | [ _; Known t ] -> t
                | _ -> 1

            {
                Name = "token"
                Short = "tokens"
                PerExample = tokens
            }
        else
            {
                Name = "image"
                Short = "img"
                PerExample = 1
            }

    if unit.Name = "token" then
        options.TokensPerExample <- int64 unit.PerExample

    let examples =
        if unit.PerExample = 1 then
            plural task.Count unit.Name
        else
            sprintf
                "%s of %d tokens (%s)"
                (plural task.Count "row")
                unit.PerExample
                (plural (int64 task.Count * int64 unit.PerExample) "token")

    started
        {
            Examples = examples
            ResumedAt = resumedAt
        }

    // Last before the first write: every check above has passed, so a refused run leaves the
    // folder as it was.
    options.World <- req.World

    if req.World.IsRoot then
        OutputFolder.PrepareRun(req.OutDir, g.Name, req.Resume, req.Overwrite)

    let result =
        runWithProgress unit (fun report -> Trainer(model, options).Train(task, Action<_> report))

    result, resumedAt


/// This process's own command line with --resume in place of --overwrite: what continues it.
let private resumeCommand (outDir: string) =
    let given =
        Environment.GetCommandLineArgs()
        |> Array.skip 1
        |> Array.filter (fun a -> a <> "--overwrite" && a <> "--resume")
        |> Array.map (fun a -> if a.Contains ' ' then sprintf "'%s'" a else a)
        |> String.concat " "

    let out =
        if given.Contains "--out" then
            ""
        else
            sprintf " --out %s" outDir

    sprintf "dsl %s%s --resume" given out

let private trainIn (world: World) (args: ParseResults<TrainArgs>) =
    args.TryGetResult TrainArgs.Max_Pixels
    |> Option.iter (fun n -> ImageLimits.CommandLine <- Nullable n)

    let file = args.GetResult TrainArgs.File
    let c = checkedOrExit file
    let g = modelOrExit c (args.TryGetResult TrainArgs.Model)
    let r = recipeOrExit c g

    let r =
        { r with
            Epochs = args.GetResult(TrainArgs.Epochs, r.Epochs)
            Batch = args.GetResult(TrainArgs.Batch, r.Batch)
            Seed = args.GetResult(TrainArgs.Seed, r.Seed)
        }

    let outDir = args.GetResult(TrainArgs.Out, Path.Combine("runs", g.Name))
    let dataDir = args.TryGetResult TrainArgs.Data
    let options = trainOptions r g outDir
    options.Resume <- args.Contains TrainArgs.Resume
    options.AllowChanges <- args.Contains TrainArgs.Allow_Changes

    if options.AllowChanges && not options.Resume then
        fail "dsl train: --allow-changes only applies with --resume"

    args.TryGetResult TrainArgs.Max_Steps
    |> Option.iter (fun s -> options.MaxSteps <- Nullable(int64 s))

    // The schedule decays from the peak to minLr (Recipe checks the train block's own pair).
    match args.TryGetResult TrainArgs.Lr with
    | Some lr when lr < options.MinLr ->
        fail "dsl train: --lr %g is below the schedule's minLr %g in the train block of '%s'" lr options.MinLr g.Name
    | Some lr -> options.Lr <- lr
    | None -> ()

    args.TryGetResult TrainArgs.Eval_Steps
    |> Option.iter (fun s -> options.EvalEverySteps <- s)

    args.TryGetResult TrainArgs.Save_Every
    |> Option.iter (fun s -> options.SaveEvery <- s)

    args.TryGetResult TrainArgs.Keep |> Option.iter (fun k -> options.Keep <- k)

    let request =
        {
            File = file
            Checked = c
            Graph = g
            Recipe = r
            OutDir = outDir
            DataDir = dataDir
            Device = args.TryGetResult TrainArgs.Device
            Options = options
            Init = args.TryGetResult TrainArgs.Init
            Resume = args.Contains TrainArgs.Resume
            Overwrite = args.Contains TrainArgs.Overwrite
            World = world
        }

    let started (s: TrainStart) =
        printfn
            "training %s (%s parameters) on %s, %s of batch %d%s → %s"
            g.Name
            ((paramCount g).ToString("N0"))
            s.Examples
            (plural r.Epochs "epoch")
            r.Batch
            (match s.ResumedAt with
             | Some step -> sprintf ", resuming after step %d" step
             | None -> "")
            outDir

        for line in groupLines options g do
            printfn "  %s" line

    // Ctrl-C or a SIGTERM stops the run at the next step boundary with a checkpoint there; a
    // second signal ends the process at once (the checkpoints on disk stay whole either way).
    let stop = Interruption.listen ()
    options.StopRequested <- Func<bool>(fun () -> stop.Requested)
    let result, resumedAt = trainModel request started withProgress
    stop.Dispose()

    if result.StepsThisRun = 0L && resumedAt.IsSome then
        printfn "nothing to train: the run already ended at step %d" result.Steps
    else
        printfn
            "trained %s%s in %.0f s; final loss %.4f"
            (plural result.StepsThisRun "step")
            (if result.StepsThisRun <> result.Steps then
                 sprintf " in this run (%d in total)" result.Steps
             else
                 "")
            result.Elapsed.TotalSeconds
            result.FinalLoss

    match result.Throughput with
    | null -> ()
    | t when t.TokensPerSecond.HasValue ->
        printfn
            "%.0f tokens/s, model FLOPs utilisation %.1f%% of a measured %.1f GFLOP/s matmul peak"
            t.TokensPerSecond.Value
            (100.0 * t.Mfu.GetValueOrDefault nan)
            (result.PeakFlops / 1e9)
    | _ -> ()

    match result.LastEvaluation with
    | null -> ()
    | e when not (isClassification e) -> printfn "test %s on %s" (metricsLine e) (plural e.Count "example")
    | e ->
        printfn
            "test accuracy %.2f%% (top-5 %.2f%%) on %s"
            (100.0 * e.Accuracy)
            (100.0 * e.Top5)
            (plural e.Count "image")

    printfn "checkpoint: %s" options.CheckpointDir

    if result.Interrupted then
        eprintfn
            "interrupted: saved step %d to %s; continue with: %s"
            result.Steps
            options.CheckpointDir
            (resumeCommand outDir)

        130
    else
        0

/// `mpirun -np N` running this dsl with `arguments` (a `train` command line): the ranks of one job.
let mpirunCommand (procs: int) (arguments: string list) =
    // This dsl, however it was started: `dotnet dsl.dll`, the apphost beside dsl.dll, or (a
    // process hosting the CLI as a library, as the tests do) whichever of those exists.
    let cli = Reflection.Assembly.GetExecutingAssembly().Location
    let apphost = Path.Combine(Path.GetDirectoryName cli, "dsl")

    let self =
        if Path.GetFileNameWithoutExtension Environment.ProcessPath = "dotnet" then
            [ Environment.ProcessPath; cli ]
        elif File.Exists apphost then
            [ apphost ]
        else
            [ "dotnet"; cli ]

    let root =
        if Environment.UserName = "root" then
            [ "--allow-run-as-root" ]
        else
            []

    let psi = Diagnostics.ProcessStartInfo("mpirun", UseShellExecute = false)

    for a in root @ [ "--oversubscribe"; "-np"; string procs ] @ self @ arguments do
        psi.ArgumentList.Add a

    psi

/// `--procs N`: the same command under `mpirun -np N`, which starts the ranks.
let private launch (procs: int) =
    let given = Environment.GetCommandLineArgs() |> Array.toList

    let rec without =
        function
        | "--procs" :: _ :: rest -> without rest
        | a :: rest when a.StartsWith "--procs=" -> without rest
        | a :: rest -> a :: without rest
        | [] -> []

    let psi = mpirunCommand procs (without given.Tail)

    try
        use p = Diagnostics.Process.Start psi
        p.WaitForExit()
        p.ExitCode
    with :? ComponentModel.Win32Exception ->
        fail "dsl train --procs: mpirun not found; install the Debian packages openmpi-bin and libopenmpi-dev"

/// Trains in this process, which is one rank of an mpirun job when mpirun started it.
let train (args: ParseResults<TrainArgs>) =
    match args.TryGetResult TrainArgs.Procs with
    | Some n when n > 1 && isNull (Environment.GetEnvironmentVariable World.SizeVariable) -> launch n
    | _ ->
        args.TryGetResult TrainArgs.Rank_Timeout
        |> Option.iter (fun s ->
            Environment.SetEnvironmentVariable(
                World.TimeoutVariable,
                s.ToString(Globalization.CultureInfo.InvariantCulture)
            ))

        let world = World.FromEnvironment()

        if not world.IsRoot then
            // Rank 0 alone reports; the others' errors still reach stderr.
            Console.SetOut IO.TextWriter.Null

        try
            let code = trainIn world args
            // Every rank finishes together, after rank 0's last save.
            world.Barrier()
            world.Dispose()
            code
        with e when world.Size > 1 ->
            // One rank failing alone would leave the others waiting in an allreduce forever.
            eprintfn "rank %d of %d: error: %s; ending every rank" world.Rank world.Size e.Message
            world.Abort 1
            1

/// A trained model on its recipe's test data: the objective's metrics, or for an image–text
/// model zero-shot accuracy and retrieval (whichever objective trained it). Shared by `dsl eval`
/// and the experiment runner.
let evaluateModel file (c: Compiler.Checked) (r: Recipe.TrainRecipe) (g: Graph) (model: GraphModule) dataDir =
    match Compiler.pickObjective c g.Name with
    | Some o when r.Data.Kind <> "captions" ->
        Benchmark.UseAllCores() |> ignore
        Records.evaluate file r g o dataDir model
    | _ -> ImageText.evaluate file r g model

let eval (args: ParseResults<EvalArgs>) =
    args.TryGetResult EvalArgs.Max_Pixels
    |> Option.iter (fun n -> ImageLimits.CommandLine <- Nullable n)

    let file = args.GetResult EvalArgs.File
    let c = checkedOrExit file
    let g = modelOrExit c (args.TryGetResult EvalArgs.Model)
    let r = recipeOrExit c g
    use model = new GraphModule(g, 0L, deviceOf (args.TryGetResult EvalArgs.Device))
    let meta = loadWeights model (args.GetResult EvalArgs.Checkpoint)
    let json = args.Contains EvalArgs.Json

    match Compiler.pickObjective c g.Name with
    // Image–text models are evaluated by zero-shot accuracy, retrieval and the linear probe
    // (CatLIP's loss on the test set among them), whichever objective trained them.
    | _ when r.Data.Kind = "captions" -> ImageText.eval file r g model meta json (args.Contains EvalArgs.Probe)
    | None -> ImageText.eval file r g model meta json (args.Contains EvalArgs.Probe)
    | Some o ->
        let e = evaluateModel file c r g model (args.TryGetResult EvalArgs.Data)

        if json then
            printfn
                "%s"
                (jsonLine (
                    [
                        "model", box g.Name
                        "step", box meta.Step
                        (if r.Data.Kind = "corpus" then "rows" else "count"), box e.Count
                    ]
                    @ [ for struct (name, value) in e.Metrics() -> name, box value ]
                    @ [
                        (if r.Data.Kind = "corpus" then "rows_per_s"
                         elif isClassification e then "images_per_s"
                         else "examples_per_s"),
                        box e.ImagesPerSecond
                    ]
                ))
        elif r.Data.Kind = "corpus" && o.Metrics.IsSome && e.Extra.ContainsKey "perplexity" then
            printfn
                "%s at step %d on %d validation rows: loss %.4f, perplexity %.2f"
                g.Name
                meta.Step
                e.Count
                e.Loss
                e.Extra["perplexity"]
        elif isClassification e then
            printfn
                "%s at step %d on %d test images: loss %.4f, accuracy %.2f%%, top-5 %.2f%%, %.0f images/s"
                g.Name
                meta.Step
                e.Count
                e.Loss
                (100.0 * e.Accuracy)
                (100.0 * e.Top5)
                e.ImagesPerSecond
        else
            printfn "%s at step %d on %s: %s" g.Name meta.Step (plural e.Count "test example") (metricsLine e)

        0

let predict (args: ParseResults<PredictArgs>) =
    let file, images =
        match args.GetResult(PredictArgs.Inputs, []) with
        | f :: (_ :: _ as imgs) -> f, imgs
        | _ -> fail "dsl predict: give the .dsl file and at least one image"

    let c = checkedOrExit file
    let g = modelOrExit c (args.TryGetResult PredictArgs.Model)
    let r = recipeOrExit c g
    use model = new GraphModule(g, 0L)
    let meta = loadWeights model (args.GetResult PredictArgs.Checkpoint)
    let top = args.GetResult(PredictArgs.Top, 3)

    let classes =
        match meta.Extra.TryGetValue "classes" with
        | true, names -> names.Split('\n')
        | _ when r.Data.Kind = "fashionMnist" -> FashionMnist.ClassNames
        | _ -> [||]

    let channels, height, width =
        match g.Nodes[snd g.Inputs.Head].Shape with
        | [ _; Known ch; Known h; Known w ] -> ch, h, w
        | s -> fail "model '%s' takes %s, not an image" g.Name (showShape s)

    // Each image is decoded on its own, so one bad file among good ones costs only its own line.
    let struct (decoded, failures) =
        ImageFolder.DecodeFiles(
            ResizeArray images,
            channels,
            height,
            width,
            Option.toNullable (args.TryGetResult PredictArgs.Max_Pixels)
        )

    use _batch = decoded
    model.eval ()
    use _ = torch.no_grad ()
    // The images are decoded at the model's size already, so only the normalisation has work to do.
    use scope = torch.NewDisposeScope()

    use probs =
        if isNull decoded then
            null
        else
            let input =
                evalTransforms r g
                |> List.fold (fun (x: torch.Tensor) t -> t.Apply(x, null)) decoded

            scope.MoveToOuter(model.forward(input).softmax(1))

    // Row of each good image in the decoded batch, which holds them in the order given.
    let rows = failures |> Array.scan (fun row f -> if isNull f then row + 1 else row) 0

    for i, path in List.indexed images do
        if not (isNull failures[i]) then
            // As a DataError reads, so a bad image looks the same whether alone or among good ones.
            eprintfn "error: %s: %s" path failures[i]
        else
            let p = probs[int64 rows[i]]
            let k = min top (int p.shape[0])
            let struct (values, indices) = p.topk (k)

            let name j =
                if j < classes.Length then
                    classes[j]
                else
                    sprintf "class %d" j

            let best =
                [
                    for j in 0 .. k - 1 ->
                        sprintf
                            "%s %.1f%%"
                            (name (int (indices[int64 j].item<int64>())))
                            (100.0f * values[int64 j].item<float32>())
                ]

            printfn "%s: %s" path (String.concat ", " best)

    if failures |> Array.exists (isNull >> not) then 1 else 0

/// Where the time goes, per kind of op: forward time in a training step (train mode) and in
/// inference (eval mode, no_grad), totals over the repeats divided by their number; the rest of
/// the training step is the loss and the backward pass.
let private profile (g: Graph) (model: GraphModule) inputs (loss: torch.Tensor[] -> torch.Tensor) warmup repeats =
    Benchmark.UseAllCores() |> ignore

    let timed (run: unit -> unit) =
        for _ in 1..warmup do
            run ()

        model.ProfileNodes true
        let clock = Diagnostics.Stopwatch.StartNew()

        for _ in 1..repeats do
            run ()

        let ms = clock.Elapsed.TotalMilliseconds / float repeats
        let perNode = model.NodeSeconds |> Array.map (fun s -> s * 1000.0 / float repeats)
        model.ProfileNodes false
        ms, perNode

    model.train ()

    let stepMs, trainNodes =
        timed (fun () ->
            use scope = torch.NewDisposeScope()
            model.zero_grad ()
            (loss (model.Forward inputs)).backward())

    model.eval ()

    let inferenceMs, evalNodes =
        timed (fun () ->
            use scope = torch.NewDisposeScope()
            use noGrad = torch.no_grad ()
            model.Forward inputs |> ignore)

    let kindOf (n: Node) =
        match n.Op with
        | Conv c when c.Groups > 1 && c.Groups = c.InChannels -> opKind n.Op + " depthwise"
        | Conv c when c.Groups > 1 -> opKind n.Op + " grouped"
        | op -> opKind op

    let byKind =
        g.Nodes
        |> List.groupBy kindOf
        |> List.map (fun (kind, ns) ->
            kind,
            List.length ns,
            ns |> List.sumBy (fun n -> trainNodes[n.Id]),
            ns |> List.sumBy (fun n -> evalNodes[n.Id]))
        |> List.sortByDescending (fun (_, _, train, eval) -> train + eval)

    let forwardMs = byKind |> List.sumBy (fun (_, _, ms, _) -> ms)
    let batch = (Array.head inputs: torch.Tensor).shape[0]

    printfn
        "%s, batch %d, %s: training step %.1f ms, inference forward %.1f ms"
        g.Name
        batch
        (plural repeats "repeat")
        stepMs
        inferenceMs

    printfn
        "  convolutions on %s%s"
        ConvolutionBackend.Current
        (match ConvolutionBackend.DisabledBecause with
         | null -> ""
         | why -> sprintf " (oneDNN off: %s)" why)

    printfn "  %-18s %6s %14s %14s" "op" "nodes" "train fwd ms" "inference ms"

    for kind, count, train, eval in byKind do
        printfn "  %-18s %6d %14.2f %14.2f" kind count train eval

    printfn "  %-18s %6s %14.2f" "loss + backward" "" (stepMs - forwardMs)
    0

/// Greedy generation from `prompt` timed with and without the KV cache (no early stop), in
/// alternating rounds after one untimed run of each; the ratio is the median of the per-round
/// ratios, steadier on a shared machine than either rate. `dsl bench --generate` and an
/// experiment's generate stage.
type GenerationTiming =
    {
        First: GenerationResult
        CachedPerSecond: float
        UncachedPerSecond: float
        Ratio: float
    }

let timeGeneration (model: GraphModule) (vocabulary: int) (prompt: int64[]) (tokens: int) (rounds: int) =
    let once cache =
        use sampler = new TokenSampler(0.0, 0, 0L, int64 vocabulary)
        TextGeneration.Generate(model, prompt, tokens, sampler, System.Nullable(), cache)

    let first = once true
    once false |> ignore

    let cached, uncached =
        List.init rounds (fun round ->
            if round % 2 = 0 then
                let a = once true
                a, once false
            else
                let b = once false
                once true, b)
        |> List.unzip

    let median (xs: float list) =
        let s = List.sort xs
        let n = s.Length

        if n % 2 = 1 then
            s[n / 2]
        else
            (s[n / 2 - 1] + s[n / 2]) / 2.0

    let rate (rs: GenerationResult list) =
        median (rs |> List.map (fun r -> r.TokensPerSecond))

    {
        First = first
        CachedPerSecond = rate cached
        UncachedPerSecond = rate uncached
        Ratio =
            median (
                List.map2
                    (fun (a: GenerationResult) (b: GenerationResult) -> a.TokensPerSecond / b.TokensPerSecond)
                    cached
                    uncached
            )
    }

/// Tokens per second of greedy generation (random weights, a one-token prompt) with and
/// without the KV cache (`dsl bench --generate`).
let private generation (g: Graph) (model: GraphModule) (tokens: int) rounds json =
    Benchmark.UseAllCores() |> ignore

    let vocabulary =
        match g.Nodes[snd g.Outputs.Head].Shape with
        | [ _; _; Known v ] -> v
        | s -> fail "dsl bench --generate: model '%s' gives %s, not logits [B, T, V]" g.Name (showShape s)

    let t = timeGeneration model vocabulary [| 0L |] tokens rounds
    let first = t.First

    let rate cached =
        if cached then t.CachedPerSecond else t.UncachedPerSecond

    let ratio = t.Ratio

    let generated = first.Tokens.Count

    if json then
        let o =
            [
                "model", box g.Name
                "tokens", box generated
                "threads", box (torch.get_num_threads ())
                "rounds", box rounds
                "cached_tokens_per_s", box (rate true)
                "uncached_tokens_per_s", box (rate false)
                "ratio_cached_over_uncached", box ratio
            ]

        printfn "%s" (jsonLine o)
    else
        printfn
            "%s, %s after a 1-token prompt, %s: with KV cache %.1f tokens/s, without %.1f tokens/s, cached/uncached %.2f (median of %s)"
            g.Name
            (plural generated "new token")
            (plural (torch.get_num_threads ()) "thread")
            (rate true)
            (rate false)
            ratio
            (plural rounds "alternating round")

    0

/// The timed training step's loss (`dsl bench`, an experiment's compare stage): the train
/// block's image–text objective when it has one (CLIP's InfoNCE, or CatLIP's BCE against random
/// multi-hot targets); cross-entropy against random labels for a classifier (one output
/// [B, classes]), as bench/Dsl.Bench does for the hand-written reference; otherwise the mean
/// square of every output.
let trainStepLoss
    (c: Compiler.Checked)
    (g: Graph)
    (batch: int)
    (device: torch.Device)
    : torch.Tensor[] -> torch.Tensor =
    let outputShape i = g.Nodes[snd g.Outputs[i]].Shape

    let output (outputs: torch.Tensor[]) name =
        outputs[List.findIndex (fun (n, _) -> n = name) g.Outputs]

    match Compiler.pickRecipe c g.Name |> Option.map (fun r -> r.Loss), outputShape 0 with
    | Some(Recipe.ClipLoss | Recipe.MobileclipLoss _), _ ->
        fun outputs ->
            ImageTextLosses.Clip(
                output outputs DualEncoder.ImageOutput,
                output outputs DualEncoder.TextOutput,
                ImageTextLosses.Scale(output outputs DualEncoder.ScaleOutput)
            )
    | Some Recipe.CatlipLoss, [ _; Known labels ] ->
        let targets =
            // About 5% of the synsets present per image, like a caption's few nouns.
            use p = torch.zeros([| int64 batch; int64 labels |], device = device).fill_ 0.05

            torch.bernoulli p

        fun outputs -> ImageTextLosses.MultiLabel(outputs[0], targets)
    | _, [ _; Known classes ] when g.Outputs.Length = 1 ->
        let labels = torch.randint (int64 classes, [| int64 batch |], device = device)

        fun outputs -> torch.nn.functional.cross_entropy (outputs[0], labels)
    | _ ->
        fun outputs ->
            outputs
            |> Array.map (fun o -> o.square().mean())
            |> Array.reduce (fun a b -> a + b)


/// Times `model` (A) against `other` (B) on the same inputs in alternating rounds
/// (PairedComparison); the ratios are B / A.
let comparePaired (model: GraphModule) (other: GraphModule) inputs loss rounds warmup repeats =
    let measure (m: GraphModule) warmup repeats =
        Benchmark.Measure((fun xs -> m.Forward xs), m, inputs, Func<_, _> loss, warmup, repeats)

    PairedComparison.Run(Func<_, _, _>(measure other), Func<_, _, _>(measure model), rounds, warmup, repeats)

/// A language model's context length (its one input is token ids [B, T]), for tokens/s and MFU.
let tokensPerExample (g: Graph) =
    match g.Inputs with
    | [ (_, id) ] ->
        match g.Nodes[id] with
        | {
              Op = Input(_, TokensInput)
              Shape = [ _; Known t ]
          } -> Some(float t)
        | _ -> None
    | _ -> None

let bench (args: ParseResults<BenchArgs>) =
    let c = checkedOrExit (args.GetResult BenchArgs.File)
    let g = modelOrExit c (args.TryGetResult BenchArgs.Model)
    let batch = args.GetResult(BenchArgs.Batch, 1)
    use model = new GraphModule(g, 0L, deviceOf (args.TryGetResult BenchArgs.Device))
    convolutionNote ()

    let inputs =
        try
            RandomInputs.For(g, int64 batch, model.Device)
        with :? ArgumentException as e ->
            fail "dsl bench: %s" e.Message

    let loss = trainStepLoss c g batch model.Device

    let measure (m: GraphModule) warmup repeats =
        Benchmark.Measure((fun xs -> m.Forward xs), m, inputs, Func<_, _> loss, warmup, repeats)

    if args.Contains BenchArgs.Generate then
        generation
            g
            model
            (args.GetResult BenchArgs.Generate)
            (args.GetResult(BenchArgs.Rounds, 5))
            (args.Contains BenchArgs.Json)
    elif args.Contains BenchArgs.Profile then
        profile g model inputs loss (args.GetResult(BenchArgs.Warmup, 3)) (args.GetResult(BenchArgs.Repeats, 10))
    elif args.Contains BenchArgs.Reparam || args.Contains BenchArgs.Against then
        // The other side: the deploy form (weights from the train form's, so both compute the
        // same function), or another model with the same inputs and outputs (a pruned one).
        // Each side's label in JSON keys, long (for latencies) and short (for ratios).
        let other, otherName, (labelA, shortA), (labelB, shortB) =
            match args.TryGetResult BenchArgs.Against with
            | Some path when not (args.Contains BenchArgs.Reparam) ->
                let oc = checkedOrExit path
                let og = modelOrExit oc (args.TryGetResult BenchArgs.Against_Model)

                let shapes (x: Graph) (ends: (string * int) list) =
                    ends |> List.map (fun (_, i) -> x.Nodes[i].Shape)

                if
                    shapes g g.Inputs <> shapes og og.Inputs
                    || shapes g g.Outputs <> shapes og og.Outputs
                then
                    fail
                        "dsl bench --against: %s's model '%s' does not take and give what '%s' does"
                        path
                        og.Name
                        g.Name

                new GraphModule(og, 0L, model.Device), og.Name, ("other", "other"), ("model", "model")
            | Some _ -> fail "dsl bench: --reparam and --against exclude each other"
            | None ->
                Dsl.Runtime.Transforms.WeightMapEvaluator.Reparameterize model,
                g.Name,
                ("deploy_form", "deploy"),
                ("train_form", "train")

        use other = other
        convolutionNote ()
        let rounds = args.GetResult(BenchArgs.Rounds, 10)
        let repeats = args.GetResult(BenchArgs.Repeats, 5)

        let paired =
            comparePaired model other inputs loss rounds (args.GetResult(BenchArgs.Warmup, 3)) repeats

        if args.Contains BenchArgs.Json then
            let o =
                [
                    "model", box g.Name
                    "other", box otherName
                    "batch", box batch
                    "threads", box paired.FirstRound.Threads
                    "conv_backend", box paired.FirstRound.ConvBackend
                    "rounds", box rounds
                    "repeats", box repeats
                    labelB + "_params", box (paramCount g)
                    labelA + "_params", box (paramCount other.Graph)
                    "forward_" + labelB + "_ms", box paired.ForwardB
                    "forward_" + labelA + "_ms", box paired.ForwardA
                    "forward_ratio_" + shortA + "_over_" + shortB, box paired.ForwardRatio
                    "train_step_" + labelB + "_ms", box paired.TrainStepB
                    "train_step_" + labelA + "_ms", box paired.TrainStepA
                    "train_step_ratio_" + shortA + "_over_" + shortB, box paired.TrainStepRatio
                ]

            printfn "%s" (jsonLine o)
        else
            printfn
                "%s, batch %d, %s, %s convolutions: forward %s %.3f ms, %s %.3f ms, ratio %.3f; train step ratio %.3f (median of %s of %d)"
                g.Name
                batch
                (plural paired.FirstRound.Threads "thread")
                paired.FirstRound.ConvBackend
                labelB
                paired.ForwardB
                (if labelA = "other" then otherName else labelA)
                paired.ForwardA
                paired.ForwardRatio
                paired.TrainStepRatio
                (plural rounds "alternating round")
                repeats

        0
    else
        let result =
            measure model (args.GetResult(BenchArgs.Warmup, 5)) (args.GetResult(BenchArgs.Repeats, 30))

        if args.Contains BenchArgs.Json then
            printfn "%s" (result.ToJson(g.Name, int64 batch))
        else
            printfn
                "%s, batch %d, %s: forward %.3f ms (p10 %.3f, p90 %.3f); train step %.3f ms (p10 %.3f, p90 %.3f); median of %d"
                g.Name
                batch
                (plural result.Threads "thread")
                result.Forward.MedianMs
                result.Forward.P10Ms
                result.Forward.P90Ms
                result.TrainStep.MedianMs
                result.TrainStep.P10Ms
                result.TrainStep.P90Ms
                result.Repeats

            // A language model: tokens/s and model FLOPs utilisation (2·N per token forward, 6·N
            // a training step) against a matmul peak measured now, on the same threads.
            match tokensPerExample g with
            | Some t ->
                let peak = MatmulPeak.FlopsPerSecond()
                let forward = float batch * t * 1000.0 / result.Forward.MedianMs
                let train = float batch * t * 1000.0 / result.TrainStep.MedianMs

                printfn
                    "%.0f tokens/s forward (MFU %.1f%%), %.0f tokens/s training (MFU %.1f%%) of a measured %.1f GFLOP/s matmul peak"
                    forward
                    (100.0 * MatmulPeak.Utilisation(paramCount g, forward, peak, false))
                    train
                    (100.0 * MatmulPeak.Utilisation(paramCount g, train, peak, true))
                    (peak / 1e9)
            | None -> ()

        0
