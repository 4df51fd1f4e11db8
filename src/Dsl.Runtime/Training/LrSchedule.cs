namespace Dsl.Runtime.Training;

/// <summary>
/// Learning rate as a pure function of the optimizer step (0-based), so a resumed run gets
/// exactly the rates an uninterrupted one would. Every schedule starts with a linear warmup
/// from base/warmup to base over <c>warmupSteps</c> steps; the decaying ones then reach
/// <c>minLr</c> exactly at the last step (totalSteps - 1) and stay there.
/// </summary>
public static class LrSchedule
{
    public const string CosineKind = "cosine";
    public const string LinearKind = "linear";
    public const string ConstantKind = "constant";

    public static readonly IReadOnlyList<string> Kinds = [CosineKind, LinearKind, ConstantKind];

    /// <summary>The schedule named <paramref name="kind"/> ("cosine", "linear" or "constant").</summary>
    public static Func<long, double> Create(string kind, double baseLr, long totalSteps, long warmupSteps, double minLr) =>
        kind switch
        {
            CosineKind => step => Cosine(step, baseLr, totalSteps, warmupSteps, minLr),
            LinearKind => step => Linear(step, baseLr, totalSteps, warmupSteps, minLr),
            ConstantKind => step => Constant(step, baseLr, warmupSteps),
            _ => throw new ArgumentException($"unknown schedule '{kind}'; expected one of {string.Join(", ", Kinds)}", nameof(kind)),
        };

    /// <summary>Half a cosine from baseLr down to minLr after the warmup.</summary>
    public static double Cosine(long step, double baseLr, long totalSteps, long warmupSteps, double minLr) =>
        step < warmupSteps
            ? Warmup(step, baseLr, warmupSteps)
            : minLr + ((baseLr - minLr) * 0.5 * (1 + Math.Cos(Math.PI * DecayProgress(step, totalSteps, warmupSteps))));

    /// <summary>A straight line from baseLr down to minLr after the warmup.</summary>
    public static double Linear(long step, double baseLr, long totalSteps, long warmupSteps, double minLr) =>
        step < warmupSteps
            ? Warmup(step, baseLr, warmupSteps)
            : baseLr + ((minLr - baseLr) * DecayProgress(step, totalSteps, warmupSteps));

    public static double Constant(long step, double baseLr, long warmupSteps) =>
        step < warmupSteps ? Warmup(step, baseLr, warmupSteps) : baseLr;

    private static double Warmup(long step, double baseLr, long warmupSteps) =>
        baseLr * (step + 1) / warmupSteps;

    /// <summary>0 at the first step after warmup, 1 at the last step (and beyond).</summary>
    private static double DecayProgress(long step, long totalSteps, long warmupSteps)
    {
        var decaySteps = totalSteps - warmupSteps - 1;
        return decaySteps <= 0 ? 1.0 : Math.Min(1.0, (double)(step - warmupSteps) / decaySteps);
    }
}
