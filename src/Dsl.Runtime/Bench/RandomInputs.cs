using Dsl;
using static TorchSharp.torch;

namespace Dsl.Runtime.Bench;

/// <summary>Inputs of a graph's declared shapes for timing: normal floats, and token ids 0 or 1.</summary>
public static class RandomInputs
{
    /// <exception cref="ArgumentException">An input has a symbolic dimension other than the batch.</exception>
    public static Tensor[] For(Ir.Graph graph, long batch, Device device)
    {
        var nodes = graph.Nodes.ToArray();
        return graph.Inputs.Select(input =>
        {
            var node = nodes[input.Item2];
            var dims = node.Shape.Select((dim, axis) => dim switch
            {
                Ir.Dim.Known known => (long)known.Item,
                Ir.Dim.Sym when axis == 0 => batch,
                Ir.Dim.Sym sym => throw new ArgumentException($"input '{input.Item1}' has the symbolic dimension {sym.Item}; declare it with a size"),
                _ => throw new ArgumentException($"input '{input.Item1}': unknown dimension {dim}"),
            }).ToArray();
            return node.Op is Ir.Op.Input { kind.IsTokensInput: true }
                ? randint(0, 2, dims, dtype: ScalarType.Int64, device: device)
                : randn(dims, device: device);
        }).ToArray();
    }
}
