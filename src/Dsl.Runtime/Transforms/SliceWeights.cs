using Dsl.Passes;
using Dsl.Runtime.Emit;
using Microsoft.FSharp.Core;
using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Transforms;

/// <summary>
/// Evaluates a <see cref="Slice.Slice"/> map (the output of pruning and subcloning): each new
/// parameter is an old one at the kept indices of each axis, optionally scaled. Indices are taken
/// with <c>index_select</c>, so kept values are copied bit for bit.
/// </summary>
public static class SliceWeights
{
    /// <summary>The new tensors, computed under no_grad; the caller owns them.</summary>
    public static Dictionary<string, Tensor> Apply(IEnumerable<Tuple<string, Slice.Slice>> map, IReadOnlyDictionary<string, Tensor> oldState)
    {
        ArgumentNullException.ThrowIfNull(map);
        ArgumentNullException.ThrowIfNull(oldState);
        using var noGrad = no_grad();
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, slice) in map)
        {
            using var scope = NewDisposeScope();
            if (!oldState.TryGetValue(slice.Source, out var value))
            {
                throw new InvalidOperationException($"slice: the original has no parameter '{slice.Source}'");
            }

            var axis = 0;
            foreach (var keep in slice.Keep)
            {
                if (FSharpOption<int[]>.get_IsSome(keep))
                {
                    using var index = tensor(keep.Value.Select(i => (long)i).ToArray(), ScalarType.Int64, value.device);
                    value = value.index_select(axis, index);
                }

                axis++;
            }

            if (slice.Scale != 1.0 && value.is_floating_point())
            {
                value = value * slice.Scale;
            }

            result[name] = value.detach().clone().MoveToOuterDisposeScope();
        }

        return result;
    }

    /// <summary>
    /// A module for <paramref name="graph"/> on the parent's device and in its train/eval mode,
    /// with every parameter and buffer computed from the parent's state by <paramref name="map"/>.
    /// </summary>
    public static GraphModule Build(GraphModule parent, Ir.Graph graph, IEnumerable<Tuple<string, Slice.Slice>> map, long seed = 0)
    {
        ArgumentNullException.ThrowIfNull(parent);
        var computed = Apply(map, parent.state_dict());
        var child = new GraphModule(graph, seed, parent.Device);
        try
        {
            Transplant(child, computed, "slice");
            child.train(parent.training);
            return child;
        }
        catch
        {
            child.Dispose();
            throw;
        }
        finally
        {
            foreach (var t in computed.Values)
            {
                t.Dispose();
            }
        }
    }

    /// <summary>Copies each computed tensor into the module's slot of that name; every slot must get one.</summary>
    internal static void Transplant(GraphModule target, IReadOnlyDictionary<string, Tensor> computed, string pass)
    {
        using var noGrad = no_grad();
        var state = target.state_dict();
        foreach (var (name, value) in computed)
        {
            if (!state.TryGetValue(name, out var slot))
            {
                throw new InvalidOperationException($"{pass}: the new graph has no parameter '{name}'");
            }

            if (!slot.shape.SequenceEqual(value.shape))
            {
                throw new InvalidOperationException($"{pass}: '{name}' is [{string.Join(", ", value.shape)}], the new graph wants [{string.Join(", ", slot.shape)}]");
            }

            slot.copy_(value.to(slot.dtype).to(slot.device));
        }

        var missing = state.Keys.Where(name => !computed.ContainsKey(name)).ToList();
        if (missing.Count > 0)
        {
            throw new InvalidOperationException($"{pass}: no value computed for {string.Join(", ", missing)}");
        }
    }
}
