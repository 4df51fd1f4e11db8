using Dsl.Runtime.Emit;
using static TorchSharp.torch;

namespace Dsl.Runtime.Generation;

/// <summary>
/// Runs a causal decoder (tokens[T] → logits [B, T, V]) a few positions at a time. With the
/// cache, <see cref="Append"/> runs only the new tokens: each attention node keeps the keys and
/// values of every earlier position, and RoPE and learned positional tables use the absolute
/// position, so a token costs one position's forward. Without it, every call runs the whole
/// sequence so far (the baseline the cache is measured against). Both give, at every position,
/// the logits of the full-sequence forward. The context is the model's T: appending past it is a
/// <see cref="DecodingError"/>.
/// </summary>
public sealed class CachedDecoder : IDisposable
{
    private readonly GraphModule model;
    private readonly KvCache cache;
    private readonly ScheduledNode[] plan;
    private Tensor? history;

    /// <exception cref="DecodingError">The model cannot be decoded one position at a time.</exception>
    public CachedDecoder(GraphModule model, bool useCache = true)
    {
        this.model = model;
        (Capacity, Vocabulary) = DecodingKernels.Check(model.Graph);
        cache = new KvCache(Capacity, useCache);
        plan = model.BuildSchedule(DecodingKernels.For(cache));
    }

    /// <summary>The model's context length T: the most positions one sequence may have.</summary>
    public long Capacity { get; }

    /// <summary>The logits' last dimension.</summary>
    public long Vocabulary { get; }

    /// <summary>Positions run so far in this sequence.</summary>
    public long Position => cache.Enabled ? cache.Position : history?.shape[1] ?? 0;

    public bool UsesCache => cache.Enabled;

    /// <summary>
    /// Runs tokens [B, n] (int64) at positions Position … Position + n − 1 and returns their
    /// logits [B, n, V], which the caller owns. The batch must stay the same within a sequence.
    /// </summary>
    /// <exception cref="DecodingError">The tokens would not fit in the context.</exception>
    public Tensor Append(Tensor tokens)
    {
        if (tokens.dim() != 2 || tokens.dtype != ScalarType.Int64 || tokens.shape[1] == 0)
        {
            throw new ArgumentException($"tokens must be a non-empty [B, n] int64 tensor, got {tokens.dtype} [{string.Join(", ", tokens.shape)}]");
        }

        var count = tokens.shape[1];
        if (Position + count > Capacity)
        {
            throw new DecodingError($"the context is full: {Position} + {count} positions are more than model '{model.Graph.Name}' takes (tokens[{Capacity}])");
        }

        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        if (cache.Enabled)
        {
            var logits = model.RunFirstOutput(plan, [tokens]);
            cache.Position += count;
            return scope.MoveToOuter(logits);
        }

        // A copy, never the caller's tensor: the history is disposed with the sequence.
        var sequence = history is null ? tokens.to(model.Device).clone() : cat([history, tokens.to(model.Device)], 1);
        history?.Dispose();
        history = sequence.DetachFromDisposeScope();
        var all = model.RunFirstOutput(plan, [history]);
        return scope.MoveToOuter(all.narrow(1, history.shape[1] - count, count));
    }

    /// <summary>Starts a new sequence at position 0.</summary>
    public void Reset()
    {
        cache.Reset();
        history?.Dispose();
        history = null;
    }

    public void Dispose()
    {
        cache.Dispose();
        history?.Dispose();
    }
}
