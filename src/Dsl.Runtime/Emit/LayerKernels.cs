using Dsl;
using Microsoft.FSharp.Collections;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Dsl.Runtime.Emit;

/// <summary>Kernels of the ops that own weights: convolutions, projections, embeddings, attention.</summary>
internal static class LayerKernels
{
    /// <summary>Weight [out, in/groups, *kernel], optional bias [out]; 1-D or 2-D by <c>Dims</c>.</summary>
    public static Kernel Conv(Ir.ConvAttrs attrs, NodeParams parameters)
    {
        var weight = parameters.Required("weight");
        var bias = attrs.Bias ? parameters.Required("bias") : null;
        var stride = AxisValues.Expand(attrs.Stride, attrs.Dims, 1);
        var padding = AxisValues.Expand(attrs.Padding, attrs.Dims, 0);
        var paddingEnd = AxisValues.Expand(attrs.PaddingEnd, attrs.Dims, padding);
        var dilation = AxisValues.Expand(attrs.Dilation, attrs.Dims, 1);
        long groups = attrs.Groups;
        if (!padding.SequenceEqual(paddingEnd))
        {
            // Asymmetric ("same" with an even extent): TorchSharp's convolutions pad both sides
            // alike, so pad explicitly (F.pad takes the last axis first) and convolve unpadded,
            // the convolution ConvShape.Of describes.
            var sides = Enumerable.Range(0, attrs.Dims).Reverse().SelectMany(axis => new[] { padding[axis], paddingEnd[axis] }).ToArray();
            var zeros = ListModule.Replicate(attrs.Dims, 0);
            var unpadded = new Ir.ConvAttrs(
                attrs.Dims, attrs.InChannels, attrs.OutChannels, attrs.Kernel, attrs.Stride, zeros, zeros, attrs.Dilation, attrs.Groups, attrs.Bias);
            var inner = Conv(unpadded, parameters);
            return (x, training) =>
            {
                using var padded = F.pad(x[0], sides);
                return inner([padded], training);
            };
        }

        // Contiguous NCHW: the layout ConvolutionBackend verified. A permuted view (e.g. after a
        // channel LayerNorm) would otherwise reach oneDNN as channels-last, where some grouped
        // shapes go wrong. For an already contiguous input this is the same tensor.
        return attrs.Dims switch
        {
            1 => (x, _) => F.conv1d(x[0].contiguous(), weight, bias, stride[0], padding[0], dilation[0], groups),
            2 => (x, _) => F.conv2d(x[0].contiguous(), weight, bias, stride, padding, dilation, groups),
            _ => throw new NotSupportedException($"conv with {attrs.Dims} spatial dimensions is not supported (1 or 2)"),
        };
    }

    /// <summary>A 1×1 convolution over one position ([B, C, 1, 1] or [B, C, 1]) as a matrix product.</summary>
    public static Kernel PointConv(NodeParams parameters)
    {
        var weight = parameters.Required("weight");
        var bias = parameters.Optional("bias");
        return (x, _) =>
        {
            using var scope = NewDisposeScope();
            var input = x[0];
            var product = F.linear(input.flatten(1), weight.flatten(1), bias);
            return scope.MoveToOuter(product.view([.. product.shape, .. input.shape.Skip(2)]));
        };
    }

    /// <summary>Weight [out, in], bias [out].</summary>
    public static Kernel Linear(bool hasBias, NodeParams parameters)
    {
        var weight = parameters.Required("weight");
        var bias = hasBias ? parameters.Required("bias") : null;
        return (x, _) => F.linear(x[0], weight, bias);
    }

    /// <summary>int64 indices of any shape → the rows of weight [count, dim], shape [..., dim].</summary>
    public static Kernel Embedding(int dim, NodeParams parameters)
    {
        var weight = parameters.Required("weight");
        return (x, _) =>
        {
            var indices = x[0];
            using var flat = indices.flatten();
            using var rows = weight.index_select(0, flat);
            return rows.view([.. indices.shape, dim]);
        };
    }

