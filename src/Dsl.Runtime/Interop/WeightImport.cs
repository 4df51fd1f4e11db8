using System.Text.RegularExpressions;
using Dsl.Runtime.Checkpoints;
using static TorchSharp.torch;

namespace Dsl.Runtime.Interop;

/// <summary>
/// What an import found, key by key: dsl parameters filled from a key of the same name and shape
/// (matched), from another name (renamed) or shape (reshaped), the source's keys no parameter
/// used (unused), and parameters no key fills (missing), with the shapes each side has.
/// </summary>
public sealed class ImportReport
{
    public List<MappedName> Matched { get; } = [];

    public List<MappedName> Renamed { get; } = [];

    public List<MappedName> Reshaped { get; } = [];

    /// <summary>Optional buffers the source lacks; they keep the model's values.</summary>
    public List<MappedName> Absent { get; } = [];

    public List<(string Key, long[] Shape, bool Ignored)> Unused { get; } = [];

    /// <summary>Source keys its convention drops (buffers dsl recomputes).</summary>
    public List<(string Key, long[] Shape, string Why)> Dropped { get; } = [];

    public List<(MappedName Name, long[]? Found, bool Ignored)> Missing { get; } = [];

    public bool Ok => UnusedErrors == 0 && MissingErrors == 0;

    /// <summary>Unused keys no --ignore pattern names.</summary>
    public int UnusedErrors => Unused.Count(u => !u.Ignored);

    /// <summary>Missing keys no --ignore pattern names.</summary>
    public int MissingErrors => Missing.Count(m => !m.Ignored);

    public IEnumerable<string> Lines()
    {
        static string Shape(long[] shape) => "[" + string.Join(", ", shape) + "]";
        yield return $"matched {Matched.Count}, renamed {Renamed.Count}, reshaped {Reshaped.Count}, dropped {Dropped.Count}, unused {Unused.Count}, missing {Missing.Count}";
        foreach (var m in Renamed)
        {
            yield return $"  renamed   {m.Theirs} -> {m.Ours} {Shape(m.OurShape)}";
        }

        foreach (var m in Reshaped)
        {
            yield return $"  reshaped  {m.Theirs} {Shape(m.TheirShape)} -> {m.Ours} {Shape(m.OurShape)}{(m.Transposed ? " (transposed)" : "")}";
        }

        foreach (var m in Absent)
        {
            yield return $"  absent    {m.Theirs} (optional: {m.Ours} keeps its value)";
        }

        foreach (var (key, shape, why) in Dropped)
        {
            yield return $"  dropped   {key} {Shape(shape)} ({why})";
        }

        foreach (var (key, shape, ignored) in Unused)
        {
            yield return $"  unused    {key} {Shape(shape)}{(ignored ? " (ignored)" : "")}";
        }

        foreach (var (name, found, ignored) in Missing)
        {
            var why = found is null ? "no such key" : $"the key is {Shape(found)}";
            yield return $"  missing   {name.Theirs} {Shape(name.TheirShape)} for {name.Ours} ({why}){(ignored ? " (ignored)" : "")}";
        }
    }
}

