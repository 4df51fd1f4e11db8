using Dsl;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Dsl.Runtime.Emit;

/// <summary>
/// Self-attention's two halves with one node's weights bound: <see cref="Project"/> turns
/// [B, n, D] into per-head q, k and v at absolute positions start … start + n − 1 (normalised
/// and rotated), and <see cref="Attend"/> lets those queries attend over any run of keys and
/// values from position 0 and projects the result back. The full-sequence kernel calls both on
/// the whole sequence; cached decoding (<c>Dsl.Runtime.Generation</c>) keeps the keys and values
/// of earlier positions and projects only the new ones, so both compute the same function.
/// </summary>
internal sealed class AttentionCore
{
    private readonly Tensor qkvWeight;
    private readonly Tensor? qkvBias;
    private readonly Tensor projWeight;
    private readonly Tensor? projBias;
    private readonly Tensor? qNorm;
    private readonly Tensor? kNorm;
    private readonly Tensor? qWidthNorm;
    private readonly Tensor? kWidthNorm;
    private readonly long heads;
    private readonly double rope;
    private readonly bool causal;
    private readonly double dropout;

    /// <summary>The "math" kernel: scores, softmax and weighted sum written out instead of libtorch's fused SDPA.</summary>
    private readonly bool math;

    // RoPE's tables for positions 0 … length − 1, made for the longest length asked so far.
    private readonly long tableLength;
    private Tensor? cos;
    private Tensor? sin;

    /// <param name="tableLength">
    /// RoPE tables are made for at least this many positions (decoding passes the context length,
    /// so that a sequence growing one token at a time does not remake them at every step).
    /// </param>
    public AttentionCore(Ir.AttentionAttrs attrs, NodeParams parameters, long tableLength = 0)
    {
        this.tableLength = tableLength;
        qkvWeight = parameters.Required("qkv.weight");
        projWeight = parameters.Required("proj.weight");
        qkvBias = attrs.QkvBias ? parameters.Required("qkv.bias") : null;
        projBias = attrs.Bias ? parameters.Required("proj.bias") : null;
        qNorm = attrs.QkNorm ? parameters.Required("q_norm.weight") : null;
        kNorm = attrs.QkNorm ? parameters.Required("k_norm.weight") : null;
        qWidthNorm = attrs.QkLayerNorm ? parameters.Required("q_norm.weight") : null;
        kWidthNorm = attrs.QkLayerNorm ? parameters.Required("k_norm.weight") : null;
        heads = attrs.Heads;
        KvHeads = attrs.KvHeads;
        HeadDim = attrs.HeadDim;
        rope = attrs.Rope;
        causal = attrs.Causal;
        dropout = attrs.Dropout;
        math = attrs.Kernel == "math";
    }

    public long KvHeads { get; }

    public long HeadDim { get; }

    /// <summary>
    /// q [B, heads, n, hd], k and v [B, kvHeads, n, hd] of x [B, n, D] whose first position is
    /// <paramref name="start"/>: the fused projection, the optional full-width LayerNorm of q and
    /// k, the split into heads, then the optional per-head RMSNorm and RoPE.
    /// </summary>
    public (Tensor Q, Tensor K, Tensor V) Project(Tensor x, long start)
    {
        var (batch, tokens) = (x.shape[0], x.shape[1]);
        var projected = F.linear(x, qkvWeight, qkvBias);
        if (qWidthNorm is not null)
        {
            var (queryWidth, keyWidth) = (heads * HeadDim, KvHeads * HeadDim);
            projected = cat(
            [
                F.layer_norm(projected.narrow(-1, 0, queryWidth), [queryWidth], qWidthNorm, null, 1e-5),
                F.layer_norm(projected.narrow(-1, queryWidth, keyWidth), [keyWidth], kWidthNorm!, null, 1e-5),
                projected.narrow(-1, queryWidth + keyWidth, keyWidth),
            ],
            -1);
        }

        var qkv = projected.view(batch, tokens, heads + (2 * KvHeads), HeadDim).transpose(1, 2);
        var q = qkv.narrow(1, 0, heads);
        var k = qkv.narrow(1, heads, KvHeads);
        var v = qkv.narrow(1, heads + KvHeads, KvHeads);
        if (qNorm is not null)
        {
            q = HeadRmsNorm(q, qNorm);
            k = HeadRmsNorm(k, kNorm!);
        }

        if (rope > 0)
        {
            var (c, s) = Tables(start + tokens, x.device);
            using var cosRows = c.narrow(0, start, tokens);
            using var sinRows = s.narrow(0, start, tokens);
            q = Rotate(q, cosRows, sinRows);
            k = Rotate(k, cosRows, sinRows);
        }

        return (q, k, v);
    }

