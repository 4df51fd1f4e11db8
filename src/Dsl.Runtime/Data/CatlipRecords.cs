namespace Dsl.Runtime.Data;

/// <summary>
/// An image–text set as the records CatLIP's objective reads (the prelude's <c>catlipMultiLabelLoss</c>):
/// "image" [C, H, W] and "labels", the multi-hot [V] of the synsets mined from each line's
/// captions (<see cref="CatlipLabels"/>), V the logits of the model's first output.
/// </summary>
public static class CatlipRecords
{
    /// <exception cref="DataError">The manifest has no mined labels, the model's first output is
    /// not logits [V], or a label is beyond them.</exception>
    public static RecordSet Of(ImageTextSet set, Ir.Graph model, string split)
    {
        ArgumentNullException.ThrowIfNull(set);
        ArgumentNullException.ThrowIfNull(model);
        if (set.SynsetLabels is null)
        {
            throw new DataError($"{split} manifest", "catlipLoss needs mined labels (a \"labels\" field on every line); write them with `dsl data catlip-labels`");
        }

        var output = model.Nodes[model.Outputs.Head.Item2].Shape;
        if (output.Length != 2 || output[1] is not Ir.Dim.Known classes)
        {
            throw new DataError($"model '{model.Name}'", $"catlipLoss needs logits [V] as the model's first output, got {Ir.showShape(output)}");
        }

        var largest = set.SynsetLabels.SelectMany(l => l).DefaultIfEmpty(-1).Max();
        if (largest >= classes.Item)
        {
            throw new DataError($"{split} manifest", $"the labels go up to synset {largest} ({largest + 1} synsets) but model '{model.Name}' gives logits[{classes.Item}]; the head needs one logit per vocabulary synset");
        }

        return new RecordSet(
            [
                new FieldSchema("image", FieldKind.Image, set.Images.shape[1..]),
                new FieldSchema("labels", FieldKind.Tensor, [classes.Item]),
            ],
            // An alias: the record set disposes its own handle, the image–text set keeps its images.
            new Dictionary<string, TorchSharp.torch.Tensor>
            {
                ["image"] = set.Images.alias(),
                ["labels"] = CatlipLabels.MultiHot(set.SynsetLabels, (int)classes.Item),
            });
    }
}
