using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using static TorchSharp.torch;

namespace Dsl.Runtime.Checkpoints;

/// <summary>
/// A checkpoint is a directory holding model.safetensors (parameters and buffers by dotted
/// name), optimizer.safetensors (optimizer state by name, possibly empty) and meta.json; a
/// run keeps them as immutable step folders behind a link (<see cref="CheckpointStore"/>).
/// </summary>
public static class Checkpoint
{
    public const string ModelFile = "model.safetensors";
    public const string OptimizerFile = "optimizer.safetensors";
    public const string MetaFile = "meta.json";

    /// <summary>The <see cref="CheckpointMeta.FormatVersion"/> this code writes and reads.</summary>
    public const int FormatVersion = 1;

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
    /// Writes a checkpoint that survives a crash at any instant: the files go into a temporary
    /// folder of the store beside <paramref name="directory"/>, each fsynced and hashed as
    /// written, the folder becomes checkpoints/step-N and <paramref name="directory"/> (a link)
    /// is switched to it atomically; see <see cref="CheckpointStore"/>. With
    /// <paramref name="keep"/> above zero only the newest <paramref name="keep"/> step folders stay.
    /// </summary>
    public static void Save(
        string directory,
        IReadOnlyDictionary<string, Tensor> weights,
        IReadOnlyDictionary<string, Tensor> optimizerState,
        CheckpointMeta meta,
        int keep = 0)
    {
        if (meta.FormatVersion != FormatVersion)
        {
            throw new ArgumentException($"meta.FormatVersion is {meta.FormatVersion}; this code writes version {FormatVersion}", nameof(meta));
        }

        var store = CheckpointStore.For(directory);
        if (File.Exists(store.Pointer) && !CheckpointStore.IsLink(store.Pointer))
        {
            throw new CheckpointError(store.Pointer, "is a file, not a checkpoint directory");
        }

        store.RemoveTemporaries();
        var temp = store.NewTemporary();
        try
        {
            var model = Path.Combine(temp, ModelFile);
            var optimizer = Path.Combine(temp, OptimizerFile);
            DurableFile.Probe(model);
            SafetensorsFile.Write(model, weights);
            DurableFile.Probe(optimizer);
            SafetensorsFile.Write(optimizer, optimizerState);
            // Hashed as written to disk, so flipped bytes found later are the disk's or a user's;
            // per tensor too, so such a file names the tensors that changed.
            var checksums = new Dictionary<string, string> { [ModelFile] = FileHash(model), [OptimizerFile] = FileHash(optimizer) };
            var tensorChecksums = new Dictionary<string, Dictionary<string, string>>
            {
                [ModelFile] = SafetensorsFile.TensorHashes(model),
                [OptimizerFile] = SafetensorsFile.TensorHashes(optimizer),
            };
            DurableFile.Probe(Path.Combine(temp, MetaFile));
            WriteMeta(Path.Combine(temp, MetaFile), meta with { Checksums = checksums, TensorChecksums = tensorChecksums });
            store.Commit(temp, meta.Step, keep);
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
    /// <paramref name="directory"/> is a checkpoint folder, the link naming one, or a run folder
    /// holding that link; when the link is missing (a crash, a deleted folder) the newest whole
    /// checkpoint beside it is read. Without <paramref name="optimizer"/> only the weights are
    /// read (evaluation needs no optimizer state) and <see cref="LoadedCheckpoint.OptimizerState"/> is empty.
    /// </summary>
    public static LoadedCheckpoint Load(string directory, bool optimizer = true)
    {
        var folder = Find(directory) ?? throw new CheckpointError(directory, NotFound(directory));

        // meta.json first: it is cheap, and an unsupported version stops before any tensor is read.
        var meta = ReadMeta(Path.Combine(folder, MetaFile));
        var weights = ReadVerified(folder, ModelFile, meta);
        try
        {
            var optimizerState = optimizer ? ReadVerified(folder, OptimizerFile, meta) : [];
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

    /// <summary>
    /// The folder <see cref="Load"/> would read for <paramref name="path"/>, without reading it;
    /// null when there is no checkpoint there.
    /// </summary>
    public static string? Find(string path)
    {
        if (File.Exists(Path.Combine(path, MetaFile)))
        {
            return path;
        }

        // A run folder stands for its latest checkpoint.
        var inside = Path.Combine(path, "checkpoint");
        if (Directory.Exists(Path.Combine(path, CheckpointStore.FolderName)) || Directory.Exists(inside) || CheckpointStore.IsLink(inside))
        {
            return CheckpointStore.For(inside).Resolve();
        }

        return CheckpointStore.For(path).Resolve();
    }

    /// <summary>
    /// Repairs what a crash during a save can leave at <paramref name="directory"/> (see
    /// <see cref="CheckpointStore.Recover"/>), keeping the newest <paramref name="keep"/> step
    /// folders (0: all), and returns whether a checkpoint is there.
    /// </summary>
    public static bool Recover(string directory, int keep = 0) => CheckpointStore.For(directory).Recover(keep) is not null;

    /// <summary>Lowercase hex SHA-256 of the UTF-8 text; ties a checkpoint to the DSL source it came from.</summary>
    public static string SourceHash(string text) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));

    /// <summary>Reads one tensor file after checking it against the checksum meta.json records for it.</summary>
    private static Dictionary<string, Tensor> ReadVerified(string directory, string file, CheckpointMeta meta)
    {
        var path = Path.Combine(directory, file);
        var expected = meta.Checksums is { } sums && sums.TryGetValue(file, out var sum) ? sum : null;
        var tensors = meta.TensorChecksums is { } all && all.TryGetValue(file, out var each) ? each : null;
        return SafetensorsFile.Read(path, expected, tensors);
    }

    private static string FileHash(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    private static string NotFound(string directory) =>
        Directory.Exists(directory) || CheckpointStore.IsLink(directory) ? "holds no checkpoint (no meta.json, and no whole checkpoint beside it)" : "checkpoint directory not found";

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