/// <summary>State dicts in and out under a source's naming convention.</summary>
public static class WeightImport
{
    /// <summary>
    /// Compares the model's parameters with the source's keys under <paramref name="convention"/>,
    /// and when nothing is missing or unused (except keys matching an <paramref name="ignore"/>
    /// pattern, a whole-key regular expression) copies every found tensor into the model.
    /// </summary>
    public static ImportReport Import(
        IReadOnlyDictionary<string, Tensor> model,
        NameConvention convention,
        IReadOnlyDictionary<string, Tensor> source,
        IReadOnlyList<string> ignore)
    {
        var patterns = ignore.Select(p => new Regex("^(?:" + p + ")$", RegexOptions.CultureInvariant)).ToList();
        bool Ignored(string key) => patterns.Any(p => p.IsMatch(key));
        var report = new ImportReport();
        var used = new HashSet<string>(StringComparer.Ordinal);
        var copies = new List<(Tensor Target, Tensor Value, MappedName Mapped)>();
        foreach (var (ours, tensor) in model)
        {
            var mapped = convention.Map(ours, tensor.shape);
            if (!source.TryGetValue(mapped.Theirs, out var value))
            {
                if (mapped.Optional)
                {
                    report.Absent.Add(mapped);
                }
                else
                {
                    report.Missing.Add((mapped, null, Ignored(mapped.Theirs) || Ignored(ours)));
                }

                continue;
            }

            used.Add(mapped.Theirs);
            if (!value.shape.SequenceEqual(mapped.TheirShape))
            {
                report.Missing.Add((mapped, value.shape, Ignored(mapped.Theirs) || Ignored(ours)));
                continue;
            }

            (mapped.Reshaped ? report.Reshaped : mapped.Renamed ? report.Renamed : report.Matched).Add(mapped);
            copies.Add((tensor, value, mapped));
        }

        foreach (var (key, value) in source.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            if (used.Contains(key))
            {
                continue;
            }

            if (convention.Dropped.Any(d => d.IsMatch(key)))
            {
                report.Dropped.Add((key, value.shape, "a buffer dsl recomputes"));
            }
            else if (convention.DroppedIfZero.Any(d => d.IsMatch(key)) && AllZero(value))
            {
                report.Dropped.Add((key, value.shape, "all zeros, where dsl has no parameter"));
            }
            else
            {
                report.Unused.Add((key, value.shape, Ignored(key)));
            }
        }

        if (report.Ok)
        {
            using var _ = no_grad();
            foreach (var (target, value, mapped) in copies)
            {
                using var reshaped = mapped.ToOurs(value);
                target.copy_(reshaped);
            }
        }

        return report;
    }

    private static bool AllZero(Tensor value)
    {
        using var zero = value.eq(0);
        using var all = zero.all();
        return all.item<bool>();
    }

    /// <summary>Every tensor of a safetensors state dict (the caller disposes them).</summary>
    public static Dictionary<string, Tensor> ReadSafetensors(string path) => SafetensorsFile.Read(path);

    /// <summary>
    /// Every tensor of a state dict in either format (the caller disposes them): a PyTorch
    /// <c>torch.save</c> file (a zip archive, whatever its extension: <c>.pt</c>, <c>.pth</c>,
    /// <c>.bin</c>) through the restricted <see cref="TorchPickle"/>, safetensors otherwise.
    /// </summary>
    public static Dictionary<string, Tensor> ReadWeights(string path)
    {
        if (!File.Exists(path))
        {
            throw new InteropError($"{path}: file not found");
        }

        var head = new byte[2];
        using (var stream = File.OpenRead(path))
        {
            stream.ReadExactly(head, 0, (int)Math.Min(2, stream.Length));
        }

        var pickled = head is [(byte)'P', (byte)'K'] || head[0] == 0x80
            || Path.GetExtension(path) is ".pt" or ".pth" or ".bin" or ".ckpt";
        return pickled ? TorchPickle.ReadStateDict(path) : ReadSafetensors(path);
    }

    /// <summary>The model's tensors under the source's names and shapes (views; nothing is copied).</summary>
    public static Dictionary<string, Tensor> Export(IReadOnlyDictionary<string, Tensor> model, NameConvention convention)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (ours, tensor) in model)
        {
            var mapped = convention.Map(ours, tensor.shape);
            if (!result.TryAdd(mapped.Theirs, mapped.ToTheirs(tensor)))
            {
                throw new InteropError($"the '{convention.Source}' names map two parameters to '{mapped.Theirs}'");
            }
        }

        return result;
    }

    /// <summary>
    /// Writes a safetensors file atomically (a temporary sibling renamed over the target). Any
    /// file already at the target is refused: nothing in a safetensors file says dsl wrote it.
    /// </summary>
    public static void WriteSafetensors(string path, IReadOnlyDictionary<string, Tensor> tensors)
    {
        var full = Path.GetFullPath(path);
        if (File.Exists(full) || Directory.Exists(full))
        {
            throw new InteropError($"{path}: exists; dsl export never writes over a safetensors file (remove it or choose another --out)");
        }

        var temporary = full + DurableFile.TempInfix + Guid.NewGuid().ToString("N");
        try
        {
            SafetensorsFile.Write(temporary, tensors);
            DurableFile.Rename(temporary, full);
            DurableFile.SyncDirectory(Path.GetDirectoryName(full)!);
        }
        catch
        {
            File.Delete(temporary);
            throw;
        }
    }
}
