using static TorchSharp.torch;

namespace Dsl.Runtime.Generation;

/// <summary>
/// The state of one decoding session that the decoding kernels read: how many positions have
/// been run (so a new token's RoPE angle and positional-embedding row are those of its
/// absolute position), and each attention node's keys and values of those positions.
/// Buffers are allocated once per session at the model's context length and filled in place.
/// </summary>
internal sealed class KvCache(long capacity, bool enabled) : IDisposable
{
    private readonly Dictionary<int, (Tensor Keys, Tensor Values)> buffers = [];

    /// <summary>Positions already run (and cached): the next token's position.</summary>
    public long Position { get; set; }

    /// <summary>The model's context length T.</summary>
    public long Capacity { get; } = capacity;

    /// <summary>
    /// False: nothing is kept, every run starts at position 0 with the whole sequence, and
    /// <see cref="Append"/> hands back the new keys and values themselves.
    /// </summary>
    public bool Enabled { get; } = enabled;

    /// <summary>
    /// Stores node <paramref name="node"/>'s keys and values k, v [B, kvHeads, n, hd] at
    /// positions Position … Position + n − 1 and returns views of all positions so far.
    /// </summary>
    public (Tensor Keys, Tensor Values) Append(int node, Tensor k, Tensor v)
    {
        if (!Enabled)
        {
            return (k, v);
        }

        var tokens = k.shape[2];
        if (!buffers.TryGetValue(node, out var cached) || cached.Keys.shape[0] != k.shape[0])
        {
            if (cached.Keys is not null)
            {
                cached.Keys.Dispose();
                cached.Values.Dispose();
            }

            long[] shape = [k.shape[0], k.shape[1], Capacity, k.shape[3]];
            cached = (zeros(shape, k.dtype, k.device).DetachFromDisposeScope(), zeros(shape, v.dtype, v.device).DetachFromDisposeScope());
            buffers[node] = cached;
        }

        using (var keySlot = cached.Keys.narrow(2, Position, tokens))
        using (var valueSlot = cached.Values.narrow(2, Position, tokens))
        {
            keySlot.copy_(k);
            valueSlot.copy_(v);
        }

        return (cached.Keys.narrow(2, 0, Position + tokens), cached.Values.narrow(2, 0, Position + tokens));
    }

    /// <summary>Forgets every position (the buffers stay for the next sequence).</summary>
    public void Reset() => Position = 0;

    public void Dispose()
    {
        foreach (var (keys, values) in buffers.Values)
        {
            keys.Dispose();
            values.Dispose();
        }

        buffers.Clear();
    }
}
