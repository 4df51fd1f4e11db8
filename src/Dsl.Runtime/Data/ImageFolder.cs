using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Data;

/// <summary>
/// A labelled image set laid out as root/&lt;class&gt;/&lt;image files&gt;, like torchvision's
/// ImageFolder. Class indices follow the ordinal order of the class directory names.
/// </summary>
public static class ImageFolder
{
    private static readonly string[] Extensions = [".png", ".jpg", ".jpeg", ".bmp", ".gif"];

    /// <summary>
    /// Decodes every image, converts it to grey-scale (<paramref name="channels"/> = 1) or RGB
    /// (3), resizes it to <paramref name="height"/>×<paramref name="width"/> and scales it to
    /// [0, 1]. A file that cannot be decoded is skipped and listed in
    /// <see cref="LabeledImages.SkippedFiles"/>: one bad file should not cost a training run. So is
    /// a file whose header declares more than <paramref name="maxPixels"/> pixels (default
    /// <see cref="ImageLimits.MaxPixels"/>), before it is decoded.
    /// </summary>
    public static LabeledImages Load(string root, int channels, int height, int width, long? maxPixels = null)
    {
        var limit = maxPixels ?? ImageLimits.MaxPixels;
        var imageBytes = ImageDecoding.ImageBytes(channels, height, width);
        var (classNames, samples) = FindSamples(root);
        var paths = samples.Select(s => s.Path).ToArray();
        var (pixels, failures) = ImageDecoding.DecodeAll(paths, root, channels, height, width, limit);

        var labels = new List<long>();
        var skipped = new List<string>();
        for (var i = 0; i < samples.Count; i++)
        {
            if (failures[i] is { } reason)
            {
                skipped.Add($"{samples[i].Path}: {reason}");
            }
            else
            {
                labels.Add(samples[i].ClassIndex);
            }
        }

        if (labels.Count == 0)
        {
            throw new DataError(root, $"no readable image among {samples.Count} files; first failure: {skipped[0]}");
        }

        ImageDecoding.Compact(pixels, imageBytes, failures);
        var images = ImageDecoding.ToTensor(pixels, labels.Count, channels, height, width);
        return new LabeledImages(images, torch.tensor(labels.ToArray()), classNames, skipped, ImageDecoding.SkipSummary(paths, failures));
    }

    /// <summary>
    /// Loads the given files as one batch, float32 [N, C, H, W] in [0, 1], prepared as
    /// <see cref="Load"/> prepares images. Unlike Load, a file that cannot be decoded is a
    /// <see cref="DataError"/>: the caller named it, so skipping it would hide the problem.
    /// </summary>
    public static Tensor LoadFiles(IReadOnlyList<string> paths, int channels, int height, int width, long? maxPixels = null)
    {
        var (images, failures) = DecodeFiles(paths, channels, height, width, maxPixels);
        var first = Array.FindIndex(failures, f => f is not null);
        if (first >= 0)
        {
            images?.Dispose();
            throw new DataError(paths[first], failures[first]!);
        }

        return images!;
    }

    /// <summary>
    /// Decodes each of the given files on its own: the images that could be decoded as one batch
    /// in the order given (null when none could), and per file why it could not (null when it
    /// could), so a caller can answer for the good files and name each bad one.
    /// </summary>
    public static (Tensor? Images, string?[] Failures) DecodeFiles(
        IReadOnlyList<string> paths, int channels, int height, int width, long? maxPixels = null)
    {
        if (paths.Count == 0)
        {
            throw new ArgumentException("no image files given", nameof(paths));
        }

        var imageBytes = ImageDecoding.ImageBytes(channels, height, width);
        var (pixels, failures) = ImageDecoding.DecodeAll(paths, paths[0], channels, height, width, maxPixels ?? ImageLimits.MaxPixels);
        var decoded = failures.Count(f => f is null);
        if (decoded == 0)
        {
            return (null, failures);
        }

        ImageDecoding.Compact(pixels, imageBytes, failures);
        return (ImageDecoding.ToTensor(pixels, decoded, channels, height, width), failures);
    }

    private readonly record struct Sample(string Path, int ClassIndex);

    private static (IReadOnlyList<string> ClassNames, List<Sample> Samples) FindSamples(string root)
    {
        if (!Directory.Exists(root))
        {
            throw new DataError(root, "image folder not found");
        }

        var classDirectories = Directory.GetDirectories(root).Order(StringComparer.Ordinal).ToArray();
        if (classDirectories.Length == 0)
        {
            throw new DataError(root, "no class directories; expected root/<class>/<image files>");
        }

        var samples = new List<Sample>();
        for (var classIndex = 0; classIndex < classDirectories.Length; classIndex++)
        {
            samples.AddRange(Directory.GetFiles(classDirectories[classIndex])
                .Where(f => Extensions.Contains(System.IO.Path.GetExtension(f), StringComparer.OrdinalIgnoreCase))
                .Order(StringComparer.Ordinal)
                .Select(f => new Sample(f, classIndex)));
        }

        if (samples.Count == 0)
        {
            throw new DataError(root, $"no image files ({string.Join(", ", Extensions)}) in any class directory");
        }

        var classNames = classDirectories.Select(d => System.IO.Path.GetFileName(d)).ToArray();
        return (Array.AsReadOnly(classNames), samples);
    }
}