    /// <summary>
    /// Queries q [B, heads, n, hd] at positions start … start + n − 1 over keys and values
    /// [B, kvHeads, L, hd] at positions 0 … L − 1 (L = start + n), causally when the node is
    /// causal; heads merged and projected: [B, n, D]. With a <paramref name="dropoutMasks"/>
    /// generator (training) and a dropout rate, the attention weights are dropped out with masks
    /// drawn from it.
    /// </summary>
    public Tensor Attend(Tensor q, Tensor k, Tensor v, long start, Generator? dropoutMasks = null, Tensor? attnMask = null)
    {
        var (batch, tokens, length) = (q.shape[0], q.shape[2], k.shape[2]);
        if (KvHeads != heads && tokens == 1 && !math)
        {
            // One new position (cached decoding) sees every earlier one: each key/value head's
            // group of query heads attends as a short query sequence, without copying the cache.
            var grouped = F.scaled_dot_product_attention(q.reshape(batch, KvHeads, heads / KvHeads, HeadDim), k, v);
            return F.linear(grouped.reshape(batch, 1, heads * HeadDim), projWeight, projBias);
        }

        if (KvHeads != heads)
        {
            k = k.repeat_interleave(heads / KvHeads, 1);
            v = v.repeat_interleave(heads / KvHeads, 1);
        }

        Tensor attended;
        if (attnMask is not null)
        {
            // The node's mask, with the causal one when the node is causal (PyTorch's SDPA takes
            // one or the other; they are combined here as nn.Transformer combines its masks).
            if (causal && tokens > 1)
            {
                var queryPositions = arange(start, start + tokens, dtype: ScalarType.Int64, device: q.device).unsqueeze(1);
                var keyPositions = arange(length, dtype: ScalarType.Int64, device: q.device).unsqueeze(0);
                var visible = keyPositions.le(queryPositions);
                attnMask = attnMask.dtype == ScalarType.Bool
                    ? attnMask.logical_and(visible)
                    : where(visible, attnMask, tensor(double.NegativeInfinity, attnMask.dtype, attnMask.device));
            }

            attended = Scaled(q, k, v, attnMask, dropout, dropoutMasks, math);
        }
        else if ((dropoutMasks is not null && dropout > 0) || math)
        {
            // Written out, so that the weights' mask comes from the model's generator: softmax of
            // q·kᵀ/√hd (causal: key j ≤ query position), times Bernoulli(1 − p)/(1 − p), times v.
            var scores = q.matmul(k.transpose(-2, -1)).mul(1.0 / Math.Sqrt(HeadDim));
            if (causal && tokens > 1)
            {
                var queryPositions = arange(start, start + tokens, dtype: ScalarType.Int64, device: q.device).unsqueeze(1);
                var keyPositions = arange(length, dtype: ScalarType.Int64, device: q.device).unsqueeze(0);
                scores = scores.masked_fill(keyPositions.gt(queryPositions), double.NegativeInfinity);
            }

            var weights = scores.softmax(-1);
            if (dropoutMasks is not null && dropout > 0)
            {
                weights = weights.mul(ElementwiseKernels.KeepMask(weights.shape, 1 - dropout, weights, dropoutMasks));
            }

            attended = weights.matmul(v);
        }
        else if (!causal || tokens == 1)
        {
            // Without a causal mask, or one new position that sees every earlier one: no mask.
            attended = F.scaled_dot_product_attention(q, k, v);
        }
        else if (start == 0 && tokens == length)
        {
            attended = F.scaled_dot_product_attention(q, k, v, is_casual: true);
        }
        else
        {
            // Query i sits at position start + i and sees keys 0 … start + i.
            var queryPositions = arange(start, start + tokens, dtype: ScalarType.Int64, device: q.device).unsqueeze(1);
            var keyPositions = arange(length, dtype: ScalarType.Int64, device: q.device).unsqueeze(0);
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask: keyPositions.le(queryPositions));
        }

