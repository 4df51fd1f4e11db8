using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Data;

/// <summary>Which samples go into which batch, as index arrays into a data set.</summary>
public static class Batches
{
    /// <summary>
    /// Batches over a permutation that depends only on (<paramref name="seed"/>,
    /// <paramref name="epoch"/>), computed with System.Random so it does not consume or depend
    /// on torch's RNG. Rank r of <paramref name="worldSize"/> takes the permutation positions
    /// ≡ r (mod worldSize), and every rank gets the same number of batches, as
    /// torch.utils.data.DistributedSampler does: with <paramref name="dropLast"/> the
    /// permutation's tail is cut to a multiple of worldSize and each rank's last partial batch
    /// is dropped; without it the permutation wraps around to pad the last ranks' shards (so a
    /// few samples appear twice when count is not a multiple of worldSize) and the last batch
    /// may be short.
    /// </summary>
    public static IEnumerable<long[]> Shuffled(
        int count, int batchSize, long seed, int epoch, bool dropLast, int rank = 0, int worldSize = 1)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(worldSize);
        if (rank < 0 || rank >= worldSize)
        {
            throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank must be in [0, {worldSize})");
        }

        var permutation = Permutation(count, EpochSeed(seed, epoch));
        var shardSize = dropLast ? count / worldSize : (count + worldSize - 1) / worldSize;
        var shard = new long[shardSize];
        for (var k = 0; k < shardSize; k++)
        {
            shard[k] = permutation[(rank + ((long)k * worldSize)) % count];
        }

        return Slices(shard, batchSize, dropLast);
    }

    /// <summary>0 … count−1 in order, in batches; the last one may be short. For evaluation.</summary>
    public static IEnumerable<long[]> Sequential(int count, int batchSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        var all = new long[count];
        for (var i = 0; i < count; i++)
        {
            all[i] = i;
        }

        return Slices(all, batchSize, dropLast: false);
    }

    /// <summary>The rows of <paramref name="source"/> at <paramref name="indices"/> (index_select on dim 0).</summary>
    public static Tensor Take(Tensor source, long[] indices)
    {
        using var index = torch.tensor(indices, device: source.device);
        return source.index_select(0, index);
    }

    private static IEnumerable<long[]> Slices(long[] items, int batchSize, bool dropLast)
    {
        for (var start = 0; start < items.Length; start += batchSize)
        {
            var length = Math.Min(batchSize, items.Length - start);
            if (dropLast && length < batchSize)
            {
                yield break;
            }

            yield return items[start..(start + length)];
        }
    }

    /// <summary>Fisher–Yates shuffle of 0 … count−1.</summary>
    private static long[] Permutation(int count, int seed)
    {
        var random = new Random(seed);
        var order = new long[count];
        for (var i = 0; i < count; i++)
        {
            order[i] = i;
        }

        for (var i = count - 1; i > 0; i--)
        {
            var j = random.Next(i + 1);
            (order[i], order[j]) = (order[j], order[i]);
        }

        return order;
    }

    /// <summary>
    /// Mixes seed and epoch (SplitMix64 finaliser) into System.Random's int seed, so nearby
    /// seeds and epochs still give unrelated permutations.
    /// </summary>
    private static int EpochSeed(long seed, int epoch)
    {
        var z = unchecked((ulong)seed + (0x9E3779B97F4A7C15UL * ((ulong)(uint)epoch + 1)));
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        z ^= z >> 31;
        return unchecked((int)z);
    }
}
