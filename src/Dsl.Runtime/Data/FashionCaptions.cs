using System.Globalization;
using Dsl.Runtime.Text;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace Dsl.Runtime.Data;

/// <summary>Options of <see cref="FashionCaptions.Build"/>.</summary>
public sealed record FashionCaptionOptions
{
    /// <summary>Captions per image (the "captions" stream).</summary>
    public int Captions { get; init; } = 3;

    /// <summary>Richer synthetic captions per image (the "synthetic" stream), as in MobileCLIP's reinforced data.</summary>
    public int Synthetic { get; init; } = 2;

    /// <summary>Only the first this many training images; null for all.</summary>
    public int? TrainLimit { get; init; }

    /// <summary>Only the first this many test images; null for all.</summary>
    public int? TestLimit { get; init; }

    public int Seed { get; init; }
}

/// <summary>What <see cref="FashionCaptions.Build"/> wrote.</summary>
public sealed record FashionCaptionsResult(
    string TrainManifest,
    string TestManifest,
    string ClassesFile,
    IReadOnlyList<ImageTextRecord> Train,
    IReadOnlyList<ImageTextRecord> Test);

/// <summary>
/// An image–caption data set made from Fashion-MNIST, so that CLIP-style training (two caption
/// streams, zero-shot prompts, CatLIP labels) can be run and tested on a small, known task
/// without downloading anything. Every image gets captions from templates that name its class
/// with one of several names — a fixed table extended with the WordNet synonyms of the class's
/// head noun — some with unrelated nouns ("a table", "a person") added, as web captions have; and
/// "synthetic" captions that also describe the garment. Everything is deterministic from the
/// seed, and image i's captions depend only on (seed, split, i), not on the limits.
/// </summary>
public static class FashionCaptions
{
    /// <summary>The zero-shot prompt name of each Fashion-MNIST class, in class order.</summary>
    public static readonly string[] PromptNames =
        ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"];

    /// <summary>Zero-shot prompt templates written to classes.json.</summary>
    public static readonly string[] PromptTemplates =
        ["a photo of a {}.", "a grayscale photo of a {}.", "a picture of the {}.", "a low-resolution photo of a {}.", "a {}."];

    private static readonly string[][] Names =
    [
        ["t-shirt", "tee shirt", "top"],
        ["trousers", "pants", "slacks"],
        ["pullover", "sweater", "jumper"],
        ["dress", "frock", "gown"],
        ["coat", "jacket", "overcoat"],
        ["sandal", "flip-flop", "slipper"],
        ["shirt", "blouse", "button-down shirt"],
        ["sneaker", "trainer", "running shoe"],
        ["bag", "handbag", "purse"],
        ["ankle boot", "boot", "bootee"],
    ];

    /// <summary>The WordNet noun whose first sense's synonyms extend each class's names.</summary>
    private static readonly string[] HeadNouns =
        ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"];

    private static readonly string[][] Attributes =
    [
        ["short-sleeved", "crew-necked", "made of light cotton", "casual"],
        ["long-legged", "straight-cut", "full-length", "with a waistband"],
        ["knitted", "long-sleeved", "warm", "ribbed at the cuffs"],
        ["knee-length", "sleeveless", "flowing", "fitted at the waist"],
        ["buttoned", "long-sleeved", "heavy", "with a wide collar"],
        ["open-toed", "strappy", "flat-soled", "for summer"],
        ["collared", "buttoned down the front", "long-sleeved", "with a breast pocket"],
        ["lace-up", "rubber-soled", "low-top", "athletic"],
        ["with a handle", "zippered", "boxy", "made of leather"],
        ["ankle-high", "high-heeled", "zipped at the side", "made of leather"],
    ];

    /// <summary>"{a}" is the name with its article ("a sneaker", "an overcoat", "a pair of pants"); "{name}" is the bare name.</summary>
    private static readonly string[] CaptionTemplates =
    [
        "a photo of {a}.", "{a}.", "{name} on a plain background", "a picture of the {name}",
        "a close-up of {a}", "there is {a} in this image", "my new {name}", "{name} for sale",
    ];

    private static readonly string[] SyntheticTemplates =
    [
        "a grayscale studio photo of {a}, {attr}",
        "a low-resolution black-and-white product image of {a} that is {attr} and {attr2}",
        "{A} shown alone on a dark background; it is {attr}, {attr2}",
        "a centered 28 by 28 pixel picture of {a}, {attr}",
    ];

    private static readonly string[] Distractors =
        ["photo", "studio", "person", "table", "image", "background", "window", "shelf", "floor", "light"];

    private static readonly HashSet<string> PluralOnly = new(StringComparer.Ordinal) { "trousers", "pants", "slacks" };

