namespace Dsl.Runtime.Bench;

/// <summary>Two models timed side by side: medians of round medians, and the median round ratio A / B.</summary>
public sealed record PairedResult(
    BenchResult FirstRound,
    double ForwardA,
    double ForwardB,
    double ForwardRatio,
    double TrainStepA,
    double TrainStepB,
    double TrainStepRatio,
    int Rounds)
{
    /// <summary>The median round ratio B / A of the forward latency (not 1 / <see cref="ForwardRatio"/> when the rounds are even).</summary>
    public double ForwardRatioBA { get; init; }

    /// <summary>The median round ratio B / A of the training step.</summary>
    public double TrainStepRatioBA { get; init; }
}

/// <summary>
/// Times two models in one process. Both are warmed up once; then short rounds alternate which
/// goes first. Two measurements taken seconds apart share the machine's load, so the median of the
/// per-round ratios is far steadier on a shared machine than either latency alone.
/// </summary>
public static class PairedComparison
{
    /// <param name="a">Measures model A: (warmup, repeats) → result.</param>
    /// <param name="b">Measures model B likewise.</param>
    public static PairedResult Run(Func<int, int, BenchResult> a, Func<int, int, BenchResult> b, int rounds, int warmup, int repeats)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rounds);
        a(warmup, 1);
        b(warmup, 1);
        var aRuns = new List<BenchResult>();
        var bRuns = new List<BenchResult>();
        for (var round = 0; round < rounds; round++)
        {
            if (round % 2 == 0)
            {
                aRuns.Add(a(0, repeats));
                bRuns.Add(b(0, repeats));
            }
            else
            {
                bRuns.Add(b(0, repeats));
                aRuns.Add(a(0, repeats));
            }
        }

        static double Median(IEnumerable<double> xs) => LatencyStats.Of(xs.ToArray()).MedianMs;
        double Ratio(Func<BenchResult, double> of) => Median(aRuns.Zip(bRuns, (x, y) => of(x) / of(y)));
        double Inverse(Func<BenchResult, double> of) => Median(aRuns.Zip(bRuns, (x, y) => of(y) / of(x)));
        return new PairedResult(
            aRuns[0],
            Median(aRuns.Select(r => r.Forward.MedianMs)),
            Median(bRuns.Select(r => r.Forward.MedianMs)),
            Ratio(r => r.Forward.MedianMs),
            Median(aRuns.Select(r => r.TrainStep.MedianMs)),
            Median(bRuns.Select(r => r.TrainStep.MedianMs)),
            Ratio(r => r.TrainStep.MedianMs),
            rounds)
        {
            ForwardRatioBA = Inverse(r => r.Forward.MedianMs),
            TrainStepRatioBA = Inverse(r => r.TrainStep.MedianMs),
        };
    }
}
