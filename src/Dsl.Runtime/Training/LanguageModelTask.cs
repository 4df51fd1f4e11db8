using System.Diagnostics;
using Dsl.Runtime.Data;
using Dsl.Runtime.Emit;
using Dsl.Runtime.Text;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Dsl.Runtime.Training;

/// <summary>
/// Next-token training of a decoder whose first output is logits [B, T, V] for tokens [B, T]:
/// each packed row gives the input (its first T ids) and the target (its last T ids). The loss
/// is the mean cross-entropy plus OpenLM's z-loss, zLoss · mean(logsumexp(logits)²)
/// (mlfoundations/open_lm open_lm/model.py), which keeps the softmax normaliser near 1.
/// </summary>
public sealed class LanguageModelTask(PackedSequences data, double zLoss, int evalBatchSize) : ITrainingTask
{
    public int Count => (int)data.Train.shape[0];

    public Tensor Loss(GraphModule model, long[] indices, Generator augment, TrainOptions options)
    {
        var rows = Batches.Take(data.Train, indices).to(model.Device);
        var (crossEntropy, logits) = CrossEntropy(model, rows);
        return zLoss > 0 ? crossEntropy + (logits.logsumexp(-1).square().mean() * zLoss) : crossEntropy;
    }

    /// <summary>Mean next-token cross-entropy over the validation rows, and its perplexity (in Extra).</summary>
    public EvalResult? Evaluate(GraphModule model, TrainOptions options)
    {
        var count = (int)data.Validation.shape[0];
        if (count == 0)
        {
            return null;
        }

        var wasTraining = model.training;
        model.eval();
        var clock = Stopwatch.StartNew();
        double sum = 0;
        try
        {
            using var noGrad = no_grad();
            foreach (var indices in Batches.Sequential(count, evalBatchSize))
            {
                using var scope = NewDisposeScope();
                var (crossEntropy, _) = CrossEntropy(model, Batches.Take(data.Validation, indices).to(model.Device));
                sum += crossEntropy.item<float>() * indices.Length;
            }
        }
        finally
        {
            model.train(wasTraining);
        }

        var loss = sum / count;
        return new EvalResult(loss, double.NaN, double.NaN, count * data.Length / Math.Max(clock.Elapsed.TotalSeconds, 1e-9), count)
        {
            Extra = new Dictionary<string, double> { ["perplexity"] = Math.Exp(loss) },
        };
    }

    private (Tensor CrossEntropy, Tensor Logits) CrossEntropy(GraphModule model, Tensor rows)
    {
        var inputs = rows.narrow(1, 0, data.Length);
        var targets = rows.narrow(1, 1, data.Length);
        var logits = model.Forward(inputs)[0];
        var vocabulary = logits.shape[^1];
        return (F.cross_entropy(logits.reshape(-1, vocabulary), targets.reshape(-1)), logits);
    }
}
