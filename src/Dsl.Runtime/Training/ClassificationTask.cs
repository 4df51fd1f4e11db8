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
}
