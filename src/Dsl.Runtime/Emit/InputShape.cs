using Dsl;
using static TorchSharp.torch;

namespace Dsl.Runtime.Emit;

/// <summary>What one graph input must look like: its rank and its Known non-batch dimensions.</summary>
internal sealed class InputShape
{
    private readonly string name;

    /// <summary>Per axis, the required size, or null where the IR dimension is symbolic.</summary>
    private readonly long?[] dims;

    private readonly string expected;

    private InputShape(string name, int argument, long?[] dims, string expected)
    {
        this.name = name;
        Argument = argument;
        this.dims = dims;
        this.expected = expected;
    }

    /// <summary>The position among the forward arguments.</summary>
    public int Argument { get; }

    public static InputShape Of(Ir.Graph graph, string name, int nodeId, int argument)
    {
        var node = graph.Nodes.FirstOrDefault(n => n.Id == nodeId);
        if (node is null || !node.Op.IsInput)
        {
            throw new ArgumentException($"graph '{graph.Name}': input '{name}' refers to node {nodeId}, which is not an Input node");
        }

        var dims = node.Shape.Select(d => d is Ir.Dim.Known known ? known.Item : (long?)null).ToArray();
        return new InputShape(name, argument, dims, Ir.showShape(node.Shape));
    }

    /// <summary>Throws <see cref="ShapeMismatchError"/> unless rank and every Known dimension match.</summary>
    public void Check(Tensor input)
    {
        var actual = input.shape;
        var matches = actual.Length == dims.Length
            && dims.Select((size, axis) => size is null || size == actual[axis]).All(ok => ok);
        if (!matches)
        {
            throw new ShapeMismatchError(name, expected, $"[{string.Join(", ", actual)}]");
        }
    }
}
