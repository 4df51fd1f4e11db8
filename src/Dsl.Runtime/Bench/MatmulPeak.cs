using System.Collections.Concurrent;
using System.Diagnostics;
using static TorchSharp.torch;

namespace Dsl.Runtime.Bench;

/// <summary>
/// The machine's attainable float32 peak, measured rather than read off a data sheet: the median
/// throughput of square matrix products on the threads libtorch has now. Model FLOPs utilisation
/// (PaLM, arXiv 2204.02311, appendix B: model FLOPs per second over the peak) is reported against
/// it, so a utilisation is of what this machine can do, on the cores the run was given.
/// </summary>
public static class MatmulPeak
{
    /// <summary>The side of the product: large enough that libtorch's GEMM runs at its peak, small enough to take well under a second.</summary>
    public const int Side = 1024;

    private static readonly ConcurrentDictionary<int, double> measured = new();

    /// <summary>FLOP/s of <see cref="Side"/>² float32 products on the current thread count, measured once per process and thread count.</summary>
    public static double FlopsPerSecond() => measured.GetOrAdd(get_num_threads(), _ => Measure(rounds: 9));

    /// <summary>The median over <paramref name="rounds"/> products (2·n³ FLOPs each) after two warm-up products.</summary>
    public static double Measure(int rounds)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var a = rand(Side, Side);
        var b = rand(Side, Side);
        for (var i = 0; i < 2; i++)
        {
            a.matmul(b).Dispose();
        }

        var seconds = new double[rounds];
        for (var i = 0; i < rounds; i++)
        {
            var clock = Stopwatch.StartNew();
            a.matmul(b).Dispose();
            seconds[i] = clock.Elapsed.TotalSeconds;
        }

        Array.Sort(seconds);
        return 2.0 * Side * Side * Side / Math.Max(seconds[rounds / 2], 1e-9);
    }

    /// <summary>
    /// Model FLOPs utilisation of <paramref name="tokensPerSecond"/> through a model of
    /// <paramref name="parameters"/> weights: 6·N FLOPs per token for a training step (forward
    /// 2·N, backward 4·N), 2·N for a forward alone, over <paramref name="peak"/>. Attention's
    /// own FLOPs are left out, as PaLM's 6N term does.
    /// </summary>
    public static double Utilisation(long parameters, double tokensPerSecond, double peak, bool training) =>
        (training ? 6.0 : 2.0) * parameters * tokensPerSecond / peak;
}
