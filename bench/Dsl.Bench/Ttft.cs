using System.Globalization;
using System.Text;
using Dsl.Runtime.Bench;
using Dsl.Runtime.Emit;
using Dsl.Runtime.Transforms;
using static TorchSharp.torch;

namespace Dsl.Bench;

/// <summary>
/// FastVLM's time-to-first-token at small scale (bench/fastvlm.dsl): for every model pair
/// <c>NAME</c>Encoder / <c>NAME</c>Vlm, the encoder's latency, the whole model's (TTFT) and their
/// difference (projector + prefill), batch 1, in the re-parameterised deploy form FastVLM ships.
/// Models of one resolution are timed in alternating rounds, so they share the machine's load.
/// </summary>
internal static class Ttft
{
    private const string EncoderSuffix = "Encoder";
    private const string VlmSuffix = "Vlm";

    private sealed record Pair(string Name, Ir.Graph Encoder, Ir.Graph Vlm)
    {
        public long Resolution => Dim(Encoder, Encoder.Inputs.Head.Item2, 2);

        public long Tokens => Dim(Encoder, Encoder.Outputs.Head.Item2, 1);

        public long Channels => Dim(Encoder, Encoder.Outputs.Head.Item2, 2);

        private static long Dim(Ir.Graph g, int node, int axis) =>
            g.Nodes[node].Shape[axis] is Ir.Dim.Known k ? k.Item : throw new ArgumentException($"model '{g.Name}': axis {axis} of node {node} has no size");
    }

    private sealed record Row(Pair Pair, LatencyStats Encoder, LatencyStats Vlm, double PrefillMs);

    public static int Run(string file, int rounds, int warmup, int repeats, string? tsv)
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

        var models = compiled.Models.ToDictionary(m => m.Item1, m => m.Item2);
        var pairs = models.Keys
            .Where(name => name.EndsWith(VlmSuffix, StringComparison.Ordinal))
            .Select(name => name[..^VlmSuffix.Length])
            .Where(stem => models.ContainsKey(stem + EncoderSuffix))
            .Select(stem => new Pair(stem, models[stem + EncoderSuffix], models[stem + VlmSuffix]))
            .ToList();
        if (pairs.Count == 0)
        {
            Console.Error.WriteLine($"{file}: no model pairs NAME{EncoderSuffix} / NAME{VlmSuffix} to time");
            return 1;
        }

        var rows = new List<Row>();
        foreach (var sameSize in pairs.GroupBy(p => p.Resolution).OrderBy(g => g.Key))
        {
            var timed = TimeTogether(sameSize.ToList(), rounds, warmup, repeats);
            rows.AddRange(timed);
            foreach (var row in timed)
            {
                Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {row.Pair.Name}: {row.Pair.Tokens} tokens, encoder {row.Encoder.MedianMs:F1} ms, TTFT {row.Vlm.MedianMs:F1} ms"));
            }
        }

        var table = Table(rows, rounds, repeats);
        Console.WriteLine(table);
        if (tsv is not null)
        {
            File.WriteAllText(tsv, Tsv(rows));
        }

        return 0;
    }

    /// <summary>Builds every model of one resolution, then times them all in alternating rounds.</summary>
    private static List<Row> TimeTogether(List<Pair> pairs, int rounds, int warmup, int repeats)
    {
        var modules = new List<GraphModule>();
        try
        {
            var timed = pairs
                .SelectMany(p => new[] { p.Encoder, p.Vlm })
                .Select(g =>
                {
                    using var train = new GraphModule(g, 0);
                    var deploy = WeightMapEvaluator.Reparameterize(train);
                    modules.Add(deploy);
                    return (Module: deploy, Inputs: RandomInputs.For(deploy.Graph, 1, CPU));
                })
                .ToList();
            var runs = timed.Select(_ => new List<double>()).ToList();
            foreach (var (module, inputs) in timed)
            {
                Benchmark.MeasureForward(xs => module.Forward(xs), module, inputs, warmup, 1);
            }

            for (var round = 0; round < rounds; round++)
            {
                // Alternate the order, so no model always runs first (or right after a heavy one).
                var order = Enumerable.Range(0, timed.Count);
                foreach (var i in round % 2 == 0 ? order : order.Reverse())
                {
                    var (module, inputs) = timed[i];
                    runs[i].Add(Benchmark.MeasureForward(xs => module.Forward(xs), module, inputs, 0, repeats).MedianMs);
                }
            }

            return pairs.Select((p, i) =>
            {
                var encoder = LatencyStats.Of(runs[2 * i]);
                var vlm = LatencyStats.Of(runs[(2 * i) + 1]);
                // Per round, so both sides of the difference saw the same load.
                var prefill = LatencyStats.Of(runs[(2 * i) + 1].Zip(runs[2 * i], (t, e) => t - e).ToArray()).MedianMs;
                return new Row(p, encoder, vlm, prefill);
            }).ToList();
        }
        finally
        {
            foreach (var module in modules)
            {
                module.Dispose();
            }
        }
    }

    private static string Table(List<Row> rows, int rounds, int repeats)
    {
        var culture = CultureInfo.InvariantCulture;
        var text = new StringBuilder();
        text.AppendLine(string.Create(culture, $"batch 1, {Environment.ProcessorCount} threads (Benchmark uses all cores), deploy form; ms = median of {rounds} alternating rounds (each the median of {repeats})"));
        text.AppendLine("| encoder | px | tokens | encoder ms | projector + prefill ms | TTFT ms | TTFT / FastViTHD's |");
        text.AppendLine("|---|---:|---:|---:|---:|---:|---:|");
        foreach (var row in rows.OrderBy(r => r.Pair.Resolution).ThenBy(r => r.Pair.Tokens))
        {
            var hd = rows.Where(r => r.Pair.Resolution == row.Pair.Resolution).MinBy(r => r.Pair.Tokens)!;
            text.AppendLine(string.Create(
                culture,
                $"| {Family(row.Pair)} | {row.Pair.Resolution} | {row.Pair.Tokens} | {row.Encoder.MedianMs:F1} | {row.PrefillMs:F1} | {row.Vlm.MedianMs:F1} | {row.Vlm.MedianMs / hd.Vlm.MedianMs:F2} |"));
        }

        return text.ToString();
    }

    /// <summary>family, px, tokens, encoder, prefill, TTFT: one row per pair, for plotting.</summary>
    private static string Tsv(List<Row> rows)
    {
        var text = new StringBuilder("family\tpx\ttokens\tencoder_ms\tprefill_ms\tttft_ms\n");
        foreach (var row in rows.OrderBy(r => Family(r.Pair)).ThenBy(r => r.Pair.Resolution))
        {
            text.Append(string.Create(
                CultureInfo.InvariantCulture,
                $"{Family(row.Pair)}\t{row.Pair.Resolution}\t{row.Pair.Tokens}\t{row.Encoder.MedianMs:F2}\t{row.PrefillMs:F2}\t{row.Vlm.MedianMs:F2}\n"));
        }

        return text.ToString();
    }

    /// <summary>The pair's name without its resolution: "fastvithd1024" → "fastvithd".</summary>
    private static string Family(Pair pair)
    {
        var size = pair.Resolution.ToString(CultureInfo.InvariantCulture);
        var at = pair.Name.LastIndexOf(size, StringComparison.Ordinal);
        return (at > 0 ? pair.Name[..at] : pair.Name).TrimEnd('x');
    }
}
