using System.Text.Json;
using static TorchSharp.torch;

namespace Dsl.Runtime.Data;

/// <summary>
/// A <c>records</c> data set: a JSONL manifest whose lines hold, besides the dense manifest's
/// files (<c>image</c>, <c>mask</c>, <c>depth</c>; see <see cref="DenseManifest"/>), values
/// written in the line itself: a class index (<c>"label": 3</c>), a vector of numbers
/// (<c>"metadata": [0.1, 2.0, …]</c>, row-major for a tensor of more dimensions) or token ids.
/// The train block declares every field; what the files give is checked against it here, so a
/// field of another shape or a label beyond its classes is one located error before any step.
/// </summary>
public static class RecordManifest
{
    /// <summary>Loads the declared fields of every line.</summary>
    /// <exception cref="DataError">
    /// The manifest is missing or malformed, a declared field is missing on a line or of another
    /// shape or kind than declared, or a label is outside its classes: the path is "manifest:line"
    /// (or the manifest) and the message names the field.
    /// </exception>
    public static RecordSet Load(string manifestPath, IReadOnlyList<FieldSchema> declared, long? maxPixels = null)
    {
        var spatial = declared.Where(f => f.IsSpatial).ToList();
        var values = declared.Where(f => !f.IsSpatial).ToList();
        var tensors = new Dictionary<string, Tensor>();
        var schema = new List<FieldSchema>();
        try
        {
            if (spatial.Count > 0)
            {
                var files = DenseManifest.Load(manifestPath, maxPixels);
                foreach (var field in spatial)
                {
                    var loaded = files.Schema.FirstOrDefault(f => f.Name == field.Name);
                    if (loaded is null)
                    {
                        throw new DataError(manifestPath, $"the train block declares field '{field.Name}' but the manifest's lines give no '{field.Name}'");
                    }

                    if (!loaded.Shape.SequenceEqual(field.Shape))
                    {
                        throw new DataError(
                            manifestPath,
                            $"field '{field.Name}' is [{string.Join(", ", loaded.Shape)}] in the files but the train block declares [{string.Join(", ", field.Shape)}]");
                    }

                    if (field.Kind == FieldKind.Mask && field.Classes > 0 && loaded.Classes != field.Classes)
                    {
                        throw new DataError(
                            manifestPath,
                            $"field '{field.Name}': {DenseManifest.ClassesFile} names {loaded.Classes} classes but the train block declares {field.Classes}");
                    }

                    schema.Add(loaded);
                    tensors[field.Name] = files[field.Name];
                }

                // The fields not declared are not kept.
                foreach (var other in files.Schema.Where(f => !spatial.Any(d => d.Name == f.Name)))
                {
                    files[other.Name].Dispose();
                }
            }

            if (values.Count > 0)
            {
                var lines = Lines(manifestPath);
                foreach (var field in values)
                {
                    tensors[field.Name] = Values(manifestPath, lines, field);
                    schema.Add(field);
                }
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

    private static List<(JsonElement Line, int Number)> Lines(string manifestPath)
    {
        if (!File.Exists(manifestPath))
        {
            throw new DataError(manifestPath, "manifest not found");
        }

        var lines = new List<(JsonElement, int)>();
        var number = 0;
        foreach (var text in File.ReadLines(manifestPath))
        {
            number++;
            if (string.IsNullOrWhiteSpace(text))
            {
                continue;
            }

            try
            {
                using var document = JsonDocument.Parse(text);
                if (document.RootElement.ValueKind != JsonValueKind.Object)
                {
                    throw new DataError($"{manifestPath}:{number}", "a line must be a JSON object");
                }

                lines.Add((document.RootElement.Clone(), number));
            }
            catch (JsonException e)
            {
                throw new DataError($"{manifestPath}:{number}", $"not JSON: {e.Message}");
            }
        }

        if (lines.Count == 0)
        {
            throw new DataError(manifestPath, "the manifest has no lines");
        }

        return lines;
    }

    /// <summary>One field's values of every line: [N] labels, [N, …shape] numbers or token ids.</summary>
    private static Tensor Values(string manifestPath, List<(JsonElement Line, int Number)> lines, FieldSchema field)
    {
        var size = field.Shape.Aggregate(1L, (a, b) => a * b);
        var integer = field.DType == ScalarType.Int64;
        var longs = integer ? new long[lines.Count * size] : [];
        var floats = integer ? [] : new float[lines.Count * size];
        for (var i = 0; i < lines.Count; i++)
        {
            var (line, number) = lines[i];
            var where = $"{manifestPath}:{number}";
            if (!line.TryGetProperty(field.Name, out var value))
            {
                throw new DataError(where, $"the line has no '{field.Name}', which the train block declares");
            }

            if (field.Kind == FieldKind.Label)
            {
                if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt64(out var label))
                {
                    throw new DataError(where, $"'{field.Name}' must be a class index (an integer), got {value.GetRawText()}");
                }

                if (label < 0 || (field.Classes > 0 && label >= field.Classes))
                {
                    throw new DataError(where, $"'{field.Name}' is {label}, outside the {field.Classes} classes declared (0 to {field.Classes - 1})");
                }

                longs[i] = label;
                continue;
            }

            if (value.ValueKind != JsonValueKind.Array || value.GetArrayLength() != size)
            {
                throw new DataError(
                    where,
                    $"'{field.Name}' must be an array of {size} numbers (a [{string.Join(", ", field.Shape)}] tensor, row-major), got {Describe(value)}");
            }

            var k = 0L;
            foreach (var item in value.EnumerateArray())
            {
                if (item.ValueKind != JsonValueKind.Number)
                {
                    throw new DataError(where, $"'{field.Name}'[{k}] is {item.GetRawText()}, not a number");
                }

                if (integer)
                {
                    if (!item.TryGetInt64(out var id) || id < 0)
                    {
                        throw new DataError(where, $"'{field.Name}'[{k}] is {item.GetRawText()}, not a token id (a non-negative integer)");
                    }

                    longs[(i * size) + k] = id;
                }
                else
                {
                    var x = item.GetDouble();
                    if (!double.IsFinite(x) || Math.Abs(x) > float.MaxValue)
                    {
                        throw new DataError(where, $"'{field.Name}'[{k}] is {item.GetRawText()}, not a finite float32");
                    }

                    floats[(i * size) + k] = (float)x;
                }

                k++;
            }
        }

        long[] shape = [lines.Count, .. field.Shape];
        return integer ? tensor(longs, shape) : tensor(floats, shape);
    }

    private static string Describe(JsonElement value) =>
        value.ValueKind == JsonValueKind.Array ? $"an array of {value.GetArrayLength()}" : value.GetRawText();
}
