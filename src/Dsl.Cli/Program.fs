/// `dsl`: parses the command line and maps every kind of failure to one clear message and an
/// exit code — 1 for a user's mistake (bad source, data, checkpoint or arguments), 2 for bad usage,
/// 70 for an internal error (with its location, since that one is ours to fix).
module Dsl.Cli.Program

open System
open Argu
open Dsl.Cli.Args
open Dsl.Cli.Report

let private version () =
    printfn "dsl %s" (Reflection.Assembly.GetExecutingAssembly().GetName().Version.ToString(3))
    0

let private run (parser: ArgumentParser<DslArgs>) (args: ParseResults<DslArgs>) =
    match args.TryGetSubCommand() with
    | None when args.Contains Version -> version ()
    | None -> raise (UsageError("ERROR: no valid subcommand has been specified.\n" + parser.PrintUsage()))
    | Some(Check a) -> Show.check a
    | Some(Show a) -> Show.show a
    | Some(Train a) -> Run.train a
    | Some(Eval a) -> Run.eval a
    | Some(Predict a) -> Run.predict a
    | Some(Generate a) -> Generate.run a
    | Some(Bench a) -> Run.bench a
    | Some(Transform a) -> Transform.run a
    | Some(Reinforce a) -> ImageText.reinforce a
    | Some(Data a) -> Data.run a
    | Some(Export a) -> Export.run a
    | Some(Import a) -> Import.run a
    | Some(Run a) -> Experiments.Runner.command a
    | Some Version -> version ()

let rec private userMessage (e: exn) =
    match e with
    | UserError msg -> Some msg
    | :? Dsl.Runtime.Emit.ModelTooLargeError as e ->
        Some(Dsl.Diagnostics.format (Dsl.Diagnostics.diagnostic e.Span e.Message))
    | :? Dsl.Runtime.Data.DataError
    | :? Dsl.Runtime.Checkpoints.CheckpointError
    | :? Dsl.Runtime.Checkpoints.OutputFolderError
    | :? Dsl.Runtime.Interop.InteropError
    | :? Dsl.Runtime.Emit.ShapeMismatchError
    | :? Dsl.Runtime.Generation.DecodingError -> Some("error: " + e.Message)
    | :? IO.FileNotFoundException as f -> Some(sprintf "%s: error: no such file" f.FileName)
    | :? IO.DirectoryNotFoundException
    | :? UnauthorizedAccessException
    | :? IO.IOException -> Some("error: " + e.Message)
    | :? AggregateException as a when a.InnerExceptions.Count = 1 -> userMessage a.InnerException
    | _ -> None

/// A test seam for the fault-injection suite: with DSL_TEST_KILL_AT_WRITE=N the process kills
/// itself (SIGKILL: no finally block, no flush) just before its N-th durable write, the point
/// a crash or power cut would hit. Unset, nothing is installed.
let private installFaultInjection () =
    match Environment.GetEnvironmentVariable "DSL_TEST_KILL_AT_WRITE" with
    | null
    | "" -> ()
    | text ->
        let at = int text
        let mutable writes = 0

        Dsl.Runtime.Checkpoints.DurableFile.BeforeWrite <-
            Action<string>(fun _ ->
                writes <- writes + 1

                if writes = at then
                    Diagnostics.Process.GetCurrentProcess().Kill())

[<EntryPoint>]
let main argv =
    installFaultInjection ()
    let parser = ArgumentParser.Create<DslArgs>(programName = "dsl")

    // Off a terminal Spectre.Console assumes 80 columns and wraps tables (`dsl show > file`);
    // a file or pipe has no width, so lines stay whole.
    if Console.IsOutputRedirected then
        Spectre.Console.AnsiConsole.Profile.Width <- 4096

    try
        run parser (parser.ParseCommandLine(CommandLine.prepare parser argv, raiseOnUsage = true))
    with
    | UsageError msg ->
        eprintfn "%s" msg
        2
    | :? ArguParseException as e ->
        match e.ErrorCode with
        | ErrorCode.HelpText ->
            printfn "%s" e.Message
            0
        | _ ->
            eprintfn "%s" e.Message
            2
    | e ->
        match userMessage e with
        | Some msg ->
            eprintfn "%s" msg
            1
        | None ->
            let frame = Diagnostics.StackTrace(e, true).GetFrame 0

            let where =
                if isNull frame then
                    "unknown"
                else
                    sprintf "%s" (frame.GetMethod().DeclaringType.FullName + "." + frame.GetMethod().Name)

            eprintfn "internal error: %s: %s (at %s)" (e.GetType().Name) e.Message where
            eprintfn "this is a bug in dsl; please report it with the command you ran"
            70
