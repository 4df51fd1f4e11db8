using System.Text.RegularExpressions;

namespace Dsl.Runtime.Interop;

/// <summary>
/// One rule of a naming convention, matched against the whole of one of dsl's parameter names:
/// a rename (a regular-expression replacement), unit axes the source adds around the same values
/// (timm's [C, 1, 1] layer scales for dsl's [C]), or a buffer the source may lack
/// (num_batches_tracked, which some state dicts drop).
/// </summary>
public sealed record NameRule(string Pattern, string? Replacement = null, int UnitAxesBefore = 0, int UnitAxesAfter = 0, bool Optional = false)
{
    public Regex Regex { get; } = new("^(?:" + Pattern + ")$", RegexOptions.CultureInvariant);
}

/// <summary>Where one of dsl's parameters lives in a source's state dict.</summary>
public sealed record MappedName(string Ours, long[] OurShape, string Theirs, long[] TheirShape, bool Optional)
{
    public bool Renamed => Ours != Theirs;

    public bool Reshaped => !OurShape.SequenceEqual(TheirShape);
}

/// <summary>
/// A source's naming convention as data: one small table of rules per source. "torch" is dsl's
/// own names (the keys of the equivalent PyTorch module); "timm" is pytorch-image-models' FastViT
/// (timm/models/fastvit.py: LayerScale2d's gamma is [dim, 1, 1]) and VisionTransformer
/// (timm/models/vision_transformer.py: pos_embed is a bare [1, N, D] parameter; with
/// class_token=False, global_pool='avg', fc_norm=False as dsl's ViT), whose other keys are dsl's.
/// </summary>
public sealed class NameConvention
{
    private static readonly NameRule BatchesTracked = new(@"(.*\.)?num_batches_tracked", Optional: true);

    public static readonly IReadOnlyDictionary<string, NameConvention> Known = new Dictionary<string, NameConvention>(StringComparer.Ordinal)
    {
        ["torch"] = new("torch", [BatchesTracked]),
        ["timm"] = new(
            "timm",
            [
                BatchesTracked,
                new(@"(.*\.)?layer_scale(_[12])?\.gamma", UnitAxesAfter: 2),
                new(@"pos_embed\.weight", Replacement: "pos_embed", UnitAxesBefore: 1),

                // MobileOne (timm/models/byobnet.py, mobileone_s*): dsl keeps apple/ml-mobileone's
                // stage0 / stage1…4 / linear; timm's stem / stages.0…3 / head.fc, and its SE is attn.
                new(@"stage0\.(.*)", Replacement: "stem.$1"),
                new(@"stage1\.(.*)", Replacement: "stages.0.$1"),
                new(@"stage2\.(.*)", Replacement: "stages.1.$1"),
                new(@"stage3\.(.*)", Replacement: "stages.2.$1"),
                new(@"stage4\.(.*)", Replacement: "stages.3.$1"),
                new(@"(stages\.\d+\.\d+)\.se\.(fc[12]\..*)", Replacement: "$1.attn.$2"),
                new(@"linear\.(weight|bias)", Replacement: "head.fc.$1"),
            ]),

        // open_lm's Transformer (mlfoundations/open_lm open_lm/model.py): the same layout as dsl's
        // decoder (tok_embeddings, layers.N.{attention_norm, attention, ffn_norm, feed_forward
        // w12/w3}, norm, output; q/k/v fused, no biases) but for the attention projections'
        // names; each block's rotary table inv_freq is a persistent buffer there, recomputed here.
        ["openlm"] = new(
            "openlm",
            [
                new(@"(layers\.\d+\.attention)\.qkv\.weight", Replacement: "$1.in_proj.weight"),
                new(@"(layers\.\d+\.attention)\.proj\.weight", Replacement: "$1.out_proj.weight"),
            ],
            [@"layers\.\d+\.attention\.pos_embed\.inv_freq"]),
    };

    public NameConvention(string source, IReadOnlyList<NameRule> rules, IReadOnlyList<string>? dropped = null)
    {
        Source = source;
        Rules = rules;
        Dropped = (dropped ?? []).Select(p => new Regex("^(?:" + p + ")$", RegexOptions.CultureInvariant)).ToList();
    }

    /// <summary>
    /// The source's keys that hold no weights of dsl's (buffers it recomputes, such as a rotary
    /// table): reported as dropped on import, not as unused.
    /// </summary>
    public IReadOnlyList<Regex> Dropped { get; }

    public string Source { get; }

    public IReadOnlyList<NameRule> Rules { get; }

    /// <exception cref="InteropError">No convention has that name.</exception>
    public static NameConvention For(string source) =>
        Known.TryGetValue(source, out var convention)
            ? convention
            : throw new InteropError($"unknown naming convention '{source}' (known: {string.Join(", ", Known.Keys)})");

    /// <summary>
    /// The source's name and shape of one of dsl's parameters: every matching rule applies, in
    /// order, each to the name the rules before it made (a stage renamed, then its SE inside).
    /// </summary>
    public MappedName Map(string ours, long[] shape)
    {
        var theirs = ours;
        var before = 0;
        var after = 0;
        var optional = false;
        foreach (var rule in Rules)
        {
            if (!rule.Regex.IsMatch(theirs))
            {
                continue;
            }

            if (rule.Replacement is { } replacement)
            {
                theirs = rule.Regex.Replace(theirs, replacement);
            }

            before += rule.UnitAxesBefore;
            after += rule.UnitAxesAfter;
            optional |= rule.Optional;
        }

        var theirShape = Enumerable.Repeat(1L, before).Concat(shape).Concat(Enumerable.Repeat(1L, after)).ToArray();
        return new MappedName(ours, shape, theirs, theirShape, optional);
    }
}
