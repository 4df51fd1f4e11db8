/// `dsl import FILE --from SOURCE WEIGHTS --out DIR`: a model's weights filled from another
/// tool's safetensors state dict under that tool's naming convention, with a report of every
/// key; any missing or unused key stops it (exit 1) unless an --ignore pattern names it.
module Dsl.Cli.Import

open System
open System.Collections.Generic
open System.IO
open Argu
open TorchSharp
open Dsl.Runtime.Checkpoints
open Dsl.Runtime.Emit
open Dsl.Runtime.Interop
open Dsl.Cli.Args
open Dsl.Cli.Report
open Dsl.Cli.Session

let run (args: ParseResults<ImportArgs>) =
    let file = args.GetResult ImportArgs.File
    let c = checkedOrExit file
    let g = modelOrExit c (args.TryGetResult ImportArgs.Model)
    let source, weights = args.GetResult ImportArgs.From
    let out = args.GetResult ImportArgs.Out
    let convention = NameConvention.For source
    use model = new GraphModule(g, 0L)

    let tensors =
        try
            WeightImport.ReadWeights weights
        with :? InteropError as e ->
            fail "error: %s" e.Message

    try
        let report =
            WeightImport.Import(model.state_dict (), convention, tensors, args.GetResults ImportArgs.Ignore)

        for line in report.Lines() do
            printfn "%s" line

        if not report.Ok then
            fail
                "%s: error: %d missing and %d unused key(s) for model '%s' under %s names (listed above); nothing was written. --ignore PATTERN accepts ones you expect"
                weights
                report.MissingErrors
                report.UnusedErrors
                g.Name
                convention.Source

        OutputFolder.PrepareTransform(out, "import", [ file; weights ])

        let meta =
            CheckpointMeta(
                Model = g.Name,
                SourceHash = sourceHash g,
                Step = 0L,
                Epoch = 0,
                Seed = 0L,
                Created = DateTime.UtcNow.ToString "O",
                Metrics = Dictionary(),
                Extra = Dictionary(dict [ "transform", "import"; "from", source; "weights", Path.GetFullPath weights ])
            )

        Checkpoint.Save(
            Path.Combine(out, "checkpoint"),
            model.state_dict (),
            Dictionary<string, torch.Tensor>(),
            meta,
            1
        )

        printfn "%s: wrote %s" g.Name (Path.Combine(out, "checkpoint"))
        0
    finally
        for t in tensors.Values do
            t.Dispose()
