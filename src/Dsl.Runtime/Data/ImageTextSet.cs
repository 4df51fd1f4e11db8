using static TorchSharp.torch;

namespace Dsl.Runtime.Data;

/// <summary>
/// An image–text data set in memory: the decoded images and, row for row, their captions and
/// labels. Lines whose image could not be decoded are left out of every list alike, so row i of
/// <see cref="Images"/> always belongs to entry i of the others. Owns its tensors.
/// </summary>
public sealed class ImageTextSet : IDisposable
{
    /// <summary>Takes ownership of <paramref name="images"/> and <paramref name="classLabels"/>.</summary>
    public ImageTextSet(
        Tensor images,
        IReadOnlyList<string[]> captions,
        IReadOnlyList<string[]> synthetic,
        Tensor? classLabels,
        IReadOnlyList<int[]>? synsetLabels,
        IReadOnlyList<string> classNames,
        IReadOnlyList<string> templates,
        IReadOnlyList<string> skippedFiles,
        string? skipSummary = null)
    {
        var count = images.shape[0];
        if (captions.Count != count || synthetic.Count != count
            || (classLabels is not null && classLabels.shape[0] != count)
            || (synsetLabels is not null && synsetLabels.Count != count))
        {
            throw new ArgumentException($"captions and labels must have one entry per image ({count})");
        }

        Images = images;
        Captions = captions;
        Synthetic = synthetic;
        ClassLabels = classLabels;
        SynsetLabels = synsetLabels;
        ClassNames = classNames;
        Templates = templates;
        SkippedFiles = skippedFiles;
        SkipSummary = skipSummary;
    }

    /// <summary>float32 [N, C, H, W], values in [0, 1].</summary>
    public Tensor Images { get; }

    public int Count => (int)Images.shape[0];

    /// <summary>Each image's captions (at least one).</summary>
    public IReadOnlyList<string[]> Captions { get; }

    /// <summary>Each image's second-stream (synthetic) captions; empty arrays when the manifest has none.</summary>
    public IReadOnlyList<string[]> Synthetic { get; }

    /// <summary>int64 [N] class indices, or null when the manifest has no "label".</summary>
    public Tensor? ClassLabels { get; }

    /// <summary>Each image's CatLIP synset indices, or null when the manifest has no "labels".</summary>
    public IReadOnlyList<int[]>? SynsetLabels { get; }

    /// <summary>The zero-shot class names from classes.json beside the manifest; empty without one.</summary>
    public IReadOnlyList<string> ClassNames { get; }

    /// <summary>The zero-shot prompt templates ("a photo of a {}.") from classes.json; empty without one.</summary>
    public IReadOnlyList<string> Templates { get; }

    /// <summary>One entry per image that could not be decoded and was left out: "path: reason".</summary>
    public IReadOnlyList<string> SkippedFiles { get; }

    public int Skipped => SkippedFiles.Count;

    /// <summary>As <see cref="LabeledImages.SkipSummary"/>: counts per kind of reason, with examples; null when nothing was skipped.</summary>
    public string? SkipSummary { get; }

    public void Dispose()
    {
        Images.Dispose();
        ClassLabels?.Dispose();
    }
}
