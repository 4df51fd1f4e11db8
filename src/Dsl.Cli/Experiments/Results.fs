/// An experiment's results on disk: results.jsonl (one line per stage), each declared table as
/// .tsv and .md, each plot as .png (ScottPlot, in-process). Every file is written atomically.
module Dsl.Cli.Experiments.Results

open Dsl.Cli
open System
open System.IO
open System.Text.Json
open Dsl
open Dsl.Values
open Dsl.Experiment
open Dsl.Runtime.Checkpoints
open Dsl.Runtime.Reports
open Dsl.Cli.Experiments.Store
open Dsl.Cli.Report

type Outcome =
    | Ran of StageResult
    | Cached of StageResult
    /// The message, and the path of the stage's log.
    | Failed of string * string
    /// Not run: a stage it uses failed.
    | Blocked of string

let resultOf outcome =
    match outcome with
    | Ran r
    | Cached r -> Some r
    | Failed _
    | Blocked _ -> None

let private jsonOptions =
    JsonSerializerOptions(NumberHandling = Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals)

/// One line per stage, in plan order: name, key, parameters, metrics, seconds, status.
let writeJsonl (path: string) (lines: (Stage * string * Outcome option) list) =
    let line (s: Stage, key: string, o: Outcome option) =
        let status, extra =
            match o with
            | Some(Ran r) -> "ran", [ "metrics", box (dict r.Metrics); "seconds", box r.Seconds ]
            | Some(Cached r) -> "cached", [ "metrics", box (dict r.Metrics); "seconds", box r.Seconds ]
            | Some(Failed(msg, log)) -> "failed", [ "error", box msg; "log", box log ]
            | Some(Blocked u) -> "blocked", [ "blocked_by", box u ]
            | None -> "pending", []

        JsonSerializer.Serialize(
            dict (
                [
                    "name", box s.Name
                    "kind", box s.Kind
                    "key", box key
                    "model", box (s.Model |> Option.map (fun m -> m.Name) |> Option.toObj)
                    "parameters", box (dict [ for n, v in s.Settings -> n, show v ])
                    "status", box status
                ]
                @ extra
            ),
            jsonOptions
        )

    DurableFile.WriteAllText(path, (lines |> List.map line |> String.concat "\n") + "\n")

/// A cell's value once the stages are done: a number, a string, or a stage's metric.
type Cell =
    | Number of float * isInt: bool
    | Text of string
    | Missing of string

/// What a cell reads once the stages are done: each stage's outcome, and a training's logged
/// series from the metrics.jsonl of its run in the store.
type Done =
    {
        Outcomes: string -> Outcome option
        Series: Dsl.Experiment.Stage -> string -> Result<(float * float) list, string>
    }

let doneIn (root: string) (outcomes: string -> Outcome option) =
    // A log is read once per series, however many cells (a curve, several stepsTo) read it.
    let read =
        Collections.Generic.Dictionary<string * string, Result<(float * float) list, string>>()

    let series (st: Dsl.Experiment.Stage) metric =
        match outcomes st.Name |> Option.bind resultOf with
        | Some r ->
            let path = Path.Combine(Store(root).Dir r.Key, "run", OutputFolder.MetricsFile)

            if File.Exists path then
                Ok
                    [
                        for struct (step, v) in Dsl.Runtime.Training.MetricsLog.ReadSeries(path, metric) ->
                            float step, v
                    ]
            else
                Error(sprintf "'%s' has no training log" st.Name)
        | None -> Error(sprintf "'%s' did not finish" st.Name)

    {
        Outcomes = outcomes
        Series =
            fun st metric ->
                match read.TryGetValue((st.Name, metric)) with
                | true, r -> r
                | _ ->
                    let r = series st metric
                    read[(st.Name, metric)] <- r
                    r
    }

