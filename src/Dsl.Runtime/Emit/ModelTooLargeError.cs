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
    public static void Check(Ir.Graph graph, double available)
    {
        // Doubles: a size too large for 64 bits is still only too large.
        var bytesByName = graph.Params.ToDictionary(
            spec => spec.Name,
            spec => spec.Shape.Aggregate(spec.DType.IsInt64 ? 8.0 : 4.0, (bytes, size) => bytes * size),
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
        throw new ModelTooLargeError(
            $"model {graph.Name} needs {Gigabytes(total)} of parameters, {Gigabytes(largest.bytes)} of them in this {op}; this machine has {Gigabytes(available)}",
            largest.node.Span,
            total,
            available);
    }

    private static string Gigabytes(double bytes) => $"{bytes / 1e9:N1} GB";
}
