/// How the CLI talks to people: diagnostics to stderr in the compiler's format, one-line errors
/// for bad files and data, and exit codes (0 ok, 1 user error, 2 usage, 70 internal error).
module Dsl.Cli.Report

open System
open Dsl

exception UserError of string

/// A command line that cannot be run as given (exit code 2), found before Argu parses it.
exception UsageError of string

let fail fmt =
    Printf.ksprintf (fun s -> raise (UserError s)) fmt

let printDiagnostics (ds: Diagnostics.Diagnostic list) =
    for d in ds do
        eprintfn "%s" (Diagnostics.format d)

    if ds.Length > 1 then
        eprintfn "%d errors" ds.Length

/// Loads and checks a file; on any diagnostic prints them all and stops with exit code 1.
let checkedOrExit (path: string) : Compiler.Checked =
    let c = Compiler.checkFile path

    if not c.Diagnostics.IsEmpty then
        printDiagnostics c.Diagnostics
        exit 1

    c

let modelOrExit (c: Compiler.Checked) (name: string option) =
    let name =
        match name, c.Recipes with
        | None, r :: _ -> Some r.Model
        | n, _ -> n

    match Compiler.pickModel c name with
    | Ok g -> g
    | Error msg -> raise (UserError msg)

/// "1 epoch", "2 epochs", "0 steps": the plural only when the count is not 1.
let inline plural count (noun: string) =
    let n = int64 count

    if n = 1L then
        sprintf "1 %s" noun
    else
        sprintf "%s %ss" (n.ToString "N0") noun

let mutable private convolutionNoted = false

/// Once per process, when the model's convolutions made the runtime switch oneDNN off: training
/// and timings are then several times slower, and the shape that did it is what to change.
let convolutionNote () =
    match Dsl.Runtime.Emit.ConvolutionBackend.DisabledBecause with
    | null -> ()
    | _ when convolutionNoted -> ()
    | why ->
        convolutionNoted <- true

        eprintfn
            "note: convolutions run on libtorch's im2col path, several times slower to train than oneDNN, which is off: %s"
            why

/// A result as one line of JSON. JSON has no NaN or infinity (System.Text.Json refuses them): such
/// a number, e.g. the loss of a diverged model, is written as null and named on stderr.
let jsonLine (fields: (string * obj) seq) =
    let o = Collections.Generic.Dictionary<string, obj>()

    for name, value in fields do
        let finite =
            match value with
            | :? float as v -> Double.IsFinite v
            | :? float32 as v -> Single.IsFinite v
            | _ -> true

        if finite then
            o[name] <- value
        else
            eprintfn "warning: %s is %O, not a number JSON can hold; written as null" name value
            o[name] <- null

    Text.Json.JsonSerializer.Serialize o

/// One line of every metric: shares (accuracy, mIoU, recall, …) as percentages, the rest
/// (losses, perplexity, RMSE, …) as numbers.
let metricsLine (e: Dsl.Runtime.Training.EvalResult) =
    let metrics =
        e.Metrics()
        |> Seq.map (fun struct (name, value) ->
            if e.IsShare name then
                sprintf "%s %.2f%%" name (100.0 * value)
            elif name = "perplexity" then
                sprintf "perplexity %.2f" value
            else
                sprintf "%s %.4f" name value)

    System.String.Join(", ", metrics)

/// Whether an evaluation is a plain classifier's (loss, accuracy, top-5 and nothing else).
let isClassification (e: Dsl.Runtime.Training.EvalResult) =
    e.Extra.Count = 0 && not (System.Double.IsNaN e.Accuracy)
