using System.Text.RegularExpressions;

namespace Dsl.Runtime.Interop;

/// <summary>
/// One rule of a naming convention, matched against the whole of one of dsl's parameter names:
/// a rename (a regular-expression replacement), unit axes the source adds around the same values
/// (timm's [C, 1, 1] layer scales for dsl's [C]), a matrix the source stores transposed (a bare
/// [in, out] parameter used as x @ P where dsl has a linear layer's [out, in] weight: open_clip's
/// and MobileCLIP's projections), or a buffer the source may lack (num_batches_tracked, which some
/// state dicts drop).
/// </summary>
public sealed record NameRule(
    string Pattern,
    string? Replacement = null,
    int UnitAxesBefore = 0,
    int UnitAxesAfter = 0,
    bool Optional = false,
    bool Transposed = false)
{
    public Regex Regex { get; } = new("^(?:" + Pattern + ")$", RegexOptions.CultureInvariant);
}

/// <summary>Where one of dsl's parameters lives in a source's state dict.</summary>
public sealed record MappedName(string Ours, long[] OurShape, string Theirs, long[] TheirShape, bool Optional, bool Transposed = false)
{
    public bool Renamed => Ours != Theirs;

    /// <summary>Unit axes added or the matrix transposed (a square one keeps its shape).</summary>
    public bool Reshaped => Transposed || !OurShape.SequenceEqual(TheirShape);

    /// <summary>The source's tensor as dsl's parameter: unit axes removed, or transposed back.</summary>
    public TorchSharp.torch.Tensor ToOurs(TorchSharp.torch.Tensor theirs) => Transposed ? theirs.t() : theirs.reshape(OurShape);

    /// <summary>dsl's parameter as the source stores it (a view).</summary>
    public TorchSharp.torch.Tensor ToTheirs(TorchSharp.torch.Tensor ours) => Transposed ? ours.t() : ours.reshape(TheirShape);
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

    // apple/ml-mobileclip (mobileclip/clip.py, models/mci.py, text_encoder.py, modules/text/
    // repmixer.py), read at 4144bb1: MCi is ml-fastvit's FastViT under image_encoder.model, whose
    // names timm's checkpoint_filter_fn (timm/models/fastvit.py) maps to the timm names dsl
    // keeps; here that map runs backwards. MCi0–2's one network list interleaves stages,
    // downsamplings and the conditional positional encoding before the attention stage:
    // network.0, .2, .4, .7 are stages 0–3, .1, .3, .5 the downsamplings into stages 1–3, .6 the
    // encoding. The text tower's transformer layers are pre_norm_mha (LayerNorm, fused qkv_proj,
    // out_proj) and pre_norm_ffn (LayerNorm, Linear at 1, Linear at 4); its RepMixer blocks keep
    // dsl's names but the MobileOne branches'. Both projections are bare [in, out] parameters
    // used as x @ P; layer scales are [C, 1, 1]; the positions [1, 1, L, D].
    private static readonly NameRule[] MobileClipRules =
    [
        BatchesTracked,
        Image(@"stem\.(.*)", "patch_embed.$1"),
        Image(@"stages\.0\.blocks\.(.*)", "network.0.$1"),
        Image(@"stages\.1\.downsample\.(.*)", "network.1.$1"),
        Image(@"stages\.1\.blocks\.(.*)", "network.2.$1"),
        Image(@"stages\.2\.downsample\.(.*)", "network.3.$1"),
        Image(@"stages\.2\.blocks\.(.*)", "network.4.$1"),
        Image(@"stages\.3\.downsample\.(.*)", "network.5.$1"),
        Image(@"stages\.3\.pos_emb\.pos_enc\.(.*)", "network.6.pe.$1"),
        Image(@"stages\.3\.blocks\.(.*)", "network.7.$1"),
        Image(@"final_conv\.se\.fc1\.(.*)", "conv_exp.se.reduce.$1"),
        Image(@"final_conv\.se\.fc2\.(.*)", "conv_exp.se.expand.$1"),
        Image(@"final_conv\.(.*)", "conv_exp.$1"),
        Image(@"(network\.\d+\.\d+)\.mlp\.(.*)", "$1.convffn.$2"),
        Image(@"(.*)\.large_conv\.(.*)", "$1.lkb_origin.$2"),
        new(@"image_encoder\.model\.head\.proj\.weight", Replacement: "image_encoder.model.head.proj", Transposed: true),

        Text(@"token_embedding\.weight", "embedding_layer.weight"),
        new(@"text_encoder\.positional_embedding\.weight", Replacement: "text_encoder.positional_embedding.pos_embed.pos_embed", UnitAxesBefore: 2),
        Text(@"blocks\.(\d+)\.norm1\.(.*)", "transformer.$1.pre_norm_mha.0.$2"),
        Text(@"blocks\.(\d+)\.attn\.qkv\.(.*)", "transformer.$1.pre_norm_mha.1.qkv_proj.$2"),
        Text(@"blocks\.(\d+)\.attn\.proj\.(.*)", "transformer.$1.pre_norm_mha.1.out_proj.$2"),
        Text(@"blocks\.(\d+)\.norm2\.(.*)", "transformer.$1.pre_norm_ffn.0.$2"),
        Text(@"blocks\.(\d+)\.mlp\.fc1\.(.*)", "transformer.$1.pre_norm_ffn.1.$2"),
        Text(@"blocks\.(\d+)\.mlp\.fc2\.(.*)", "transformer.$1.pre_norm_ffn.4.$2"),
        Text(@"blocks\.(.*)", "transformer.$1"),
        Text(@"ln_final\.(.*)", "final_layer_norm.$1"),
        new(@"text_encoder\.text_projection\.weight", Replacement: "text_encoder.projection_layer", Transposed: true),

        // Both towers: the MobileOne branches' names, and layer scales as bare [C, 1, 1] parameters.
        new(@"(.*)\.conv_kxk\.(.*)", Replacement: "$1.rbr_conv.$2"),
        new(@"(.*)\.conv_scale\.(.*)", Replacement: "$1.rbr_scale.$2"),
        new(@"(.*)\.identity\.(.*)", Replacement: "$1.rbr_skip.$2"),
        new(@"(.*)\.(layer_scale(_[12])?)\.gamma", Replacement: "$1.$2", UnitAxesAfter: 2),
    ];

