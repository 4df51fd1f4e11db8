using System.Buffers.Binary;
using System.Text.Json;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Dsl.Runtime.Checkpoints;

/// <summary>
/// Reads and writes safetensors files through TorchSharp.PyBridge, adding what it lacks:
/// fsync on write, and a full check of the header before reading so that a truncated or
/// corrupt file is reported as a <see cref="CheckpointError"/> naming the file rather than
/// surfacing as an IndexOutOfRange, JSON or end-of-stream exception halfway through loading.
/// </summary>
/// <remarks>
/// Layout: 8-byte little-endian header length, a JSON header
/// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the raw
/// little-endian tensor bytes; offsets are relative to the end of the header.
/// </remarks>
internal static class SafetensorsFile
{
    /// <summary>Bytes per element of every dtype PyBridge can convert.</summary>
    private static readonly Dictionary<string, int> ElementSizes = new()
    {
        ["F64"] = 8,
        ["F32"] = 4,
        ["F16"] = 2,
        ["BF16"] = 2,
        ["I64"] = 8,
        ["I32"] = 4,
        ["I16"] = 2,
        ["I8"] = 1,
        ["U8"] = 1,
        ["BOOL"] = 1,
    };

    private static readonly HashSet<ScalarType> WritableTypes =
    [
        ScalarType.Float64, ScalarType.Float32, ScalarType.Float16, ScalarType.BFloat16,
        ScalarType.Int64, ScalarType.Int32, ScalarType.Int16, ScalarType.Int8,
        ScalarType.Byte, ScalarType.Bool,
    ];

    /// <summary>The safetensors reference implementation refuses headers above 100 MB too.</summary>
    private const ulong MaxHeaderLength = 100_000_000;

