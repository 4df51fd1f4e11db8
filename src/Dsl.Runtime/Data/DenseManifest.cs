using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Data;

/// <summary>One line of a dense manifest: an image and, optionally, its class mask and depth map (paths as written).</summary>
public sealed record DenseRecord(string Image, string? Mask = null, string? Depth = null);

/// <summary>
/// What the sidecar <c>classes.json</c> beside a dense manifest says: the class names (index 0
/// first, background included), the mask value a loss ignores, the depth scale (metres per unit
/// of the 16-bit depth PNGs), the far plane and the image channels.
/// </summary>
public sealed record DenseClasses(
    IReadOnlyList<string> Classes,
    long IgnoreIndex = DenseManifest.DefaultIgnoreIndex,
    double DepthScale = DenseManifest.DefaultDepthScale,
    double? FarPlane = null,
    int ImageChannels = 3);

/// <summary>
/// Dense-prediction data as a JSONL manifest, one object per line:
/// <c>{"image": "images/train/00000.png", "mask": "masks/train/00000.png", "depth": "depth/train/00000.png"}</c>,
/// paths relative to the manifest's folder (or absolute). <c>mask</c> and <c>depth</c> are
/// optional, but a manifest that gives one on a line gives it on every line. Masks are 8-bit
/// grey-scale PNGs whose value is the class id (or the ignore index); depth maps are 16-bit
/// grey-scale PNGs whose value times the depth scale is the depth in metres (0 = unknown).
/// <c>classes.json</c> beside the manifest names the classes and gives the scale (see
/// <see cref="DenseClasses"/>); both formats round-trip exactly and are read by PIL/torchvision.
/// Every file is decoded with the pixel limits of <see cref="ImageLimits"/>.
/// </summary>
public static class DenseManifest
{
    /// <summary>The sidecar's file name, beside the manifest.</summary>
    public const string ClassesFile = "classes.json";

    /// <summary>The mask value that marks "no label" (padding, unlabelled pixels): it fits an 8-bit PNG and is above any class.</summary>
    public const long DefaultIgnoreIndex = 255;

    /// <summary>Metres per unit of a 16-bit depth PNG: millimetres, so 0–65.535 m.</summary>
    public const double DefaultDepthScale = 0.001;

    private static readonly JsonWriterOptions LineOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private static readonly PngEncoder MaskEncoder = new()
    {
        ColorType = PngColorType.Grayscale,
        BitDepth = PngBitDepth.Bit8,
        CompressionLevel = PngCompressionLevel.DefaultCompression,
    };

    private static readonly PngEncoder DepthEncoder = new()
    {
        ColorType = PngColorType.Grayscale,
        BitDepth = PngBitDepth.Bit16,
        CompressionLevel = PngCompressionLevel.DefaultCompression,
    };

    /// <summary>A depth PNG's value in metres: the one conversion both writer and reader use, so depths round-trip bit for bit.</summary>
    public static float Depth(ushort value, double scale) => (float)(value * scale);

