using System.Globalization;
using System.Text.Json;
using Dsl.Runtime.Bench;
using Dsl.Runtime.Emit;
using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Bench;

/// <summary>
/// The DSL-compiled convnet and its hand-written twin timed side by side in one process. Both are
/// warmed up once; then short rounds alternate which side goes first. Each side's figure is the
/// median over rounds of its per-round medians, and the ratio is the median of the per-round
/// ratios: two measurements taken seconds apart share the machine's load, so the ratio is far
/// steadier than either latency on a shared machine.
/// </summary>
internal static class Compare
{
    public static int Run(string file, string? modelName, IReadOnlyList<long> batches, int rounds, int warmup, int repeats, bool json)
    {
        var compiled = Compiler.checkFile(file);
        if (!compiled.Diagnostics.IsEmpty)
        {
            foreach (var d in compiled.Diagnostics)
            {
                Console.Error.WriteLine(Diagnostics.format(d));
            }

            return 1;
        }

        var picked = Compiler.pickModel(compiled, modelName is null ? null : Microsoft.FSharp.Core.FSharpOption<string>.Some(modelName));
        if (picked.IsError)
        {
            Console.Error.WriteLine(picked.ErrorValue);
            return 1;
        }

        var rows = new List<Dictionary<string, object>>();
        foreach (var batch in batches)
        {
            rows.Add(Measure(picked.ResultValue, batch, rounds, warmup, repeats));
        }

        if (json)
        {
            Console.WriteLine(JsonSerializer.Serialize(rows));
        }
        else
        {
            Console.WriteLine($"{file} vs the hand-written ReferenceConvnet; {rounds} alternating rounds of {repeats} repeats; ms = median of round medians, ratio = median of round ratios (DSL / hand-written)");
            Console.WriteLine("| batch | forward DSL | forward hand-written | ratio | train step DSL | train step hand-written | ratio |");
            Console.WriteLine("|---:|---:|---:|---:|---:|---:|---:|");
            foreach (var r in rows)
            {
                Console.WriteLine(string.Create(
                    CultureInfo.InvariantCulture,
                    $"| {r["batch"]} | {r["forward_dsl_ms"]:F3} | {r["forward_reference_ms"]:F3} | {r["forward_ratio"]:F3} | {r["train_dsl_ms"]:F3} | {r["train_reference_ms"]:F3} | {r["train_ratio"]:F3} |"));
            }
        }

        return 0;
    }

    private static Dictionary<string, object> Measure(Ir.Graph graph, long batch, int rounds, int warmup, int repeats)
    {
        ConvolutionBackend.Verify(ReferenceConvnet.ConvShapes);
        manual_seed(0).Dispose();
        using var dsl = new GraphModule(graph, seed: 0);
        using var reference = ReferenceConvnet.Create();
        using var images = randn([batch, .. ReferenceConvnet.InputShape]);
        using var labels = randint(ReferenceConvnet.Classes, [batch]);
        Tensor Loss(Tensor[] outputs) => nn.functional.cross_entropy(outputs[0], labels);

        BenchResult MeasureDsl(int warm, int times) => Benchmark.Measure(inputs => dsl.Forward(inputs), dsl, [images], Loss, warm, times);
        BenchResult MeasureReference(int warm, int times) => Benchmark.Measure(inputs => [reference.forward(inputs[0])], reference, [images], Loss, warm, times);
        MeasureDsl(warmup, 1);
        MeasureReference(warmup, 1);

        var dslRuns = new List<BenchResult>();
        var referenceRuns = new List<BenchResult>();
        for (var round = 0; round < rounds; round++)
        {
            if (round % 2 == 0)
            {
                dslRuns.Add(MeasureDsl(0, repeats));
                referenceRuns.Add(MeasureReference(0, repeats));
            }
            else
            {
                referenceRuns.Add(MeasureReference(0, repeats));
                dslRuns.Add(MeasureDsl(0, repeats));
            }
        }

        double Median(IEnumerable<double> xs) => LatencyStats.Of(xs.ToArray()).MedianMs;
        double Ratio(Func<BenchResult, double> of) => Median(dslRuns.Zip(referenceRuns, (d, r) => of(d) / of(r)));
        var forwardDsl = Median(dslRuns.Select(r => r.Forward.MedianMs));
        var forwardReference = Median(referenceRuns.Select(r => r.Forward.MedianMs));
        var trainDsl = Median(dslRuns.Select(r => r.TrainStep.MedianMs));
        var trainReference = Median(referenceRuns.Select(r => r.TrainStep.MedianMs));
        return new Dictionary<string, object>
        {
            ["batch"] = batch,
            ["threads"] = dslRuns[0].Threads,
            ["conv_backend"] = dslRuns[0].ConvBackend,
            ["forward_dsl_ms"] = forwardDsl,
            ["forward_reference_ms"] = forwardReference,
            ["forward_ratio"] = Ratio(r => r.Forward.MedianMs),
            ["train_dsl_ms"] = trainDsl,
            ["train_reference_ms"] = trainReference,
            ["train_ratio"] = Ratio(r => r.TrainStep.MedianMs),
        };
    }
}
