using Microsoft.FSharp.Collections;

namespace Dsl.Runtime.Emit;

/// <summary>Per-axis attributes (stride, padding, kernel…) as the long[] TorchSharp takes.</summary>
internal static class AxisValues
{
    /// <summary>
    /// One value per spatial axis. The IR is explicit, but a single value is accepted as "the
    /// same on every axis" and an empty list as <paramref name="fallback"/>, as in PyTorch.
    /// </summary>
    public static long[] Expand(FSharpList<int> values, int axes, long[] fallback)
    {
        if (values.IsEmpty)
        {
            return fallback;
        }

        if (values.Length == 1)
        {
            return Enumerable.Repeat((long)values.Head, axes).ToArray();
        }

        return values.Length == axes
            ? values.Select(v => (long)v).ToArray()
            : throw new ArgumentException($"expected {axes} values (one per spatial axis), got [{string.Join(", ", values)}]");
    }

    public static long[] Expand(FSharpList<int> values, int axes, long fallback) =>
        Expand(values, axes, Enumerable.Repeat(fallback, axes).ToArray());
}
