using System.Text.Json;
using Dsl.Runtime.Checkpoints;
using Dsl.Runtime.Data;
using static TorchSharp.torch;

namespace Dsl.Runtime.Training;

/// <summary>Where a reinforced data set came from; stored as reinforced.json.</summary>
/// <param name="Manifest">The training manifest, as given to `dsl reinforce`.</param>
/// <param name="Count">Images (manifest lines that decoded) it covers.</param>
/// <param name="AugmentationsPerImage">N, the stored augmentations of each image.</param>
/// <param name="MaxCaptions">Caption rows per image (lines with fewer leave rows of zeros).</param>
/// <param name="MaxSynthetic">Synthetic-caption rows per image.</param>
/// <param name="Teachers">"file:model@checkpoint" of each teacher, in order.</param>
/// <param name="Size">The image side the augmentations were drawn for.</param>
public sealed record ReinforcedMeta(
    string Manifest,
    int Count,
    int AugmentationsPerImage,
    int MaxCaptions,
    int MaxSynthetic,
    IReadOnlyList<string> Teachers,
    int Size);

/// <summary>
/// MobileCLIP's reinforced data (MobileCLIP, arXiv 2311.17049; apple/ml-mobileclip), written once by `dsl reinforce` so that
/// training never runs the teachers: per image, N augmentations as parameters and, per teacher,
/// the normalised image embedding of each augmentation and the text embedding of each caption
/// and synthetic caption. Rows are image·N + k, image·MaxCaptions + j, image·MaxSynthetic + j.
/// </summary>
public sealed class ReinforcedSet : IDisposable
{
    public const string TensorFile = "reinforced.safetensors";
    public const string MetaFile = "reinforced.json";

    public ReinforcedSet(ReinforcedMeta meta, StoredAugmentations augmentations, IReadOnlyList<Tensor> images, IReadOnlyList<Tensor> captions, IReadOnlyList<Tensor> synthetic)
    {
        Meta = meta;
        Augmentations = augmentations;
        TeacherImages = images;
        TeacherCaptions = captions;
        TeacherSynthetic = synthetic;
    }

    public ReinforcedMeta Meta { get; }

    public StoredAugmentations Augmentations { get; }

    /// <summary>Per teacher, float32 [Count·N, D_k].</summary>
    public IReadOnlyList<Tensor> TeacherImages { get; }

    /// <summary>Per teacher, float32 [Count·MaxCaptions, D_k].</summary>
    public IReadOnlyList<Tensor> TeacherCaptions { get; }

    /// <summary>Per teacher, float32 [Count·MaxSynthetic, D_k].</summary>
    public IReadOnlyList<Tensor> TeacherSynthetic { get; }

    public int Teachers => TeacherImages.Count;

    public void Save(string directory)
    {
        Directory.CreateDirectory(directory);
        var tensors = new Dictionary<string, Tensor> { ["augmentations"] = Augmentations.ToTensor() };
        for (var k = 0; k < Teachers; k++)
        {
            tensors[$"teacher{k}.image"] = TeacherImages[k];
            tensors[$"teacher{k}.captions"] = TeacherCaptions[k];
            tensors[$"teacher{k}.synthetic"] = TeacherSynthetic[k];
        }

        // Both files go to temporary names first, so a stopped run never leaves a half-written set.
        var tensorPath = Path.Combine(directory, TensorFile);
        var metaPath = Path.Combine(directory, MetaFile);
        SafetensorsFile.Write(tensorPath + ".tmp", tensors);
        tensors["augmentations"].Dispose();
        File.WriteAllText(metaPath + ".tmp", JsonSerializer.Serialize(Meta, new JsonSerializerOptions { WriteIndented = true }));
        File.Move(tensorPath + ".tmp", tensorPath, overwrite: true);
        File.Move(metaPath + ".tmp", metaPath, overwrite: true);
    }

    /// <summary>Reads a set written by <see cref="Save"/>; the crop is the recipe's, whose offsets the rows hold.</summary>
    public static ReinforcedSet Load(string directory, RandomCrop? crop)
    {
        var metaPath = Path.Combine(directory, MetaFile);
        var tensorPath = Path.Combine(directory, TensorFile);
        if (!File.Exists(metaPath) || !File.Exists(tensorPath))
        {
            throw new DataError(directory, $"no reinforced data ({MetaFile} and {TensorFile}); write it with `dsl reinforce`");
        }

        ReinforcedMeta meta;
        try
        {
            meta = JsonSerializer.Deserialize<ReinforcedMeta>(File.ReadAllText(metaPath)) ?? throw new JsonException("empty");
        }
        catch (JsonException e)
        {
            throw new DataError(metaPath, $"not a reinforced-data description: {e.Message}");
        }

        Dictionary<string, Tensor> tensors;
        try
        {
            tensors = SafetensorsFile.Read(tensorPath);
        }
        catch (CheckpointError e)
        {
            throw new DataError(tensorPath, e.Message);
        }

        Tensor Take(string name, long rows)
        {
            if (!tensors.TryGetValue(name, out var t) || t.dim() != 2 || t.shape[0] != rows)
            {
                throw new DataError(tensorPath, $"'{name}' is missing or not [{rows}, D]");
            }

            return t;
        }

        var augmentations = StoredAugmentations.FromTensor(Take("augmentations", (long)meta.Count * meta.AugmentationsPerImage), crop);
        var images = new List<Tensor>();
        var captions = new List<Tensor>();
        var synthetic = new List<Tensor>();
        for (var k = 0; k < meta.Teachers.Count; k++)
        {
            images.Add(Take($"teacher{k}.image", (long)meta.Count * meta.AugmentationsPerImage));
            captions.Add(Take($"teacher{k}.captions", (long)meta.Count * meta.MaxCaptions));
            synthetic.Add(Take($"teacher{k}.synthetic", (long)meta.Count * meta.MaxSynthetic));
        }

        tensors["augmentations"].Dispose();
        return new ReinforcedSet(meta, augmentations, images, captions, synthetic);
    }

    public void Dispose()
    {
        foreach (var t in TeacherImages.Concat(TeacherCaptions).Concat(TeacherSynthetic))
        {
            t.Dispose();
        }
    }
}
