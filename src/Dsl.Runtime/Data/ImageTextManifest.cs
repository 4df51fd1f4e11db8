using System.Text.Encodings.Web;
using System.Text.Json;
using TorchSharp;

namespace Dsl.Runtime.Data;

/// <summary>
/// An image–text data set as a JSONL manifest, one object per line:
/// <c>{"image": "images/train/00000.png", "captions": ["…"], "synthetic": ["…"], "label": 3, "labels": [4, 17]}</c>.
/// <c>image</c> (relative to the manifest's folder, or absolute) and <c>captions</c> (at least one)
/// are required; <c>synthetic</c> (a second caption stream), <c>label</c> (class index) and
/// <c>labels</c> (CatLIP synset indices) are optional, but a manifest that gives <c>label</c> or
/// <c>labels</c> on one line must give it on every line. Other keys are ignored. One line per
/// image keeps the format streamable and lets tools such as <c>dsl data catlip-labels</c> add a
/// field without knowing the rest.
/// </summary>
public static class ImageTextManifest
{
    private static readonly JsonWriterOptions LineOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>
    /// Reads and checks every line (blank lines are allowed); images are not opened.
    /// </summary>
    /// <exception cref="DataError">
    /// The file is missing, or a line is malformed: the error's path is "file:line".
    /// </exception>
    public static IReadOnlyList<ImageTextRecord> Read(string manifestPath)
    {
        if (!File.Exists(manifestPath))
        {
            throw new DataError(manifestPath, "manifest not found");
        }

        var records = new List<ImageTextRecord>();
        var lineNumbers = new List<int>();
        var lineNumber = 0;
        foreach (var line in File.ReadLines(manifestPath))
        {
            lineNumber++;
            if (!string.IsNullOrWhiteSpace(line))
            {
                records.Add(ParseLine(line, $"{manifestPath}:{lineNumber}"));
                lineNumbers.Add(lineNumber);
            }
        }

        if (records.Count == 0)
        {
            throw new DataError(manifestPath, "the manifest has no lines");
        }

        RequireOnEveryLine(records, lineNumbers, manifestPath, r => r.Label is not null, "label");
        RequireOnEveryLine(records, lineNumbers, manifestPath, r => r.Labels is not null, "labels");
        return records;
    }

    /// <summary>
    /// Reads the manifest and decodes its images as <see cref="ImageFolder.Load"/> does
    /// (grey-scale for 1 channel, RGB for 3, resized, [0, 1], in parallel); the zero-shot class
    /// names and templates come from classes.json beside it when there is one. An image that is
    /// missing or cannot be decoded is skipped and listed in <see cref="ImageTextSet.SkippedFiles"/>,
    /// with its line's captions and labels; so is an image whose header declares more than
    /// <paramref name="maxPixels"/> pixels (default <see cref="ImageLimits.MaxPixels"/>).
    /// </summary>
    public static ImageTextSet Load(string manifestPath, int channels, int height, int width, long? maxPixels = null)
    {
        var limit = maxPixels ?? ImageLimits.MaxPixels;
        var imageBytes = ImageDecoding.ImageBytes(channels, height, width);
        var records = Read(manifestPath);
        var folder = Path.GetDirectoryName(Path.GetFullPath(manifestPath))!;
        var prompts = ClassPrompts.Read(folder);
        var paths = records.Select(r => ImagePath(folder, r)).ToArray();
        var (pixels, failures) = ImageDecoding.DecodeAll(paths, manifestPath, channels, height, width, limit);

        var kept = new List<ImageTextRecord>();
        var skipped = new List<string>();
        for (var i = 0; i < records.Count; i++)
        {
            if (failures[i] is { } reason)
            {
                skipped.Add($"{paths[i]}: {reason}");
            }
            else
            {
                kept.Add(records[i]);
            }
        }

        if (kept.Count == 0)
        {
            throw new DataError(manifestPath, $"no readable image among {records.Count} lines; first failure: {skipped[0]}");
        }

        ImageDecoding.Compact(pixels, imageBytes, failures);
        var images = ImageDecoding.ToTensor(pixels, kept.Count, channels, height, width);
        var classLabels = records[0].Label is null ? null : torch.tensor(kept.Select(r => (long)r.Label!.Value).ToArray());
        return new ImageTextSet(
            images,
            kept.Select(r => r.Captions).ToArray(),
            kept.Select(r => r.Synthetic).ToArray(),
            classLabels,
            records[0].Labels is null ? null : kept.Select(r => r.Labels!).ToArray(),
            prompts.Classes,
            prompts.Templates,
            skipped,
            ImageDecoding.SkipSummary(paths, failures));
    }

