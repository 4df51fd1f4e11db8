using static TorchSharp.torch;

namespace Dsl.Runtime.Checkpoints;

/// <summary>
/// Whether a checkpoint's tensors fit a model's state by name, shape and dtype, checked before any of
/// them is copied: libtorch's own copy stops at the first mismatch with a native trace, and
/// names none of the others.
/// </summary>
public static class CheckpointFit
{
    /// <summary>At most this many differences are listed; the rest are counted.</summary>
    public const int Listed = 12;

    /// <summary>
    /// Every difference, sorted by name within each kind: <c>missing: name</c> (in the model, not
    /// the checkpoint), <c>unexpected: name</c> (the other way round) and
    /// <c>name: checkpoint [96, 64, 2, 2], model [64, 64, 2, 2]</c>.
    /// </summary>
    public static IReadOnlyList<string> Differences(IReadOnlyDictionary<string, Tensor> checkpoint, IReadOnlyDictionary<string, Tensor> model)
    {
        var missing = model.Keys.Where(key => !checkpoint.ContainsKey(key)).Order(StringComparer.Ordinal).Select(key => $"missing: {key}");
        var unexpected = checkpoint.Keys.Where(key => !model.ContainsKey(key)).Order(StringComparer.Ordinal).Select(key => $"unexpected: {key}");
        var shapes = model
            .Where(entry => checkpoint.TryGetValue(entry.Key, out var saved) && !saved.shape.SequenceEqual(entry.Value.shape))
            .OrderBy(entry => entry.Key, StringComparer.Ordinal)
            .Select(entry => $"{entry.Key}: checkpoint {Shape(checkpoint[entry.Key].shape)}, model {Shape(entry.Value.shape)}");
        // Same extent, other element type (an F32 tensor relabelled I32): copying would convert
        // the reinterpreted bits into nonsense values rather than fail.
        var dtypes = model
            .Where(entry => checkpoint.TryGetValue(entry.Key, out var saved) && saved.dtype != entry.Value.dtype)
            .OrderBy(entry => entry.Key, StringComparer.Ordinal)
            .Select(entry => $"{entry.Key}: checkpoint {checkpoint[entry.Key].dtype}, model {entry.Value.dtype}");
        return [.. missing, .. unexpected, .. shapes, .. dtypes];
    }

    /// <summary>The message for a non-empty <see cref="Differences"/>: a summary line, then one indented line per difference.</summary>
    public static string Describe(string modelName, IReadOnlyList<string> differences)
    {
        var lines = differences.Take(Listed).Select(d => "\n  " + d);
        var more = differences.Count > Listed ? $"\n  … and {differences.Count - Listed} more" : "";
        var count = differences.Count == 1 ? "1 difference" : $"{differences.Count} differences";
        return $"the checkpoint does not fit model '{modelName}' ({count}):{string.Concat(lines)}{more}";
    }

    /// <summary>Throws a <see cref="CheckpointError"/> naming <paramref name="directory"/> unless every name and shape fits.</summary>
    public static void Require(string directory, IReadOnlyDictionary<string, Tensor> checkpoint, IReadOnlyDictionary<string, Tensor> model, string modelName)
    {
        var differences = Differences(checkpoint, model);
        if (differences.Count > 0)
        {
            throw new CheckpointError(directory, Describe(modelName, differences));
        }
    }

    /// <summary>A shape as people write it: [96, 64, 2, 2].</summary>
    public static string Shape(IEnumerable<long> shape) => $"[{string.Join(", ", shape)}]";
}
