/// `dsl check` and `dsl show`: the compiler's view of a file, without touching a tensor.
module Dsl.Cli.Show

open Argu
open Spectre.Console
open Dsl
open Dsl.Ir
open Dsl.Cli.Args
open Dsl.Cli.Report

let check (args: ParseResults<CheckArgs>) =
    let path = args.GetResult CheckArgs.File
    let c = checkedOrExit path

    for name, g in c.Models do
        printfn
            "model %s: %d layers, %s parameters"
            name
            (g.Nodes.Length - g.Inputs.Length)
            ((paramCount g).ToString("N0"))

    for r in c.Recipes do
        printfn "train %s: %s, %s, %d epochs, batch %d" r.Model r.Data.Kind r.Optimizer.Kind r.Epochs r.Batch

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
    let mutable totalMacs = 0L
    let paramsOf = nodeParamCounts g

    for n in g.Nodes do
        let ps = paramsOf n
        let m = macs n
        totalMacs <- totalMacs + m

        t.AddRow(
            Markup.Escape(if n.Path = "" then "·" else n.Path),
            Markup.Escape(opName n.Op),
            Markup.Escape(showShape n.Shape),
            (if ps = 0L then "" else ps.ToString("N0")),
            (if m = 0L then "" else m.ToString("N0"))
        )
        |> ignore

    t.AddRow("[bold]total[/]", "", "", (paramCount g).ToString("N0"), totalMacs.ToString("N0"))
    |> ignore

    t

let show (args: ParseResults<ShowArgs>) =
    let c = checkedOrExit (args.GetResult ShowArgs.File)
    let g = modelOrExit c (args.TryGetResult ShowArgs.Model)

    if args.Contains ShowArgs.Ir then
        printfn "%s" (IrJson.write true g)
    elif args.Contains ShowArgs.Source then
        printf "%s" (Print.model g)
    else
        AnsiConsole.MarkupLine(sprintf "model [bold]%s[/]: MACs are per sample" (Markup.Escape g.Name))
        AnsiConsole.Write(table g)

    0
