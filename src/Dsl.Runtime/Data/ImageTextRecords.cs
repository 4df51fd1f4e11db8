using Dsl.Runtime.Text;
using Dsl.Runtime.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Data;

/// <summary>
/// An image–text set as the records the prelude's CLIP and MobileCLIP objectives read
/// (dsl/lib/prelude.dsl: clipContrastiveLoss, mobileclipReinforcedLoss): "image" [C, H, W] and
/// "caption" tokens [T], one caption drawn per step among the line's captions (CLIP's and
/// open_clip's practice). With reinforced data (MobileCLIP, arXiv 2311.17049; apple/ml-mobileclip)
/// each step also draws one stored augmentation, which the image replays, and one synthetic
/// caption ("synthetic" [T]), and every teacher k gives its stored embeddings of exactly those:
/// "teachers.k.image", "teachers.k.caption", "teachers.k.synthetic" [D_k]. The draws come in the
/// order augmentation, caption, synthetic caption, then the image transforms.
/// </summary>
public sealed class ImageTextRecords : IRecords
{
    private readonly ImageTextSet set;
    private readonly ImagePipeline pipeline;
    private readonly TextTokenizer tokenizer;
    private readonly ReinforcedSet? reinforced;

    /// <param name="set">The images and captions (kept by the caller).</param>
    /// <param name="pipeline">Resize, random augmentations and normalisation of the images.</param>
    /// <param name="contextLength">T, the model's token input.</param>
    /// <param name="reinforced">The stored augmentations and teacher embeddings of this set, or null.</param>
    /// <exception cref="DataError">The reinforced data covers other images, or a line has no synthetic caption.</exception>
    public ImageTextRecords(ImageTextSet set, ImagePipeline pipeline, int contextLength, ReinforcedSet? reinforced = null)
    {
        ArgumentNullException.ThrowIfNull(set);
        this.set = set;
        this.pipeline = pipeline;
        this.reinforced = reinforced;
        tokenizer = TextTokenizer.Gpt2(contextLength);
        var tokens = (long)contextLength;
        var schema = new List<FieldSchema>
        {
            new("image", FieldKind.Image, set.Images.shape[1..]),
            new("caption", FieldKind.Tokens, [tokens], tokenizer.Vocabulary),
        };

        if (reinforced is not null)
        {
            if (reinforced.Meta.Count != set.Count)
            {
                throw new DataError(reinforced.Meta.Manifest, $"the reinforced data covers {reinforced.Meta.Count} images but the manifest now gives {set.Count}; run `dsl reinforce` again");
            }

            var missing = Enumerable.Range(0, set.Count).FirstOrDefault(i => set.Synthetic[i].Length == 0, -1);
            if (missing >= 0)
            {
                throw new DataError(reinforced.Meta.Manifest, $"image {missing} has no synthetic caption; the reinforced loss reads one per record (`dsl data fashion-captions` writes them)");
            }

            schema.Add(new("synthetic", FieldKind.Tokens, [tokens], tokenizer.Vocabulary));
            for (var k = 0; k < reinforced.Teachers; k++)
            {
                var width = reinforced.TeacherImages[k].shape[1];
                foreach (var part in new[] { "image", "caption", "synthetic" })
                {
                    schema.Add(new($"teachers.{k}.{part}", FieldKind.Tensor, [width]));
                }
            }
        }

        Schema = schema;
    }

    public IReadOnlyList<FieldSchema> Schema { get; }

    public int Count => set.Count;

    /// <summary>How many teachers' embeddings each record holds (0 without reinforced data).</summary>
    public int Teachers => reinforced?.Teachers ?? 0;

    /// <summary>The images are replayed or augmented here, with the draws that pick the teacher embeddings.</summary>
    public bool PreparesImages => true;

    /// <summary>
    /// Training draws uniformly which caption, synthetic caption and stored augmentation each
    /// record gives; evaluation gives the first of each and no random augmentation.
    /// </summary>
    public Dictionary<string, Tensor> Take(long[] indices, Generator generator, bool training)
    {
        var images = Batches.Take(set.Images, indices);
        if (reinforced is null)
        {
            var captions = Pick(indices, set.Captions, generator, training);
            return new()
            {
                ["image"] = training ? pipeline.Train(images, generator) : pipeline.Eval(images, generator),
                ["caption"] = tokenizer.Batch([.. Texts(captions, set.Captions)]),
            };
        }

        var meta = reinforced.Meta;
        var perImage = meta.AugmentationsPerImage;
        var draws = training ? rand(indices.Length, generator: generator).data<float>().ToArray() : new float[indices.Length];
        var augmentRows = indices.Select((image, i) => (image * perImage) + Math.Min((long)(draws[i] * perImage), perImage - 1)).ToArray();
        var picked = Pick(indices, set.Captions, generator, training);
        var synthetic = Pick(indices, set.Synthetic, generator, training);
        var batch = new Dictionary<string, Tensor>
        {
            ["image"] = pipeline.Replay(images, reinforced.Augmentations, augmentRows, generator),
            ["caption"] = tokenizer.Batch([.. Texts(picked, set.Captions)]),
            ["synthetic"] = tokenizer.Batch([.. Texts(synthetic, set.Synthetic)]),
        };

        var imageRows = tensor(augmentRows);
        var captionRows = tensor(picked.Select(c => (c.Image * meta.MaxCaptions) + c.Caption).ToArray());
        var syntheticRows = tensor(synthetic.Select(c => (c.Image * meta.MaxSynthetic) + c.Caption).ToArray());
        for (var k = 0; k < reinforced.Teachers; k++)
        {
            batch[$"teachers.{k}.image"] = reinforced.TeacherImages[k].index_select(0, imageRows);
            batch[$"teachers.{k}.caption"] = reinforced.TeacherCaptions[k].index_select(0, captionRows);
            batch[$"teachers.{k}.synthetic"] = reinforced.TeacherSynthetic[k].index_select(0, syntheticRows);
        }

        return batch;
    }

    /// <summary>Every field is drawn per step: none is stored whole.</summary>
    public Tensor? Stored(string field) => null;

    /// <summary>One caption index per image, uniform over that image's captions (the first when not training).</summary>
    private static (long Image, long Caption)[] Pick(long[] indices, IReadOnlyList<string[]> captions, Generator generator, bool training)
    {
        var draws = training ? rand(indices.Length, generator: generator).data<float>().ToArray() : new float[indices.Length];
        return [.. indices.Select((image, i) =>
        {
            var count = captions[(int)image].Length;
            return (image, (long)Math.Min((int)(draws[i] * count), count - 1));
        })];
    }

    private static IEnumerable<string> Texts((long Image, long Caption)[] picks, IReadOnlyList<string[]> captions) =>
        picks.Select(p => captions[(int)p.Image][p.Caption]);
}
