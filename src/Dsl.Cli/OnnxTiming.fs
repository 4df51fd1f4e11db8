/// A model's forward in TorchSharp against the same graph exported to ONNX and run in ONNX
/// Runtime (issue 17's deployment claim): the same random inputs, in alternating rounds in one
/// process, each side on the same number of threads; the ratio is the median of the rounds'.
module Dsl.Cli.OnnxTiming

open System
open System.Diagnostics
open Microsoft.ML.OnnxRuntime
open Microsoft.ML.OnnxRuntime.Tensors
open TorchSharp
open Dsl.Ir
open Dsl.Runtime
open Dsl.Runtime.Bench
open Dsl.Runtime.Emit

type Timing =
    {
        TorchMs: float
        OnnxMs: float
        /// The median over rounds of ONNX Runtime's time over TorchSharp's.
        Ratio: float
        Nodes: int
    }

let private median (xs: float seq) =
    LatencyStats.Of(Array.ofSeq xs).MedianMs

/// Times `m` (its graph `g`, weights as they are: re-parameterise first for the deploy form)
/// at `batch`: the ONNX file goes to `onnxPath` (with a symbolic batch), then `rounds` rounds of
/// `repeats` forwards per side, after `warmup` of each.
let time (g: Graph) (m: GraphModule) (onnxPath: string) (batch: int64) (rounds: int) (warmup: int) (repeats: int) =
    let nodes =
        Export.writeOnnx
            g
            m
            {
                OnnxExport.Opset = 17
                OnnxExport.DynamicBatch = true
            }
            onnxPath

    m.eval ()
    use inputs = torch.NewDisposeScope()
    let xs = RandomInputs.For(g, batch, m.Device)
    let names = g.Inputs |> List.map fst

    let onnxInputs =
        List.zip names (List.ofArray xs)
        |> List.map (fun (n, t) ->
            let dims = t.shape |> Array.map int

            if t.dtype = torch.ScalarType.Int64 then
                NamedOnnxValue.CreateFromTensor(
                    n,
                    DenseTensor<int64>(Memory(t.data<int64>().ToArray()), ReadOnlySpan dims)
                )
            else
                NamedOnnxValue.CreateFromTensor(
                    n,
                    DenseTensor<float32>(Memory(t.contiguous().data<float32>().ToArray()), ReadOnlySpan dims)
                ))
        |> ResizeArray

    use options =
        new SessionOptions(IntraOpNumThreads = Threads.Count, InterOpNumThreads = 1)

    use session = new InferenceSession(onnxPath, options)

    let torchOnce () =
        use _ = torch.no_grad ()
        use scope = torch.NewDisposeScope()
        m.Forward xs |> ignore

    let onnxOnce () =
        use results = session.Run onnxInputs
        ()

    let timed (f: unit -> unit) =
        [
            for _ in 1..repeats do
                let clock = Stopwatch.StartNew()
                f ()
                clock.Elapsed.TotalMilliseconds
        ]
        |> median

    for _ in 1..warmup do
        torchOnce ()
        onnxOnce ()

    let runs =
        [
            for round in 0 .. rounds - 1 do
                // Which side goes first alternates, so neither always runs on a warmer cache.
                if round % 2 = 0 then
                    let a = timed torchOnce
                    a, timed onnxOnce
                else
                    let b = timed onnxOnce
                    timed torchOnce, b
        ]

    {
        TorchMs = runs |> List.map fst |> median
        OnnxMs = runs |> List.map snd |> median
        Ratio = runs |> List.map (fun (a, b) -> b / a) |> median
        Nodes = nodes
    }
