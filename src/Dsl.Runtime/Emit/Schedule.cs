using Dsl;
using static TorchSharp.torch;

namespace Dsl.Runtime.Emit;

/// <summary>One node, ready to run: where its values come from and what dies after it.</summary>
internal sealed class ScheduledNode
{
    /// <summary>Slots (node ids) of the inputs, in <c>Node.Inputs</c> order.</summary>
    public required int[] Inputs { get; init; }

    /// <summary>For an Input node, its position among the forward arguments; otherwise -1.</summary>
    public required int Argument { get; init; }

    /// <summary>Null for Input nodes.</summary>
    public required Kernel? Kernel { get; init; }

    /// <summary>Slots whose last consumer is this node (possibly itself, when nothing reads it).</summary>
    public required int[] Release { get; init; }

    /// <summary>"node 3 ('stages.0.conv', Conv) at model.dsl:12:5", for error messages.</summary>
    public required string Description { get; init; }
}

/// <summary>Makes one node's kernel (<see cref="KernelFactory.Create"/>, or cached decoding's).</summary>
internal delegate Kernel KernelMaker(Ir.Node node, Ir.Dim[] firstInput, NodeParams parameters, Generator maskGenerator);

/// <summary>Builds the array that <see cref="GraphModule.Forward"/> walks.</summary>
internal static class Schedule
{
    public static ScheduledNode[] Build(Ir.Graph graph, IReadOnlyDictionary<string, Tensor> parameters, Generator maskGenerator, KernelMaker kernels)
    {
        var nodes = graph.Nodes.ToArray();
        for (var i = 0; i < nodes.Length; i++)
        {
            if (nodes[i].Id != i)
            {
                throw new ArgumentException($"graph '{graph.Name}': node at position {i} has id {nodes[i].Id}; ids must equal positions");
            }

            if (nodes[i].Inputs.Any(input => input < 0 || input >= i))
            {
                throw new ArgumentException($"graph '{graph.Name}': node {i} reads a node that does not come before it");
            }
        }

        var arguments = graph.Inputs.Select((input, position) => (input.Item2, position)).ToDictionary();
        var releasedAfter = LastUses(graph, nodes)
            .Select((user, slot) => (user, slot))
            .ToLookup(use => use.user, use => use.slot);
        return nodes.Select(node => new ScheduledNode
        {
            Inputs = node.Inputs.ToArray(),
            Argument = node.Op.IsInput ? ArgumentOf(node, arguments) : -1,
            Kernel = node.Op.IsInput ? null : kernels(node, node.Inputs.IsEmpty ? [] : nodes[node.Inputs.Head].Shape.ToArray(), new NodeParams(node, parameters), maskGenerator),
            Release = releasedAfter[node.Id].ToArray(),
            Description = Describe(node),
        }).ToArray();
    }

    /// <summary>
    /// The id of the last node reading each slot; the node itself when nothing reads it, and
    /// int.MaxValue for graph outputs, which are handed to the caller instead of being freed.
    /// </summary>
    private static int[] LastUses(Ir.Graph graph, Ir.Node[] nodes)
    {
        var lastUse = nodes.Select(node => node.Id).ToArray();
        foreach (var node in nodes)
        {
            foreach (var input in node.Inputs)
            {
                lastUse[input] = Math.Max(lastUse[input], node.Id);
            }
        }

        foreach (var (name, id) in graph.Outputs)
        {
            if (id < 0 || id >= nodes.Length)
            {
                throw new ArgumentException($"graph '{graph.Name}': output '{name}' refers to node {id}, which does not exist");
            }

            lastUse[id] = int.MaxValue;
        }

        return lastUse;
    }

    private static int ArgumentOf(Ir.Node node, Dictionary<int, int> arguments) =>
        arguments.TryGetValue(node.Id, out var position)
            ? position
            : throw new ArgumentException($"{Describe(node)} is an Input node but Graph.Inputs does not list it");

    internal static string Describe(Ir.Node node) =>
        $"node {node.Id} ('{node.Path}', {OpNames.Of(node.Op)}) at {node.Span.File}:{node.Span.Start.Line}:{node.Span.Start.Col}";
}
