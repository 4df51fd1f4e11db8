using System.Globalization;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Dsl.Bench;

/// <summary>
/// The sweep behind ConvolutionBackend's depthwise allowlist (src/Dsl.Runtime/Emit/ConvolutionBackend.cs):
/// depthwise convolutions of the allowed kernels (1×1, 3×3, 5×5, 7×7, 1×11), strides (1, 2) and
/// paddings (0, k/2), over channel counts, channel multipliers, batches, spatial sizes, with and
/// without bias, on NCHW-contiguous and on sliced (non-contiguous) inputs, each configuration with
/// several fresh draws. Every run compares libtorch's conv2d as it stands in this process (oneDNN,
/// unless DSL_ONEDNN or a Dsl model switched it off — nothing here does) forward and backward with
/// a float64 reference built from shifted strided slices, which uses no convolution code at all.
/// </summary>
internal static class DepthwiseSweep
{
    private static readonly (long H, long W)[] Kernels = [(1, 1), (3, 3), (5, 5), (7, 7), (1, 11)];
    private static readonly long[] Strides = [1, 2];
    private static readonly long[] Channels = [3, 16, 96, 768];
    private static readonly long[] Multipliers = [1, 2];
    private static readonly long[] Batches = [1, 8, 64];
    private static readonly long[] Spatial = [2, 7, 16, 32];

    /// <summary>Relative error (max |Δ| over max |reference| + 1) a float32 result may have.</summary>
    private const double Tolerance = 1e-4;

    public sealed record Config(long Kh, long Kw, long Stride, bool HalfPadding, long Channels, long Multiplier, long Batch, long Size, bool Bias, bool Sliced)
    {
        public long Ph => HalfPadding ? Kh / 2 : 0;

        public long Pw => HalfPadding ? Kw / 2 : 0;

        public long OutH => ((Size + (2 * Ph) - Kh) / Stride) + 1;

        public long OutW => ((Size + (2 * Pw) - Kw) / Stride) + 1;

        public override string ToString() =>
            string.Create(
                CultureInfo.InvariantCulture,
                $"k {Kh}x{Kw} stride {Stride} pad {Ph},{Pw} channels {Channels}->{Channels * Multiplier} batch {Batch} size {Size} bias {(Bias ? "yes" : "no")} {(Sliced ? "sliced" : "contiguous")}");
    }

    /// <summary>The whole grid in a fixed order, leaving out kernels that do not fit the padded input.</summary>
    public static IEnumerable<Config> Grid() =>
        from k in Kernels
        from stride in Strides
        from half in new[] { false, true }
        from c in Channels
        from m in Multipliers
        from batch in Batches
        from size in Spatial
        from bias in new[] { false, true }
        from sliced in new[] { false, true }
        let config = new Config(k.H, k.W, stride, half, c, m, batch, size, bias, sliced)
        where size + (2 * config.Ph) >= k.H && size + (2 * config.Pw) >= k.W
        select config;

    /// <summary>
    /// Runs every <paramref name="every"/>-th configuration of the grid (1: all of it) with
    /// <paramref name="draws"/> fresh draws each; prints each failure and a summary. Exit code 1
    /// when any run disagrees with the reference.
    /// </summary>
    public static int Run(int every, int draws, long seed)
    {
        var grid = Grid().ToArray();
        var chosen = grid.Where((_, i) => i % every == 0).ToArray();
        using var generator = new Generator((ulong)seed);
        var (runs, failures) = (0, 0);
        var worst = 0.0;
        foreach (var config in chosen)
        {
            for (var draw = 0; draw < draws; draw++)
            {
                var error = Check(config, generator);
                runs++;
                worst = Math.Max(worst, double.IsNaN(error) ? double.PositiveInfinity : error);
                if (!(error <= Tolerance))
                {
                    failures++;
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"WRONG  {config}  draw {draw}: relative error {error:G3}"));
                }
            }
        }

        Console.WriteLine(string.Create(
            CultureInfo.InvariantCulture,
            $"depthwise sweep: {chosen.Length} of {grid.Length} configurations, {runs} runs, {failures} wrong (largest relative error {worst:G3}, tolerance {Tolerance:G1})"));
        return failures == 0 ? 0 : 1;
    }

    /// <summary>The largest relative error of output, input gradient, weight gradient and bias gradient.</summary>
    private static double Check(Config c, Generator generator)
    {
        using var scope = NewDisposeScope();
        using var grad = enable_grad();
        var outChannels = c.Channels * c.Multiplier;
        // A sliced input is a view into a larger buffer: the same values, other strides.
        var source = c.Sliced
            ? randn([c.Batch, c.Channels + 2, c.Size + 3, c.Size + 3], generator: generator)[.., 1..(int)(c.Channels + 1), 2..(int)(c.Size + 2), 1..(int)(c.Size + 1)]
            : randn([c.Batch, c.Channels, c.Size, c.Size], generator: generator);
        var w = randn([outChannels, 1, c.Kh, c.Kw], generator: generator);
        var b = c.Bias ? randn([outChannels], generator: generator) : null;
        var gy = randn([c.Batch, outChannels, c.OutH, c.OutW], generator: generator);

        var x = source.detach().requires_grad_(true);
        var wf = w.detach().requires_grad_(true);
        var bf = b?.detach().requires_grad_(true);
        var y = F.conv2d(x, wf, bf, [c.Stride, c.Stride], [c.Ph, c.Pw], groups: c.Channels);
        autograd.backward([y], [gy]);

        var x64 = source.detach().to(float64).requires_grad_(true);
        var w64 = w.to(float64).requires_grad_(true);
        var b64 = b?.to(float64).requires_grad_(true);
        var y64 = Reference(c, x64, w64, b64);
        autograd.backward([y64], [gy.to(float64)]);

        var pairs = new List<(Tensor Actual, Tensor Expected)> { (y, y64), (x.grad!, x64.grad!), (wf.grad!, w64.grad!) };
        if (bf is not null)
        {
            pairs.Add((bf.grad!, b64!.grad!));
        }

        return pairs.Max(p => RelativeError(p.Actual, p.Expected));
    }

    /// <summary>
    /// y[n, o, i, j] = b[o] + Σ_{a, e} xpad[n, o / m, s·i + a, s·j + e] · w[o, 0, a, e], one strided
    /// slice of the padded input per kernel tap; output channel o reads input channel o / m.
    /// </summary>
    private static Tensor Reference(Config c, Tensor x, Tensor w, Tensor? b)
    {
        var padded = F.pad(x, [c.Pw, c.Pw, c.Ph, c.Ph]);
        var repeated = c.Multiplier == 1 ? padded : padded.repeat_interleave(c.Multiplier, 1);
        Tensor? sum = null;
        for (var a = 0L; a < c.Kh; a++)
        {
            for (var e = 0L; e < c.Kw; e++)
            {
                var tap = repeated[
                    ..,
                    ..,
                    TensorIndex.Slice(a, a + (c.Stride * (c.OutH - 1)) + 1, c.Stride),
                    TensorIndex.Slice(e, e + (c.Stride * (c.OutW - 1)) + 1, c.Stride)];
                var term = tap * w[.., 0, a, e].view(1, -1, 1, 1);
                sum = sum is null ? term : sum + term;
            }
        }

        return b is null ? sum! : sum! + b.view(1, -1, 1, 1);
    }

    private static double RelativeError(Tensor actual, Tensor expected)
    {
        var scale = expected.abs().max().item<double>() + 1.0;
        return (actual.to(float64) - expected).abs().max().item<double>() / scale;
    }
}
