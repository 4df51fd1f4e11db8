using System.Diagnostics;
using Dsl.Runtime.Data;
using Dsl.Runtime.Emit;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Dsl.Runtime.Training;

/// <summary>Measures a classifier on a labelled image set.</summary>
public static class Evaluator
{
    /// <summary>
    /// Loss, accuracy and top-5 accuracy of <paramref name="model"/> (its first output taken as
    /// logits [B, classes]) over all of <paramref name="data"/>, in eval mode under no_grad,
    /// one DisposeScope per batch. The model's previous mode is restored afterwards.
    /// </summary>
    public static EvalResult Evaluate(GraphModule model, LabeledImages data, int batchSize, IReadOnlyList<IAugment> evalTransforms)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        ClassificationTask.RequireLabelsFit(model, data, "test");
        var wasTraining = model.training;
        model.eval();
        // Evaluation transforms are meant to be deterministic; a fixed seed keeps them so anyway.
        using var generator = new Generator(0);
        double lossSum = 0;
        long correct = 0;
        long correctTop5 = 0;
        var clock = Stopwatch.StartNew();
        try
        {
            using var noGrad = no_grad();
            foreach (var indices in Batches.Sequential(data.Count, batchSize))
            {
                using var scope = NewDisposeScope();
                var images = Augments.Run(Batches.Take(data.Images, indices), evalTransforms, generator);
                var labels = Batches.Take(data.Labels, indices).to(model.Device);
                var logits = model.Forward(images)[0];
                lossSum += F.cross_entropy(logits, labels, reduction: nn.Reduction.Sum).item<float>();
                correct += logits.argmax(1).eq(labels).sum().item<long>();
                var k = (int)Math.Min(5, logits.shape[1]);
                var (_, topIndices) = logits.topk(k, dim: 1);
                correctTop5 += topIndices.eq(labels.unsqueeze(1)).any(1).sum().item<long>();
            }
        }
        finally
        {
            model.train(wasTraining);
        }

        var seconds = clock.Elapsed.TotalSeconds;
        var count = Math.Max(data.Count, 1);
        return new EvalResult(
            Loss: lossSum / count,
            Accuracy: (double)correct / count,
            Top5: (double)correctTop5 / count,
            ImagesPerSecond: seconds > 0 ? data.Count / seconds : 0,
            Count: data.Count);
    }
}