let rec private cellOf (d: Done) (v: Value) =
    match v with
    | VNum(x, isInt) -> Number(x, isInt)
    | VStr s -> Text s
    | VBool b -> Text(if b then "true" else "false")
    | VHost(:? Dsl.Experiment.Stage as s, _) -> Text s.Name
    | VHost(:? Cell as c, _) -> c
    | VHost(:? MetricRef as m, _) ->
        match d.Outcomes m.Stage.Name |> Option.bind resultOf with
        | Some r ->
            match r.Metrics |> List.tryFind (fun (n, _) -> n = m.Metric) with
            | Some(_, x) -> Number(x, false)
            | None -> Missing(sprintf "'%s' reported no %s" m.Stage.Name m.Metric)
        | None -> Missing(sprintf "'%s' did not finish" m.Stage.Name)
    | VHost(:? StepsTo as t, _) ->
        match cellOf d t.Target, d.Series t.Stage t.Metric with
        | Missing m, _
        | _, Error m -> Missing m
        | Number(target, _), Ok points ->
            match points |> List.tryFind (fun (_, y) -> y <= target) with
            | Some(step, _) -> Number(step, true)
            | None -> Text "never"
        | Text t, _ -> Missing(sprintf "stepsTo: the target is %s, not a number" t)
    | VHost(:? Derived as dv, _) ->
        let args = dv.Args |> List.map (cellOf d)

        match
            args
            |> List.tryPick (function
                | Missing m -> Some m
                | _ -> None)
        with
        | Some m -> Missing m
        | None ->
            let values =
                args
                |> List.map (function
                    | Number(x, isInt) -> VNum(x, isInt)
                    | Text t -> VStr t
                    | Missing _ -> VError)

            try
                cellOf d (evalDerived dv values)
            with Diagnostics.DslError ds ->
                Missing(ds |> List.map (fun x -> x.Message) |> String.concat "; ")
    | other -> Text(show other)

/// The rows of a table or plot as records: a curve's rows read from its training's log (one
/// row per logged step; a curve not yet readable is one row of what is missing).
let private rowsOf (d: Done) (rows: Row list) : (string * Value) list list =
    rows
    |> List.collect (function
        | Fields fs -> [ fs ]
        | CurveRows c ->
            match d.Series c.Stage c.Metric with
            | Ok points ->
                [
                    for step, y in points -> c.Fields @ [ "step", VNum(step, true); c.Column, VNum(y, false) ]
                ]
            | Error m ->
                let missing = VHost(box (Missing m), "missing")
                [ c.Fields @ [ "step", missing; c.Column, missing ] ])

let private cellText (c: Cell) =
    match c with
    | Number(x, true) -> string (int64 x)
    | Number(x, false) when Double.IsNaN x -> "NaN"
    | Number(x, false) ->
        let digits =
            if abs x >= 100.0 then "0.##"
            elif abs x >= 1.0 then "0.####"
            else "0.######"

        x.ToString(digits, Globalization.CultureInfo.InvariantCulture)
    | Text s -> s
    | Missing _ -> "—"

/// Where a table or plot goes: the store, and its declared folder (docs/) only when nothing in
/// it is missing, so a failed stage never replaces a published table with dashes.
let private targets (root: string) (file: string) (dir: string option) (complete: bool) (name: string) (ext: string) =
    let dir = if complete then dir else None

    Path.Combine(root, name + ext)
    :: (dir
        |> Option.map (fun d ->
            let folder = Path.GetFullPath(Session.relativeTo file d)
            Directory.CreateDirectory folder |> ignore
            Path.Combine(folder, name + ext))
        |> Option.toList)

/// Whether a table or plot may replace the file at `path`: it is absent, or shaped as the ones
/// `dsl run` writes (a .md that is one table and nothing else, a .tsv of equally wide rows, a
/// PNG image). A hand-written page that shares a table's name is never replaced.
let private replaceable (path: string) =
    let nonEmpty () =
        File.ReadAllLines path |> Array.filter (fun l -> l.Trim() <> "")

    if not (File.Exists path) then
        true
    else
        match Path.GetExtension path with
        | ".md" -> nonEmpty () |> Array.forall (fun l -> l.StartsWith "|")
        | ".tsv" ->
            let lines = nonEmpty ()

            lines.Length > 0
            && lines
               |> Array.forall (fun l -> l.Split('\t').Length = lines[0].Split('\t').Length)
        | ".png" ->
            use f = File.OpenRead path
            let head = Array.zeroCreate<byte> 8

            f.Read(head, 0, 8) = 8
            && head = [| 137uy; 80uy; 78uy; 71uy; 13uy; 10uy; 26uy; 10uy |]
        | _ -> false

/// Refuses, before any stage runs, a table or plot whose copy in its declared folder would
/// replace a file that `dsl run` did not write (docs/mobileclip.md, a page, once had a table's name).
let checkPublished (file: string) (e: Experiment) =
    let declared =
        [
            for t in e.Tables do
                for ext in [ ".tsv"; ".md" ] -> t.Name, t.Dir, t.Span, ext
            for p in e.Plots -> p.Name, p.Dir, p.Span, ".png"
        ]

    for name, dir, span, ext in declared do
        dir
        |> Option.iter (fun d ->
            let path = Path.Combine(Path.GetFullPath(Session.relativeTo file d), name + ext)

            if not (replaceable path) then
                fail
                    "%s:%d:%d: error: '%s' would replace %s, which is not a table or plot dsl run writes; rename it or move the file"
                    span.File
                    span.Start.Line
                    span.Start.Col
                    name
                    (Path.GetRelativePath(Environment.CurrentDirectory, path)))

