using Dsl.Runtime.Data;
using Dsl.Runtime.Emit;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Dsl.Runtime.Training;

/// <summary>Image classification: the model's first output is logits [B, classes], the loss label-smoothed cross-entropy.</summary>
public sealed class ClassificationTask(LabeledImages train, LabeledImages? test) : ITrainingTask
{
    public int Count => train.Count;

    public Tensor Loss(GraphModule model, long[] indices, Generator augment, TrainOptions options)
    {
        var images = Augments.Run(Batches.Take(train.Images, indices), options.Augmentations, augment);
        var labels = Batches.Take(train.Labels, indices).to(model.Device);
        var logits = model.Forward(images)[0];
        return F.cross_entropy(logits, labels, label_smoothing: options.LabelSmoothing);
    }

    public EvalResult? Evaluate(GraphModule model, TrainOptions options) =>
        test is null ? null : Evaluator.Evaluate(model, test, options.EvalBatchSize, options.EvalTransforms);

    public void Check(GraphModule model)
    {
        RequireLabelsFit(model, train, "training");
        if (test is not null)
        {
            RequireLabelsFit(model, test, "test");
        }
    }

    /// <summary>
    /// Every label must index the model's logits [B, n]: class k needs n &gt; k. Throws a
    /// <see cref="DataError"/> naming both numbers otherwise.
    /// </summary>
    public static void RequireLabelsFit(GraphModule model, LabeledImages data, string split)
    {
        var output = model.Graph.Nodes[model.Graph.Outputs.Head.Item2].Shape;
        if (data.Count == 0 || output.Length != 2 || output[1] is not Ir.Dim.Known logits)
        {
            return;
        }

        using var largest = data.Labels.max();
        var classes = Math.Max(largest.item<long>() + 1, data.ClassNames.Count);
        if (classes > logits.Item)
        {
            throw new DataError(
                $"model '{model.Graph.Name}'",
                $"the {split} data has {classes} classes (labels 0 to {classes - 1}) but the model gives logits[{logits.Item}]; its head needs {classes} logits");
        }
    }
}
