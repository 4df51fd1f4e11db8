/// `dsl export FILE --format onnx --out X.onnx`: a model (its seeded initial weights, or a
/// checkpoint's) written as ONNX from its IR, atomically and never over a file dsl did not write.
module Dsl.Cli.Export

open System
open Argu
open Dsl
open Dsl.Ir
open Dsl.Runtime.Emit
open Dsl.Runtime.Interop
open Dsl.Cli.Args
open Dsl.Cli.Report
open Dsl.Cli.Session

let private version () =
    Reflection.Assembly.GetExecutingAssembly().GetName().Version.ToString 3

/// Exports `g` with `module'`'s weights to `out`; returns the ONNX graph's node count.
let writeOnnx (g: Graph) (module': GraphModule) (options: OnnxExport.Options) (out: string) =
    let onnx = OnnxExport.build g (module'.state_dict ()) options
    OnnxFile.Write(out, onnx, options.Opset, version ())
    onnx.NodeCount

let private onnx (g: Graph) (args: ParseResults<ExportArgs>) =
    let out = args.GetResult ExportArgs.Out
    let opset = args.GetResult(ExportArgs.Opset, defaultValue = 17)

    if opset < OnnxExport.minOpset || opset > OnnxExport.maxOpset then
        fail "error: --opset %d: dsl export writes ONNX opsets %d to %d" opset OnnxExport.minOpset OnnxExport.maxOpset

    // Refused before any weights are made or loaded.
    OnnxFile.CheckTarget out
    OnnxExport.checkSize g

    let options =
        {
            OnnxExport.Opset = opset
            OnnxExport.DynamicBatch = args.Contains ExportArgs.Dynamic_Batch
        }

    use model =
        new GraphModule(g, int64 (args.GetResult(ExportArgs.Seed, defaultValue = 0)))

    let source =
        match args.TryGetResult ExportArgs.Checkpoint with
        | Some dir ->
            loadWeights model dir |> ignore
            dir
        | None -> "the seeded initial weights"

    model.eval ()
    let count = writeOnnx g model options out

    let outputs =
        OnnxExport.outputNames g
        |> List.map (fun (name, onnxName) ->
            if name = onnxName then
                name
            else
                sprintf "%s (as %s: an input has its name)" name onnxName)

    printfn
        "%s: wrote %s (ONNX opset %d, %d nodes, inputs %s, outputs %s, batch %s) from %s"
        g.Name
        out
        opset
        count
        (g.Inputs |> List.map fst |> String.concat ", ")
        (String.concat ", " outputs)
        (if options.DynamicBatch then "B" else "1")
        source

    0

/// The model's weights (seeded, or a checkpoint's) under a source's names and shapes.
let private safetensors (g: Graph) (args: ParseResults<ExportArgs>) =
    let out = args.GetResult ExportArgs.Out

    let convention =
        NameConvention.For(args.GetResult(ExportArgs.Names, defaultValue = "torch"))

    use model =
        new GraphModule(g, int64 (args.GetResult(ExportArgs.Seed, defaultValue = 0)))

    match args.TryGetResult ExportArgs.Checkpoint with
    | Some dir -> loadWeights model dir |> ignore
    | None -> ()

    let tensors = WeightImport.Export(model.state_dict (), convention)
    WeightImport.WriteSafetensors(out, tensors)
    printfn "%s: wrote %s (%d tensors, %s names)" g.Name out tensors.Count convention.Source
    0

let run (args: ParseResults<ExportArgs>) =
    let file = args.GetResult ExportArgs.File
    let c = checkedOrExit file
    let g = modelOrExit c (args.TryGetResult ExportArgs.Model)

    match args.GetResult ExportArgs.Format with
    | "onnx" -> onnx g args
    | "safetensors" -> safetensors g args
    | other -> fail "error: --format must be onnx or safetensors, got '%s'" other
