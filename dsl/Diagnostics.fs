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

/// Notes follow the diagnostic, each located like it: the calls of language functions that led
/// to an error inside a library, outermost first (`in the call of residual`).
type Diagnostic =
    {
        Span: Span
        Message: string
        Severity: Severity
        Notes: (Span * string) list
    }

/// Raised by a phase that cannot go on; carries one or more located diagnostics.
exception DslError of Diagnostic list

let diagnostic span message =
    {
        Span = span
        Message = message
        Severity = Severity.Error
        Notes = []
    }

let warning span message =
    {
        Span = span
        Message = message
        Severity = Severity.Warning
        Notes = []
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
        // Only a located span quotes a line, and only from a plausible source file: a span on
        // /dev/zero (length 0, endless) or a huge file must not be read to quote it.
        if
            span.Start.Line >= 1
            && File.Exists span.File
            && (let n = FileInfo(span.File).Length in n > 0L && n <= 4L * 1024L * 1024L)
        then
            let lines = File.ReadAllLines span.File

            if span.Start.Line >= 1 && span.Start.Line <= lines.Length then
                Some lines[span.Start.Line - 1]
            else
                None
        else
            None

let private formatAt (kind: string) (span: Span) (message: string) =
    let head =
        if span.Start.Line = 0 then
            sprintf "%s: %s: %s" span.File kind message
        else
            sprintf "%s:%d:%d: %s: %s" span.File span.Start.Line span.Start.Col kind message

    match sourceLine span with
    | Some line ->
        let caretWidth =
            if span.End.Line = span.Start.Line && span.End.Col > span.Start.Col then
                span.End.Col - span.Start.Col
            else
                1

        let pad = String(' ', max 0 (span.Start.Col - 1))

        sprintf
            "%s\n  %s\n  %s%s"
            head
            (line.TrimEnd())
            pad
            (String('^', max 1 (min caretWidth (line.Length - span.Start.Col + 1))))
    | None -> head

let format (d: Diagnostic) =
    let severity =
        match d.Severity with
        | Severity.Error -> "error"
        | Severity.Warning -> "warning"

    formatAt severity d.Span d.Message
    :: (d.Notes |> List.map (fun (s, m) -> formatAt "note" s m))
    |> String.concat "\n"

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
