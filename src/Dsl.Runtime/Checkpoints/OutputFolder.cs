using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Dsl.Runtime.Checkpoints;

/// <summary>
/// An output folder (<c>--out</c>) would overwrite or delete files it must not: a user's, an
/// earlier run's without --resume/--overwrite, or an input. Nothing has been written when it is thrown.
/// </summary>
public sealed class OutputFolderError : Exception
{
    public OutputFolderError(string path, string message)
        : base($"{path}: {message}")
    {
        Path = path;
    }

    public string Path { get; }
}

/// <summary>
/// The folders the tool writes into carry a marker file saying which command made them
/// (run.json for <c>dsl train</c>, transform.json for <c>dsl transform</c>). Only a folder with
/// the marker is ever written over, and then only the files the tool itself makes: anything
/// else in an --out folder is a user's and is never deleted or overwritten.
/// </summary>
public static class OutputFolder
{
    public const string RunMarker = "run.json";
    public const string TransformMarker = "transform.json";
    public const string MetricsFile = "metrics.jsonl";

    /// <summary>What a training run writes into its folder, and what --overwrite may replace.</summary>
    private static readonly string[] RunFiles = [RunMarker, MetricsFile, "checkpoint", "checkpoints"];

    /// <summary>What a transform writes into its folder.</summary>
    private static readonly string[] TransformFiles = [TransformMarker, "model.dsl", "checkpoint", "checkpoints"];

    /// <summary>Whether <paramref name="directory"/> is a run folder dsl train made (it holds run.json).</summary>
    public static bool IsRun(string directory) => HasMarker(directory, RunMarker, "train");

    /// <summary>
    /// Makes <paramref name="directory"/> ready for a training run. A missing or empty folder
    /// becomes a new run. An earlier run (run.json) is continued with <paramref name="resume"/>
    /// or, with <paramref name="overwrite"/>, has its log and checkpoints removed; without either
    /// it is refused. A folder the tool did not make is refused unless it is resumed and holds a
    /// checkpoint (a run from before markers existed), whatever the flags.
    /// </summary>
    public static void PrepareRun(string directory, string model, bool resume, bool overwrite)
    {
        if (resume && overwrite)
        {
            throw new OutputFolderError(directory, "--resume and --overwrite exclude each other");
        }

        if (File.Exists(directory))
        {
            throw new OutputFolderError(directory, "is a file, not a run folder; pick another --out");
        }

        var marked = HasMarker(directory, RunMarker, "train");
        if (marked || !Directory.Exists(directory) || Directory.EnumerateFileSystemEntries(directory).All(e => DurableFile.IsTemporary(Path.GetFileName(e))))
        {
            // A crash mid-write leaves "<file>.tmp-<guid>" beside the file; only this tool names files so.
            RemoveTemporaries(directory);
        }

        // A marked folder with nothing else is a run that failed before its first write (bad
        // data, say): starting it again loses nothing.
        if (!Directory.Exists(directory)
            || !Directory.EnumerateFileSystemEntries(directory).Any(entry => !(marked && Path.GetFileName(entry) == RunMarker)))
        {
            if (resume && !marked)
            {
                throw new OutputFolderError(directory, "holds no run to resume; drop --resume to start one here");
            }

            WriteMarker(directory, RunMarker, "train", model);
            return;
        }

        if (!marked)
        {
            var legacy = resume && File.Exists(Path.Combine(directory, "checkpoint", Checkpoint.MetaFile));
            if (!legacy)
            {
                throw new OutputFolderError(
                    directory,
                    $"is not empty and is not a run folder made by dsl train (it has no {RunMarker}); nothing was written. "
                    + "Pick another --out, or move its files away" + (overwrite ? " (--overwrite only replaces a run dsl train made)" : ""));
            }

            // A run from before the marker: adopt it, so later commands know it is a run.
            WriteMarker(directory, RunMarker, "train", model);
            return;
        }

        if (resume)
        {
            return;
        }

        if (!overwrite)
        {
            throw new OutputFolderError(
                directory,
                $"holds an earlier run ({RunMarker}); nothing was written. Continue it with --resume, replace it with --overwrite, or pick another --out");
        }

        foreach (var name in RunFiles)
        {
            Remove(Path.Combine(directory, name));
        }

        WriteMarker(directory, RunMarker, "train", model);
    }

