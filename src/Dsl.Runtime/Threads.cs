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
        jobThreads.Value is int job and > 0
            ? job
            : int.TryParse(Environment.GetEnvironmentVariable("DSL_THREADS"), out var cap) && cap > 0
            ? Math.Min(cap, Environment.ProcessorCount)
            : Math.Max(1, Environment.ProcessorCount / Distributed.World.LocalSize);

    private static readonly AsyncLocal<int?> jobThreads = new();

    /// <summary>
    /// Caps <see cref="Count"/> for the code this thread (and what it starts) runs: an experiment
    /// runs independent stages side by side in one process, each on its share of the cores.
    /// libtorch's OpenMP thread count is a per-thread setting, so each stage's own
    /// set_num_threads(Count) holds for its thread alone.
    /// </summary>
    public static void ForThisJob(int threads) => jobThreads.Value = threads;
}
