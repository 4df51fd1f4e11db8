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
    /// <see cref="LabeledImages.SkippedFiles"/>: one bad file should not cost a training run.
    /// </summary>
    public static LabeledImages Load(string root, int channels, int height, int width)
    {
        var imageBytes = ImageDecoding.ImageBytes(channels, height, width);
        var (classNames, samples) = FindSamples(root);
        var (pixels, failures) = ImageDecoding.DecodeAll(samples.Select(s => s.Path).ToArray(), root, channels, height, width);

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
        return new LabeledImages(images, torch.tensor(labels.ToArray()), classNames, skipped);
    }

    /// <summary>
    /// Loads the given files as one batch, float32 [N, C, H, W] in [0, 1], prepared as
    /// <see cref="Load"/> prepares images. Unlike Load, a file that cannot be decoded is a
    /// <see cref="DataError"/>: the caller named it, so skipping it would hide the problem.
    /// </summary>
    public static Tensor LoadFiles(IReadOnlyList<string> paths, int channels, int height, int width)
    {
        var imageBytes = ImageDecoding.ImageBytes(channels, height, width);
        if (paths.Count == 0)
        {
            throw new ArgumentException("no image files given", nameof(paths));
        }

        var pixels = ImageDecoding.AllocatePixels(paths[0], paths.Count, imageBytes);
        for (var i = 0; i < paths.Count; i++)
        {
            var slot = pixels.AsSpan((int)(i * imageBytes), (int)imageBytes);
            if (ImageDecoding.Decode(paths[i], channels, height, width, slot) is { } reason)
            {
                throw new DataError(paths[i], reason);
            }
        }

        return ImageDecoding.ToTensor(pixels, paths.Count, channels, height, width);
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
