namespace Dsl.Runtime.Reports;

/// <summary>How a plot draws its series: connected points, grouped bars, or bare markers.</summary>
public enum PlotKind
{
    Line,
    Bar,
    Scatter,
}

/// <summary>One named series: X and Y of equal length. For bars, X is the group index.</summary>
public sealed record PlotSeries(string Name, double[] X, double[] Y);

/// <summary>
/// A plot as data: what `dsl run` declares in an experiment's `plot` and the writer draws.
/// Log axes plot log10 of the values with ticks labelled in the original units.
/// </summary>
public sealed record PlotSpec
{
    public required string Title { get; init; }
    public required string XLabel { get; init; }
    public required string YLabel { get; init; }
    public required PlotKind Kind { get; init; }
    public bool LogX { get; init; }
    public bool LogY { get; init; }
    public required IReadOnlyList<PlotSeries> Series { get; init; }

    /// <summary>Category names of the bar groups (Kind = Bar); X holds their indices.</summary>
    public IReadOnlyList<string>? Categories { get; init; }
    public int Width { get; init; } = 900;
    public int Height { get; init; } = 560;
}

/// <summary>A plot that cannot be drawn, with the reason (bad values, unwritable path).</summary>
public sealed class PlotError(string message) : Exception(message);
