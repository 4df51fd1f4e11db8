using Dsl.Runtime.Emit;
using static TorchSharp.torch;

namespace Dsl.Runtime.Training;

/// <summary>
/// The conventions an image–text model follows (see dsl/lib/clip.dsl, clipOutputs): one image
/// input [C, H, W] and one token input [T]; outputs "image" and "text" (normalised embeddings)
/// and "logit_scale". Each side runs alone through <see cref="GraphModule.ForwardOutputs"/>.
/// </summary>
public sealed class DualEncoder
{
    public const string ImageOutput = "image";
    public const string TextOutput = "text";
    public const string ScaleOutput = "logit_scale";

    private DualEncoder(GraphModule model, string imageInput, string? textInput, int contextLength)
    {
        Model = model;
        ImageInput = imageInput;
        TextInput = textInput;
        ContextLength = contextLength;
    }

    public GraphModule Model { get; }

    public string ImageInput { get; }

    /// <summary>Null for an image-only model (CatLIP's classifier).</summary>
    public string? TextInput { get; }

    /// <summary>The token input's length T (0 without one).</summary>
    public int ContextLength { get; }

    /// <summary>Finds the inputs by rank: [B, C, H, W] is the image, [B, T] the tokens.</summary>
    public static DualEncoder Of(GraphModule model)
    {
        string? image = null;
        string? text = null;
        var context = 0;
        foreach (var (name, id) in model.Graph.Inputs.Select(input => (input.Item1, input.Item2)))
        {
            var shape = model.Graph.Nodes[id].Shape;
            switch (shape.Length)
            {
                case 4 when image is null: image = name; break;
                case 2 when text is null && shape[1] is Ir.Dim.Known t:
                    text = name;
                    context = (int)t.Item;
                    break;
                default:
                    throw new ArgumentException($"model '{model.Graph.Name}': input '{name}' is {Ir.showShape(shape)}; an image–text model takes one image [C, H, W] and at most one token input [T]");
            }
        }

        return image is null
            ? throw new ArgumentException($"model '{model.Graph.Name}' has no image input [C, H, W]")
            : new DualEncoder(model, image, text, context);
    }

    public bool Has(string output) => Model.OutputNames.Contains(output);

    /// <summary>The image side's output (by default the normalised embedding) for a prepared batch.</summary>
    public Tensor EncodeImages(Tensor images, string output = ImageOutput) =>
        Model.ForwardOutputs([output], new Dictionary<string, Tensor> { [ImageInput] = images })[0];

    /// <summary>The text side's normalised embeddings for token rows [B, T].</summary>
    public Tensor EncodeTexts(Tensor tokens) =>
        Model.ForwardOutputs([TextOutput], new Dictionary<string, Tensor> { [TextInput ?? throw new InvalidOperationException($"model '{Model.Graph.Name}' has no token input")] = tokens })[0];

    /// <summary>(image embeddings, text embeddings, s = min(exp(logit_scale), 100)) in one pass; the batches may differ in size.</summary>
    public (Tensor Image, Tensor Text, Tensor Scale) EncodePairs(Tensor images, Tensor tokens)
    {
        var outputs = Model.ForwardOutputs(
            [ImageOutput, TextOutput, ScaleOutput],
            new Dictionary<string, Tensor> { [ImageInput] = images, [TextInput!] = tokens });
        return (outputs[0], outputs[1], ImageTextLosses.Scale(outputs[2]));
    }

    /// <summary>Why this model cannot train with a contrastive objective, or null when it can.</summary>
    public string? ContrastiveProblem() =>
        TextInput is null ? $"model '{Model.Graph.Name}' has no token input [T]"
        : !Has(ImageOutput) || !Has(TextOutput) || !Has(ScaleOutput)
            ? $"model '{Model.Graph.Name}' returns {{ {string.Join("; ", Model.OutputNames)} }}; a contrastive objective needs outputs image, text and logit_scale (clipOutputs in dsl/lib/clip.dsl)"
            : null;
}
