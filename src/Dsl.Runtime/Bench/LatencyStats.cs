namespace Dsl.Runtime.Bench;

/// <summary>Milliseconds per run: the median and the 10th and 90th percentiles.</summary>
public sealed record LatencyStats(double MedianMs, double P10Ms, double P90Ms)
{
    public static LatencyStats Of(IReadOnlyCollection<double> milliseconds)
    {
        if (milliseconds.Count == 0)
        {
            throw new ArgumentException("no timings to summarise", nameof(milliseconds));
        }

        var sorted = milliseconds.Order().ToArray();
        return new LatencyStats(Percentile(sorted, 0.5), Percentile(sorted, 0.1), Percentile(sorted, 0.9));
    }

    /// <summary>Linear interpolation between the closest ranks (NumPy's default).</summary>
    private static double Percentile(double[] sorted, double fraction)
    {
        var rank = fraction * (sorted.Length - 1);
        var below = (int)Math.Floor(rank);
        var above = Math.Min(below + 1, sorted.Length - 1);
        return sorted[below] + ((rank - below) * (sorted[above] - sorted[below]));
    }
}