    private static NameRule Image(string pattern, string replacement) =>
        new(@"image_encoder\.model\." + pattern, Replacement: "image_encoder.model." + replacement);

    private static NameRule Text(string pattern, string replacement) =>
        new(@"text_encoder\." + pattern, Replacement: "text_encoder." + replacement);

    // mlfoundations/open_clip (src/open_clip/model.py class CLIP, transformer.py), read at
    // 89fb801 and v3.3.0: the text tower's keys at the top, the ViT under visual.; blocks are
    // transformer.resblocks.N with ln_1, attn (nn.MultiheadAttention's in_proj_weight/bias and
    // out_proj), ln_2, mlp.c_fc, mlp.c_proj; positions are bare [L, D] parameters; the
    // projections bare [in, out] ones used as x @ P. The causal attn_mask is not persistent.
    // OpenAI's own files carry three scalars that hold no weights.
    private static readonly NameRule[] OpenClipRules =
    [
        new(@"((?:visual\.)?)blocks\.(\d+)\.(.*)", Replacement: "$1transformer.resblocks.$2.$3"),
        new(@"(.*\.resblocks\.\d+)\.norm1\.(.*)", Replacement: "$1.ln_1.$2"),
        new(@"(.*\.resblocks\.\d+)\.norm2\.(.*)", Replacement: "$1.ln_2.$2"),
        new(@"(.*\.resblocks\.\d+)\.attn\.qkv\.(weight|bias)", Replacement: "$1.attn.in_proj_$2"),
        new(@"(.*\.resblocks\.\d+)\.attn\.proj\.(.*)", Replacement: "$1.attn.out_proj.$2"),
        new(@"(.*\.resblocks\.\d+)\.mlp\.fc1\.(.*)", Replacement: "$1.mlp.c_fc.$2"),
        new(@"(.*\.resblocks\.\d+)\.mlp\.fc2\.(.*)", Replacement: "$1.mlp.c_proj.$2"),
        new(@"((?:visual\.)?)positional_embedding\.weight", Replacement: "$1positional_embedding"),
        new(@"visual\.proj\.weight", Replacement: "visual.proj", Transposed: true),
        new(@"text_projection\.weight", Replacement: "text_projection", Transposed: true),
    ];

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

                // MCi (timm's fastvit_mci*): apple's bias-free GlobalPool2D projection is timm's
                // head.fc, to which timm's checkpoint_filter_fn adds a bias of zeros.
                new(@"head\.proj\.weight", Replacement: "head.fc.weight"),
            ],
            droppedIfZero: [@"head\.fc\.bias"]),

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
        ["mobileclip"] = new("mobileclip", MobileClipRules),
        ["open_clip"] = new("open_clip", OpenClipRules, ["input_resolution", "context_length", "vocab_size"]),
    };

    public NameConvention(string source, IReadOnlyList<NameRule> rules, IReadOnlyList<string>? dropped = null, IReadOnlyList<string>? droppedIfZero = null)
    {
        Source = source;
        Rules = rules;
        Dropped = (dropped ?? []).Select(p => new Regex("^(?:" + p + ")$", RegexOptions.CultureInvariant)).ToList();
        DroppedIfZero = (droppedIfZero ?? []).Select(p => new Regex("^(?:" + p + ")$", RegexOptions.CultureInvariant)).ToList();
    }

    /// <summary>
    /// The source's keys that a conversion added as zeros where dsl has no parameter (timm's
    /// bias on the head of an MCi converted from apple's bias-free projection): dropped when every
    /// value is 0, unused (an error) otherwise, since a trained bias would be lost.
    /// </summary>
    public IReadOnlyList<Regex> DroppedIfZero { get; }

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
        var transposed = false;
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
            transposed |= rule.Transposed;
        }

        if (transposed)
        {
            if (shape.Length != 2 || before + after > 0)
            {
                throw new InteropError($"the '{Source}' names transpose {ours}, which is {shape.Length}-D: only a matrix can be");
            }

            return new MappedName(ours, shape, theirs, [shape[1], shape[0]], optional, Transposed: true);
        }

        var theirShape = Enumerable.Repeat(1L, before).Concat(shape).Concat(Enumerable.Repeat(1L, after)).ToArray();
        return new MappedName(ours, shape, theirs, theirShape, optional);
    }
}