        var merged = attended.transpose(1, 2).reshape(batch, tokens, heads * HeadDim);
        return F.linear(merged, projWeight, projBias);
    }

    /// <summary>
    /// A mask input as SDPA's attn_mask, 4-D against the scores [B, heads, Tq, Tk]: the batch
    /// axis first when it has one, its other axes aligned from the right (a [B, Tk] key-padding
    /// mask is [B, 1, 1, Tk]); a 0/1 mask as booleans (non-zero = may attend), an additive one as
    /// float32 values added to the scores.
    /// </summary>
    public static Tensor MaskOf(Ir.AttentionMask kind, Tensor raw)
    {
        var batched = kind is Ir.AttentionMask.KeepMask { batched: true } or Ir.AttentionMask.AdditiveMask { batched: true };
        var shape = raw.shape;
        var rest = batched ? shape[1..] : shape;
        var view = new long[4];
        var lead = 4 - rest.Length;
        for (var i = 0; i < 4; i++)
        {
            view[i] = i < lead ? 1 : rest[i - lead];
        }

        if (batched)
        {
            view[0] = shape[0];
        }

        var shaped = raw.reshape(view);
        return kind.IsKeepMask ? shaped.ne(0) : shaped.to_type(ScalarType.Float32);
    }

    /// <summary>
    /// Scaled dot-product attention of q [B, h, Tq, hd] over k, v [B, h, Tk, hd] with an
    /// optional attn_mask (boolean: true = may attend; float: added to the scores). A query
    /// that may attend to no key gets zeros, as PyTorch's SDPA gives since 2.5 (its safe
    /// softmax), not NaN. With a dropout generator and rate (training), the weights are
    /// written out and dropped out with masks drawn from it.
    /// </summary>
    public static Tensor Scaled(Tensor q, Tensor k, Tensor v, Tensor? mask, double dropout, Generator? dropoutMasks, bool math = false)
    {
        var dropping = dropoutMasks is not null && dropout > 0;
        if (!dropping && !math)
        {
            return mask is null ? F.scaled_dot_product_attention(q, k, v) : F.scaled_dot_product_attention(q, k, v, attn_mask: mask);
        }

        var scores = q.matmul(k.transpose(-2, -1)).mul(1.0 / Math.Sqrt(q.shape[^1]));
        if (mask is not null)
        {
            scores = mask.dtype == ScalarType.Bool ? scores.masked_fill(mask.logical_not(), double.NegativeInfinity) : scores.add(mask);
        }

        var weights = scores.softmax(-1);
        weights = weights.masked_fill(weights.isnan(), 0.0);
        if (dropping)
        {
            weights = weights.mul(ElementwiseKernels.KeepMask(weights.shape, 1 - dropout, weights, dropoutMasks!));
        }

        return weights.matmul(v);
    }

    /// <summary>Cos and sin of positions 0 … length − 1 (or more), kept across calls.</summary>
    private (Tensor Cos, Tensor Sin) Tables(long length, Device device)
    {
        if (cos is null || cos.shape[0] < length)
        {
            using var scope = NewDisposeScope();
            var (c, s) = RotaryTables(Math.Max(length, tableLength), HeadDim, rope, device);
            cos?.Dispose();
            sin?.Dispose();
            cos = c.DetachFromDisposeScope();
            sin = s.DetachFromDisposeScope();
        }

        return (cos, sin!);
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
}
