/// Diagnostics in the one format every phase uses: `file:line:col: error: message`, then the
/// source line and a caret under the column. A user mistake is always one of these, never a
/// .NET stack trace.
module Dsl.Diagnostics

open System
open System.IO
open Dsl.Syntax

/// An error stops the command (exit 1); a warning is printed and the command goes on.
[<RequireQualifiedAccess>]
type Severity =
    | Error
    | Warning

type Diagnostic =
    {
        Span: Span
        Message: string
        Severity: Severity
    }

/// Raised by a phase that cannot go on; carries one or more located diagnostics.
exception DslError of Diagnostic list

let diagnostic span message =
    {
        Span = span
        Message = message
        Severity = Severity.Error
    }

let warning span message =
    {
        Span = span
        Message = message
        Severity = Severity.Warning
    }

let error span message =
    raise (DslError [ diagnostic span message ])

let errorf span fmt = Printf.ksprintf (error span) fmt

/// Source text by file name, so a diagnostic can quote its line. Files register themselves
/// when they are read (including the embedded library).
let private sources =
    Collections.Concurrent.ConcurrentDictionary<string, string[]>()

let registerSource (file: string) (text: string) =
    sources[file] <- text.Replace("\r\n", "\n").Split('\n')

let private sourceLine (span: Span) =
    match sources.TryGetValue span.File with
    | true, lines when span.Start.Line >= 1 && span.Start.Line <= lines.Length -> Some lines[span.Start.Line - 1]
    | _ ->
        if File.Exists span.File then
            let lines = File.ReadAllLines span.File

            if span.Start.Line >= 1 && span.Start.Line <= lines.Length then
                Some lines[span.Start.Line - 1]
            else
                None
        else
            None

let format (d: Diagnostic) =
    let severity =
        match d.Severity with
        | Severity.Error -> "error"
        | Severity.Warning -> "warning"

    let head =
        if d.Span.Start.Line = 0 then
            sprintf "%s: %s: %s" d.Span.File severity d.Message
        else
            sprintf "%s:%d:%d: %s: %s" d.Span.File d.Span.Start.Line d.Span.Start.Col severity d.Message

    match sourceLine d.Span with
    | Some line ->
        let caretWidth =
            if d.Span.End.Line = d.Span.Start.Line && d.Span.End.Col > d.Span.Start.Col then
                d.Span.End.Col - d.Span.Start.Col
            else
                1

        let pad = String(' ', max 0 (d.Span.Start.Col - 1))

        sprintf
            "%s\n  %s\n  %s%s"
            head
            (line.TrimEnd())
            pad
            (String('^', max 1 (min caretWidth (line.Length - d.Span.Start.Col + 1))))
    | None -> head

/// Levenshtein distance, for "did you mean" suggestions.
let private distance (a: string) (b: string) =
    let d = Array2D.zeroCreate (a.Length + 1) (b.Length + 1)

    for i in 0 .. a.Length do
        d[i, 0] <- i

    for j in 0 .. b.Length do
        d[0, j] <- j

    for i in 1 .. a.Length do
        for j in 1 .. b.Length do
            let cost =
                if Char.ToLowerInvariant a[i - 1] = Char.ToLowerInvariant b[j - 1] then
                    0
                else
                    1

            d[i, j] <- min (min (d[i - 1, j] + 1) (d[i, j - 1] + 1)) (d[i - 1, j - 1] + cost)

    d[a.Length, b.Length]

/// The closest candidate within a third of the name's length, if any.
let suggest (name: string) (candidates: string seq) =
    candidates
    |> Seq.map (fun c -> c, distance name c)
    |> Seq.filter (fun (_, d) -> d <= max 1 (name.Length / 3))
    |> Seq.sortBy snd
    |> Seq.tryHead
    |> Option.map fst

let didYouMean name candidates =
    match suggest name candidates with
    | Some c -> sprintf "; did you mean '%s'?" c
    | None -> ""
