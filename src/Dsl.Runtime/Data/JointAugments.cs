using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Data;

/// <summary>
/// Random crop with padding, horizontal flip and resize applied to a batch of records (as
/// <see cref="RecordSet.Take"/> gives it) so that every spatial field — image, mask, depth — of
/// one record gets the same crop window and the same flip decision. Padding fills images with
/// 0, masks with the mask field's <see cref="FieldSchema.IgnoreIndex"/> (255 for
/// <see cref="DenseManifest"/> data) and depth with <see cref="DepthFill"/> (0 = unknown, which a
/// depth loss skips). Images are resized bilinearly, masks and depth by nearest neighbour.
/// Non-spatial fields (labels, tokens) pass through unchanged. All randomness comes from the
/// passed generator: per batch, the crop tops, then the lefts, then the flip draws.
/// </summary>
public sealed class JointAugments
{
    /// <param name="padding">pixels of padding on every side before cropping (0: no crop)</param>
    /// <param name="flip">probability of mirroring a record left–right</param>
    /// <param name="resize">the output height and width, or null to keep the crop's size</param>
    /// <param name="depthFill">the depth padding gets (0 = unknown)</param>
    public JointAugments(int padding = 0, double flip = 0.5, (int Height, int Width)? resize = null, float depthFill = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(padding);
        if (flip is < 0 or > 1 || double.IsNaN(flip))
        {
            throw new ArgumentOutOfRangeException(nameof(flip), flip, "probability must be in [0, 1]");
        }

        if (resize is { } r && (r.Height <= 0 || r.Width <= 0))
        {
            throw new ArgumentOutOfRangeException(nameof(resize), r, "the size must be positive");
        }

        Padding = padding;
        Flip = flip;
        ResizeTo = resize;
        DepthFill = depthFill;
    }

    public int Padding { get; }

    public double Flip { get; }

    public (int Height, int Width)? ResizeTo { get; }

    public float DepthFill { get; }

    /// <summary>The schema of the augmented batch: spatial fields at the resized size.</summary>
    public IReadOnlyList<FieldSchema> Schema(IReadOnlyList<FieldSchema> schema) =>
        ResizeTo is not { } r
            ? schema
            : schema.Select(f => f.IsSpatial ? f with { Shape = [.. f.Shape[..^2], r.Height, r.Width] } : f).ToArray();

    /// <summary>Draws one crop window and one flip decision per record and applies them to every spatial field.</summary>
    public Dictionary<string, Tensor> Apply(IReadOnlyDictionary<string, Tensor> batch, IReadOnlyList<FieldSchema> schema, Generator generator)
    {
        var (n, h, w) = Dimensions(batch, schema);
        using var topDraws = torch.randint((2 * Padding) + 1, [n], generator: generator);
        using var leftDraws = torch.randint((2 * Padding) + 1, [n], generator: generator);
        using var flipDraws = torch.rand(n, generator: generator);
        var flips = flipDraws.data<float>().ToArray().Select(u => u < Flip).ToArray();
        return ApplyAt(batch, schema, topDraws.data<long>().ToArray(), leftDraws.data<long>().ToArray(), flips);
    }

    /// <summary>
    /// The augmentation with given parameters per record: the crop's (top, left) in the padded
    /// field, each in [0, 2·Padding] (the crop keeps the field's size), and whether to mirror.
    /// </summary>
    public Dictionary<string, Tensor> ApplyAt(IReadOnlyDictionary<string, Tensor> batch, IReadOnlyList<FieldSchema> schema, long[] tops, long[] lefts, bool[] flips)
    {
        var (n, h, w) = Dimensions(batch, schema);
        if (tops.Length != n || lefts.Length != n || flips.Length != n)
        {
            throw new ArgumentException($"need one crop offset and flip per record ({n}), got {tops.Length} tops, {lefts.Length} lefts and {flips.Length} flips");
        }

        if (tops.Concat(lefts).Any(o => o < 0 || o > 2 * Padding))
        {
            throw new ArgumentOutOfRangeException(nameof(tops), $"crop offsets must lie in [0, {2 * Padding}]");
        }

        var result = new Dictionary<string, Tensor>();
        foreach (var field in schema)
        {
            var tensor = batch[field.Name];
            result[field.Name] = field.IsSpatial ? Spatial(tensor, field, tops, lefts, flips) : tensor.alias();
        }

        return result;
    }

    private Tensor Spatial(Tensor tensor, FieldSchema field, long[] tops, long[] lefts, bool[] flips)
    {
        using var scope = torch.NewDisposeScope();
        var (h, w) = (tensor.shape[^2], tensor.shape[^1]);

        // Every field as [N, C, H, W] float, so one code path pads, crops, flips and resizes it.
        var planes = field.Kind == FieldKind.Mask ? tensor.unsqueeze(1).to_type(ScalarType.Float32) : tensor;
        var fill = field.Kind switch
        {
            FieldKind.Mask when Padding > 0 && field.IgnoreIndex < 0 =>
                throw new ArgumentException($"mask field '{field.Name}' has no ignore index to pad with; give its FieldSchema an IgnoreIndex"),
            FieldKind.Mask => field.IgnoreIndex,
            FieldKind.Depth => DepthFill,
            _ => 0.0,
        };
        var padded = Padding > 0
            ? nn.functional.pad(planes, [Padding, Padding, Padding, Padding], PaddingModes.Constant, fill)
            : planes;
        var records = new Tensor[tops.Length];
        for (var i = 0; i < tops.Length; i++)
        {
            var window = padded[i].narrow(1, tops[i], h).narrow(2, lefts[i], w);
            records[i] = flips[i] ? window.flip(2) : window;
        }

        var augmented = torch.stack(records);
        if (ResizeTo is { } r && (r.Height != h || r.Width != w))
        {
            augmented = field.Kind == FieldKind.Image
                ? nn.functional.interpolate(augmented, [r.Height, r.Width], mode: InterpolationMode.Bilinear, align_corners: false)
                : nn.functional.interpolate(augmented, [r.Height, r.Width], mode: InterpolationMode.Nearest);
        }

        var typed = field.Kind == FieldKind.Mask ? augmented.squeeze(1).to_type(ScalarType.Int64) : augmented.contiguous();
        return scope.MoveToOuter(typed);
    }

    private static (long N, long H, long W) Dimensions(IReadOnlyDictionary<string, Tensor> batch, IReadOnlyList<FieldSchema> schema)
    {
        var spatial = schema.Where(f => f.IsSpatial).ToArray();
        if (spatial.Length == 0)
        {
            throw new ArgumentException("the records have no spatial field (image, mask or depth) to augment", nameof(schema));
        }

        var first = batch[spatial[0].Name];
        var (n, h, w) = (first.shape[0], first.shape[^2], first.shape[^1]);
        foreach (var field in spatial)
        {
            var t = batch[field.Name];
            if (t.shape[0] != n || t.shape[^2] != h || t.shape[^1] != w)
            {
                throw new ArgumentException($"field '{field.Name}' is [{string.Join(", ", t.shape)}], not {n} records of {h}×{w} like '{spatial[0].Name}'", nameof(batch));
            }
        }

        return (n, h, w);
    }
}
