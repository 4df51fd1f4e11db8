using Dsl;
using static TorchSharp.torch;

namespace Dsl.Runtime.Emit;

/// <summary>Turns one IR node into its <see cref="Kernel"/>, once, at construction.</summary>
internal static class KernelFactory
{
    /// <param name="node">Any node but an Input (the schedule feeds those from the forward arguments).</param>
    /// <param name="firstInput">The IR shape of the node's first input (empty when it has none).</param>
    /// <param name="parameters">The node's tensors by local name.</param>
    /// <param name="maskGenerator">The module-owned generator Dropout and DropPath masks are drawn from.</param>
    /// <param name="statistics">The module-owned choice of local or cross-rank BatchNorm statistics.</param>
    public static Kernel Create(Ir.Node node, Ir.Dim[] firstInput, NodeParams parameters, Generator maskGenerator, BatchStatistics statistics)
    {
        var rank = node.Shape.Length;
        return node.Op switch
        {
            Ir.Op.Conv conv when ConvShape.Of(conv.Item, firstInput).IsMatrixProduct => LayerKernels.PointConv(parameters),
            Ir.Op.Conv conv => LayerKernels.Conv(conv.Item, parameters),
            Ir.Op.ConvTranspose conv => SpatialKernels.ConvTranspose(conv.Item, parameters),
            Ir.Op.Upsample upsample => SpatialKernels.Upsample(upsample.Item),
            Ir.Op.PixelShuffle shuffle => SpatialKernels.PixelShuffle(shuffle.factor, shuffle.inverse),
            Ir.Op.Linear linear => LayerKernels.Linear(linear.bias, parameters),
            Ir.Op.Embedding embedding => LayerKernels.Embedding(embedding.dim, parameters),
            Ir.Op.PositionalEmbedding positional => LayerKernels.PositionalEmbedding(positional.length, parameters),
            Ir.Op.SelfAttention attention => LayerKernels.SelfAttention(attention.Item, parameters, maskGenerator),
            Ir.Op.CrossAttention attention => LayerKernels.CrossAttention(attention.Item, parameters, maskGenerator),
            Ir.Op.LayerScale scale => LayerKernels.LayerScale(scale.channels, scale.axis, rank, parameters),
            { IsParameter: true } => LayerKernels.Parameter(parameters),

            Ir.Op.BatchNorm norm => NormKernels.BatchNorm(norm.eps, norm.momentum, parameters, statistics),
            Ir.Op.LayerNorm norm => NormKernels.LayerNorm(norm.features, norm.eps, norm.affine, norm.bias, parameters),
            Ir.Op.RmsNorm norm => NormKernels.RmsNorm(norm.eps, parameters),
            Ir.Op.GroupNorm norm => NormKernels.GroupNorm(norm.groups, norm.eps, parameters),
            Ir.Op.Normalize normalize => NormKernels.Normalize(normalize.axis),

            Ir.Op.Act act => ElementwiseKernels.Activation(act.Item),
            Ir.Op.Dropout dropout => ElementwiseKernels.Dropout(dropout.p, maskGenerator),
            Ir.Op.DropPath dropPath => ElementwiseKernels.DropPath(dropPath.p, maskGenerator),
            Ir.Op.Scale scale => ElementwiseKernels.Scale(scale.factor),
            { IsAdd: true } => ElementwiseKernels.Add,
            { IsMul: true } => ElementwiseKernels.Mul,

            Ir.Op.Pool pool => ShapeKernels.Pool(pool.Item),
            Ir.Op.GlobalPool pool => ShapeKernels.GlobalPool(pool.Item),
            { IsFlatten: true } => ShapeKernels.Flatten,
            Ir.Op.Reshape reshape => ShapeKernels.Reshape(reshape.Item),
            Ir.Op.Permute permute => ShapeKernels.Permute(permute.Item),
            { IsImageToTokens: true } => ShapeKernels.ImageToTokens,
            Ir.Op.TokensToImage image => ShapeKernels.TokensToImage(image.height, image.width),
            Ir.Op.Concat concat => ShapeKernels.Concat(concat.axis),
            Ir.Op.SelectToken select => ShapeKernels.SelectToken(select.index),
            Ir.Op.Narrow narrow => ShapeKernels.Narrow(narrow.axis, narrow.start, narrow.length),
            Ir.Op.SelectWhere select => ShapeKernels.SelectWhere(select.token),

            Ir.Op.Unary unary => AlgebraKernels.Unary(unary.Item),
            Ir.Op.Pow pow => AlgebraKernels.Pow(pow.exponent),
            Ir.Op.Clamp clamp => AlgebraKernels.Clamp(clamp.low, clamp.high),
            Ir.Op.AddScalar add => AlgebraKernels.AddScalar(add.value),
            { IsDiv: true } => AlgebraKernels.Div,
            Ir.Op.Compare compare => AlgebraKernels.Compare(compare.kind, compare.scalar),
            { IsWhere: true } => AlgebraKernels.Where,
            Ir.Op.Matmul => AlgebraKernels.Matmul,
            Ir.Op.Softmax softmax => AlgebraKernels.Softmax(softmax.axis, softmax.log),
            Ir.Op.Reduce reduce => AlgebraKernels.Reduce(reduce.kind, reduce.axes, reduce.keepDims),
            Ir.Op.ArgMax argmax => AlgebraKernels.ArgMax(argmax.axis, argmax.keepDims),
            Ir.Op.Transpose transpose => AlgebraKernels.Transpose(transpose.axis1, transpose.axis2),
            Ir.Op.Stack stack => AlgebraKernels.Stack(stack.axis),
            Ir.Op.StridedSlice slice => AlgebraKernels.StridedSlice(slice.axis, slice.start, slice.stop, slice.step),
            Ir.Op.Expand expand => AlgebraKernels.Expand(expand.shape),
            Ir.Op.Tile tile => AlgebraKernels.Tile(tile.repeats),
            Ir.Op.Pad pad => AlgebraKernels.Pad(pad.pads, pad.mode),
            Ir.Op.LayerNormAxes norm => AlgebraKernels.LayerNormAxes(norm.axes, norm.shape, norm.eps, norm.affine, norm.bias, rank, parameters),

            Ir.Op.Loss loss => LossKernels.Create(loss.Item),
            Ir.Op.Metric metric => MetricKernels.Create(metric.Item),

            _ => throw new NotSupportedException($"node {node.Id} ('{node.Path}'): op {OpNames.Of(node.Op)} has no kernel"),
        };
    }
}
