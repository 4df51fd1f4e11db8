using Dsl;
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
        var dilation = AxisValues.Expand(attrs.Dilation, attrs.Dims, 1);
        long groups = attrs.Groups;
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
    /// dot product and proj [D, heads·headDim].
    /// </summary>
    public static Kernel SelfAttention(Ir.AttentionAttrs attrs, NodeParams parameters)
    {
        var qkvWeight = parameters.Required("qkv.weight");
        var projWeight = parameters.Required("proj.weight");
        var qkvBias = attrs.QkvBias ? parameters.Required("qkv.bias") : null;
        var projBias = attrs.Bias ? parameters.Required("proj.bias") : null;
        var qNorm = attrs.QkNorm ? parameters.Required("q_norm.weight") : null;
        var kNorm = attrs.QkNorm ? parameters.Required("k_norm.weight") : null;
        long heads = attrs.Heads;
        long kvHeads = attrs.KvHeads;
        long headDim = attrs.HeadDim;
        var causal = attrs.Causal;
        var rope = attrs.Rope;
        // The rotary tables depend only on the sequence length: made once per length, not per step.
        var rotary = new Dictionary<long, (Tensor Cos, Tensor Sin)>();
        return (x, _) =>
        {
            using var scope = NewDisposeScope();
            var (batch, tokens) = (x[0].shape[0], x[0].shape[1]);
            var qkv = F.linear(x[0], qkvWeight, qkvBias).view(batch, tokens, heads + (2 * kvHeads), headDim).transpose(1, 2);
            var q = qkv.narrow(1, 0, heads);
            var k = qkv.narrow(1, heads, kvHeads);
            var v = qkv.narrow(1, heads + kvHeads, kvHeads);
            if (qNorm is not null)
            {
                q = HeadRmsNorm(q, qNorm);
                k = HeadRmsNorm(k, kNorm!);
            }

            if (rope > 0)
            {
                if (!rotary.TryGetValue(tokens, out var tables))
                {
                    using var tableScope = NewDisposeScope();
                    var (c, s) = RotaryTables(tokens, headDim, rope, x[0].device);
                    tables = (c.DetachFromDisposeScope(), s.DetachFromDisposeScope());
                    rotary[tokens] = tables;
                }

                var (cos, sin) = tables;
                q = Rotate(q, cos, sin);
                k = Rotate(k, cos, sin);
            }

            if (kvHeads != heads)
            {
                k = k.repeat_interleave(heads / kvHeads, 1);
                v = v.repeat_interleave(heads / kvHeads, 1);
            }

            var attended = F.scaled_dot_product_attention(q, k, v, is_casual: causal);
            var merged = attended.transpose(1, 2).reshape(batch, tokens, heads * headDim);
            return scope.MoveToOuter(F.linear(merged, projWeight, projBias));
        };
    }

    /// <summary>
    /// RoPE's cos and sin for positions 0..tokens−1, [tokens, headDim] in the rotate-half layout
    /// (frequency i at columns i and i + headDim/2): θ^(−2i/headDim) per pair, as in Llama and OpenELM.
    /// </summary>
    private static (Tensor Cos, Tensor Sin) RotaryTables(long tokens, long headDim, double theta, Device device)
    {
        var inverse = pow(theta, -arange(0, headDim, 2, dtype: ScalarType.Float64, device: device) / headDim);
        var angles = outer(arange(tokens, dtype: ScalarType.Float64, device: device), inverse);
        var both = cat([angles, angles], 1);
        return (both.cos().to_type(ScalarType.Float32), both.sin().to_type(ScalarType.Float32));
    }

    /// <summary>x·cos + rotate_half(x)·sin, where rotate_half(x) = (−x₂, x₁) over the two halves of the head.</summary>
    private static Tensor Rotate(Tensor x, Tensor cos, Tensor sin)
    {
        var half = x.shape[^1] / 2;
        var rotated = cat([-x.narrow(-1, half, half), x.narrow(-1, 0, half)], -1);
        return (x * cos) + (rotated * sin);
    }

    /// <summary>RMSNorm over each head's features (eps 1e-6), with a per-feature gain.</summary>
    private static Tensor HeadRmsNorm(Tensor x, Tensor weight) =>
        x * x.square().mean([-1], keepdim: true).add(1e-6).rsqrt() * weight;

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