    /// <summary>Writes one line per record (the optional paths only when given); creates the folder if needed.</summary>
    public static void Write(string path, IEnumerable<DenseRecord> records)
    {
        if (Path.GetDirectoryName(Path.GetFullPath(path)) is { } folder)
        {
            Directory.CreateDirectory(folder);
        }

        using var file = new StreamWriter(path, append: false, new System.Text.UTF8Encoding(false));
        using var buffer = new MemoryStream();
        foreach (var record in records)
        {
            buffer.SetLength(0);
            using (var json = new Utf8JsonWriter(buffer, LineOptions))
            {
                json.WriteStartObject();
                json.WriteString("image", record.Image);
                if (record.Mask is { } mask)
                {
                    json.WriteString("mask", mask);
                }

                if (record.Depth is { } depth)
                {
                    json.WriteString("depth", depth);
                }

                json.WriteEndObject();
            }

            file.Write(System.Text.Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length));
            file.Write('\n');
        }
    }

    /// <summary>Writes <c>classes.json</c> into <paramref name="folder"/>, with <paramref name="extra"/> string properties first (a tool's marker).</summary>
    public static void WriteClasses(string folder, DenseClasses classes, IReadOnlyDictionary<string, string>? extra = null)
    {
        using var stream = File.Create(Path.Combine(folder, ClassesFile));
        using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
        json.WriteStartObject();
        foreach (var (key, value) in extra ?? new Dictionary<string, string>())
        {
            json.WriteString(key, value);
        }

        json.WriteStartArray("classes");
        foreach (var c in classes.Classes)
        {
            json.WriteStringValue(c);
        }

        json.WriteEndArray();
        json.WriteNumber("ignore_index", classes.IgnoreIndex);
        json.WriteNumber("image_channels", classes.ImageChannels);
        json.WriteStartObject("depth");
        json.WriteString("encoding", "png16");
        json.WriteNumber("scale", classes.DepthScale);
        json.WriteString("units", "metres");
        if (classes.FarPlane is { } far)
        {
            json.WriteNumber("far", far);
        }

        json.WriteNumber("unknown", 0);
        json.WriteEndObject();
        json.WriteEndObject();
    }

    /// <summary>Writes a class-id mask (row-major, width × height bytes) as an 8-bit grey-scale PNG.</summary>
    public static void WriteMask(string path, ReadOnlySpan<byte> ids, int width, int height)
    {
        using var image = Image.LoadPixelData<L8>(ids, width, height);
        image.SaveAsPng(path, MaskEncoder);
    }

    /// <summary>Writes a depth map (row-major, in units of the depth scale) as a 16-bit grey-scale PNG.</summary>
    public static void WriteDepth(string path, ReadOnlySpan<ushort> values, int width, int height)
    {
        var pixels = new L16[values.Length];
        for (var i = 0; i < values.Length; i++)
        {
            pixels[i] = new L16(values[i]);
        }

        using var image = Image.LoadPixelData<L16>(pixels, width, height);
        image.SaveAsPng(path, DepthEncoder);
    }

    /// <summary>Reads <c>classes.json</c> in <paramref name="folder"/>.</summary>
    /// <exception cref="DataError">It is missing or malformed (the error names it).</exception>
    public static DenseClasses ReadClasses(string folder)
    {
        var path = Path.Combine(folder, ClassesFile);
        if (!File.Exists(path))
        {
            throw new DataError(path, "not found; a manifest with masks or depth needs classes.json beside it ({\"classes\": [...], \"depth\": {\"scale\": ...}})");
        }

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new DataError(path, $"not valid JSON: {e.Message}", e);
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new DataError(path, "expected a JSON object");
            }

            if (!root.TryGetProperty("classes", out var classes) || classes.ValueKind != JsonValueKind.Array
                || classes.GetArrayLength() == 0 || classes.EnumerateArray().Any(c => c.ValueKind != JsonValueKind.String))
            {
                throw new DataError(path, "\"classes\" must be a non-empty array of strings (index 0 first, background included)");
            }

            var names = classes.EnumerateArray().Select(c => c.GetString()!).ToArray();
            var ignore = root.TryGetProperty("ignore_index", out var i) ? Integer(i, "ignore_index", path, 0, 255) : DefaultIgnoreIndex;
            if (ignore < names.Length)
            {
                throw new DataError(path, $"\"ignore_index\" {ignore} is a class id (there are {names.Length} classes); it must be at least {names.Length}");
            }

            var channels = (int)(root.TryGetProperty("image_channels", out var ch) ? Integer(ch, "image_channels", path, 1, 3) : 3);
            if (channels == 2)
            {
                throw new DataError(path, "\"image_channels\" must be 1 (grey-scale) or 3 (RGB)");
            }

            var scale = DefaultDepthScale;
            double? far = null;
            if (root.TryGetProperty("depth", out var depth))
            {
                if (depth.ValueKind != JsonValueKind.Object)
                {
                    throw new DataError(path, "\"depth\" must be an object ({\"scale\": metres per unit, \"far\": metres})");
                }

                if (depth.TryGetProperty("encoding", out var encoding) && encoding.ValueKind == JsonValueKind.String && encoding.GetString() != "png16")
                {
                    throw new DataError(path, $"depth encoding \"{encoding.GetString()}\" is not supported; depth maps are 16-bit grey-scale PNGs (\"png16\")");
                }

                if (depth.TryGetProperty("scale", out var s))
                {
                    scale = s.ValueKind == JsonValueKind.Number && s.GetDouble() is var v && v > 0 && double.IsFinite(v)
                        ? v
                        : throw new DataError(path, $"\"depth\".\"scale\" must be a positive number of metres per unit, found {s.GetRawText()}");
                }

                if (depth.TryGetProperty("far", out var f))
                {
                    far = f.ValueKind == JsonValueKind.Number && f.GetDouble() is var v && v > 0 && double.IsFinite(v)
                        ? v
                        : throw new DataError(path, $"\"depth\".\"far\" must be a positive number of metres, found {f.GetRawText()}");
                }
            }

            return new DenseClasses(names, ignore, scale, far, channels);
        }
    }

    /// <summary>Reads and checks every line (blank lines allowed); no file is opened.</summary>
    /// <exception cref="DataError">The manifest is missing or a line is malformed: the error's path is "file:line".</exception>
    public static IReadOnlyList<(DenseRecord Record, int Line)> Read(string manifestPath)
    {
        if (!File.Exists(manifestPath))
        {
            throw new DataError(manifestPath, "manifest not found");
        }

        var records = new List<(DenseRecord, int)>();
        var lineNumber = 0;
        foreach (var line in File.ReadLines(manifestPath))
        {
            lineNumber++;
            if (!string.IsNullOrWhiteSpace(line))
            {
                records.Add((ParseLine(line, $"{manifestPath}:{lineNumber}"), lineNumber));
            }
        }

        if (records.Count == 0)
        {
            throw new DataError(manifestPath, "the manifest has no lines");
        }

        RequireOnEveryLine(records, manifestPath, r => r.Mask is not null, "mask");
        RequireOnEveryLine(records, manifestPath, r => r.Depth is not null, "depth");
        return records;
    }

    /// <summary>
    /// Reads the manifest and decodes every file at its own size: fields "image" (float32
    /// [C, H, W] in [0, 1], C from classes.json's image_channels, default 3), "mask" (int64
    /// [H, W], <see cref="FieldSchema.Classes"/> the number of classes with background,
    /// <see cref="FieldSchema.IgnoreIndex"/> from classes.json) and "depth" (float32 [1, H, W] in
    /// metres, 0 unknown) when the manifest has them. Every image has the first one's size and
    /// every mask and depth map its image's size.
    /// </summary>
    /// <exception cref="DataError">
    /// A file is missing, corrupt or above the pixel limit, sizes disagree, a mask value is
    /// neither a class nor the ignore index, or a line is malformed: the path is "manifest:line"
    /// and the message names the file.
    /// </exception>
    public static RecordSet Load(string manifestPath, long? maxPixels = null)
    {
        var limit = maxPixels ?? ImageLimits.MaxPixels;
        var records = Read(manifestPath);
        var folder = Path.GetDirectoryName(Path.GetFullPath(manifestPath))!;
        var hasMask = records[0].Record.Mask is not null;
        var hasDepth = records[0].Record.Depth is not null;
        var classes = hasMask || hasDepth || File.Exists(Path.Combine(folder, ClassesFile))
            ? ReadClasses(folder)
            : new DenseClasses(["background"]);
        var channels = classes.ImageChannels;

        var decoded = new (byte[] Image, byte[]? Mask, ushort[]? Depth, int Width, int Height)[records.Count];
        var parallel = new ParallelOptions { MaxDegreeOfParallelism = Threads.Count };
        var errors = new DataError?[records.Count];
        Parallel.For(0, records.Count, parallel, i =>
        {
            var (record, line) = records[i];
            var where = $"{manifestPath}:{line}";
            try
            {
                var (image, width, height) = DecodeImage(Resolve(folder, record.Image), channels, where, limit);
                var mask = record.Mask is { } m ? DecodeMask(Resolve(folder, m), width, height, classes, where, limit) : null;
                var depth = record.Depth is { } d ? DecodeDepth(Resolve(folder, d), width, height, where, limit) : null;
                decoded[i] = (image, mask, depth, width, height);
            }
            catch (DataError e)
            {
                errors[i] = e;
            }
        });

        // The first bad line, whichever thread found it, so the report does not depend on scheduling.
        if (errors.FirstOrDefault(e => e is not null) is { } error)
        {
            throw error;
        }

        var (w, h) = (decoded[0].Width, decoded[0].Height);
        for (var i = 1; i < decoded.Length; i++)
        {
            if (decoded[i].Width != w || decoded[i].Height != h)
            {
                throw new DataError(
                    $"{manifestPath}:{records[i].Line}",
                    $"image {Resolve(folder, records[i].Record.Image)} is {decoded[i].Width}×{decoded[i].Height} but line {records[0].Line}'s is {w}×{h}; every image of a manifest must have one size");
            }
        }

        var n = decoded.Length;
        var schema = new List<FieldSchema> { new("image", FieldKind.Image, [channels, h, w]) };
        var tensors = new Dictionary<string, Tensor>();
        try
        {
            var pixels = ImageDecoding.AllocatePixels(manifestPath, n, (long)channels * h * w);
            for (var i = 0; i < n; i++)
            {
                decoded[i].Image.CopyTo(pixels, (long)i * channels * h * w);
            }

            tensors["image"] = ImageDecoding.ToTensor(pixels, n, channels, h, w);
            if (hasMask)
            {
                var ids = new long[(long)n * h * w];
                for (var i = 0; i < n; i++)
                {
                    for (var k = 0; k < h * w; k++)
                    {
                        ids[((long)i * h * w) + k] = decoded[i].Mask![k];
                    }
                }

                schema.Add(new FieldSchema("mask", FieldKind.Mask, [h, w], classes.Classes.Count, classes.IgnoreIndex));
                tensors["mask"] = torch.tensor(ids, [n, h, w]);
            }

            if (hasDepth)
            {
                var metres = new float[(long)n * h * w];
                for (var i = 0; i < n; i++)
                {
                    for (var k = 0; k < h * w; k++)
                    {
                        metres[((long)i * h * w) + k] = Depth(decoded[i].Depth![k], classes.DepthScale);
                    }
                }

                schema.Add(new FieldSchema("depth", FieldKind.Depth, [1, h, w]));
                tensors["depth"] = torch.tensor(metres, [n, 1, h, w]);
            }

            return new RecordSet(schema, tensors);
        }
        catch
        {
            foreach (var t in tensors.Values)
            {
                t.Dispose();
            }

            throw;
        }
    }

    /// <summary>The file's path: as given when absolute, else under the manifest's folder.</summary>
    public static string Resolve(string manifestFolder, string path) =>
        Path.IsPathRooted(path) ? path : Path.GetFullPath(Path.Combine(manifestFolder, path));

    private static (byte[] Pixels, int Width, int Height) DecodeImage(string path, int channels, string where, long limit)
    {
        if (channels == 1)
        {
            var failure = ImageDecoding.DecodeExact<L8>(path, limit, null, out var grey, out var width, out var height);
            return failure is null ? (grey.Select(p => p.PackedValue).ToArray(), width, height) : throw Refused(where, "image", path, failure);
        }
        else
        {
            var failure = ImageDecoding.DecodeExact<Rgb24>(path, limit, null, out var rgb, out var width, out var height);
            if (failure is not null)
            {
                throw Refused(where, "image", path, failure);
            }

            var bytes = new byte[rgb.Length * 3];
            for (var k = 0; k < rgb.Length; k++)
            {
                (bytes[3 * k], bytes[(3 * k) + 1], bytes[(3 * k) + 2]) = (rgb[k].R, rgb[k].G, rgb[k].B);
            }

            return (bytes, width, height);
        }
    }

    private static byte[] DecodeMask(string path, int width, int height, DenseClasses classes, string where, long limit)
    {
        var failure = ImageDecoding.DecodeExact<L8>(
            path, limit, (format, info) => GreyPng(format, info, PngBitDepth.Bit8, "a mask must be an 8-bit grey-scale PNG of class ids"), out var pixels, out var w, out var h);
        if (failure is not null)
        {
            throw Refused(where, "mask", path, failure);
        }

        RequireSize(where, "mask", path, w, h, width, height);
        for (var k = 0; k < pixels.Length; k++)
        {
            var id = pixels[k].PackedValue;
            if (id >= classes.Classes.Count && id != classes.IgnoreIndex)
            {
                throw new DataError(
                    where,
                    $"mask {path}: pixel ({k % w}, {k / w}) has class id {id}, but there are {classes.Classes.Count} classes (0–{classes.Classes.Count - 1}) and the ignore index is {classes.IgnoreIndex}");
            }
        }

        return pixels.Select(p => p.PackedValue).ToArray();
    }

    private static ushort[] DecodeDepth(string path, int width, int height, string where, long limit)
    {
        var failure = ImageDecoding.DecodeExact<L16>(
            path, limit, (format, info) => GreyPng(format, info, PngBitDepth.Bit16, "a depth map must be a 16-bit grey-scale PNG"), out var pixels, out var w, out var h);
        if (failure is not null)
        {
            throw Refused(where, "depth map", path, failure);
        }

        RequireSize(where, "depth map", path, w, h, width, height);
        return pixels.Select(p => p.PackedValue).ToArray();
    }

    private static string? GreyPng(IImageFormat? format, IImageInfo info, PngBitDepth bits, string requirement)
    {
        if (format is not PngFormat)
        {
            return $"{requirement}, not {format?.Name ?? "an unknown format"}";
        }

        var png = info.Metadata.GetPngMetadata();
        return png.ColorType == PngColorType.Grayscale && png.BitDepth == bits
            ? null
            : $"{requirement}; this one is {png.ColorType?.ToString() ?? "an unknown colour type"} with {(png.BitDepth is { } b ? ((int)b).ToString(CultureInfo.InvariantCulture) : "an unknown number of")} bits per sample";
    }

    private static void RequireSize(string where, string what, string path, int w, int h, int width, int height)
    {
        if (w != width || h != height)
        {
            throw new DataError(where, $"{what} {path} is {w}×{h} but its image is {width}×{height}; they must have one size");
        }
    }

    private static DataError Refused(string where, string what, string path, string reason) => new(where, $"{what} {path}: {reason}");

    private static DenseRecord ParseLine(string line, string where)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(line);
        }
        catch (JsonException e)
        {
            throw new DataError(where, $"not valid JSON: {e.Message}", e);
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new DataError(where, "expected a JSON object");
            }

            return new DenseRecord(
                PathField(root, "image", where) ?? throw new DataError(where, "\"image\" is missing (the image's path)"),
                PathField(root, "mask", where),
                PathField(root, "depth", where));
        }
    }

    private static string? PathField(JsonElement root, string name, string where)
    {
        if (!root.TryGetProperty(name, out var value))
        {
            return null;
        }

        return value.ValueKind == JsonValueKind.String && value.GetString()!.Length > 0
            ? value.GetString()!
            : throw new DataError(where, $"\"{name}\" must be a non-empty string (a path relative to the manifest), found {value.GetRawText()}");
    }

    private static long Integer(JsonElement value, string name, string path, long min, long max) =>
        value.ValueKind == JsonValueKind.Number && value.TryGetInt64(out var i) && i >= min && i <= max
            ? i
            : throw new DataError(path, $"\"{name}\" must be an integer in [{min}, {max}], found {value.GetRawText()}");

    private static void RequireOnEveryLine(List<(DenseRecord Record, int Line)> records, string path, Func<DenseRecord, bool> has, string field)
    {
        var first = records.FindIndex(r => has(r.Record));
        var missing = records.FindIndex(r => !has(r.Record));
        if (first >= 0 && missing >= 0)
        {
            throw new DataError(
                $"{path}:{records[missing].Line}",
                $"no \"{field}\", but line {records[first].Line} has one; give it on every line or on none");
        }
    }
}
