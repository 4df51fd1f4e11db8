namespace Dsl.Runtime.Training;

/// <summary>
/// The seeds a training run reseeds its random streams with before every micro-batch: a hash
/// of (run seed, step, micro-batch, stream). Nothing random carries over from one micro-batch
/// to the next, so a run resumed at step s draws exactly what an uninterrupted run would.
/// </summary>
internal static class RunSeeds
{
    public enum Stream
    {
        /// <summary>torch's global generator (no op of the runtime draws from it; kept deterministic all the same).</summary>
        Global = 1,

        /// <summary>The generator handed to the augmentations.</summary>
        Augment = 2,

        /// <summary>The model's Dropout and DropPath mask generator.</summary>
        Masks = 3,
    }

    public static long For(long seed, long step, int microBatch, Stream stream)
    {
        var z = Mix(unchecked((ulong)seed));
        z = Mix(z ^ unchecked((ulong)step));
        z = Mix(z ^ (ulong)microBatch);
        z = Mix(z ^ (ulong)stream);
        // Non-negative: some generators reject negative seeds.
        return (long)(z >> 1);
    }

    /// <summary>SplitMix64: an increment and the finaliser, so nearby inputs give unrelated outputs.</summary>
    private static ulong Mix(ulong z)
    {
        z = unchecked(z + 0x9E3779B97F4A7C15UL);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        return z ^ (z >> 31);
    }
}
