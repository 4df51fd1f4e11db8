using Dsl;
using static TorchSharp.torch;

namespace Dsl.Runtime.Training;

/// <summary>
/// Sums the sufficient statistics of named metrics (the <c>Metric.…</c> ops, dsl/Metrics.fs,
/// computed by Emit/MetricKernels.cs) over every batch of an evaluation, then finalizes each
/// once. This is torchmetrics' update/compute split: a data-set metric that is not a mean of
/// per-example values, mIoU above all, comes out as the data set's, where a mean of per-batch
/// values would weigh a batch with few pixels of a class as much as one with many.
/// </summary>
public sealed class MetricAccumulator
{
    private readonly List<string> order = [];
    private readonly Dictionary<string, (Ir.MetricKind Kind, double[] Sums)> metrics = [];

    /// <summary>
    /// Adds one batch's statistics of metric <paramref name="name"/> (of shape [2], or [2, classes]
    /// for mIoU, any dtype and device). A name keeps the kind it was first added with.
    /// </summary>
    /// <exception cref="ArgumentException">The statistics' shape is not the kind's, or the name was added with another kind.</exception>
    public void Add(string name, Ir.MetricKind kind, Tensor stats)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(kind);
        ArgumentNullException.ThrowIfNull(stats);
        var expected = Ir.metricStatsShape(kind).Select(d => (long)d).ToArray();
        if (!stats.shape.SequenceEqual(expected))
        {
            throw new ArgumentException(
                $"metric '{name}' (Metric.{Ir.metricName(kind)}): statistics of shape [{string.Join(", ", stats.shape)}], expected [{string.Join(", ", expected)}]",
                nameof(stats));
        }

        double[] values;
        using (var host = stats.detach().to(ScalarType.Float64).cpu())
        {
            values = host.data<double>().ToArray();
        }

        if (metrics.TryGetValue(name, out var entry))
        {
            if (!entry.Kind.Equals(kind))
            {
                throw new ArgumentException($"metric '{name}' was added as Metric.{Ir.metricName(entry.Kind)} ({entry.Kind}), now as {kind}", nameof(kind));
            }

            for (var i = 0; i < values.Length; i++)
            {
                entry.Sums[i] += values[i];
            }
        }
        else
        {
            order.Add(name);
            metrics[name] = (kind, values);
        }
    }

    /// <summary>The summed statistics of one metric so far (a copy), row-major for mIoU's [2, classes].</summary>
    public double[] Summed(string name) => (double[])metrics[name].Sums.Clone();

    /// <summary>Every metric added, finalized from its sums, in the order the names were first added.</summary>
    public IReadOnlyDictionary<string, double> Results()
    {
        var results = new Dictionary<string, double>(order.Count);
        foreach (var name in order)
        {
            var (kind, sums) = metrics[name];
            results[name] = Finalize(kind, sums);
        }

        return results;
    }

    /// <summary>
    /// A metric's value from its statistics summed over a data set: a ratio for the accuracies and
    /// the depth metrics' means, its root for RMSE, exp of the mean negative log-likelihood for
    /// perplexity, and for mIoU the mean over the classes with a non-empty union of
    /// intersection / union (torchmetrics' JaccardIndex and mmsegmentation leave a class that
    /// never occurs, in prediction or label, out of the mean). NaN when nothing was counted.
    /// </summary>
    /// <exception cref="ArgumentException">The number of statistics is not the kind's.</exception>
    public static double Finalize(Ir.MetricKind kind, double[] summedStats)
    {
        ArgumentNullException.ThrowIfNull(kind);
        ArgumentNullException.ThrowIfNull(summedStats);
        var expected = Ir.metricStatsShape(kind).Aggregate(1, (a, b) => a * b);
        if (summedStats.Length != expected)
        {
            throw new ArgumentException($"Metric.{Ir.metricName(kind)} has {expected} statistics, got {summedStats.Length}", nameof(summedStats));
        }

        if (kind is Ir.MetricKind.MiouMetric miou)
        {
            var classes = miou.classes;
            double total = 0;
            var present = 0;
            for (var c = 0; c < classes; c++)
            {
                var union = summedStats[classes + c];
                if (union > 0)
                {
                    total += summedStats[c] / union;
                    present++;
                }
            }

            return present > 0 ? total / present : double.NaN;
        }

        var (sum, count) = (summedStats[0], summedStats[1]);
        if (count <= 0)
        {
            return double.NaN;
        }

        var mean = sum / count;
        return kind switch
        {
            { IsRmseMetric: true } => Math.Sqrt(mean),
            Ir.MetricKind.PerplexityMetric => Math.Exp(mean),
            _ => mean,
        };
    }
}
