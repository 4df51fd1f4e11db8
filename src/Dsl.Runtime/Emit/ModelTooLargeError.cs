using Dsl;

namespace Dsl.Runtime.Emit;

/// <summary>
/// A graph's parameters and buffers need more bytes than the machine has. Raised by
/// <see cref="GraphModule"/> before it allocates any tensor, so that an over-sized model is a
/// user's error with its size rather than a libtorch allocation abort; located at the layer
/// that holds the most of it.
/// </summary>
public sealed class ModelTooLargeError : Exception
{
    private ModelTooLargeError(string message, Syntax.Span span, double bytes, double available)
        : base(message)
    {
        Span = span;
        Bytes = bytes;
        Available = available;
    }

    /// <summary>The span of the node whose parameters take the most bytes.</summary>
    public Syntax.Span Span { get; }

    public double Bytes { get; }

    public double Available { get; }

    /// <summary>
    /// The memory a process may use: physical memory, or a container's limit when lower (what
    /// the GC itself plans with).
    /// </summary>
    public static double AvailableBytes() => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

    /// <summary>Throws when the graph's parameters and buffers exceed <paramref name="available"/> bytes.</summary>
    public static void Check(Ir.Graph graph, double available) => Check(graph, available, copies: 1, state: null);

    /// <summary>
    /// Throws when training needs more than <paramref name="available"/> bytes for the weights
    /// alone: each trainable parameter held <paramref name="copies"/> times (itself, its gradient
    /// and the optimizer's <paramref name="state"/>), buffers once. Activations come on top, so
    /// this refuses only what cannot fit at all.
    /// </summary>
    public static void Check(Ir.Graph graph, double available, int copies, string? state)
    {
        // Doubles: a size too large for 64 bits is still only too large.
        var bytesByName = graph.Params.ToDictionary(
            spec => spec.Name,
            spec => spec.Shape.Aggregate(spec.DType.IsInt64 ? 8.0 : 4.0, (bytes, size) => bytes * size) * (spec.Kind.IsTrainable ? copies : 1),
            StringComparer.Ordinal);
        var total = bytesByName.Values.Sum();
        if (total <= available)
        {
            return;
        }

        // A tied parameter counts at the node that made it (the first to name it).
        var counted = new HashSet<string>(StringComparer.Ordinal);
        var largest = graph.Nodes
            .Select(node => (node, bytes: node.Params.Values.Where(counted.Add).Sum(name => bytesByName.GetValueOrDefault(name))))
            .ToList()
            .MaxBy(entry => entry.bytes);
        var op = Ir.opKind(largest.node.Op);
        var what = state is null ? "of parameters" : $"to train (its parameters, their gradients and {state})";
        throw new ModelTooLargeError(
            $"model {graph.Name} needs {Size(total)} {what}, {Size(largest.bytes)} of them in this {op}; this machine has {Size(available)}",
            largest.node.Span,
            total,
            available);
    }

    private static string Size(double bytes) => bytes >= 1e9 ? $"{bytes / 1e9:N1} GB" : $"{bytes / 1e6:N1} MB";
}
