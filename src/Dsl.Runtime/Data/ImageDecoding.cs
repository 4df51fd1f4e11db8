using System.Buffers.Binary;
using System.Collections.Concurrent;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats;
using SixLabors.ImageSharp.Formats.Gif;
using SixLabors.ImageSharp.Formats.Tiff;
using SixLabors.ImageSharp.Memory;
using SixLabors.ImageSharp.Metadata;
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
    /// <summary>The start of every reason given for an image above the pixel limit.</summary>
    internal const string TooLarge = "too large";

    /// <summary>
    /// Decodes every file in parallel into one buffer (image i in slot i). Returns the buffer and,
    /// per file, why it could not be decoded (null when it was). At most <see cref="Threads.Count"/>
    /// files are decoded at once, so memory is bounded by that many images at the pixel limit.
    /// </summary>
    internal static (byte[] Pixels, string?[] Failures) DecodeAll(
        IReadOnlyList<string> paths, string where, int channels, int height, int width, long maxPixels)
    {
        var imageBytes = ImageBytes(channels, height, width);
        var pixels = AllocatePixels(where, paths.Count, imageBytes);
        var failures = new string?[paths.Count];
        var parallel = new ParallelOptions { MaxDegreeOfParallelism = Threads.Count };
        Parallel.For(0, paths.Count, parallel, i =>
        {
            var slot = pixels.AsSpan((int)(i * imageBytes), (int)imageBytes);
            failures[i] = Decode(paths[i], channels, height, width, slot, maxPixels);
        });
        return (pixels, failures);
    }

    /// <summary>
    /// What was skipped and why, once: the count per kind of reason (the text before its first
    /// colon) with one example of each (an image above the pixel limit says how to raise it).
    /// </summary>
    internal static string? SkipSummary(IReadOnlyList<string> paths, IReadOnlyList<string?> failures)
    {
        var skipped = Enumerable.Range(0, paths.Count).Where(i => failures[i] is not null).ToArray();
        if (skipped.Length == 0)
        {
            return null;
        }

        var kinds = skipped
            .GroupBy(i => Kind(failures[i]!))
            .Select(g => $"{g.Count()} {g.Key} (e.g. {paths[g.First()]}: {Detail(failures[g.First()]!)})");
        return $"skipped {skipped.Length} of {paths.Count} images: {string.Join("; ", kinds)}";
    }

    private static string Kind(string reason) =>
        reason.IndexOf(':', StringComparison.Ordinal) is var colon and >= 0 ? reason[..colon] : reason;

    /// <summary>The reason without its kind, which the summary has already said.</summary>
    private static string Detail(string reason) =>
        reason.IndexOf(": ", StringComparison.Ordinal) is var colon and >= 0 ? reason[(colon + 2)..] : reason;

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

    /// <summary>
    /// Writes the image's H×W×C bytes into <paramref name="slot"/>; returns why it failed, or null.
    /// The size the file declares is read from its header (no pixels decoded) and checked against
    /// <paramref name="maxPixels"/> before anything the size would allocate.
    /// </summary>
    internal static string? Decode(string path, int channels, int height, int width, Span<byte> slot, long maxPixels)
    {
        try
        {
            if (Open(path, maxPixels, out var file, out var configuration, out _, out _) is { } refused)
            {
                return refused;
            }

            if (channels == 1)
            {
                using var grey = Image.Load<L8>(configuration, file);
                ResizeTo(grey, height, width);
                grey.CopyPixelDataTo(slot);
            }
            else
            {
                using var rgb = Image.Load<Rgb24>(configuration, file);
                ResizeTo(rgb, height, width);
                rgb.CopyPixelDataTo(slot);
            }

            return null;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return Failure(e, maxPixels);
        }
    }

    /// <summary>
    /// Decodes the image at the size it has, with the same checks as <see cref="Decode"/> (file
    /// size, truncation, declared size, GIF frames, the allocator's limit) and, when given,
    /// <paramref name="accept"/> on its format and metadata before any pixel is decoded (a mask
    /// must be an 8-bit grey-scale PNG, say). Returns the pixels row by row and the size, or why not.
    /// </summary>
    internal static string? DecodeExact<TPixel>(
        string path, long maxPixels, Func<IImageFormat?, IImageInfo, string?>? accept, out TPixel[] pixels, out int width, out int height)
        where TPixel : unmanaged, IPixel<TPixel>
    {
        pixels = [];
        (width, height) = (0, 0);
        try
        {
            if (Open(path, maxPixels, out var file, out var configuration, out var format, out var info) is { } refused)
            {
                return refused;
            }

            if (accept?.Invoke(format, info) is { } rejected)
            {
                return rejected;
            }

            using var image = Image.Load<TPixel>(configuration, file);
            pixels = new TPixel[(long)image.Width * image.Height];
            image.CopyPixelDataTo(pixels);
            (width, height) = (image.Width, image.Height);
            return null;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return Failure(e, maxPixels);
        }
    }

    /// <summary>
    /// Reads the file and its header, refusing (with the reason) a file too large to read, a
    /// truncated one, an unknown format, or a declared size or GIF frame above the pixel limit.
    /// </summary>
    private static string? Open(
        string path, long maxPixels, out byte[] file, out Configuration configuration, out IImageFormat? format, out IImageInfo info)
    {
        (file, configuration, format, info) = ([], Configuration.Default, null, null!);
        var length = new FileInfo(path).Length;
        var maxFileBytes = ImageLimits.MaxFileBytes(maxPixels);
        if (length > maxFileBytes)
        {
            return $"{TooLarge}: the file has {ImageLimits.Format(length)} bytes, more than the {ImageLimits.Format(maxFileBytes)} allowed for images of at most {ImageLimits.Format(maxPixels)} pixels";
        }

        file = File.ReadAllBytes(path);
        if (ImageTruncation.Find(file) is { } truncation)
        {
            return truncation;
        }

        configuration = ConfigurationFor(maxPixels);
        var identified = Image.Identify(configuration, file, out format);
        if (identified is null)
        {
            return "not a recognised image format";
        }

        info = identified;
        if (Oversized(info.Width, info.Height, "declares", maxPixels) is { } declared)
        {
            return declared;
        }

        // A GIF decoder allocates each frame at the frame descriptor's size, which the
        // logical screen Identify reports does not bound.
        if (GifLargestFrame(file) is var (frameWidth, frameHeight)
            && Oversized(frameWidth, frameHeight, "has a frame of", maxPixels) is { } frame)
        {
            return frame;
        }

        return null;
    }

    /// <summary>Why decoding failed, from what the file system or a decoder threw.</summary>
    private static string Failure(Exception e, long maxPixels) => e switch
    {
        FileNotFoundException or DirectoryNotFoundException => "file not found",
        UnknownImageFormatException => "not a recognised image format",

        // The allocator's limit (ConfigurationFor) caught a buffer the header checks did not foresee.
        InvalidMemoryOperationException => $"{TooLarge}: decoding needs more memory than images of at most {ImageLimits.Format(maxPixels)} pixels ({e.Message})",

        // Decoders report corrupt input with many exception types (InvalidImageContentException,
        // ImageFormatException, NotSupportedException, IOException, ...); all mean "skip this file".
        _ => $"cannot decode: {e.Message}",
    };

    private static string? Oversized(long width, long height, string what, long maxPixels) =>
        width * height > maxPixels
            ? $"{TooLarge}: {what} {width}×{height} = {ImageLimits.Format(width * height)} pixels, above the limit of {ImageLimits.Format(maxPixels)} (raise it with {ImageLimits.EnvironmentVariable}, or --max-pixels for predict)"
            : null;

    /// <summary>The largest frame descriptor of a GIF (width × height), or null for other files or a GIF with no frame.</summary>
    internal static (int Width, int Height)? GifLargestFrame(ReadOnlySpan<byte> file)
    {
        const int ScreenDescriptorEnd = 13;
        if (!(file.StartsWith("GIF87a"u8) || file.StartsWith("GIF89a"u8)) || file.Length < ScreenDescriptorEnd)
        {
            return null;
        }

        (int Width, int Height)? largest = null;
        long offset = ScreenDescriptorEnd + ImageTruncation.ColourTableLength(file[10]);
        while (offset < file.Length)
        {
            switch (file[(int)offset])
            {
                case 0x21:
                    offset = ImageTruncation.SkipSubBlocks(file, offset + 2);
                    break;
                case 0x2C when offset + 10 <= file.Length:
                    // Descriptor: separator, left, top, width, height (little-endian 16-bit), flags.
                    int w = BinaryPrimitives.ReadUInt16LittleEndian(file[((int)offset + 5)..]);
                    int h = BinaryPrimitives.ReadUInt16LittleEndian(file[((int)offset + 7)..]);
                    if (largest is not { } l || (long)w * h > (long)l.Width * l.Height)
                    {
                        largest = (w, h);
                    }

                    offset = ImageTruncation.SkipSubBlocks(file, offset + 10 + ImageTruncation.ColourTableLength(file[(int)offset + 9]) + 1);
                    break;
                default:
                    return largest;
            }
        }

        return largest;
    }

    private static readonly ConcurrentDictionary<long, Configuration> Configurations = new();

    /// <summary>
    /// ImageSharp's settings for one pixel limit: no single buffer above 4 bytes per allowed pixel
    /// (a backstop for sizes the header checks miss), only the first frame of an animation, and
    /// one thread per decode since <see cref="DecodeAll"/> already decodes files in parallel.
    /// </summary>
    private static Configuration ConfigurationFor(long maxPixels) => Configurations.GetOrAdd(maxPixels, limit =>
    {
        var configuration = Configuration.Default.Clone();
        configuration.MaxDegreeOfParallelism = 1;
        var megabytes = Math.Clamp(((Math.Min(limit, long.MaxValue / 4) * 4) >> 20) + 1, 16, int.MaxValue);
        configuration.MemoryAllocator = MemoryAllocator.Create(new MemoryAllocatorOptions { AllocationLimitMegabytes = (int)megabytes });
        configuration.ImageFormatsManager.SetDecoder(GifFormat.Instance, new GifDecoder { DecodingMode = FrameDecodingMode.First, MaxFrames = 1 });
        configuration.ImageFormatsManager.SetDecoder(TiffFormat.Instance, new TiffDecoder { DecodingMode = FrameDecodingMode.First });
        return configuration;
    });

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
