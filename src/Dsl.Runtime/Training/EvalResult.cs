namespace Dsl.Runtime.Training;

/// <summary>A model's performance on held-out data.</summary>
/// <param name="Loss">Mean test loss: cross-entropy without smoothing for a classifier, the training objective otherwise.</param>
/// <param name="Accuracy">Fraction whose top prediction is the label (zero-shot for an image–text model); NaN when the data has no labels.</param>
/// <param name="Top5">Fraction whose label is among the five highest scores (all of them with fewer classes); NaN without labels.</param>
/// <param name="ImagesPerSecond">Evaluation throughput.</param>
/// <param name="Count">How many images were evaluated.</param>
public sealed record EvalResult(double Loss, double Accuracy, double Top5, double ImagesPerSecond, int Count)
{
    /// <summary>Further metrics by name, e.g. image→text recall@1 as "i2t_r1".</summary>
    public IReadOnlyDictionary<string, double> Extra { get; init; } = new Dictionary<string, double>();

    /// <summary>
    /// Which of <see cref="Extra"/> are shares in [0, 1] (accuracy, mIoU, δ₁, recall), shown as
    /// percentages; the rest (losses, RMSE, perplexity) are shown as numbers. Null: every extra is a share.
    /// </summary>
    public IReadOnlySet<string>? Shares { get; init; }

    /// <summary>Whether the metric of this name is a share in [0, 1].</summary>
    public bool IsShare(string name) =>
        name is "accuracy" or "top5" || (name is not "loss" and not "perplexity" && (Shares?.Contains(name) ?? true));

    /// <summary>Every defined metric by name: loss, accuracy and top5 (when not NaN), then <see cref="Extra"/>.</summary>
    public IEnumerable<(string Name, double Value)> Metrics()
    {
        yield return ("loss", Loss);
        if (!double.IsNaN(Accuracy))
        {
            yield return ("accuracy", Accuracy);
            yield return ("top5", Top5);
        }

        foreach (var (name, value) in Extra)
        {
            yield return (name, value);
        }
    }
}