    /// <summary>Adds weight [length, dim] to [B, T, dim]; a shorter sequence uses the first T rows.</summary>
    public static Kernel PositionalEmbedding(int length, NodeParams parameters)
    {
        var weight = parameters.Required("weight");
        return (x, _) =>
        {
            var tokens = x[0].shape[1];
            if (tokens == length)
            {
                return x[0].add(weight);
            }

            using var rows = weight.narrow(0, 0, tokens);
            return x[0].add(rows);
        };
    }

    /// <summary>
    /// Multi-head self-attention over [B, T, D] with a fused projection: qkv.weight
    /// [(heads + 2·kvHeads)·headDim, D] gives q, k and v (timm's (3, heads, D/heads) layout when
    /// kvHeads = heads). Optionally q and k are RMS-normalised per head (q_norm, k_norm) and rotated
    /// by RoPE; with fewer key/value heads each serves heads/kvHeads query heads (GQA). Then scaled
    /// dot product and proj [D, heads·headDim] (see <see cref="AttentionCore"/>).
    /// </summary>
    public static Kernel SelfAttention(Ir.AttentionAttrs attrs, NodeParams parameters, Generator maskGenerator)
    {
        var core = new AttentionCore(attrs, parameters);
        return (x, training) =>
        {
            using var scope = NewDisposeScope();
            var (q, k, v) = core.Project(x[0], 0);
            var mask = attrs.Mask.IsNoMask ? null : AttentionCore.MaskOf(attrs.Mask, x[1]);
            return scope.MoveToOuter(core.Attend(q, k, v, 0, training ? maskGenerator : null, mask));
        };
    }

    /// <summary>
    /// Multi-head cross-attention: q [heads·hd, D] of x [B, Tq, D], kv [2·heads·hd, Dk] of the
    /// context [B, Tk, Dk] (k rows, then v rows), scaled dot product per head with the optional
    /// mask (third input), proj [D, heads·hd] → [B, Tq, D].
    /// </summary>
    public static Kernel CrossAttention(Ir.CrossAttentionAttrs attrs, NodeParams parameters, Generator maskGenerator)
    {
        var qWeight = parameters.Required("q.weight");
        var qBias = attrs.QkvBias ? parameters.Required("q.bias") : null;
        var kvWeight = parameters.Required("kv.weight");
        var kvBias = attrs.QkvBias ? parameters.Required("kv.bias") : null;
        var projWeight = parameters.Required("proj.weight");
        var projBias = attrs.Bias ? parameters.Required("proj.bias") : null;
        var (heads, headDim) = ((long)attrs.Heads, (long)attrs.HeadDim);
        return (x, training) =>
        {
            using var scope = NewDisposeScope();
            var (batch, queries, keys) = (x[0].shape[0], x[0].shape[1], x[1].shape[1]);
            var q = F.linear(x[0], qWeight, qBias).view(batch, queries, heads, headDim).transpose(1, 2);
            var kv = F.linear(x[1], kvWeight, kvBias).view(batch, keys, 2, heads, headDim).permute(2, 0, 3, 1, 4);
            var mask = attrs.Mask.IsNoMask ? null : AttentionCore.MaskOf(attrs.Mask, x[2]);
            var attended = AttentionCore.Scaled(q, kv[0], kv[1], mask, attrs.Dropout, training ? maskGenerator : null);
            var merged = attended.transpose(1, 2).reshape(batch, queries, heads * headDim);
            return scope.MoveToOuter(F.linear(merged, projWeight, projBias));
        };
    }

    /// <summary>x * gamma, gamma [channels] viewed so that it lines up with <paramref name="axis"/>.</summary>
    public static Kernel LayerScale(int channels, int axis, int rank, NodeParams parameters)
    {
        var gamma = parameters.Required("gamma");
        var aligned = Enumerable.Repeat(1L, rank).ToArray();
        aligned[axis < 0 ? rank + axis : axis] = channels;
        return (x, _) =>
        {
            using var broadcast = gamma.view(aligned);
            return x[0].mul(broadcast);
        };
    }

    /// <summary>The parameter itself as a value (an alias, so the schedule may dispose it freely).</summary>
    public static Kernel Parameter(NodeParams parameters)
    {
        var parameter = parameters.Single();
        return (_, _) => parameter.alias();
    }
}
