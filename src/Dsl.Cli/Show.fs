/// `dsl check` and `dsl show`: the compiler's view of a file, without touching a tensor.
module Dsl.Cli.Show

open System
open Argu
open Spectre.Console
open Dsl
open Dsl.Ir
open Dsl.Cli.Args
open Dsl.Cli.Report

let check (args: ParseResults<CheckArgs>) =
    let path = args.GetResult CheckArgs.File
    let c = checkedOrExit path

    for w in c.Warnings do
        eprintfn "%s" (Dsl.Diagnostics.format w)

    for name, g in c.Models do
        printfn
            "model %s: %s, %s parameters"
            name
            (plural (g.Nodes.Length - g.Inputs.Length) "layer")
            ((paramCount g).ToString("N0"))

    for m in c.Defs |> List.filter Dsl.Elaborate.isFamily do
        if m.Span.File = path then
            printfn
                "model family %s: parameters %s"
                m.Name
                (m.Params
                 |> List.map (function
                     | Dsl.Syntax.PVar(n, _) -> n
                     | Dsl.Syntax.POpt(n, _, _) -> sprintf "(%s = …)" n)
                 |> String.concat " ")

    for r in c.Recipes do
        printfn "train %s: %s, %s, %s, batch %d" r.Model r.Data.Kind r.Optimizer.Kind (plural r.Epochs "epoch") r.Batch

    // Every instance an experiment uses is elaborated here, so its shapes are checked too.
    match Dsl.Experiment.check c c.ExperimentDefs with
    | _, (_ :: _ as ds) ->
        printDiagnostics ds
        1
    | experiments, [] ->
        for e in experiments do
            printfn
                "experiment %s: %s, %s, %s"
                e.Name
                (plural e.Stages.Length "stage")
                (plural e.Tables.Length "table")
                (plural e.Plots.Length "plot")

        printfn "%s: ok" path
        0

let private opName (op: Op) =
    match op with
    | Input(n, _) -> "input " + n
    | Conv c ->
        sprintf
            "conv%dd %d→%d k%s s%s%s"
            c.Dims
            c.InChannels
            c.OutChannels
            (c.Kernel |> List.map string |> String.concat "×")
            (c.Stride |> List.map string |> String.concat "×")
            (if c.Groups > 1 then sprintf " g%d" c.Groups else "")
    | Linear(i, o, _) -> sprintf "linear %d→%d" i o
    | SelfAttention a ->
        sprintf
            "attention %d heads%s%s%s%s"
            a.Heads
            (if a.KvHeads <> a.Heads then
                 sprintf " (%d kv)" a.KvHeads
             else
                 "")
            (if a.Causal then " causal" else "")
            (if a.Rope > 0.0 then " rope" else "")
            (if a.QkNorm then " qk-norm" else "")
    | other -> opKind other

let table (g: Graph) =
    let t = Table().Border(TableBorder.Simple)
    t.AddColumn("path") |> ignore
    t.AddColumn("op") |> ignore
    t.AddColumn("output") |> ignore
    t.AddColumn(TableColumn("params").RightAligned()) |> ignore
    t.AddColumn(TableColumn("MACs").RightAligned()) |> ignore
    let paramsOf = nodeParamCounts g

    // Counts are checked 64-bit sums: one too large to hold is shown as such, not wrapped.
    let count blankZero (f: unit -> int64) =
        try
            let n = f ()
            if n = 0L && blankZero then "" else n.ToString("N0")
        with :? OverflowException ->
            "> 9.2e18"

    for n in g.Nodes do
        let ps = paramsOf n

        t.AddRow(
            Markup.Escape(if n.Path = "" then "·" else n.Path),
            Markup.Escape(opName n.Op),
            Markup.Escape(showShape n.Shape),
            (if ps = 0L then "" else ps.ToString("N0")),
            count true (fun () -> macs n)
        )
        |> ignore

    t.AddRow("[bold]total[/]", "", "", count false (fun () -> paramCount g), count false (fun () -> Ir.totalMacs g))
    |> ignore

    t

/// `dsl show --groups`: one paragraph per dependency group: its kind, how many units it has,
/// whether it can shrink, and the parameter axes that shrink with it (`name:axis`).
let groups (g: Graph) =
    let all = Passes.Groups.analyze g

    printfn
        "model %s: %d dependency groups (%d can shrink)"
        g.Name
        all.Length
        (all |> List.filter (fun x -> x.Frozen.IsNone && x.Units > 1) |> List.length)

    for grp in all do
        let weights =
            grp.Members
            |> List.filter (fun (s, _) -> s.Owner.IsWeight)
            |> List.map (fst >> Passes.Groups.slotName g)

        let values =
            grp.Members |> List.filter (fun (s, _) -> s.Owner.IsValue) |> List.length

        let state =
            match grp.Frozen with
            | Some why -> "fixed: " + why
            | None when grp.Units < 2 -> "fixed: one unit"
            | None -> "can shrink"

        printfn
            "group %d  %-8s %5d units  %s; %d values, %d parameter axes:"
            grp.Id
            (Passes.Groups.kindName grp.Kind)
            grp.Units
            state
            values
            weights.Length

        printfn "    %s" (String.concat ", " weights)

/// Each parameter's initialiser as PyTorch's torch.nn.init would name it.
let private initText (i: Init) =
    match i with
    | Zeros -> "zeros"
    | Ones -> "ones"
    | Constant v -> sprintf "constant(%g)" v
    | Normal(m, s) -> sprintf "normal(mean=%g, std=%g)" m s
    | TruncNormal s -> sprintf "trunc_normal(std=%g, ±2σ)" s
    | Uniform(a, b) -> sprintf "uniform(%g, %g)" a b

let inits (g: Graph) =
    let t = Table().Border(TableBorder.Simple)
    t.AddColumn("parameter") |> ignore
    t.AddColumn("shape") |> ignore
    t.AddColumn("init") |> ignore
    t.AddColumn("from") |> ignore

    for p in g.Params do
        t.AddRow(
            Markup.Escape p.Name,
            Markup.Escape("[" + (p.Shape |> List.map string |> String.concat ", ") + "]"),
            Markup.Escape(initText p.Init),
            (if p.Kind = Buffer then "buffer"
             elif p.Declared then "declared"
             else "default")
        )
        |> ignore

    AnsiConsole.Write t

let show (args: ParseResults<ShowArgs>) =
    let c = checkedOrExit (args.GetResult ShowArgs.File)
    let g = modelOrExit c (args.TryGetResult ShowArgs.Model)

    if args.Contains ShowArgs.Ir then
        printfn "%s" (IrJson.write true g)
    elif args.Contains ShowArgs.Source then
        printf "%s" (Print.model g)
    elif args.Contains ShowArgs.Groups then
        groups g
    elif args.Contains ShowArgs.Init then
        inits g
    else
        AnsiConsole.MarkupLine(sprintf "model [bold]%s[/]: MACs are per sample" (Markup.Escape g.Name))
        AnsiConsole.Write(table g)

        // The named outputs (a backbone's stage features, a dual encoder's embeddings), as the
        // ONNX export and a caller see them.
        for name, id in g.Outputs do
            let n = g.Nodes[id]

            AnsiConsole.MarkupLine(
                sprintf
                    "output [bold]%s[/] %s (from %s)"
                    (Markup.Escape name)
                    (Markup.Escape(showShape n.Shape))
                    (Markup.Escape(if n.Path = "" then "·" else n.Path))
            )

    0