    /// <summary>Writes a new file (it must not exist) and flushes it to disk.</summary>
    public static void Write(string path, IReadOnlyDictionary<string, Tensor> tensors)
    {
        // PyBridge copies raw memory, which needs contiguous tensors; the copies die with the scope.
        using var scope = torch.NewDisposeScope();
        var contiguous = new Dictionary<string, Tensor>(tensors.Count);
        foreach (var (name, tensor) in tensors)
        {
            if (!WritableTypes.Contains(tensor.dtype))
            {
                throw new ArgumentException($"tensor '{name}' has dtype {tensor.dtype}, which safetensors cannot store", nameof(tensors));
            }

            contiguous[name] = tensor.is_contiguous() ? tensor : tensor.contiguous();
        }

        using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None);
        Safetensors.SaveStateDict(stream, contiguous, leaveOpen: true);
        stream.Flush(flushToDisk: true);
    }

    /// <summary>
    /// Reads every tensor; the file is closed again before this returns. With
    /// <paramref name="sha256"/> (lowercase hex) the file must hash to it: the header is checked
    /// first, so a truncated file is reported as truncated, then the bytes, then they are read.
    /// </summary>
    public static Dictionary<string, Tensor> Read(string path, string? sha256 = null, IReadOnlyDictionary<string, string>? tensorSha256 = null)
    {
        if (!File.Exists(path))
        {
            throw new CheckpointError(path, "file not found");
        }

        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        var tensors = ValidateHeader(stream, path);
        stream.Position = 0;
        if (sha256 is not null)
        {
            var actual = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(stream));
            if (!string.Equals(actual, sha256, StringComparison.OrdinalIgnoreCase))
            {
                throw new CheckpointError(path, $"damaged: {Damage(stream, tensors, tensorSha256)}; restore the file from a copy, or use an earlier checkpoint");
            }

            stream.Position = 0;
        }

        try
        {
            return Safetensors.LoadStateDict(stream, leaveOpen: true);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // The header was checked, so this is an I/O failure or a PyBridge limit.
            throw new CheckpointError(path, $"cannot read tensors: {e.Message}", e);
        }
    }

    /// <summary>
    /// Lowercase hex SHA-256 of each tensor's bytes as they lie in the file, by name: recorded
    /// beside the file's own hash so that a damaged file names the tensors that changed.
    /// </summary>
    public static Dictionary<string, string> TensorHashes(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        return ValidateHeader(stream, path).ToDictionary(t => t.Name, t => HashRange(stream, t.Begin, t.End), StringComparer.Ordinal);
    }

    /// <summary>Says which tensors' bytes differ from their recorded hashes, or that the header does.</summary>
    private static string Damage(FileStream stream, List<(long Begin, long End, string Name)> tensors, IReadOnlyDictionary<string, string>? recorded)
    {
        if (recorded is null)
        {
            return "its SHA-256 differs from the one meta.json records";
        }

        var changed = tensors
            .Where(t => !recorded.TryGetValue(t.Name, out var sum) || !string.Equals(sum, HashRange(stream, t.Begin, t.End), StringComparison.OrdinalIgnoreCase))
            .Select(t => $"'{t.Name}'")
            .ToList();
        var missing = recorded.Keys.Where(name => tensors.All(t => t.Name != name)).Select(name => $"'{name}'").ToList();
        if (changed.Count == 0 && missing.Count == 0)
        {
            return "its header differs from the one written (every tensor's bytes match their SHA-256 in meta.json)";
        }

        var parts = new List<string>();
        if (changed.Count > 0)
        {
            parts.Add($"the bytes of {Few(changed)} do not match {(changed.Count == 1 ? "its" : "their")} SHA-256 in meta.json");
        }

        if (missing.Count > 0)
        {
            parts.Add($"{Few(missing)} recorded in meta.json {(missing.Count == 1 ? "is" : "are")} missing");
        }

        return string.Join("; ", parts);
    }

    private static string Few(List<string> names) =>
        names.Count <= 5 ? "tensor" + (names.Count == 1 ? " " : "s ") + string.Join(", ", names) : $"{names.Count} tensors ({string.Join(", ", names.Take(5))}, …)";

    private static string HashRange(FileStream stream, long begin, long end)
    {
        using var hash = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        var buffer = new byte[1 << 16];
        stream.Position = begin;
        for (var left = end - begin; left > 0;)
        {
            var read = stream.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
            if (read == 0)
            {
                break;
            }

            hash.AppendData(buffer, 0, read);
            left -= read;
        }

        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    /// <summary>Checks the header against the file; returns every tensor's absolute byte extent.</summary>
    private static List<(long Begin, long End, string Name)> ValidateHeader(FileStream stream, string path)
    {
        var fileLength = stream.Length;
        if (fileLength < 8)
        {
            throw new CheckpointError(path, $"truncated: {fileLength} bytes, too short for the 8-byte header length");
        }

        Span<byte> prefix = stackalloc byte[8];
        stream.ReadExactly(prefix);
        var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (headerLength > (ulong)(fileLength - 8))
        {
            throw new CheckpointError(path, $"truncated or corrupt: header length {headerLength} exceeds the {fileLength - 8} bytes that follow it");
        }

        if (headerLength > MaxHeaderLength)
        {
            throw new CheckpointError(path, $"corrupt: header length {headerLength} is above the {MaxHeaderLength}-byte limit");
        }

        var header = new byte[headerLength];
        stream.ReadExactly(header);
        using var document = ParseHeader(header, path);
        if (document.RootElement.ValueKind != JsonValueKind.Object)
        {
            throw new CheckpointError(path, $"corrupt: header is a JSON {document.RootElement.ValueKind}, expected an object");
        }

        var dataLength = fileLength - 8 - (long)headerLength;
        var dataStart = 8 + (long)headerLength;
        var names = new HashSet<string>(StringComparer.Ordinal);
        var extents = new List<(long Begin, long End, string Name)>();
        var all = new List<(long Begin, long End, string Name)>();
        foreach (var entry in document.RootElement.EnumerateObject())
        {
            if (entry.Name == "__metadata__")
            {
                continue;
            }

            if (!names.Add(entry.Name))
            {
                throw new CheckpointError(path, $"corrupt: tensor '{entry.Name}' appears twice in the header");
            }

            var (begin, end) = ValidateEntry(entry.Name, entry.Value, dataLength, path);
            all.Add((dataStart + begin, dataStart + end, entry.Name));
            if (end > begin)
            {
                extents.Add((begin, end, entry.Name));
            }
        }

        // Two tensors over the same bytes would load as copies of one; a writer never does that.
        extents.Sort((a, b) => a.Begin.CompareTo(b.Begin));
        for (var i = 1; i < extents.Count; i++)
        {
            if (extents[i].Begin < extents[i - 1].End)
            {
                throw new CheckpointError(path, $"corrupt: tensors '{extents[i - 1].Name}' and '{extents[i].Name}' overlap (data bytes {extents[i].Begin} to {Math.Min(extents[i].End, extents[i - 1].End)})");
            }
        }

        return all;
    }

    private static JsonDocument ParseHeader(byte[] header, string path)
    {
        try
        {
            return JsonDocument.Parse(header);
        }
        catch (JsonException e)
        {
            throw new CheckpointError(path, $"corrupt: header is not valid JSON ({e.Message})", e);
        }
    }

    /// <summary>Checks one header entry; returns its data extent.</summary>
    private static (long Begin, long End) ValidateEntry(string name, JsonElement entry, long dataLength, string path)
    {
        CheckpointError Corrupt(string problem) => new(path, $"corrupt: tensor '{name}': {problem}");

        if (entry.ValueKind != JsonValueKind.Object)
        {
            throw Corrupt($"header entry is a JSON {entry.ValueKind}, expected an object");
        }

        if (!entry.TryGetProperty("dtype", out var dtype) || dtype.ValueKind != JsonValueKind.String)
        {
            throw Corrupt("no dtype");
        }

        if (!ElementSizes.TryGetValue(dtype.GetString()!, out var elementSize))
        {
            throw Corrupt($"unsupported dtype '{dtype.GetString()}' (supported: {string.Join(", ", ElementSizes.Keys)})");
        }

        var shape = ReadNaturals(entry, "shape", Corrupt);
        var offsets = ReadNaturals(entry, "data_offsets", Corrupt);
        if (offsets.Length != 2 || offsets[0] > offsets[1])
        {
            throw Corrupt($"data_offsets [{string.Join(", ", offsets)}] is not a [begin, end] pair");
        }

        if (offsets[1] > dataLength)
        {
            throw new CheckpointError(path, $"truncated: tensor '{name}' ends at data byte {offsets[1]} but the file holds only {dataLength} data bytes");
        }

        // Int128 and clamped, so a corrupt shape cannot overflow into a false match.
        var expectedBytes = shape.Aggregate((Int128)elementSize, (product, d) => Int128.Min(product * d, long.MaxValue));
        if (expectedBytes != offsets[1] - offsets[0])
        {
            throw Corrupt($"shape [{string.Join(", ", shape)}] of {dtype.GetString()} needs {expectedBytes} bytes but data_offsets span {offsets[1] - offsets[0]}");
        }

        return (offsets[0], offsets[1]);
    }

    /// <summary>A JSON array of non-negative integers.</summary>
    private static long[] ReadNaturals(JsonElement entry, string property, Func<string, CheckpointError> corrupt)
    {
        if (!entry.TryGetProperty(property, out var array) || array.ValueKind != JsonValueKind.Array)
        {
            throw corrupt($"no {property} array");
        }

        var values = new long[array.GetArrayLength()];
        var i = 0;
        foreach (var item in array.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt64(out values[i]) || values[i] < 0)
            {
                throw corrupt($"{property} holds {item.GetRawText()}, expected non-negative integers");
            }

            i++;
        }

        return values;
    }
}
