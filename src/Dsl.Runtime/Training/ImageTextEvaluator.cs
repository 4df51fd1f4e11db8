using System.Diagnostics;
using Dsl.Runtime.Data;
using Dsl.Runtime.Emit;
using Dsl.Runtime.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Training;

/// <summary>
/// Measures an image–text model on a test manifest: the test loss of its objective, zero-shot
/// classification with prompt templates (CLIP's protocol: each class's text embedding is the
/// normalised mean over templates), and image↔text retrieval recall@1/5 with each image's
/// first caption.
/// </summary>
public static class ImageTextEvaluator
{
    public static EvalResult Evaluate(GraphModule model, ImageTextSet test, ImagePipeline pipeline, ImageTextObjective objective, int batchSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        var encoder = DualEncoder.Of(model);
        var wasTraining = model.training;
        model.eval();
        using var generator = new Generator(0);
        var clock = Stopwatch.StartNew();
        try
        {
            using var noGrad = no_grad();
            using var scope = NewDisposeScope();
            if (objective.Kind == ImageTextObjectiveKind.MultiLabel)
            {
                return MultiLabel(model, test, pipeline, batchSize, generator, clock);
            }

            var tokenizer = TextTokenizer.Gpt2(encoder.ContextLength);
            var images = Embed(test.Count, batchSize, rows => encoder.EncodeImages(pipeline.Eval(Batches.Take(test.Images, rows), generator)));
            var texts = Embed(test.Count, batchSize, rows => encoder.EncodeTexts(tokenizer.Batch([.. rows.Select(r => test.Captions[(int)r][0])])));
            var scale = ImageTextLosses.Scale(model.ForwardOutputs([DualEncoder.ScaleOutput], new Dictionary<string, Tensor>())[0]);
            var extra = Retrieval(images, texts);
            var (accuracy, top5) = ZeroShot(encoder, tokenizer, test, images);
            var loss = BatchedClipLoss(images, texts, scale, batchSize);
            return new EvalResult(loss, accuracy, top5, test.Count / Math.Max(clock.Elapsed.TotalSeconds, 1e-9), test.Count) { Extra = extra };
        }
        finally
        {
            model.train(wasTraining);
        }
    }

    /// <summary>
    /// Zero-shot top-1 and top-5 accuracy: the class whose prompt embedding is closest to the
    /// image embedding. NaN when the set has no class labels or class names.
    /// </summary>
    public static (double Top1, double Top5) ZeroShot(DualEncoder encoder, TextTokenizer tokenizer, ImageTextSet test, Tensor imageEmbeddings)
    {
        if (test.ClassLabels is null || test.ClassNames.Count == 0 || test.Templates.Count == 0)
        {
            return (double.NaN, double.NaN);
        }

        using var scope = NewDisposeScope();
        var classes = stack(test.ClassNames.Select(name =>
        {
            var prompts = test.Templates.Select(t => t.Replace("{}", name, StringComparison.Ordinal)).ToList();
            var mean = encoder.EncodeTexts(tokenizer.Batch(prompts)).mean([0]);
            return mean / mean.norm();
        }).ToArray());
        return ZeroShotAccuracy(imageEmbeddings, classes, test.ClassLabels);
    }

    /// <summary>
    /// Top-1 and top-5 accuracy of classifying each image embedding [N, D] by its dot product
    /// with the class embeddings [K, D] (both normalised, so the cosine), against int64 labels [N].
    /// Top-5 is top-min(5, K). A tie for the highest score goes to the lowest class index
    /// (torch.argmax returns the first maximal index); a tie across fifth place is settled by
    /// torch.topk, which does not document its order.
    /// </summary>
    public static (double Top1, double Top5) ZeroShotAccuracy(Tensor imageEmbeddings, Tensor classEmbeddings, Tensor labels)
    {
        using var scope = NewDisposeScope();
        var scores = imageEmbeddings.matmul(classEmbeddings.t());
        var target = labels.to(scores.device);
        var top1 = scores.argmax(1).eq(target).to_type(ScalarType.Float32).mean().item<float>();
        var k = (int)Math.Min(5, scores.shape[1]);
        var top5 = scores.topk(k, dim: 1).indexes.eq(target.unsqueeze(1)).any(1).to_type(ScalarType.Float32).mean().item<float>();
        return (top1, top5);
    }

    /// <summary>
    /// Recall@1 and @5 in both directions for pairs (image i, text i): the share of queries whose
    /// partner is among the k most similar candidates. Ties count in the query's favour
    /// (template captions repeat word for word; a rank is the number of strictly better candidates).
    /// </summary>
    public static Dictionary<string, double> Retrieval(Tensor images, Tensor texts)
    {
        using var scope = NewDisposeScope();
        var result = new Dictionary<string, double>();
        foreach (var (name, queries, candidates) in new[] { ("i2t", images, texts), ("t2i", texts, images) })
        {
            long hits1 = 0;
            long hits5 = 0;
            const int chunk = 512;
            for (long start = 0; start < queries.shape[0]; start += chunk)
            {
                using var inner = NewDisposeScope();
                var length = Math.Min(chunk, queries.shape[0] - start);
                var similarity = queries.narrow(0, start, length).matmul(candidates.t());
                var own = similarity.gather(1, arange(start, start + length, dtype: ScalarType.Int64).unsqueeze(1));
                var rank = similarity.gt(own).sum(1);
                hits1 += rank.lt(1).sum().item<long>();
                hits5 += rank.lt(5).sum().item<long>();
            }

            result[$"{name}_r1"] = (double)hits1 / queries.shape[0];
            result[$"{name}_r5"] = (double)hits5 / queries.shape[0];
        }

        return result;
    }

    private static Tensor Embed(int count, int batchSize, Func<long[], Tensor> encode) =>
        cat(Batches.Sequential(count, batchSize).Select(encode).ToArray());

    /// <summary>CLIP's loss over consecutive test batches, averaged: the same quantity training minimises.</summary>
    private static double BatchedClipLoss(Tensor images, Tensor texts, Tensor scale, int batchSize)
    {
        var sum = 0.0;
        var batches = 0;
        for (long start = 0; start + 1 < images.shape[0]; start += batchSize)
        {
            var length = Math.Min(batchSize, images.shape[0] - start);
            sum += ImageTextLosses.Clip(images.narrow(0, start, length), texts.narrow(0, start, length), scale).item<float>();
            batches++;
        }

        return batches == 0 ? double.NaN : sum / batches;
    }

    private static EvalResult MultiLabel(GraphModule model, ImageTextSet test, ImagePipeline pipeline, int batchSize, Generator generator, Stopwatch clock)
    {
        if (test.SynsetLabels is null)
        {
            throw new DataError("test manifest", "catlipLoss evaluation needs mined labels on the test manifest; write them with `dsl data catlip-labels --vocabulary`");
        }

        var sum = 0.0;
        foreach (var rows in Batches.Sequential(test.Count, batchSize))
        {
            using var inner = NewDisposeScope();
            var logits = model.Forward(pipeline.Eval(Batches.Take(test.Images, rows), generator))[0];
            var targets = CatlipLabels.MultiHot([.. rows.Select(r => test.SynsetLabels[(int)r])], (int)logits.shape[1]).to(logits.device);
            sum += ImageTextLosses.MultiLabel(logits, targets).item<float>() * rows.Length;
        }

        return new EvalResult(sum / Math.Max(test.Count, 1), double.NaN, double.NaN, test.Count / Math.Max(clock.Elapsed.TotalSeconds, 1e-9), test.Count);
    }
}
