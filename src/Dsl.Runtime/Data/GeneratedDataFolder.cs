using Dsl.Runtime.Checkpoints;
using SixLabors.ImageSharp.Formats.Png;

namespace Dsl.Runtime.Data;

/// <summary>
/// What the <c>dsl data</c> builders share: a data set is written into a temporary folder beside
/// its --out and renamed into place at the end, so an interrupted build leaves no half data set;
/// an existing folder is replaced only when empty or made by the same command (its
/// <c>classes.json</c> says <c>"tool": "dsl", "command": …</c>) and holding nothing else.
/// </summary>
internal static class GeneratedDataFolder
{
    /// <summary>8-bit grey PNGs, as the builders write images.</summary>
    public static readonly PngEncoder GreyEncoder = new()
    {
        ColorType = PngColorType.Grayscale,
        BitDepth = PngBitDepth.Bit8,
        CompressionLevel = PngCompressionLevel.DefaultCompression,
    };

    /// <summary>
    /// Checks <paramref name="outDirectory"/>, runs <paramref name="write"/> on a new temporary
    /// folder beside it (which must leave the marking classes.json there) and renames that into
    /// place, replacing an earlier build. Returns the folder's full path.
    /// </summary>
    /// <exception cref="OutputFolderError">The folder holds files this command did not make; nothing was written.</exception>
    public static string Write(string outDirectory, string command, IReadOnlyCollection<string> ownEntries, Action<string> write)
    {
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(outDirectory));
        CheckOutput(full, command, ownEntries);
        var parent = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(parent);
        var temporary = Path.Combine(parent, $".{Path.GetFileName(full)}.tmp-{Guid.NewGuid():N}");
        Directory.CreateDirectory(temporary);
        try
        {
            write(temporary);
            if (Directory.Exists(full))
            {
                var old = Path.Combine(parent, $".{Path.GetFileName(full)}.old-{Guid.NewGuid():N}");
                Directory.Move(full, old);
                Directory.Move(temporary, full);
                Directory.Delete(old, recursive: true);
            }
            else
            {
                Directory.Move(temporary, full);
            }
        }
        catch
        {
            if (Directory.Exists(temporary))
            {
                Directory.Delete(temporary, recursive: true);
            }

            throw;
        }

        return full;
    }

    /// <summary>The marker properties a builder's classes.json starts with.</summary>
    public static Dictionary<string, string> Marker(string command) => new() { ["tool"] = "dsl", ["command"] = command };

    /// <summary>A seed from (seed, split, index) that does not depend on .NET's randomised string hashing.</summary>
    public static int RecordSeed(int seed, int split, int index) =>
        unchecked((((seed * 1_000_003) + split) * 1_000_033) + index);

    /// <summary>The first <paramref name="count"/> items' first channel as 8-bit values, row-major: the IDX bytes again.</summary>
    public static byte[] GreyBytes(LabeledImages data, int count)
    {
        using var selected = data.Images.narrow(0, 0, count).select(1, 0);
        using var scaled = selected.mul(255f);
        using var rounded = scaled.round();
        using var bytes = rounded.to_type(TorchSharp.torch.ScalarType.Byte);
        return bytes.data<byte>().ToArray();
    }

    /// <summary>Refuses a file, or a non-empty folder this command did not make (or that holds anything else).</summary>
    private static void CheckOutput(string full, string command, IReadOnlyCollection<string> ownEntries)
    {
        if (File.Exists(full))
        {
            throw new OutputFolderError(full, "is a file, not a folder; pick another --out");
        }

        if (!Directory.Exists(full) || !Directory.EnumerateFileSystemEntries(full).Any())
        {
            return;
        }

        if (!MadeBy(full, command))
        {
            throw new OutputFolderError(
                full,
                $"is not empty and was not made by dsl {command} (its {DenseManifest.ClassesFile} does not say so); nothing was written. Pick another --out, or move its files away");
        }

        var foreign = Directory.EnumerateFileSystemEntries(full)
            .Select(Path.GetFileName)
            .Where(name => !ownEntries.Contains(name))
            .Order(StringComparer.Ordinal)
            .ToList();
        if (foreign.Count > 0)
        {
            throw new OutputFolderError(full, $"holds files dsl {command} did not make ({string.Join(", ", foreign)}); nothing was written. Pick another --out, or move them away");
        }
    }

    private static bool MadeBy(string folder, string command)
    {
        var path = Path.Combine(folder, DenseManifest.ClassesFile);
        try
        {
            return File.Exists(path)
                && System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path)) is System.Text.Json.Nodes.JsonObject o
                && o["tool"]?.GetValue<string>() == "dsl"
                && o["command"]?.GetValue<string>() == command;
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or FormatException)
        {
            return false;
        }
    }
}
