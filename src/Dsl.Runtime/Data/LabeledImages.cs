using static TorchSharp.torch;

namespace Dsl.Runtime.Data;

/// <summary>
/// A whole data set in memory: images as float32 [N, C, H, W] in [0, 1] and labels as
/// int64 [N]. Owns both tensors.
/// </summary>
public sealed class LabeledImages : IDisposable
{
    /// <summary>Takes ownership of <paramref name="images"/> and <paramref name="labels"/>.</summary>
    public LabeledImages(
        Tensor images,
        Tensor labels,
        IReadOnlyList<string> classNames,
        IReadOnlyList<string>? skippedFiles = null,
        string? skipSummary = null)
    {
        if (images.dim() != 4 || images.dtype != ScalarType.Float32)
        {
            throw new ArgumentException($"images must be float32 [N, C, H, W], got {images.dtype} [{string.Join(", ", images.shape)}]", nameof(images));
        }

        if (labels.dim() != 1 || labels.dtype != ScalarType.Int64 || labels.shape[0] != images.shape[0])
        {
            throw new ArgumentException($"labels must be int64 [{images.shape[0]}], got {labels.dtype} [{string.Join(", ", labels.shape)}]", nameof(labels));
        }

        Images = images;
        Labels = labels;
        ClassNames = classNames;
        SkippedFiles = skippedFiles ?? [];
        SkipSummary = skipSummary;
    }

    /// <summary>float32 [N, C, H, W], values in [0, 1].</summary>
    public Tensor Images { get; }

    /// <summary>int64 [N], each an index into <see cref="ClassNames"/>.</summary>
    public Tensor Labels { get; }

    public int Count => (int)Images.shape[0];

    public IReadOnlyList<string> ClassNames { get; }

    /// <summary>How many files were skipped because they could not be decoded.</summary>
    public int Skipped => SkippedFiles.Count;

    /// <summary>One entry per skipped file: "path: reason".</summary>
    public IReadOnlyList<string> SkippedFiles { get; }

    /// <summary>
    /// One line for the user: how many files were skipped, how many for each kind of reason with
    /// an example, and how to raise the pixel limit if that was a reason; null when none was.
    /// </summary>
    public string? SkipSummary { get; }

    public void Dispose()
    {
        Images.Dispose();
        Labels.Dispose();
    }
}
