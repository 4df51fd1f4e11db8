using System.Text.Json;
using static TorchSharp.torch;

namespace Dsl.Runtime.Data;

/// <summary>
/// A <c>records</c> data set: a JSONL manifest whose lines hold, besides the dense manifest's
/// files (<c>image</c>, <c>mask</c>, <c>depth</c>; see <see cref="DenseManifest"/>), values
/// written in the line itself: a class index (<c>"label": 3</c>), a vector of numbers
/// (<c>"metadata": [0.1, 2.0, …]</c>, row-major for a tensor of more dimensions) or token ids,
/// or a row of a tensor in a safetensors file (<c>"emb": {"safetensors": "emb-000.safetensors",
/// "key": "emb", "row": 17}</c>: stored teacher outputs, as DataCompDR keeps them beside each
/// shard). A manifest path with <c>*</c> in its file name names shards, read in name order as one
/// set. The train block declares every field; what the files give is checked against it here, so
/// a field of another shape or a label beyond its classes is one located error before any step.
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
        if (Path.GetFileName(manifestPath).Contains('*', StringComparison.Ordinal))
        {
            return Shards(manifestPath, declared, maxPixels);
        }

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

    /// <summary>Every shard the pattern matches, in ordinal name order, as one set.</summary>
    private static RecordSet Shards(string pattern, IReadOnlyList<FieldSchema> declared, long? maxPixels)
    {
        var folder = Path.GetDirectoryName(pattern) is { Length: > 0 } d ? d : ".";
        if (folder.Contains('*', StringComparison.Ordinal))
        {
            throw new DataError(pattern, "a shard pattern may have * in its file name only, not in its folders");
        }

        var shards = Directory.Exists(folder)
            ? Directory.GetFiles(folder, Path.GetFileName(pattern)).Order(StringComparer.Ordinal).ToArray()
            : [];
        if (shards.Length == 0)
        {
            throw new DataError(pattern, "no shard matches the pattern");
        }

        var sets = new List<RecordSet>();
        try
        {
            foreach (var shard in shards)
            {
                sets.Add(Load(shard, declared, maxPixels));
            }

            // Masks' classes and images' channels come from each shard's folder: they must agree.
            var schema = sets[0].Schema;
            foreach (var (set, shard) in sets.Zip(shards).Skip(1))
            {
                if (!set.Schema.Zip(schema).All(p => p.First.Name == p.Second.Name && p.First.Shape.SequenceEqual(p.Second.Shape) && p.First.Classes == p.Second.Classes))
                {
                    throw new DataError(shard, $"its fields ({string.Join(", ", set.Schema)}) differ from the first shard's ({string.Join(", ", schema)})");
                }
            }

            return new RecordSet(schema, schema.ToDictionary(f => f.Name, f => cat([.. sets.Select(s => s[f.Name])], 0)));
        }
        finally
        {
            foreach (var set in sets)
            {
                set.Dispose();
            }
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
        var stored = new List<(int Record, StoredRow Row)>();
        for (var i = 0; i < lines.Count; i++)
        {
            var (line, number) = lines[i];
            var where = $"{manifestPath}:{number}";
            if (!line.TryGetProperty(field.Name, out var value))
            {
                throw new DataError(where, $"the line has no '{field.Name}', which the train block declares");
            }

            if (value.ValueKind == JsonValueKind.Object && field.Kind != FieldKind.Label)
            {
                stored.Add((i, StoredRow.Parse(value, field.Name, where, Path.GetDirectoryName(Path.GetFullPath(manifestPath))!)));
                continue;
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
        var values = integer ? tensor(longs, shape) : tensor(floats, shape);
        try
        {
            Gather(values, stored, field);
            return values;
        }
        catch
        {
            values.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Copies the rows the lines name into <paramref name="values"/>: each safetensors file is read
    /// once, each tensor checked against the field's shape and kind.
    /// </summary>
    private static void Gather(Tensor values, List<(int Record, StoredRow Row)> stored, FieldSchema field)
    {
        var integer = field.DType == ScalarType.Int64;
        foreach (var file in stored.GroupBy(s => s.Row.File))
        {
            Dictionary<string, Tensor> tensors;
            try
            {
                tensors = Checkpoints.SafetensorsFile.Read(file.Key);
            }
            catch (Checkpoints.CheckpointError e)
            {
                throw new DataError(file.First().Row.Where, $"'{field.Name}': {e.Message}");
            }

            try
            {
                foreach (var byKey in file.GroupBy(s => s.Row.Key))
                {
                    var where = byKey.First().Row.Where;
                    if (!tensors.TryGetValue(byKey.Key, out var source))
                    {
                        throw new DataError(where, $"'{field.Name}': {file.Key} has no tensor '{byKey.Key}' (it has {string.Join(", ", tensors.Keys.Order(StringComparer.Ordinal))})");
                    }

                    var isInteger = source.dtype is ScalarType.Int64 or ScalarType.Int32 or ScalarType.Int16 or ScalarType.Int8 or ScalarType.Byte;
                    var isFloat = source.dtype is ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float64;
                    if (integer ? !isInteger : !isFloat)
                    {
                        throw new DataError(where, $"'{field.Name}': tensor '{byKey.Key}' of {file.Key} is {source.dtype}, but a {field.Kind.ToString().ToLowerInvariant()} field takes {(integer ? "integers" : "floats")}");
                    }

                    if (source.dim() < 1 || !source.shape[1..].SequenceEqual(field.Shape))
                    {
                        throw new DataError(where, $"'{field.Name}': tensor '{byKey.Key}' of {file.Key} is [{string.Join(", ", source.shape)}], but rows of [{string.Join(", ", field.Shape)}] are declared (a [N, {string.Join(", ", field.Shape)}] tensor)");
                    }

                    var bad = byKey.FirstOrDefault(s => s.Row.Row >= source.shape[0]);
                    if (bad.Row is not null)
                    {
                        throw new DataError(bad.Row.Where, $"'{field.Name}': row {bad.Row.Row} of '{byKey.Key}' in {file.Key}, which has {source.shape[0]} rows");
                    }

                    using var scope = NewDisposeScope();
                    using var rows = tensor(byKey.Select(s => s.Row.Row).ToArray());
                    using var records = tensor(byKey.Select(s => (long)s.Record).ToArray());
                    using var gathered = source.index_select(0, rows).to_type(values.dtype);
                    values.index_copy_(0, records, gathered);
                }
            }
            finally
            {
                foreach (var t in tensors.Values)
                {
                    t.Dispose();
                }
            }
        }
    }

    /// <summary>A line's reference to one row of a tensor in a safetensors file.</summary>
    private sealed record StoredRow(string File, string Key, long Row, string Where)
    {
        /// <summary>{"safetensors": path (relative to the manifest), "key": name (default the field's), "row": index}.</summary>
        public static StoredRow Parse(JsonElement value, string field, string where, string folder)
        {
            if (!value.TryGetProperty("safetensors", out var file) || file.ValueKind != JsonValueKind.String || file.GetString() is not { Length: > 0 } path)
            {
                throw new DataError(where, $"'{field}' is an object, so it must name a safetensors file: {{\"safetensors\": \"file.safetensors\", \"key\": \"{field}\", \"row\": 0}}");
            }

            var key = field;
            if (value.TryGetProperty("key", out var k))
            {
                key = k.ValueKind == JsonValueKind.String ? k.GetString()! : throw new DataError(where, $"'{field}': key must be a tensor name (a string), got {k.GetRawText()}");
            }

            if (!value.TryGetProperty("row", out var r) || r.ValueKind != JsonValueKind.Number || !r.TryGetInt64(out var row) || row < 0)
            {
                throw new DataError(where, $"'{field}': row must be a non-negative integer, the record's row of '{key}'");
            }

            foreach (var property in value.EnumerateObject())
            {
                if (property.Name is not ("safetensors" or "key" or "row"))
                {
                    throw new DataError(where, $"'{field}': unknown property '{property.Name}' (a stored row has safetensors, key and row)");
                }
            }

            return new StoredRow(Path.GetFullPath(Path.Combine(folder, path)), key, row, where);
        }
    }

    private static string Describe(JsonElement value) =>
        value.ValueKind == JsonValueKind.Array ? $"an array of {value.GetArrayLength()}" : value.GetRawText();
}
