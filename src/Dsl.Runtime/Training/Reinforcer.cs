using Dsl.Runtime.Data;
using Dsl.Runtime.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Training;

/// <summary>
/// Writes MobileCLIP's reinforced data set (MobileCLIP, arXiv 2311.17049; apple/ml-mobileclip): the teachers run once, here, over
/// every stored augmentation and caption, so reinforced training costs the student's steps only.
/// </summary>
public static class Reinforcer
{
    public static ReinforcedSet Run(
        ImageTextSet train,
        string manifest,
        ImagePipeline pipeline,
        IReadOnlyList<DualEncoder> teachers,
        IReadOnlyList<string> teacherNames,
        int augmentationsPerImage,
        int batchSize,
        long seed)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(augmentationsPerImage);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        using var generator = new Generator((ulong)seed);
        var stored = StoredAugmentations.Sample(train.Count * augmentationsPerImage, train.Images.shape[2], train.Images.shape[3], pipeline.Random, generator);
        var maxCaptions = train.Captions.Max(c => c.Length);
        var maxSynthetic = Math.Max(1, train.Synthetic.Select(s => s.Length).DefaultIfEmpty(0).Max());
        var images = new List<Tensor>();
        var captions = new List<Tensor>();
        var synthetic = new List<Tensor>();
        foreach (var teacher in teachers)
        {
            var wasTraining = teacher.Model.training;
            teacher.Model.eval();
            using var noGrad = no_grad();
            var tokenizer = TextTokenizer.Gpt2(teacher.ContextLength);
            images.Add(Rows(train.Count * augmentationsPerImage, batchSize, rows =>
                teacher.EncodeImages(pipeline.Replay(Batches.Take(train.Images, [.. rows.Select(r => r / augmentationsPerImage)]), stored, rows, generator))));
            captions.Add(Texts(train.Captions, maxCaptions, teacher, tokenizer, batchSize));
            synthetic.Add(Texts(train.Synthetic, maxSynthetic, teacher, tokenizer, batchSize));
            teacher.Model.train(wasTraining);
        }

        var meta = new ReinforcedMeta(manifest, train.Count, augmentationsPerImage, maxCaptions, maxSynthetic, teacherNames, (int)train.Images.shape[2]);
        return new ReinforcedSet(meta, stored, images, captions, synthetic);
    }

    /// <summary>Embeddings of rows 0..count−1, computed a batch at a time and kept outside any scope.</summary>
    private static Tensor Rows(long count, int batchSize, Func<long[], Tensor> encode)
    {
        var parts = new List<Tensor>();
        using var scope = NewDisposeScope();
        foreach (var rows in Batches.Sequential((int)count, batchSize))
        {
            parts.Add(encode(rows).cpu());
        }

        return scope.MoveToOuter(cat(parts.ToArray())).DetachFromDisposeScope();
    }

    /// <summary>Row image·width + j holds the embedding of caption j; rows past a line's captions are zero.</summary>
    private static Tensor Texts(IReadOnlyList<string[]> captions, int width, DualEncoder teacher, TextTokenizer tokenizer, int batchSize)
    {
        var texts = new List<string>();
        var present = new List<bool>();
        foreach (var line in captions)
        {
            for (var j = 0; j < width; j++)
            {
                texts.Add(j < line.Length ? line[j] : "");
                present.Add(j < line.Length);
            }
        }

        var embeddings = Rows(texts.Count, batchSize, rows => teacher.EncodeTexts(tokenizer.Batch([.. rows.Select(r => texts[(int)r])])));
        using var mask = tensor(present.ToArray()).unsqueeze(1);
        embeddings.mul_(mask);
        return embeddings;
    }
}
