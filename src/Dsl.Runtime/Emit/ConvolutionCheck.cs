using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Dsl.Runtime.Emit;

/// <summary>
/// Runs one convolution configuration forward and backward through libtorch's current backend
/// and compares output and both gradients with an im2col reference computed by unfold, matrix
/// products and fold (plain GEMMs, independent of the convolution backends).
/// </summary>
internal static class ConvolutionCheck
{
    /// <summary>Spatial sizes above this are cut down: the unfolded reference grows with them.</summary>
    private const long MaxSpatial = 16;

    private static readonly long[] BatchSizes = [1, 8];

    /// <summary>True when the backend agrees with the reference at every tried batch size, twice over.</summary>
    public static bool Agrees(ConvShape shape, out string detail)
    {
        using var scope = NewDisposeScope();
        using var grad = enable_grad();
        using var generator = new Generator(0x5EED);
        var spatial = CheckedSpatial(shape);
        foreach (var batch in BatchSizes)
        {
            var x = randn([batch, shape.InChannels, .. spatial], generator: generator);
            var w = randn([shape.OutChannels, shape.InChannels / shape.Groups, .. shape.Kernel], generator: generator);
            var reference = Reference(shape, x, w, spatial, generator, out var outputGrad);
            for (var attempt = 0; attempt < 2; attempt++)
            {
                var error = Backend(shape, x, w, outputGrad)
                    .Zip(reference, (actual, expected) => RelativeError(actual, expected))
                    .Max();
                if (!(error <= 1e-3))
                {
                    detail = $"conv {shape.Key} at batch {batch}: relative error {error:G3} against the im2col reference";
                    return false;
                }
            }
        }

        detail = "";
        return true;
    }

    /// <summary>Each spatial size capped at MaxSpatial but kept large enough for one output position.</summary>
    private static long[] CheckedSpatial(ConvShape shape) =>
        shape.Spatial.Select((size, axis) =>
        {
            var reach = (shape.Dilation[axis] * (shape.Kernel[axis] - 1)) + 1 - (2 * shape.Padding[axis]);
            return Math.Max(Math.Min(size, MaxSpatial), Math.Max(reach, 1));
        }).ToArray();

    /// <summary>Output, input gradient and weight gradient through F.conv1d / F.conv2d.</summary>
    private static Tensor[] Backend(ConvShape shape, Tensor x, Tensor w, Tensor outputGrad)
    {
        var input = x.detach().requires_grad_(true);
        var weight = w.detach().requires_grad_(true);
        var output = shape.Kernel.Length == 1
            ? F.conv1d(input, weight, null, shape.Stride[0], shape.Padding[0], shape.Dilation[0], shape.Groups)
            : F.conv2d(input, weight, null, shape.Stride, shape.Padding, shape.Dilation, shape.Groups);
        autograd.backward([output], [outputGrad]);
        return [output.detach(), input.grad!, weight.grad!];
    }

    /// <summary>
    /// The same three tensors by im2col. A 1-D convolution is a 2-D one over a height of 1.
    /// Also draws the output gradient the backend's backward pass is then fed.
    /// </summary>
    private static Tensor[] Reference(ConvShape shape, Tensor x, Tensor w, long[] spatial, Generator generator, out Tensor outputGrad)
    {
        var is1d = shape.Kernel.Length == 1;
        var x2 = is1d ? x.unsqueeze(2) : x;
        (long, long) Pair(long[] values) => is1d ? (1, values[0]) : (values[0], values[1]);
        (long, long) PairPad(long[] values) => is1d ? (0, values[0]) : (values[0], values[1]);
        var (batch, groups) = (x.shape[0], shape.Groups);
        var cols = F.unfold(x2, Pair(shape.Kernel), Pair(shape.Dilation), PairPad(shape.Padding), Pair(shape.Stride));
        var positions = cols.shape[2];
        var perGroupCols = cols.view(batch, groups, -1, positions);
        var perGroupWeight = w.view(groups, shape.OutChannels / groups, -1);
        var output = perGroupWeight.matmul(perGroupCols).view(batch, shape.OutChannels, positions);

        var outputShape = is1d ? new[] { batch, shape.OutChannels, positions } : [batch, shape.OutChannels, .. OutputSpatial(shape, spatial)];
        outputGrad = randn(outputShape, generator: generator);
        var perGroupGrad = outputGrad.reshape(batch, groups, shape.OutChannels / groups, positions);
        var weightGrad = perGroupGrad.matmul(perGroupCols.transpose(2, 3)).sum([0]).view(w.shape);
        var colsGrad = perGroupWeight.transpose(1, 2).matmul(perGroupGrad).view(batch, -1, positions);
        var inputGrad = F.fold(colsGrad, Pair(is1d ? [spatial[0]] : spatial), Pair(shape.Kernel), Pair(shape.Dilation), PairPad(shape.Padding), Pair(shape.Stride));
        return [output.view(outputShape), is1d ? inputGrad.squeeze(2) : inputGrad, weightGrad];
    }

    private static long[] OutputSpatial(ConvShape shape, long[] spatial) =>
        spatial.Select((size, axis) =>
            ((size + (2 * shape.Padding[axis]) - (shape.Dilation[axis] * (shape.Kernel[axis] - 1)) - 1) / shape.Stride[axis]) + 1).ToArray();

    private static double RelativeError(Tensor actual, Tensor expected)
    {
        var scale = expected.abs().max().item<float>() + 1.0;
        return (actual - expected).abs().max().item<float>() / scale;
    }
}
