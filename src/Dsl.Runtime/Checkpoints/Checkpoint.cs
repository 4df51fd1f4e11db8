using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using static TorchSharp.torch;

namespace Dsl.Runtime.Checkpoints;

/// <summary>
/// A checkpoint is a directory holding model.safetensors (parameters and buffers by dotted
/// name), optimizer.safetensors (optimizer state by name, possibly empty) and meta.json.
/// </summary>
public static class Checkpoint
{
    public const string ModelFile = "model.safetensors";
    public const string OptimizerFile = "optimizer.safetensors";
    public const string MetaFile = "meta.json";

    /// <summary>The <see cref="CheckpointMeta.FormatVersion"/> this code writes and reads.</summary>
    public const int FormatVersion = 1;

    /// <summary>An existing checkpoint is renamed to "&lt;dir&gt;.bak-&lt;guid&gt;" while the new one moves in.</summary>
    private const string BackupInfix = ".bak-";

    private static readonly JsonSerializerOptions MetaJson = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        WriteIndented = true,
        // A diverged run has a NaN loss; it must still be recorded rather than fail the save.
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        RespectNullableAnnotations = true,
        RespectRequiredConstructorParameters = true,
    };

    /// <summary>
    /// Writes the checkpoint atomically: everything goes into a sibling temporary directory,
    /// each file is fsynced, and only then is it renamed onto <paramref name="directory"/>
    /// (an existing checkpoint is first renamed aside and deleted afterwards). A crash never
    /// leaves a partial checkpoint at the target path: it holds the old one or the new one,
    /// or, if the crash falls between the two renames, nothing, and <see cref="Load"/> then
    /// names the renamed-aside old one.
    /// </summary>
    public static void Save(
        string directory,
        IReadOnlyDictionary<string, Tensor> weights,
        IReadOnlyDictionary<string, Tensor> optimizerState,
        CheckpointMeta meta)
    {
        if (meta.FormatVersion != FormatVersion)
        {
            throw new ArgumentException($"meta.FormatVersion is {meta.FormatVersion}; this code writes version {FormatVersion}", nameof(meta));
        }

        var target = Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory));
        if (File.Exists(target))
        {
            throw new CheckpointError(target, "is a file, not a checkpoint directory");
        }

        var parent = Path.GetDirectoryName(target) ?? throw new CheckpointError(target, "cannot be a checkpoint directory");
        Directory.CreateDirectory(parent);
        var temp = $"{target}.tmp-{Guid.NewGuid():N}";
        try
        {
            Directory.CreateDirectory(temp);
            DurableFile.Probe(Path.Combine(temp, ModelFile));
            SafetensorsFile.Write(Path.Combine(temp, ModelFile), weights);
            DurableFile.Probe(Path.Combine(temp, OptimizerFile));
            SafetensorsFile.Write(Path.Combine(temp, OptimizerFile), optimizerState);
            // Hashed as written to disk, so flipped bytes found later are the disk's or a user's.
            var checksums = new Dictionary<string, string>
            {
                [ModelFile] = FileHash(Path.Combine(temp, ModelFile)),
                [OptimizerFile] = FileHash(Path.Combine(temp, OptimizerFile)),
            };
            DurableFile.Probe(Path.Combine(temp, MetaFile));
            WriteMeta(Path.Combine(temp, MetaFile), meta with { Checksums = checksums });
            DurableFile.Probe(target);
            MoveIntoPlace(temp, target);
        }
        catch
        {
            if (Directory.Exists(temp))
            {
                Directory.Delete(temp, recursive: true);
            }

            throw;
        }
    }

    /// <summary>
    /// Reads a checkpoint written by <see cref="Save"/>; every problem is a <see cref="CheckpointError"/>.
    /// Without <paramref name="optimizer"/> only the weights are read (evaluation needs no
    /// optimizer state) and <see cref="LoadedCheckpoint.OptimizerState"/> is empty.
    /// </summary>
    public static LoadedCheckpoint Load(string directory, bool optimizer = true)
    {
        if (!Directory.Exists(directory))
        {
            throw new CheckpointError(directory, NotFound(directory));
        }

        // meta.json first: it is cheap, and an unsupported version stops before any tensor is read.
        var meta = ReadMeta(Path.Combine(directory, MetaFile));
        var weights = ReadVerified(directory, ModelFile, meta);
        try
        {
            var optimizerState = optimizer ? ReadVerified(directory, OptimizerFile, meta) : [];
            return new LoadedCheckpoint(weights, optimizerState, meta);
        }
        catch
        {
            foreach (var tensor in weights.Values)
            {
                tensor.Dispose();
            }

            throw;
        }
    }

    /// <summary>Lowercase hex SHA-256 of the UTF-8 text; ties a checkpoint to the DSL source it came from.</summary>
    public static string SourceHash(string text) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));

    /// <summary>Reads one tensor file after checking it against the checksum meta.json records for it.</summary>
    private static Dictionary<string, Tensor> ReadVerified(string directory, string file, CheckpointMeta meta)
    {
        var path = Path.Combine(directory, file);
        var expected = meta.Checksums is { } sums && sums.TryGetValue(file, out var sum) ? sum : null;
        return SafetensorsFile.Read(path, expected);
    }

    private static string FileHash(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    private static void MoveIntoPlace(string temp, string target)
    {
        if (!Directory.Exists(target))
        {
            Directory.Move(temp, target);
            return;
        }

        var backup = $"{target}{BackupInfix}{Guid.NewGuid():N}";
        Directory.Move(target, backup);
        try
        {
            DurableFile.Probe(target);
            Directory.Move(temp, target);
        }
        catch
        {
            Directory.Move(backup, target);
            throw;
        }

        try
        {
            Directory.Delete(backup, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // The new checkpoint is already in place; a leftover backup only costs disk space,
            // and failing here would make the caller believe the save was lost.
        }
    }

    /// <summary>
    /// Says where the previous checkpoint is if a save was interrupted between renaming it
    /// aside and renaming the new one into place.
    /// </summary>
    private static string NotFound(string directory)
    {
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory));
        var parent = Path.GetDirectoryName(full);
        var backup = parent is not null && Directory.Exists(parent)
            ? Directory.GetDirectories(parent, Path.GetFileName(full) + BackupInfix + "*").Order(StringComparer.Ordinal).FirstOrDefault()
            : null;
        return backup is null
            ? "checkpoint directory not found"
            : $"checkpoint directory not found; an interrupted save left the previous checkpoint at {backup}";
    }

    private static void WriteMeta(string path, CheckpointMeta meta)
    {
        using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None);
        JsonSerializer.Serialize(stream, meta, MetaJson);
        stream.Flush(flushToDisk: true);
    }

    private static CheckpointMeta ReadMeta(string path)
    {
        if (!File.Exists(path))
        {
            throw new CheckpointError(path, "file not found");
        }

        CheckpointMeta? meta;
        try
        {
            meta = JsonSerializer.Deserialize<CheckpointMeta>(File.ReadAllBytes(path), MetaJson);
        }
        catch (JsonException e)
        {
            throw new CheckpointError(path, $"invalid checkpoint metadata: {e.Message}", e);
        }

        if (meta is null)
        {
            throw new CheckpointError(path, "invalid checkpoint metadata: null");
        }

        if (meta.FormatVersion != FormatVersion)
        {
            throw new CheckpointError(path, $"format version {meta.FormatVersion} is not supported; this code reads version {FormatVersion}");
        }

        Validate(path, meta);
        return meta;
    }

    /// <summary>
    /// Every field a reader relies on, checked as the user error it is (a hand-edited or damaged
    /// meta.json), naming the file and the field, before anything trusts it.
    /// </summary>
    private static void Validate(string path, CheckpointMeta meta)
    {
        void Require(bool ok, string field, string value, string rule)
        {
            if (!ok)
            {
                throw new CheckpointError(path, $"field '{field}' is {value}; it {rule}");
            }
        }

        Require(!string.IsNullOrWhiteSpace(meta.Model), "model", $"'{meta.Model}'", "must name the model");
        Require(meta.Step >= 0, "step", Invariant(meta.Step), "must not be negative");
        Require(meta.Epoch >= 0, "epoch", Invariant(meta.Epoch), "must not be negative");
        Require(meta.Seed >= 0, "seed", Invariant(meta.Seed), "must not be negative");
        foreach (var name in meta.Metrics.Keys)
        {
            Require(!string.IsNullOrEmpty(name), "metrics", "a metric with no name", "must name every metric");
        }

        foreach (var (name, value) in meta.Extra)
        {
            switch (name)
            {
                case "optimizer":
                    Require(value is "adamw" or "sgd", "extra.optimizer", $"'{value}'", "must be 'adamw' or 'sgd'");
                    break;
                case "batch_size" or "accumulation_steps" or "total_steps" or "epochs":
                    Require(long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var count) && count > 0, "extra." + name, $"'{value}'", "must be a positive whole number");
                    break;
                case "warmup_steps":
                    Require(long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out _), "extra." + name, $"'{value}'", "must be a non-negative whole number");
                    break;
                case "lr":
                    Require(double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var lr) && lr > 0 && double.IsFinite(lr), "extra.lr", $"'{value}'", "must be a positive number");
                    break;
                case "min_lr" or "weight_decay" or "grad_clip" or "label_smoothing" or "momentum":
                    Require(double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var x) && x >= 0 && double.IsFinite(x), "extra." + name, $"'{value}'", "must be a non-negative number");
                    break;
            }
        }
    }

    private static string Invariant(long value) => value.ToString(CultureInfo.InvariantCulture);
}