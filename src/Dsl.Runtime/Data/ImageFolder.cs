using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;
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
        var imageBytes = ImageBytes(channels, height, width);
        var (classNames, samples) = FindSamples(root);
        var pixels = AllocatePixels(root, samples.Count, imageBytes);

        var failures = new string?[samples.Count];
        Parallel.For(0, samples.Count, i =>
        {
            var slot = pixels.AsSpan((int)(i * imageBytes), (int)imageBytes);
            failures[i] = Decode(samples[i].Path, channels, height, width, slot);
        });

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

        Compact(pixels, imageBytes, failures);
        var images = ToTensor(pixels, labels.Count, channels, height, width);
        return new LabeledImages(images, torch.tensor(labels.ToArray()), classNames, skipped);
    }

    /// <summary>
    /// Loads the given files as one batch, float32 [N, C, H, W] in [0, 1], prepared as
    /// <see cref="Load"/> prepares images. Unlike Load, a file that cannot be decoded is a
    /// <see cref="DataError"/>: the caller named it, so skipping it would hide the problem.
    /// </summary>
    public static Tensor LoadFiles(IReadOnlyList<string> paths, int channels, int height, int width)
    {
        var imageBytes = ImageBytes(channels, height, width);
        if (paths.Count == 0)
        {
            throw new ArgumentException("no image files given", nameof(paths));
        }

        var pixels = AllocatePixels(paths[0], paths.Count, imageBytes);
        for (var i = 0; i < paths.Count; i++)
        {
            var slot = pixels.AsSpan((int)(i * imageBytes), (int)imageBytes);
            if (Decode(paths[i], channels, height, width, slot) is { } reason)
            {
                throw new DataError(paths[i], reason);
            }
        }

        return ToTensor(pixels, paths.Count, channels, height, width);
    }

    private static long ImageBytes(int channels, int height, int width)
    {
        if (channels is not (1 or 3))
        {
            throw new ArgumentOutOfRangeException(nameof(channels), channels, "channels must be 1 (grey-scale) or 3 (RGB)");
        }

        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(height);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
        return (long)channels * height * width;
    }

    /// <summary>
    /// One buffer for all decoded images, image i in slot i, so the tensor is made with a
    /// single copy; .NET arrays cap its size.
    /// </summary>
    private static byte[] AllocatePixels(string path, int count, long imageBytes)
    {
        if (count * imageBytes > Array.MaxLength)
        {
            throw new DataError(path, $"{count} images of {imageBytes} bytes do not fit in one buffer; use a smaller image size");
        }

        return new byte[count * imageBytes];
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

    /// <summary>Writes the image's H×W×C bytes into <paramref name="slot"/>; returns why it failed, or null.</summary>
    private static string? Decode(string path, int channels, int height, int width, Span<byte> slot)
    {
        try
        {
            var file = File.ReadAllBytes(path);
            if (ImageTruncation.Find(file) is { } truncation)
            {
                return truncation;
            }

            if (channels == 1)
            {
                using var grey = Image.Load<L8>(file);
                ResizeTo(grey, height, width);
                grey.CopyPixelDataTo(slot);
            }
            else
            {
                using var rgb = Image.Load<Rgb24>(file);
                ResizeTo(rgb, height, width);
                rgb.CopyPixelDataTo(slot);
            }

            return null;
        }
        catch (FileNotFoundException)
        {
            return "file not found";
        }
        catch (UnknownImageFormatException)
        {
            return "not a recognised image format";
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Decoders report corrupt input with many exception types (InvalidImageContentException,
            // ImageFormatException, NotSupportedException, IOException, ...); all mean "skip this file".
            return $"cannot decode: {e.Message}";
        }
    }

    private static void ResizeTo(Image image, int height, int width)
    {
        if (image.Height != height || image.Width != width)
        {
            image.Mutate(x => x.Resize(width, height));
        }
    }

    /// <summary>Moves the decoded slots to the front, keeping their order.</summary>
    private static void Compact(byte[] pixels, long imageBytes, string?[] failures)
    {
        var kept = 0;
        for (var i = 0; i < failures.Length; i++)
        {
            if (failures[i] is not null)
            {
                continue;
            }

            if (kept != i)
            {
                pixels.AsSpan((int)(i * imageBytes), (int)imageBytes).CopyTo(pixels.AsSpan((int)(kept * imageBytes)));
            }

            kept++;
        }
    }

    /// <summary>[N, H, W, C] bytes → float32 [N, C, H, W] in [0, 1].</summary>
    private static Tensor ToTensor(byte[] pixels, int count, int channels, int height, int width)
    {
        using var raw = torch.frombuffer(pixels, ScalarType.Byte, count: (long)count * channels * height * width);
        using var channelsLast = raw.view(count, height, width, channels);
        using var channelsFirstView = channelsLast.permute(0, 3, 1, 2);
        using var channelsFirst = channelsFirstView.contiguous();
        var images = channelsFirst.to_type(ScalarType.Float32);
        images.div_(255f);
        return images;
    }
}
