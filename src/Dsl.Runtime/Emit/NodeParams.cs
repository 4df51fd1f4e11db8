using Dsl;
using static TorchSharp.torch;

namespace Dsl.Runtime.Emit;

/// <summary>
/// The tensors one node uses, found by their local names (weight, bias, running_mean…) through
/// <c>Node.Params</c>. Looked up once while the schedule is built, never during forward.
/// </summary>
internal sealed class NodeParams(Ir.Node node, IReadOnlyDictionary<string, Tensor> table)
{
    public Tensor Required(string local) =>
        Optional(local) ?? throw new ArgumentException($"{Describe()} needs a parameter '{local}' but Node.Params has none");

    public Tensor? Optional(string local)
    {
        if (!node.Params.ContainsKey(local))
        {
            return null;
        }

        var full = node.Params[local];
        return table.TryGetValue(full, out var tensor)
            ? tensor
            : throw new ArgumentException($"{Describe()} refers to parameter '{full}', which Graph.Params does not declare");
    }

    /// <summary>The node's only parameter, whatever its local name (the Parameter op).</summary>
    public Tensor Single()
    {
        var locals = node.Params.Select(entry => entry.Key).ToList();
        return locals.Count == 1
            ? Required(locals[0])
            : throw new ArgumentException($"{Describe()} must name exactly one parameter, found {locals.Count}");
    }

    private string Describe() => $"node {node.Id} ('{node.Path}', {OpNames.Of(node.Op)})";
}
