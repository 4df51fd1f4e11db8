using System.Globalization;
using System.Text.Json;
using Dsl.Runtime.Bench;

namespace Dsl.Bench;

/// <summary>
/// The DSL-compiled convnet and its hand-written twin timed side by side in one process
/// (<see cref="PairedComparison"/>).
/// </summary>
internal static class Compare
{
    public static int Run(string file, string? modelName, IReadOnlyList<long> batches, int rounds, int warmup, int repeats, bool json)
    {
        if (BenchFile.Load(file, modelName) is not { } loaded)
        {
            return 1;
        }

        var rows = new List<Dictionary<string, object>>();
        foreach (var batch in batches)
        {
            rows.Add(Measure(loaded.Graph, batch, rounds, warmup, repeats));
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
        var paired = Baselines.AgainstReference(graph, batch, rounds, warmup, repeats);
        return new Dictionary<string, object>
        {
            ["batch"] = batch,
            ["threads"] = paired.FirstRound.Threads,
            ["conv_backend"] = paired.FirstRound.ConvBackend,
            ["forward_dsl_ms"] = paired.ForwardA,
            ["forward_reference_ms"] = paired.ForwardB,
            ["forward_ratio"] = paired.ForwardRatio,
            ["train_dsl_ms"] = paired.TrainStepA,
            ["train_reference_ms"] = paired.TrainStepB,
            ["train_ratio"] = paired.TrainStepRatio,
        };
    }
}
