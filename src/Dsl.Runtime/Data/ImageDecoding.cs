using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;
using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Data;

/// <summary>
/// Image files to one float32 [N, C, H, W] tensor in [0, 1], shared by every loader of image
/// files (<see cref="ImageFolder"/>, <see cref="ImageTextManifest"/>) so that they decode, convert,
/// resize and skip bad files the same way.
/// </summary>
internal static class ImageDecoding
{
    /// <summary>
    /// Decodes every file in parallel into one buffer (image i in slot i). Returns the buffer and,
    /// per file, why it could not be decoded (null when it was).
    /// </summary>
    internal static (byte[] Pixels, string?[] Failures) DecodeAll(IReadOnlyList<string> paths, string where, int channels, int height, int width)
    {
        var imageBytes = ImageBytes(channels, height, width);
        var pixels = AllocatePixels(where, paths.Count, imageBytes);
        var failures = new string?[paths.Count];
        Parallel.For(0, paths.Count, i =>
        {
            var slot = pixels.AsSpan((int)(i * imageBytes), (int)imageBytes);
            failures[i] = Decode(paths[i], channels, height, width, slot);
        });
        return (pixels, failures);
    }

    internal static long ImageBytes(int channels, int height, int width)
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
    internal static byte[] AllocatePixels(string path, int count, long imageBytes)
    {
        if (count * imageBytes > Array.MaxLength)
        {
            throw new DataError(path, $"{count} images of {imageBytes} bytes do not fit in one buffer; use a smaller image size");
        }

        return new byte[count * imageBytes];
    }

    /// <summary>Writes the image's H×W×C bytes into <paramref name="slot"/>; returns why it failed, or null.</summary>
    internal static string? Decode(string path, int channels, int height, int width, Span<byte> slot)
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
    internal static void Compact(byte[] pixels, long imageBytes, string?[] failures)
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
    internal static Tensor ToTensor(byte[] pixels, int count, int channels, int height, int width)
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