/// Writes the table's .tsv and .md; gives the paths, and what is missing from it.
let writeTable root file (outcomes: string -> Outcome option) (t: Table) =
    let d = doneIn root outcomes

    let rows =
        rowsOf d t.Rows
        |> List.map (fun r ->
            t.Columns
            |> List.map (fun c -> r |> List.find (fun (n, _) -> n = c) |> snd |> cellOf d))

    let missing =
        rows
        |> List.collect (
            List.choose (function
                | Missing m -> Some m
                | _ -> None)
        )

    let tsv =
        (String.concat "\t" t.Columns
         :: (rows |> List.map (List.map cellText >> String.concat "\t")))
        |> String.concat "\n"

    let md =
        [
            "| " + String.concat " | " t.Columns + " |"
            "|" + String.replicate t.Columns.Length "---|"
        ]
        @ (rows
           |> List.map (fun r -> "| " + (r |> List.map cellText |> String.concat " | ") + " |"))
        |> String.concat "\n"

    let written =
        [
            for path in targets root file t.Dir missing.IsEmpty t.Name ".tsv" do
                DurableFile.WriteAllText(path, tsv + "\n")
                yield path
            for path in targets root file t.Dir missing.IsEmpty t.Name ".md" do
                DurableFile.WriteAllText(path, md + "\n")
                yield path
        ]

    written, List.distinct missing

/// Draws the plot: one series per value of its series column (in order of appearance).
let writePlot root file (outcomes: string -> Outcome option) (p: Plot) =
    let d = doneIn root outcomes

    let value (r: (string * Value) list) col =
        r |> List.find (fun (n, _) -> n = col) |> snd |> cellOf d

    let points =
        rowsOf d p.Rows
        |> List.map (fun r ->
            let series =
                match p.Series with
                | Some s -> cellText (value r s)
                | None -> p.Y

            series, value r p.X, value r p.Y)

    let missing =
        points
        |> List.collect (fun (_, x, y) ->
            [ x; y ]
            |> List.choose (function
                | Missing m -> Some m
                | _ -> None))
        |> List.distinct

    let number c =
        match c with
        | Number(x, _) -> x
        | _ -> Double.NaN

    // Bars stand over categories: the x column's values in order of appearance (text or numbers).
    let categories =
        if p.Kind = "bar" then
            points
            |> List.choose (fun (_, x, _) ->
                match x with
                | Missing _ -> None
                | c -> Some(cellText c))
            |> List.distinct
        else
            []

    let xOf c =
        if p.Kind = "bar" then
            match c with
            | Missing _ -> Double.NaN
            | c -> float (List.findIndex ((=) (cellText c)) categories)
        else
            number c

    let points = points |> List.map (fun (s, x, y) -> s, Number(xOf x, false), y)

    let complete =
        points
        |> List.filter (fun (_, x, y) -> not (Double.IsNaN(number x) || Double.IsNaN(number y)))

    if complete.IsEmpty then
        [], (if missing.IsEmpty then [ "no points to draw" ] else missing)
    else
        let series =
            complete
            |> List.map (fun (s, _, _) -> s)
            |> List.distinct
            |> List.map (fun s ->
                let pts = complete |> List.filter (fun (n, _, _) -> n = s)

                PlotSeries(
                    s,
                    pts |> List.map (fun (_, x, _) -> number x) |> Array.ofList,
                    pts |> List.map (fun (_, _, y) -> number y) |> Array.ofList
                ))

        let spec =
            PlotSpec(
                Title = (if p.Title = "" then p.Name else p.Title),
                XLabel = p.XLabel,
                YLabel = p.YLabel,
                Kind =
                    (match p.Kind with
                     | "bar" -> PlotKind.Bar
                     | "scatter" -> PlotKind.Scatter
                     | _ -> PlotKind.Line),
                LogX = p.LogX,
                LogY = p.LogY,
                Series = ResizeArray series,
                Categories = (if p.Kind = "bar" then ResizeArray categories else null)
            )

        let written =
            [
                for path in targets root file p.Dir (List.isEmpty missing) p.Name ".png" do
                    PlotWriter.Write(spec, path)
                    yield path
            ]

        written, missing
