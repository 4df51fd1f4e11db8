using Dsl;
using Dsl.Runtime.Emit;
using static TorchSharp.torch;

namespace Dsl.Runtime.Generation;

/// <summary>
/// The kernels of a decoding schedule: attention appends the new positions' keys and values to
/// the session's <see cref="KvCache"/> and lets the new queries attend over all cached positions;
/// a learned positional table adds the rows of the new positions. Every other op works position
/// by position (checked by <see cref="Check"/>), so its ordinary kernel serves.
/// </summary>
internal static class DecodingKernels
{
    public static KernelMaker For(KvCache cache) => (node, firstInput, parameters, maskGenerator) => node.Op switch
    {
        Ir.Op.SelfAttention attention => Attention(node.Id, new AttentionCore(attention.Item, parameters, cache.Capacity), cache),
        Ir.Op.PositionalEmbedding => Positional(parameters.Required("weight"), cache),
        // Decoding never trains, so its BatchNorms (if any) keep their running statistics.
        _ => KernelFactory.Create(node, firstInput, parameters, maskGenerator, new BatchStatistics()),
    };

    private static Kernel Attention(int node, AttentionCore core, KvCache cache) => (x, _) =>
    {
        using var scope = NewDisposeScope();
        var start = cache.Position;
        var (q, k, v) = core.Project(x[0], start);
        var (keys, values) = cache.Append(node, k, v);
        return scope.MoveToOuter(core.Attend(q, keys, values, start));
    };

    private static Kernel Positional(Tensor weight, KvCache cache) => (x, _) =>
    {
        using var rows = weight.narrow(0, cache.Position, x[0].shape[1]);
        return x[0].add(rows);
    };

    /// <summary>
    /// The context length T of a graph that decoding can run: one tokens[T] input, a first
    /// output [B, T, V], causal attention only, and no op that mixes or reshapes positions.
    /// </summary>
    /// <exception cref="DecodingError">Names the first node (and its source location) that rules it out.</exception>
    public static (long Context, long Vocabulary) Check(Ir.Graph graph)
    {
        var nodes = graph.Nodes.ToArray();
        if (graph.Inputs.Length != 1 || nodes[graph.Inputs.Head.Item2] is not { Op: Ir.Op.Input { kind.IsTokensInput: true } } input
            || input.Shape.Length != 2 || input.Shape[1] is not Ir.Dim.Known context)
        {
            throw new DecodingError($"model '{graph.Name}' is not a language model: generation needs one tokens[T] input with a known T");
        }

        var output = nodes[graph.Outputs.Head.Item2];
        if (output.Shape.Length != 3 || output.Shape[1] is not Ir.Dim.Known { Item: var length } || length != context.Item
            || output.Shape[2] is not Ir.Dim.Known vocabulary)
        {
            throw new DecodingError($"model '{graph.Name}': its output '{graph.Outputs.Head.Item1}' is {Ir.showShape(output.Shape)}; generation needs logits [B, {context.Item}, V]");
        }

        foreach (var node in nodes)
        {
            var rank = node.Shape.Length;
            string? why = node.Op switch
            {
                Ir.Op.SelfAttention { Item.Causal: false } => "is not causal: a position would see later ones",
                Ir.Op.SelfAttention { Item.Mask.IsNoMask: false } => "takes a mask over the whole sequence",
                Ir.Op.Narrow narrow when AcrossPositions(narrow.axis, rank) => "slices the token axis",
                Ir.Op.Concat concat when AcrossPositions(concat.axis, rank) => "joins along the token axis",
                Ir.Op.Normalize normalize when AcrossPositions(normalize.axis, rank) => "normalises along the token axis",
                { IsParameter: true } when rank > 1 => "is a free parameter with a token axis",
                Ir.Op.Input or Ir.Op.Embedding or Ir.Op.PositionalEmbedding or Ir.Op.SelfAttention or Ir.Op.Linear
                    or Ir.Op.LayerNorm or Ir.Op.RmsNorm or Ir.Op.Act or Ir.Op.Dropout or Ir.Op.DropPath or Ir.Op.Scale
                    or Ir.Op.Narrow or Ir.Op.Concat or Ir.Op.Normalize or Ir.Op.LayerScale => null,
                { IsParameter: true } or { IsAdd: true } or { IsMul: true } => null,
                Ir.Op.Softmax softmax when AcrossPositions(softmax.axis, rank) => "normalises along the token axis",
                Ir.Op.Unary or Ir.Op.Pow or Ir.Op.Clamp or Ir.Op.AddScalar or Ir.Op.Compare or Ir.Op.Softmax => null,
                { IsDiv: true } or { IsWhere: true } => null,
                _ => $"({OpNames.Of(node.Op)}) looks across positions or reshapes them",
            };
            if (why is not null)
            {
                throw new DecodingError($"model '{graph.Name}' cannot be decoded one position at a time: {Schedule.Describe(node)} {why}");
            }
        }

        return (context.Item, vocabulary.Item);
    }

    /// <summary>Whether an axis of a [B, T, …] tensor of this rank is the token axis (1).</summary>
    private static bool AcrossPositions(int axis, int rank) => (axis < 0 ? rank + axis : axis) == 1;
}
