namespace Dsl.Runtime;

/// <summary>How many threads the runtime's own parallel loops and libtorch may use.</summary>
public static class Threads
{
    /// <summary>
    /// The machine's cores, capped by DSL_THREADS when it is a positive number: two jobs sharing
    /// a machine each set it so that neither libtorch's workers nor parallel image decoding (each
    /// thread holding one decoded image) take the other's cores and memory.
    /// Ranks of one mpirun job on this machine share its cores evenly.
    /// </summary>
    public static int Count =>
        int.TryParse(Environment.GetEnvironmentVariable("DSL_THREADS"), out var cap) && cap > 0
            ? Math.Min(cap, Environment.ProcessorCount)
            : Math.Max(1, Environment.ProcessorCount / Distributed.World.LocalSize);
}
