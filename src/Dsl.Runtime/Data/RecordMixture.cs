using static TorchSharp.torch;

namespace Dsl.Runtime.Data;

/// <summary>
/// A weighted mixture of record sets with one schema (a replay buffer beside new data, a data
/// mix): a fixed-size sample drawn once from a seed, so a run and its resume see the same records.
/// Each source contributes its share of the size, rounded by largest remainder so the shares add
/// up exactly; within a source, records are taken in the order of a seeded permutation, and a
/// source asked for more records than it has starts a fresh permutation (sampling with
/// replacement only across passes, as an upsampled shard in open_lm or webdataset is).
/// </summary>
public static class RecordMixture
{
    /// <summary>How many records each source gives: weight × size, rounded by largest remainder.</summary>
    /// <exception cref="ArgumentException">Weights not positive, or sizes not matching the sources.</exception>
    public static int[] Counts(IReadOnlyList<double> weights, int size)
    {
        ArgumentNullException.ThrowIfNull(weights);
        if (weights.Count == 0 || weights.Any(w => !(w > 0)))
        {
            throw new ArgumentException("every weight must be positive", nameof(weights));
        }

        ArgumentOutOfRangeException.ThrowIfNegative(size);
        var total = weights.Sum();
        var exact = weights.Select(w => w / total * size).ToArray();
        var counts = exact.Select(e => (int)Math.Floor(e)).ToArray();
        var left = size - counts.Sum();
        // The largest fractional parts get the records left over; ties go to the earlier source.
        foreach (var i in Enumerable.Range(0, exact.Length).OrderByDescending(i => exact[i] - counts[i]).ThenBy(i => i).Take(left))
        {
            counts[i]++;
        }

        return counts;
    }

    /// <summary>
    /// <paramref name="size"/> records from <paramref name="sources"/> in proportion to
    /// <paramref name="weights"/>, the first source's first; a new record set that owns its tensors.
    /// </summary>
    /// <exception cref="ArgumentException">The sources' schemas differ, or one is empty.</exception>
    public static RecordSet Mix(IReadOnlyList<RecordSet> sources, IReadOnlyList<double> weights, int size, long seed)
    {
        ArgumentNullException.ThrowIfNull(sources);
        if (sources.Count != weights.Count)
        {
            throw new ArgumentException($"{sources.Count} sources but {weights.Count} weights", nameof(weights));
        }

        var schema = sources[0].Schema;
        foreach (var source in sources)
        {
            if (source.Count == 0)
            {
                throw new ArgumentException("a mixed source holds no records", nameof(sources));
            }

            if (!source.Schema.Select(f => f.ToString()).SequenceEqual(schema.Select(f => f.ToString())))
            {
                throw new ArgumentException(
                    $"mixed sources must have the same fields: {string.Join(", ", schema)} against {string.Join(", ", source.Schema)}",
                    nameof(sources));
            }
        }

        var counts = Counts(weights, size);
        var random = new Random(unchecked((int)seed) ^ 0x4D495831);
        var picks = sources.Select((source, i) => Picks(source.Count, counts[i], random)).ToArray();
        var tensors = new Dictionary<string, Tensor>();
        try
        {
            foreach (var field in schema)
            {
                using var scope = NewDisposeScope();
                var parts = sources
                    .Select((source, i) => source[field.Name].index_select(0, tensor(picks[i])))
                    .ToArray();
                tensors[field.Name] = cat(parts, 0).MoveToOuterDisposeScope();
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

    /// <summary><paramref name="count"/> indices below <paramref name="n"/>: seeded permutations, one after another.</summary>
    private static long[] Picks(int n, int count, Random random)
    {
        var picks = new long[count];
        var order = new long[n];
        for (var taken = 0; taken < count; taken += n)
        {
            for (var i = 0; i < n; i++)
            {
                order[i] = i;
            }

            random.Shuffle(order);
            Array.Copy(order, 0, picks, taken, Math.Min(n, count - taken));
        }

        return picks;
    }
}
