using Dsl.Runtime.Data;
using Dsl.Runtime.Emit;
using Dsl.Runtime.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Training;

/// <summary>
/// Training on an image–text set: each step takes one random caption per image (and, for
/// reinforced training, one stored augmentation and one synthetic caption, with the teachers'
/// embeddings of exactly those): CLIP's and MobileCLIP's objectives. CatLIP's, which needs no
/// text tower, is the prelude's catlipMultiLabelLoss over <see cref="CatlipRecords"/>.
/// </summary>
public sealed class ImageTextTask : ITrainingTask
{
    private readonly ImageTextSet train;
    private readonly ImageTextSet? test;
    private readonly ImagePipeline pipeline;
    private readonly ImageTextObjective objective;
    private readonly ReinforcedSet? reinforced;
    private readonly TextTokenizer? tokenizer;
    private readonly DualEncoder encoder;

    public ImageTextTask(
        GraphModule model,
        ImageTextSet train,
        ImageTextSet? test,
        ImagePipeline pipeline,
        ImageTextObjective objective,
        ReinforcedSet? reinforced = null)
    {
        encoder = DualEncoder.Of(model);
        this.train = train;
        this.test = test;
        this.pipeline = pipeline;
        this.objective = objective;
        this.reinforced = reinforced;
        if (objective.Kind == ImageTextObjectiveKind.MultiLabel)
        {
            // CatLIP trains through the prelude's catlipMultiLabelLoss (dsl/Objective.fs, CatlipRecords).
            throw new ArgumentException("catlipLoss trains as the prelude's catlipMultiLabelLoss over CatlipRecords, not as an image–text task");
        }

        if (encoder.ContrastiveProblem() is { } problem)
        {
            throw new ArgumentException(problem);
        }

        tokenizer = TextTokenizer.Gpt2(encoder.ContextLength);

        if (objective.Kind == ImageTextObjectiveKind.Reinforced)
        {
            if (reinforced is null)
            {
                throw new ArgumentException("reinforced training needs the stored teacher embeddings");
            }

            if (reinforced.Meta.Count != train.Count)
            {
                throw new DataError(reinforced.Meta.Manifest, $"the reinforced data covers {reinforced.Meta.Count} images but the manifest now gives {train.Count}; run `dsl reinforce` again");
            }
        }
    }

    public int Count => train.Count;

    public Tensor Loss(GraphModule model, long[] indices, Generator augment, TrainOptions options)
    {
        var images = Batches.Take(train.Images, indices);
        switch (objective.Kind)
        {
            case ImageTextObjectiveKind.Clip:
                {
                    var captions = Pick(indices, train.Captions, augment);
                    var (image, text, scale) = encoder.EncodePairs(pipeline.Train(images, augment), tokenizer!.Batch([.. Texts(captions, train.Captions)]));
                    return ImageTextLosses.Clip(image, text, scale);
                }

            default:
                return ReinforcedLoss(model, indices, images, augment);
        }
    }

    public EvalResult? Evaluate(GraphModule model, TrainOptions options) =>
        test is null ? null : ImageTextEvaluator.Evaluate(model, test, pipeline, objective, options.EvalBatchSize);

    /// <summary>
    /// L(img, gt) + L(img, syn) with L = (1 − λ)·CLIP + λ·distill (MobileCLIP, arXiv 2311.17049; apple/ml-mobileclip): one stored
    /// augmentation, one caption and one synthetic caption per image, and the teachers' stored
    /// embeddings of each. Lines without synthetic captions contribute the first term only.
    /// </summary>
    private Tensor ReinforcedLoss(GraphModule model, long[] indices, Tensor images, Generator augment)
    {
        var set = reinforced!;
        var meta = set.Meta;
        var augmentations = rand(indices.Length, generator: augment).data<float>().ToArray();
        var augmentRows = indices.Select((image, i) => (image * meta.AugmentationsPerImage) + Math.Min((long)(augmentations[i] * meta.AugmentationsPerImage), meta.AugmentationsPerImage - 1)).ToArray();
        var captions = Pick(indices, train.Captions, augment);
        var withSynthetic = indices.All(i => train.Synthetic[(int)i].Length > 0);
        var synthetic = withSynthetic ? Pick(indices, train.Synthetic, augment) : [];
        var texts = Texts(captions, train.Captions).Concat(Texts(synthetic, train.Synthetic)).ToList();
        var prepared = pipeline.Replay(images, set.Augmentations, augmentRows, augment);
        var (image, text, scale) = encoder.EncodePairs(prepared, tokenizer!.Batch(texts));
        var n = indices.Length;

        IReadOnlyList<Tensor> Rows(IReadOnlyList<Tensor> stored, long[] rows)
        {
            var at = tensor(rows);
            return [.. stored.Select(t => t.index_select(0, at).to(model.Device))];
        }

        var teacherImages = Rows(set.TeacherImages, augmentRows);
        var scales = Enumerable.Repeat(objective.TeacherScale, set.Teachers).ToArray();
        var loss = ImageTextLosses.Reinforced(
            objective.Lambda, image, text.narrow(0, 0, n), scale, teacherImages,
            Rows(set.TeacherCaptions, [.. captions.Select(c => (c.Image * meta.MaxCaptions) + c.Caption)]), scales);
        if (withSynthetic)
        {
            loss += ImageTextLosses.Reinforced(
                objective.Lambda, image, text.narrow(0, n, n), scale, teacherImages,
                Rows(set.TeacherSynthetic, [.. synthetic.Select(c => (c.Image * meta.MaxSynthetic) + c.Caption)]), scales);
        }

        return loss;
    }

    /// <summary>One caption index per image, uniform over that image's captions.</summary>
    private static (long Image, long Caption)[] Pick(long[] indices, IReadOnlyList<string[]> captions, Generator generator)
    {
        var draws = rand(indices.Length, generator: generator).data<float>().ToArray();
        return [.. indices.Select((image, i) =>
        {
            var count = captions[(int)image].Length;
            return (image, (long)Math.Min((int)(draws[i] * count), count - 1));
        })];
    }

    private static IEnumerable<string> Texts((long Image, long Caption)[] picks, IReadOnlyList<string[]> captions) =>
        picks.Select(p => captions[(int)p.Image][p.Caption]);
}
