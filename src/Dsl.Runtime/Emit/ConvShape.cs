using Dsl;

namespace Dsl.Runtime.Emit;

/// <summary>One convolution configuration, as far as choosing a backend is concerned.</summary>
/// <param name="InChannels">Input channels (all groups).</param>
/// <param name="OutChannels">Output channels (all groups).</param>
/// <param name="Kernel">One size per spatial axis (1 or 2 axes).</param>
/// <param name="Spatial">The input's spatial size per axis.</param>
public sealed record ConvShape(
    long InChannels,
    long OutChannels,
    long[] Kernel,
    long[] Stride,
    long[] Padding,
    long[] Dilation,
    long Groups,
    long[] Spatial)
{
    /// <summary>Spatial size used where the IR leaves it symbolic.</summary>
    private const long UnknownSpatial = 16;

    /// <summary>Identifies the configuration (arrays compare by reference in a record).</summary>
    public string Key =>
        $"{InChannels}->{OutChannels} k[{string.Join(",", Kernel)}] s[{string.Join(",", Stride)}] p[{string.Join(",", Padding)}] " +
        $"d[{string.Join(",", Dilation)}] g{Groups} in[{string.Join(",", Spatial)}]";

    /// <summary>
    /// A 1×1, ungrouped, unpadded, stride-1 convolution over a single position (e.g. the gates of
    /// squeeze-excitation): a matrix product, which the Conv kernel computes as one, so it never
    /// reaches a convolution backend.
    /// </summary>
    public bool IsMatrixProduct =>
        Groups == 1
        && Kernel.All(k => k == 1)
        && Stride.All(s => s == 1)
        && Padding.All(p => p == 0)
        && Spatial.All(size => size == 1);

    /// <summary>
    /// The shape of a Conv node whose input has the IR shape <paramref name="input"/> ([B, C, *spatial]).
    /// An asymmetric padding is applied before the convolution (LayerKernels.Conv), so its shape is
    /// the convolution that runs: unpadded, over the padded input.
    /// </summary>
    public static ConvShape Of(Ir.ConvAttrs attrs, IReadOnlyList<Ir.Dim> input)
    {
        var spatial = input.Skip(2).Select(d => d is Ir.Dim.Known known ? known.Item : UnknownSpatial).ToArray();
        if (spatial.Length != attrs.Dims)
        {
            spatial = Enumerable.Repeat(UnknownSpatial, attrs.Dims).ToArray();
        }

        var padding = AxisValues.Expand(attrs.Padding, attrs.Dims, 0);
        var paddingEnd = AxisValues.Expand(attrs.PaddingEnd, attrs.Dims, padding);
        if (!padding.SequenceEqual(paddingEnd))
        {
            spatial = spatial.Select((size, axis) => size + padding[axis] + paddingEnd[axis]).ToArray();
            padding = new long[attrs.Dims];
        }

        return new ConvShape(
            attrs.InChannels,
            attrs.OutChannels,
            attrs.Kernel.Select(k => (long)k).ToArray(),
            AxisValues.Expand(attrs.Stride, attrs.Dims, 1),
            padding,
            AxisValues.Expand(attrs.Dilation, attrs.Dims, 1),
            attrs.Groups,
            spatial);
    }
}
