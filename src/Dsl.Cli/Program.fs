/// `dsl`: parses the command line and maps every kind of failure to one clear message and an
/// exit code — 1 for a user's mistake (bad source, data, checkpoint or arguments), 2 for bad usage,
/// 70 for an internal error (with its location, since that one is ours to fix).
module Dsl.Cli.Program

open System
open Argu
open Dsl.Cli.Args
open Dsl.Cli.Report

let private run (args: ParseResults<DslArgs>) =
    match args.GetSubCommand() with
    | Check a -> Show.check a
    | Show a -> Show.show a
    | Train a -> Run.train a
    | Eval a -> Run.eval a
    | Predict a -> Run.predict a
    | Generate a -> Generate.run a
    | Bench a -> Run.bench a
    | Transform a -> Transform.run a
    | Reinforce a -> ImageText.reinforce a
    | Data a -> Data.run a
    | Version ->
        printfn "dsl %s" (Reflection.Assembly.GetExecutingAssembly().GetName().Version.ToString(3))
        0

let rec private userMessage (e: exn) =
    match e with
    | UserError msg -> Some msg
    | :? Dsl.Runtime.Emit.ModelTooLargeError as e ->
        Some(Dsl.Diagnostics.format (Dsl.Diagnostics.diagnostic e.Span e.Message))
    | :? Dsl.Runtime.Data.DataError
    | :? Dsl.Runtime.Checkpoints.CheckpointError
    | :? Dsl.Runtime.Emit.ShapeMismatchError
    | :? Dsl.Runtime.Generation.DecodingError -> Some("error: " + e.Message)
    | :? IO.FileNotFoundException as f -> Some(sprintf "%s: error: no such file" f.FileName)
    | :? IO.DirectoryNotFoundException
    | :? UnauthorizedAccessException
    | :? IO.IOException -> Some("error: " + e.Message)
    | :? AggregateException as a when a.InnerExceptions.Count = 1 -> userMessage a.InnerException
    | _ -> None

[<EntryPoint>]
let main argv =
    let parser = ArgumentParser.Create<DslArgs>(programName = "dsl")

    try
        run (parser.ParseCommandLine(argv, raiseOnUsage = true))
    with
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
