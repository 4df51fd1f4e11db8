using Dsl;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Dsl.Runtime.Emit;

/// <summary>Kernels that pool, reshape, reorder, join or pick values.</summary>
internal static class ShapeKernels
{
    /// <summary>Max or average pooling, 1-D or 2-D by the kernel's length; stride defaults to the kernel; PyTorch's ceil_mode and count_include_pad.</summary>
    public static Kernel Pool(Ir.PoolAttrs attrs)
    {
        var axes = attrs.Kernel.Length;
        var kernel = attrs.Kernel.Select(k => (long)k).ToArray();
        var stride = AxisValues.Expand(attrs.Stride, axes, kernel);
        var padding = AxisValues.Expand(attrs.Padding, axes, 0);
        var isMax = attrs.Kind.IsMaxPool;
        var ceil = attrs.CeilMode;
        var countPad = attrs.CountIncludePad;
        return axes switch
        {
            1 when isMax => (x, _) => F.max_pool1d(x[0], kernel[0], stride[0], padding[0], ceil_mode: ceil),
            1 => (x, _) => F.avg_pool1d(x[0], kernel[0], stride[0], padding[0], ceil_mode: ceil, count_include_pad: countPad),
            2 when isMax => (x, _) => F.max_pool2d(x[0], kernel, stride, padding, ceil_mode: ceil),
            2 => (x, _) => F.avg_pool2d(x[0], kernel, stride, padding, ceil_mode: ceil, count_include_pad: countPad),
            _ => throw new NotSupportedException($"pooling over {axes} axes is not supported (1 or 2)"),
        };
    }

    /// <summary>Mean or max over every axis after the channel axis: [B, C, ...] → [B, C].</summary>
    public static Kernel GlobalPool(Ir.PoolKind kind)
    {
        var isMax = kind.IsMaxPool;
        return (x, _) =>
        {
            var rank = x[0].dim();
            if (rank == 2)
            {
                return x[0].alias();
            }

            var spatial = Enumerable.Range(2, (int)rank - 2).Select(a => (long)a).ToArray();
            return isMax ? x[0].amax(spatial) : x[0].mean(spatial);
        };
    }

    public static readonly Kernel Flatten = (x, _) => x[0].flatten(1);

    /// <summary>The batch axis stays; the rest takes the target shape (-1 allowed once).</summary>
    public static Kernel Reshape(Microsoft.FSharp.Collections.FSharpList<int> target)
    {
        var shape = target.Select(d => (long)d).Prepend(0L).ToArray();
        return (x, _) =>
        {
            var withBatch = (long[])shape.Clone();
            withBatch[0] = x[0].shape[0];
            return x[0].reshape(withBatch);
        };
    }

    public static Kernel Permute(Microsoft.FSharp.Collections.FSharpList<int> order)
    {
        var axes = order.Select(a => (long)a).ToArray();
        return (x, _) => x[0].permute(axes);
    }

    /// <summary>[B, C, H, W] → [B, H*W, C].</summary>
    public static readonly Kernel ImageToTokens = (x, _) =>
    {
        using var flat = x[0].flatten(2);
        return flat.transpose(1, 2);
    };

    /// <summary>[B, H*W, C] → [B, C, H, W].</summary>
    public static Kernel TokensToImage(int height, int width) => (x, _) =>
    {
        using var channelMajor = x[0].transpose(1, 2);
        return channelMajor.reshape(x[0].shape[0], x[0].shape[2], height, width);
    };

    public static Kernel Concat(int axis) => (x, _) => cat(x, axis);

    /// <summary>
    /// x [B, T, D] at each row's first position where ids [B, T] equal the token, or at the last
    /// position when the token is absent → [B, D].
    /// </summary>
    public static Kernel SelectWhere(long token) => (x, _) =>
    {
        using var scope = NewDisposeScope();
        var (tokens, ids) = (x[0], x[1]);
        var hit = ids.eq(token);
        var first = hit.to(ScalarType.Int64).argmax(1);
        var position = where(hit.any(1), first, tensor(tokens.shape[1] - 1, device: ids.device));
        var index = position.view(-1, 1, 1).expand(-1, 1, tokens.shape[2]);
        return scope.MoveToOuter(tokens.gather(1, index).squeeze(1));
    };

    /// <summary>A view of <paramref name="length"/> positions of one axis from <paramref name="start"/>.</summary>
    public static Kernel Narrow(int axis, int start, int length) => (x, _) =>
        x[0].narrow(axis < 0 ? x[0].dim() + axis : axis, start, length);

    /// <summary>One position along axis 1: [B, T, D] → [B, D]; negative counts from the end.</summary>
    public static Kernel SelectToken(int index) => (x, _) =>
        x[0].select(1, index < 0 ? x[0].shape[1] + index : index);
}
