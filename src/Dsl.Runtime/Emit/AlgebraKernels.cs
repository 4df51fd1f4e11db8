using Dsl;
using Microsoft.FSharp.Core;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Dsl.Runtime.Emit;

/// <summary>
/// Kernels of the tensor algebra: value-by-value functions, comparisons and selection,
/// matrix products, softmax, reductions and axis swaps. Each is the PyTorch function of the
/// same name, so the IR's shape rules (dsl/Primitives.fs) describe what these compute.
/// </summary>
internal static class AlgebraKernels
{
    public static Kernel Unary(Ir.UnaryFn fn) => fn switch
    {
        { IsExp: true } => (x, _) => x[0].exp(),
        { IsLog: true } => (x, _) => x[0].log(),
        { IsSqrt: true } => (x, _) => x[0].sqrt(),
        { IsRsqrt: true } => (x, _) => x[0].rsqrt(),
        { IsAbs: true } => (x, _) => x[0].abs(),
        _ => throw new NotSupportedException($"unary function {fn} has no kernel"),
    };

    public static Kernel Pow(double exponent) => (x, _) => x[0].pow(exponent);

    public static Kernel Clamp(FSharpOption<double>? low, FSharpOption<double>? high)
    {
        var min = FSharpOption<double>.get_IsSome(low) ? low!.Value : (double?)null;
        var max = FSharpOption<double>.get_IsSome(high) ? high!.Value : (double?)null;
        return (x, _) => (min, max) switch
        {
            ({ } lo, { } hi) => x[0].clamp(lo, hi),
            ({ } lo, null) => x[0].clamp_min(lo),
            (null, { } hi) => x[0].clamp_max(hi),
            _ => throw new NotSupportedException("clamp without a bound has no kernel"),
        };
    }

    public static Kernel AddScalar(double value) => (x, _) => x[0].add(value);

    public static readonly Kernel Div = (x, _) => x[0].div(x[1]);

    /// <summary>A 0/1 mask in the first input's floating type (float32 for integer inputs).</summary>
    public static Kernel Compare(Ir.CompareKind kind, FSharpOption<double>? scalar)
    {
        Func<Tensor, Tensor, Tensor> withTensor = kind switch
        {
            { IsLess: true } => static (a, b) => a.lt(b),
            { IsLessEqual: true } => static (a, b) => a.le(b),
            { IsGreater: true } => static (a, b) => a.gt(b),
            { IsGreaterEqual: true } => static (a, b) => a.ge(b),
            { IsEqual: true } => static (a, b) => a.eq(b),
            { IsNotEqual: true } => static (a, b) => a.ne(b),
            _ => throw new NotSupportedException($"comparison {kind} has no kernel"),
        };
        Func<Tensor, double, Tensor> withScalar = kind switch
        {
            { IsLess: true } => static (a, c) => a.lt(c),
            { IsLessEqual: true } => static (a, c) => a.le(c),
            { IsGreater: true } => static (a, c) => a.gt(c),
            { IsGreaterEqual: true } => static (a, c) => a.ge(c),
            { IsEqual: true } => static (a, c) => a.eq(c),
            { IsNotEqual: true } => static (a, c) => a.ne(c),
            _ => throw new NotSupportedException($"comparison {kind} has no kernel"),
        };
        var constant = FSharpOption<double>.get_IsSome(scalar) ? scalar!.Value : (double?)null;
        return (x, _) =>
        {
            using var mask = constant is { } c ? withScalar(x[0], c) : withTensor(x[0], x[1]);
            return mask.to_type(MaskType(x[0]));
        };
    }

    /// <summary>x where cond is non-zero, else y, broadcast (torch.where).</summary>
    public static readonly Kernel Where = (x, _) =>
    {
        using var condition = x[0].ne(0);
        return where(condition, x[1], x[2]);
    };

    public static readonly Kernel Matmul = (x, _) => x[0].matmul(x[1]);