    /// <summary>
    /// Makes <paramref name="directory"/> ready for a transform's output. Refused when it is or
    /// holds one of <paramref name="inputs"/> (the source file, the checkpoint folder), lies inside
    /// one, or holds files no transform made (runs trained from the output, with their own
    /// run.json, may sit beside them).
    /// </summary>
    public static void PrepareTransform(string directory, string kind, IEnumerable<string> inputs)
    {
        var full = Normal(directory);
        foreach (var input in inputs)
        {
            var source = Normal(input);
            if (Within(source, full) || Within(full, source))
            {
                throw new OutputFolderError(directory, $"--out would write over an input ({input}); nothing was written. Pick an --out outside the inputs");
            }
        }

        if (File.Exists(directory))
        {
            throw new OutputFolderError(directory, "is a file, not an output folder; pick another --out");
        }

        if (Directory.Exists(directory) && Directory.EnumerateFileSystemEntries(directory).All(e => DurableFile.IsTemporary(Path.GetFileName(e))))
        {
            // Only what a crash mid-write left (its marker's temporary, say).
            RemoveTemporaries(directory);
        }

        if (Directory.Exists(directory) && Directory.EnumerateFileSystemEntries(directory).Any())
        {
            if (!HasMarker(directory, TransformMarker, "transform"))
            {
                throw new OutputFolderError(
                    directory,
                    $"is not empty and is not a folder made by dsl transform (it has no {TransformMarker}); nothing was written. Pick another --out, or move its files away");
            }

            RemoveTemporaries(directory);
            var foreign = Directory.EnumerateFileSystemEntries(directory)
                .Where(entry => !TransformFiles.Contains(Path.GetFileName(entry)) && !IsToolMade(entry))
                .Select(Path.GetFileName)
                .Order(StringComparer.Ordinal)
                .ToList();
            if (foreign.Count > 0)
            {
                throw new OutputFolderError(
                    directory,
                    $"holds files no transform made ({string.Join(", ", foreign)}); nothing was written. Pick another --out, or move them away");
            }
        }

        WriteMarker(directory, TransformMarker, "transform", kind);
    }

    /// <summary>Tool-made leftovers: a run trained from a transform's output, or a crashed write's temporary.</summary>
    private static bool IsToolMade(string entry) =>
        Path.GetFileName(entry).Contains(DurableFile.TempInfix, StringComparison.Ordinal)
        || (Directory.Exists(entry) && HasMarker(entry, RunMarker, "train"));

    private static bool HasMarker(string directory, string marker, string command)
    {
        var path = Path.Combine(directory, marker);
        if (!File.Exists(path))
        {
            return false;
        }

        try
        {
            return JsonNode.Parse(File.ReadAllText(path)) is JsonObject o
                && o["tool"]?.GetValue<string>() == "dsl"
                && o["command"]?.GetValue<string>() == command;
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        {
            return false;
        }
    }

    private static void WriteMarker(string directory, string marker, string command, string what)
    {
        Directory.CreateDirectory(directory);
        var o = new JsonObject
        {
            ["tool"] = "dsl",
            ["command"] = command,
            [command == "train" ? "model" : "transform"] = what,
            ["created"] = DateTimeOffset.UtcNow.ToString("o", CultureInfo.InvariantCulture),
        };
        DurableFile.WriteAllText(Path.Combine(directory, marker), o.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
    }

    private static void RemoveTemporaries(string directory)
    {
        if (!Directory.Exists(directory))
        {
            return;
        }

        foreach (var entry in Directory.EnumerateFileSystemEntries(directory).Where(e => DurableFile.IsTemporary(Path.GetFileName(e))).ToList())
        {
            if (File.Exists(entry) || new FileInfo(entry).LinkTarget is not null)
            {
                File.Delete(entry);
            }
        }
    }

    private static void Remove(string path)
    {
        if (Directory.Exists(path))
        {
            Directory.Delete(path, recursive: true);
        }
        else if (File.Exists(path))
        {
            File.Delete(path);
        }
    }

    /// <summary>The absolute path, through a final symbolic link (run/checkpoint names a step folder).</summary>
    private static string Normal(string path)
    {
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        var target = new FileInfo(full).LinkTarget is not null ? File.ResolveLinkTarget(full, returnFinalTarget: true) : null;
        return target is null ? full : Path.TrimEndingDirectorySeparator(target.FullName);
    }

    /// <summary>Whether <paramref name="path"/> is <paramref name="folder"/> or lies inside it.</summary>
    private static bool Within(string path, string folder) =>
        path == folder || path.StartsWith(folder + Path.DirectorySeparatorChar, StringComparison.Ordinal);
}