    /// <summary>The image's path: as given when absolute, else under the manifest's folder.</summary>
    public static string ImagePath(string manifestFolder, ImageTextRecord record) =>
        Path.IsPathRooted(record.Image) ? record.Image : Path.GetFullPath(Path.Combine(manifestFolder, record.Image));

    /// <summary>
    /// Writes one line per record; the optional fields only when present ("synthetic" when not
    /// empty). Creates the folder if needed.
    /// </summary>
    public static void Write(string path, IEnumerable<ImageTextRecord> records)
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
                WriteRecord(json, record);
            }

            file.Write(System.Text.Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length));
            file.Write('\n');
        }
    }

    private static void WriteRecord(Utf8JsonWriter json, ImageTextRecord record)
    {
        json.WriteStartObject();
        json.WriteString("image", record.Image);
        WriteStrings(json, "captions", record.Captions);
        if (record.Synthetic.Length > 0)
        {
            WriteStrings(json, "synthetic", record.Synthetic);
        }

        if (record.Label is { } label)
        {
            json.WriteNumber("label", label);
        }

        if (record.Labels is { } labels)
        {
            json.WriteStartArray("labels");
            foreach (var l in labels)
            {
                json.WriteNumberValue(l);
            }

            json.WriteEndArray();
        }

        json.WriteEndObject();
    }

    private static void WriteStrings(Utf8JsonWriter json, string name, string[] values)
    {
        json.WriteStartArray(name);
        foreach (var v in values)
        {
            json.WriteStringValue(v);
        }

        json.WriteEndArray();
    }

    private static ImageTextRecord ParseLine(string line, string where)
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
                throw new DataError(where, $"expected a JSON object, found {Kind(root)}");
            }

            if (!root.TryGetProperty("image", out var image) || image.ValueKind != JsonValueKind.String || image.GetString()!.Length == 0)
            {
                throw new DataError(where, "\"image\" must be a non-empty string (the image's path)");
            }

            if (!root.TryGetProperty("captions", out var captions))
            {
                throw new DataError(where, "\"captions\" is missing (an array of at least one string)");
            }

            var captionList = Strings(captions, "captions", where);
            if (captionList.Length == 0)
            {
                throw new DataError(where, "\"captions\" is empty; give at least one caption");
            }

            var synthetic = root.TryGetProperty("synthetic", out var s) ? Strings(s, "synthetic", where) : [];
            int? label = root.TryGetProperty("label", out var l) ? Index(l, "label", where) : null;
            var labels = root.TryGetProperty("labels", out var ls) ? Indices(ls, "labels", where) : null;
            return new ImageTextRecord(image.GetString()!, captionList, synthetic, label, labels);
        }
    }

    private static string[] Strings(JsonElement array, string name, string where)
    {
        if (array.ValueKind != JsonValueKind.Array)
        {
            throw new DataError(where, $"\"{name}\" must be an array of strings, found {Kind(array)}");
        }

        return array.EnumerateArray()
            .Select((e, i) => e.ValueKind == JsonValueKind.String
                ? e.GetString()!
                : throw new DataError(where, $"\"{name}\"[{i}] must be a string, found {Kind(e)}"))
            .ToArray();
    }

    private static int Index(JsonElement value, string name, string where) =>
        value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out var i) && i >= 0
            ? i
            : throw new DataError(where, $"\"{name}\" must be a non-negative integer, found {value.GetRawText()}");

    private static int[] Indices(JsonElement array, string name, string where)
    {
        if (array.ValueKind != JsonValueKind.Array)
        {
            throw new DataError(where, $"\"{name}\" must be an array of non-negative integers, found {Kind(array)}");
        }

        return array.EnumerateArray().Select((e, i) => Index(e, $"{name}[{i}]", where)).ToArray();
    }

    private static void RequireOnEveryLine(
        List<ImageTextRecord> records, List<int> lineNumbers, string path, Func<ImageTextRecord, bool> has, string field)
    {
        var first = records.FindIndex(r => has(r));
        var missing = records.FindIndex(r => !has(r));
        if (first >= 0 && missing >= 0)
        {
            throw new DataError(
                $"{path}:{lineNumbers[missing]}",
                $"no \"{field}\", but line {lineNumbers[first]} has one; give it on every line or on none");
        }
    }

    private static string Kind(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => e.ValueKind.ToString(),
    };
}
