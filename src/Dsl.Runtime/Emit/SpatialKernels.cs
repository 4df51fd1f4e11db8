using Dsl;
using Microsoft.FSharp.Core;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Dsl.Runtime.Emit;

/// <summary>
/// Kernels of the spatial ops that resize images: transposed convolutions, interpolation and
/// pixel (un)shuffling. Each is the PyTorch function of the same name, so the IR's shape rules
/// (dsl/Primitives.fs) describe what these compute.
/// </summary>
internal static class SpatialKernels
{
    /// <summary>Weight [in, out/groups, *kernel], optional bias [out]; 1-D or 2-D by <c>Dims</c>.</summary>
    public static Kernel ConvTranspose(Ir.ConvTransposeAttrs attrs, NodeParams parameters)
    {
        var weight = parameters.Required("weight");
        var bias = attrs.Bias ? parameters.Required("bias") : null;
        var stride = AxisValues.Expand(attrs.Stride, attrs.Dims, 1);
        var padding = AxisValues.Expand(attrs.Padding, attrs.Dims, 0);
        var outputPadding = AxisValues.Expand(attrs.OutputPadding, attrs.Dims, 0);
        var dilation = AxisValues.Expand(attrs.Dilation, attrs.Dims, 1);
        long groups = attrs.Groups;
        return attrs.Dims switch
        {
            1 => (x, _) => F.conv_transpose1d(x[0].contiguous(), weight, bias, stride[0], padding[0], outputPadding[0], dilation[0], groups),
            2 => (x, _) => F.conv_transpose2d(x[0].contiguous(), weight, bias, stride, padding, outputPadding, dilation, groups),
            _ => throw new NotSupportedException($"convTranspose with {attrs.Dims} spatial dimensions is not supported (1 or 2)"),
        };
    }

    /// <summary>
    /// F.interpolate: by the scale factors when the model gave them (PyTorch maps positions by
    /// them, which differs from the sizes' ratio for a fractional factor), else to the sizes.
    /// </summary>
    public static Kernel Upsample(Ir.UpsampleAttrs attrs)
    {
        var dims = attrs.Size.Length;
        var mode = attrs.Mode.IsNearestMode
            ? InterpolationMode.Nearest
            : dims == 1 ? InterpolationMode.Linear : InterpolationMode.Bilinear;
        bool? alignCorners = attrs.Mode.IsNearestMode ? null : attrs.AlignCorners;
        var size = attrs.Size.Select(s => (long)s).ToArray();
        var scale = FSharpOption<Microsoft.FSharp.Collections.FSharpList<double>>.get_IsSome(attrs.Scale)
            ? attrs.Scale.Value.ToArray()
            : null;
        return scale is null
            ? (x, _) => F.interpolate(x[0], size: size, mode: mode, align_corners: alignCorners)
            : (x, _) => F.interpolate(x[0], scale_factor: scale, mode: mode, align_corners: alignCorners);
    }

    /// <summary>F.pixel_shuffle (or F.pixel_unshuffle) by <paramref name="factor"/>.</summary>
    public static Kernel PixelShuffle(int factor, bool inverse) => inverse
        ? (x, _) => F.pixel_unshuffle(x[0], factor)
        : (x, _) => F.pixel_shuffle(x[0], factor);
}