    public static Kernel Softmax(int axis, bool log) =>
        log ? (x, _) => F.log_softmax(x[0], axis) : (x, _) => F.softmax(x[0], axis);

    public static Kernel Reduce(Ir.ReduceKind kind, Microsoft.FSharp.Collections.FSharpList<int> axes, bool keepDims)
    {
        var dims = axes.Select(a => (long)a).ToArray();
        return kind switch
        {
            { IsReduceMean: true } => (x, _) => x[0].mean(dims, keepDims),
            { IsReduceSum: true } => (x, _) => x[0].sum(dims, keepDims),
            { IsReduceMax: true } => (x, _) => x[0].amax(dims, keepDims),
            { IsReduceMin: true } => (x, _) => x[0].amin(dims, keepDims),
            _ => throw new NotSupportedException($"reduction {kind} has no kernel"),
        };
    }

    public static Kernel ArgMax(int axis, bool keepDims) => (x, _) => x[0].argmax(axis, keepDims);

    public static Kernel Transpose(int axis1, int axis2) => (x, _) => x[0].transpose(axis1, axis2);

    public static Kernel Stack(int axis) => (x, _) => stack(x, axis);

    public static Kernel StridedSlice(int axis, int start, int stop, int step) =>
        (x, _) => x[0].slice(axis, start, stop, step);

    /// <summary>torch.expand to the IR's sizes after the batch; the batch keeps its size.</summary>
    public static Kernel Expand(Microsoft.FSharp.Collections.FSharpList<int> shape)
    {
        var sizes = shape.Select(d => (long)d).Prepend(-1L).ToArray();
        return (x, _) => x[0].expand(sizes);
    }

    public static Kernel Tile(Microsoft.FSharp.Collections.FSharpList<int> repeats)
    {
        var counts = repeats.Select(r => (long)r).Prepend(1L).ToArray();
        return (x, _) => x[0].repeat(counts);
    }

    /// <summary>F.pad, whose pairs run from the last axis backwards (the IR lists them in axis order).</summary>
    public static Kernel Pad(Microsoft.FSharp.Collections.FSharpList<Tuple<int, int>> pads, Ir.PadMode mode)
    {
        var pairs = pads.Reverse().SelectMany(p => new[] { (long)p.Item1, (long)p.Item2 }).ToArray();
        return mode switch
        {
            Ir.PadMode.ConstantPad constant => (x, _) => F.pad(x[0], pairs, TorchSharp.PaddingModes.Constant, constant.value),
            { IsReflectPad: true } => (x, _) => F.pad(x[0], pairs, TorchSharp.PaddingModes.Reflect),
            _ => throw new NotSupportedException($"padding mode {mode} has no kernel"),
        };
    }

    /// <summary>
    /// LayerNorm over chosen axes: they are moved to the end, normalised there by F.layer_norm
    /// (so the statistics and the affine step are PyTorch's own) and moved back.
    /// </summary>
    public static Kernel LayerNormAxes(
        Microsoft.FSharp.Collections.FSharpList<int> axes,
        Microsoft.FSharp.Collections.FSharpList<int> shape,
        double eps,
        bool affine,
        bool hasBias,
        int rank,
        NodeParams parameters)
    {
        var weight = affine ? parameters.Required("weight") : null;
        var bias = hasBias ? parameters.Required("bias") : null;
        var normalized = axes.ToArray();
        var order = Enumerable.Range(0, rank).Where(a => !normalized.Contains(a)).Concat(normalized).Select(a => (long)a).ToArray();
        var inverse = new long[rank];
        for (var i = 0; i < rank; i++)
        {
            inverse[order[i]] = i;
        }

        var normalizedShape = shape.Select(d => (long)d).ToArray();
        return (x, _) =>
        {
            using var moved = x[0].permute(order);
            using var normed = F.layer_norm(moved, normalizedShape, weight, bias, eps);
            return normed.permute(inverse);
        };
    }

    private static ScalarType MaskType(Tensor like) =>
        like.is_floating_point() ? like.dtype : ScalarType.Float32;
}
