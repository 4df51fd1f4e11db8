using ScottPlot;

namespace Dsl.Runtime.Reports;

/// <summary>
/// Draws a <see cref="PlotSpec"/> to PNG in-process with ScottPlot 5 (headless SkiaSharp; text
/// needs a font such as Debian's fonts-dejavu-core). The file is written to a temporary name in
/// the same folder and renamed, so a killed run never leaves a truncated image.
/// </summary>
public static class PlotWriter
{
    public static void Write(PlotSpec spec, string path)
    {
        Validate(spec);
        var plot = new Plot();
        plot.Title(spec.Title);
        plot.XLabel(spec.XLabel);
        plot.YLabel(spec.YLabel);
        var palette = new ScottPlot.Palettes.Category10();
        var i = 0;
        var groups = spec.Series.Count;
        foreach (var s in spec.Series)
        {
            var color = palette.GetColor(i);
            var xs = spec.LogX ? s.X.Select(Math.Log10).ToArray() : s.X;
            var ys = spec.LogY ? s.Y.Select(Math.Log10).ToArray() : s.Y;
            switch (spec.Kind)
            {
                case PlotKind.Bar:
                    // Grouped bars: series i sits at offset i within each category slot.
                    var width = 0.8 / groups;
                    var bars = s
                        .X.Zip(
                            ys,
                            (x, y) =>
                                new Bar
                                {
                                    Position = x + (i - (groups - 1) / 2.0) * width,
                                    Value = y,
                                    Size = width * 0.95,
                                    FillColor = color,
                                }
                        )
                        .ToList();
                    var added = plot.Add.Bars(bars);
                    added.LegendText = s.Name;
                    break;
                case PlotKind.Line:
                    var line = plot.Add.Scatter(xs, ys, color);
                    line.LegendText = s.Name;
                    line.LineWidth = 2;
                    line.MarkerSize = 6;
                    break;
                default:
                    var points = plot.Add.ScatterPoints(xs, ys, color);
                    points.LegendText = s.Name;
                    points.MarkerSize = 8;
                    break;
            }
            i++;
        }
        if (spec.Kind == PlotKind.Bar && spec.Categories is { } cats)
        {
            var ticks = cats.Select((c, k) => new Tick(k, c)).ToArray();
            plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(ticks);
        }
        else if (spec.LogX)
            plot.Axes.Bottom.TickGenerator = LogTicks();
        if (spec.LogY)
            plot.Axes.Left.TickGenerator = LogTicks();
        if (spec.Kind == PlotKind.Bar && !spec.LogY)
            plot.Axes.Margins(bottom: 0);
        if (spec.Series.Count > 1)
            plot.ShowLegend();

        var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        try
        {
            Directory.CreateDirectory(dir);
            var tmp = Path.Combine(dir, $".{Path.GetFileName(path)}.{Environment.ProcessId}.tmp");
            plot.SavePng(tmp, spec.Width, spec.Height);
            File.Move(tmp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new PlotError($"cannot write the plot '{path}': {e.Message}");
        }
    }

    static ScottPlot.TickGenerators.NumericAutomatic LogTicks() =>
        new()
        {
            MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
            IntegerTicksOnly = true,
            LabelFormatter = v => Math.Pow(10, v).ToString("#,0.###", System.Globalization.CultureInfo.InvariantCulture),
        };

    static void Validate(PlotSpec spec)
    {
        if (spec.Series.Count == 0)
            throw new PlotError($"the plot '{spec.Title}' has no series");
        foreach (var s in spec.Series)
        {
            if (s.X.Length != s.Y.Length)
                throw new PlotError(
                    $"the series '{s.Name}' of the plot '{spec.Title}' has {s.X.Length} x values and {s.Y.Length} y values"
                );
            if (s.Y.Concat(s.X).Any(v => !double.IsFinite(v)))
                throw new PlotError(
                    $"the series '{s.Name}' of the plot '{spec.Title}' has a value that is not a finite number"
                );
            if (spec.LogY && s.Y.Any(v => v <= 0))
                throw new PlotError(
                    $"the plot '{spec.Title}' has a log y axis but the series '{s.Name}' has a value ≤ 0"
                );
            if (spec.LogX && spec.Kind != PlotKind.Bar && s.X.Any(v => v <= 0))
                throw new PlotError(
                    $"the plot '{spec.Title}' has a log x axis but the series '{s.Name}' has a value ≤ 0"
                );
        }
    }
}