    /// <summary>
    /// Reads Fashion-MNIST from <paramref name="fashionDirectory"/> and writes
    /// <c>out/images/{train,test}/NNNNN.png</c> (grey 28×28), <c>out/train.jsonl</c>,
    /// <c>out/test.jsonl</c> (with "label") and <c>out/classes.json</c>.
    /// <paramref name="wordNet"/> null means the fixed name table only.
    /// </summary>
    public static FashionCaptionsResult Build(string fashionDirectory, string outDirectory, WordNet? wordNet, FashionCaptionOptions options)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.Captions);
        ArgumentOutOfRangeException.ThrowIfNegative(options.Synthetic);
        var names = ClassNames(wordNet);
        Directory.CreateDirectory(outDirectory);
        var train = WriteSplit(fashionDirectory, outDirectory, "train", options.TrainLimit, names, options);
        var test = WriteSplit(fashionDirectory, outDirectory, "test", options.TestLimit, names, options);
        new ClassPrompts(PromptNames, PromptTemplates).Write(outDirectory);
        return new FashionCaptionsResult(
            Path.Combine(outDirectory, "train.jsonl"),
            Path.Combine(outDirectory, "test.jsonl"),
            Path.Combine(outDirectory, ClassPrompts.FileName),
            train,
            test);
    }

    /// <summary>Each class's names: the table's, then its head noun's WordNet synonyms not already there (lowercased).</summary>
    public static IReadOnlyList<IReadOnlyList<string>> ClassNames(WordNet? wordNet) =>
        Names.Select((table, c) => (IReadOnlyList<string>)table
            .Concat(wordNet?.Synonyms(HeadNouns[c]).Select(s => s.ToLowerInvariant()) ?? [])
            .Distinct(StringComparer.Ordinal)
            .ToArray())
            .ToArray();

    /// <summary>The captions and synthetic captions of image <paramref name="index"/> of a split.</summary>
    public static (string[] Captions, string[] Synthetic) Describe(
        int classIndex, IReadOnlyList<IReadOnlyList<string>> names, int seed, string split, int index, int captions, int synthetic)
    {
        var random = new Random(GeneratedDataFolder.RecordSeed(seed, split == "train" ? 1 : 2, index));
        var classNames = names[classIndex];
        var caps = new string[captions];
        for (var k = 0; k < captions; k++)
        {
            var name = classNames[random.Next(classNames.Count)];
            var caption = Fill(CaptionTemplates[random.Next(CaptionTemplates.Length)], name, "", "");
            var extra = random.Next(4);
            if (extra > 0)
            {
                var nouns = Distractors.OrderBy(_ => random.Next()).Take(extra).Select(d => "a " + d).ToArray();
                caption = $"{caption.TrimEnd('.')}, with {Join(nouns)}";
            }

            caps[k] = caption;
        }

        var attributes = Attributes[classIndex];
        var rich = new string[synthetic];
        for (var k = 0; k < synthetic; k++)
        {
            var name = classNames[random.Next(classNames.Count)];
            var first = random.Next(attributes.Length);
            var second = (first + 1 + random.Next(attributes.Length - 1)) % attributes.Length;
            rich[k] = Fill(SyntheticTemplates[random.Next(SyntheticTemplates.Length)], name, attributes[first], attributes[second]);
        }

        return (caps, rich);
    }

    private static List<ImageTextRecord> WriteSplit(
        string fashionDirectory, string outDirectory, string split, int? limit, IReadOnlyList<IReadOnlyList<string>> names, FashionCaptionOptions options)
    {
        using var data = FashionMnist.Load(fashionDirectory, split == "train");
        var count = Math.Min(data.Count, limit ?? int.MaxValue);
        if (count <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(limit), limit, "the limit must be positive");
        }

        using var selected = data.Images.narrow(0, 0, count);
        using var scaled = selected.mul(255f);
        using var rounded = scaled.round();
        using var bytes = rounded.to_type(TorchSharp.torch.ScalarType.Byte);
        var pixels = bytes.data<byte>().ToArray();
        var labels = data.Labels.data<long>().ToArray();
        var (height, width) = ((int)data.Images.shape[2], (int)data.Images.shape[3]);

        var folder = Path.Combine(outDirectory, "images", split);
        Directory.CreateDirectory(folder);
        var records = new ImageTextRecord[count];
        Parallel.For(0, count, new ParallelOptions { MaxDegreeOfParallelism = Threads.Count }, i =>
        {
            var relative = $"images/{split}/{i.ToString("D5", CultureInfo.InvariantCulture)}.png";
            using (var image = Image.LoadPixelData<L8>(pixels.AsSpan(i * height * width, height * width), width, height))
            {
                image.SaveAsPng(Path.Combine(outDirectory, relative));
            }

            var label = (int)labels[i];
            var (captions, synthetic) = Describe(label, names, options.Seed, split, i, options.Captions, options.Synthetic);
            records[i] = new ImageTextRecord(relative, captions, synthetic, label, null);
        });

        ImageTextManifest.Write(Path.Combine(outDirectory, split + ".jsonl"), records);
        return [.. records];
    }

    private static string Fill(string template, string name, string attribute, string attribute2)
    {
        var withArticle = Article(name) + name;
        return template
            .Replace("{A}", char.ToUpperInvariant(withArticle[0]) + withArticle[1..], StringComparison.Ordinal)
            .Replace("{a}", withArticle, StringComparison.Ordinal)
            .Replace("{name}", name, StringComparison.Ordinal)
            .Replace("{attr2}", attribute2, StringComparison.Ordinal)
            .Replace("{attr}", attribute, StringComparison.Ordinal);
    }

    private static string Article(string name) =>
        PluralOnly.Contains(name) ? "a pair of " : "aeiou".Contains(name[0], StringComparison.Ordinal) ? "an " : "a ";

    private static string Join(string[] items) =>
        items.Length == 1 ? items[0] : string.Join(", ", items[..^1]) + " and " + items[^1];
}
