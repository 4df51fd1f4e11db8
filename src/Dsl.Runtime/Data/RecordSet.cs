using static TorchSharp.torch;

namespace Dsl.Runtime.Data;

/// <summary>What a record's field holds, which decides how augmentations treat it and which inputs and losses it fits.</summary>
public enum FieldKind
{
    /// <summary>float32 [C, H, W] in [0, 1]; resized bilinearly.</summary>
    Image,

    /// <summary>int64 [] class index.</summary>
    Label,

    /// <summary>int64 [H, W] per-pixel class index (or the ignore index); resized by nearest neighbour.</summary>
    Mask,

    /// <summary>float32 [1, H, W] depth; resized by nearest neighbour so no depth between two surfaces is invented.</summary>
    Depth,

    /// <summary>int64 [T] token ids.</summary>
    Tokens,

    /// <summary>Any other float32 tensor of a fixed shape (metadata, stored teacher embeddings).</summary>
    Tensor,
}

/// <summary>
/// One field of every record: its name, kind, per-record shape and, for labels and masks, the
/// number of classes (0 when unknown) and the index a loss ignores (−1 when none).
/// </summary>
public sealed record FieldSchema(string Name, FieldKind Kind, long[] Shape, int Classes = 0, long IgnoreIndex = -1)
{
    /// <summary>Whether augmentations crop, flip and resize this field with the image.</summary>
    public bool IsSpatial => Kind is FieldKind.Image or FieldKind.Mask or FieldKind.Depth;

    public ScalarType DType => Kind is FieldKind.Label or FieldKind.Mask or FieldKind.Tokens ? ScalarType.Int64 : ScalarType.Float32;

    public override string ToString() => $"{Name}: {Kind.ToString().ToLowerInvariant()}[{string.Join(", ", Shape)}]";
}

/// <summary>
/// A data set in memory as records of named fields: each field one tensor [N, …shape] with the
/// dtype its kind requires. Owns the tensors.
/// </summary>
public sealed class RecordSet : IRecords, IDisposable
{
    private readonly Dictionary<string, Tensor> fields;
    private readonly bool owns;

    /// <summary>
    /// Takes ownership of the tensors unless <paramref name="owns"/> is false (a view of data
    /// another object owns); each must be [N, …schema shape] of the schema's dtype, with one N.
    /// </summary>
    public RecordSet(IReadOnlyList<FieldSchema> schema, IReadOnlyDictionary<string, Tensor> tensors, bool owns = true)
    {
        this.owns = owns;
        if (schema.Count == 0)
        {
            throw new ArgumentException("a record set needs at least one field", nameof(schema));
        }

        fields = [];
        long? count = null;
        foreach (var field in schema)
        {
            if (!tensors.TryGetValue(field.Name, out var tensor))
            {
                throw new ArgumentException($"field '{field.Name}' has no tensor", nameof(tensors));
            }

            var expected = new[] { tensor.shape.Length > 0 ? tensor.shape[0] : -1 }.Concat(field.Shape).ToArray();
            if (tensor.dtype != field.DType || !tensor.shape.SequenceEqual(expected) || (count is { } n && n != tensor.shape[0]))
            {
                throw new ArgumentException(
                    $"field '{field.Name}' must be {field.DType} [{count?.ToString() ?? "N"}, {string.Join(", ", field.Shape)}], got {tensor.dtype} [{string.Join(", ", tensor.shape)}]",
                    nameof(tensors));
            }

            count = tensor.shape[0];
            fields[field.Name] = tensor;
        }

        Schema = schema;
        Count = (int)count!.Value;
    }

    public IReadOnlyList<FieldSchema> Schema { get; }

    public int Count { get; }

    /// <summary>The whole field [N, …].</summary>
    public Tensor this[string name] => fields[name];

    public FieldSchema Field(string name) => Schema.First(f => f.Name == name);

    /// <summary>Stored records are given as they are; the task transforms their images.</summary>
    public bool PreparesImages => false;

    /// <inheritdoc/>
    public Dictionary<string, Tensor> Take(long[] indices, Generator generator, bool training) => Take(indices);

    /// <inheritdoc/>
    public Tensor? Stored(string field) => fields.GetValueOrDefault(field);

    /// <summary>The records <paramref name="indices"/>, every field (new tensors, in the caller's DisposeScope).</summary>
    public Dictionary<string, Tensor> Take(long[] indices) =>
        Schema.ToDictionary(f => f.Name, f => Batches.Take(fields[f.Name], indices));

    /// <summary>Labelled images as records "image" [C, H, W] and "label" (a view: <paramref name="data"/> keeps its tensors).</summary>
    public static RecordSet OfLabeledImages(LabeledImages data) =>
        new(
            [
                new FieldSchema("image", FieldKind.Image, data.Images.shape[1..]),
                new FieldSchema("label", FieldKind.Label, [], data.ClassNames.Count),
            ],
            new Dictionary<string, Tensor> { ["image"] = data.Images, ["label"] = data.Labels },
            owns: false);

    /// <summary>
    /// Packed next-token rows [N, T + 1] as records "tokens" (each row's first T ids) and
    /// "targets" (its last T ids: the token after each input position); views of the rows.
    /// </summary>
    public static RecordSet OfPackedRows(Tensor rows, int length, int classes) =>
        new(
            [
                new FieldSchema("tokens", FieldKind.Tokens, [length], classes),
                new FieldSchema("targets", FieldKind.Tokens, [length], classes),
            ],
            new Dictionary<string, Tensor> { ["tokens"] = rows.narrow(1, 0, length), ["targets"] = rows.narrow(1, 1, length) });

    public void Dispose()
    {
        if (!owns)
        {
            return;
        }

        foreach (var tensor in fields.Values)
        {
            tensor.Dispose();
        }
    }
}
