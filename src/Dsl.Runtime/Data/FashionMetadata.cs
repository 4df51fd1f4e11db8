using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using Dsl.Runtime.Checkpoints;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace Dsl.Runtime.Data;

/// <summary>Options of <see cref="FashionMetadata.Build"/>.</summary>
public sealed record FashionMetadataOptions
{
    /// <summary>Records of the train split: the first N training items.</summary>
    public int Train { get; init; } = 60_000;

    /// <summary>Records of the test split: the first N test items.</summary>
    public int Test { get; init; } = 10_000;

    public int Seed { get; init; }

    /// <summary>The probability that the one-hot group (dims 0–3) is the item's true group; otherwise it is one of the other three, uniformly.</summary>
    public double GroupAccuracy { get; init; } = 0.8;
}

/// <summary>What <see cref="FashionMetadata.Build"/> wrote.</summary>
public sealed record FashionMetadataResult(string TrainManifest, string TestManifest, string ClassesFile, int Train, int Test);

/// <summary>
/// Image + metadata records made of Fashion-MNIST: each record is a Fashion-MNIST item as is
/// (28×28 8-bit grey PNG), its class, and a synthetic side channel of 8 numbers such as a real
/// data set's tabular fields would give: dims 0–3 a one-hot of the item's coarse group
/// (<see cref="Groups"/>), the true one with probability <see cref="FashionMetadataOptions.GroupAccuracy"/>
/// and else one of the other three, and dims 4–7 standard normal noise that carries nothing.
/// Record i of a split depends only on (seed, split, i). See docs/records.md.
/// </summary>
public static class FashionMetadata
{
    /// <summary>What classes.json says of the folder, so the tool knows it made it.</summary>
    public const string Command = "data fashion-metadata";

    /// <summary>Numbers per record's metadata.</summary>
    public const int MetadataSize = 8;

    private static readonly string[] OwnEntries = ["train.jsonl", "test.jsonl", DenseManifest.ClassesFile, "images"];

    private static readonly JsonWriterOptions LineOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>The coarse groups, in the order of the one-hot dims 0–3.</summary>
    public static IReadOnlyList<string> Groups { get; } = ["tops", "body", "footwear", "bag"];

    /// <summary>
    /// The group of each Fashion-MNIST class: tops (T-shirt/top, Pullover, Coat, Shirt), body
    /// (Trouser, Dress), footwear (Sandal, Sneaker, Ankle boot), bag (Bag).
    /// </summary>
    public static IReadOnlyList<int> GroupOfClass { get; } = [0, 1, 0, 1, 0, 2, 0, 2, 3, 2];

    /// <summary>
    /// The metadata of record <paramref name="index"/> of a split (1 train, 2 test) whose class is
    /// <paramref name="label"/>, from its own generator: the group decision, the wrong group when
    /// it is wrong, then four normal draws (Box–Muller).
    /// </summary>
    public static float[] Metadata(int seed, int split, int index, int label, double groupAccuracy)
    {
        var random = new Random(GeneratedDataFolder.RecordSeed(seed, split, index));
        var group = GroupOfClass[label];
        if (random.NextDouble() >= groupAccuracy)
        {
            group = (group + 1 + random.Next(Groups.Count - 1)) % Groups.Count;
        }

        var metadata = new float[MetadataSize];
        metadata[group] = 1f;
        for (var k = Groups.Count; k < MetadataSize; k++)
        {
            // 1 − U is in (0, 1], so the logarithm is finite.
            var radius = Math.Sqrt(-2 * Math.Log(1 - random.NextDouble()));
            metadata[k] = (float)(radius * Math.Cos(2 * Math.PI * random.NextDouble()));
        }

        return metadata;
    }

    /// <summary>
    /// Reads Fashion-MNIST from <paramref name="fashionDirectory"/> and writes
    /// <c>out/{train,test}.jsonl</c> (<c>{"image": "images/SPLIT/NNNNN.png", "metadata": [8 numbers], "label": k}</c>
    /// per line, a <c>records</c> manifest), <c>out/images/SPLIT/NNNNN.png</c> (8-bit grey) and
    /// <c>out/classes.json</c> (the class names, one image channel). Everything is written into a
    /// temporary folder beside <paramref name="outDirectory"/> and renamed into place at the end; an
    /// existing folder is replaced only when empty or made by this command and holding nothing else.
    /// </summary>
    /// <exception cref="OutputFolderError">The folder holds files this command did not make; nothing was written.</exception>
    /// <exception cref="DataError">Fashion-MNIST is missing, or a split has fewer items than asked for.</exception>
    public static FashionMetadataResult Build(string fashionDirectory, string outDirectory, FashionMetadataOptions options)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.Train);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.Test);
        if (!(options.GroupAccuracy >= 0 && options.GroupAccuracy <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.GroupAccuracy, "GroupAccuracy is a probability, in [0, 1]");
        }

        var full = GeneratedDataFolder.Write(outDirectory, Command, OwnEntries, temporary =>
        {
            foreach (var (split, code, count) in new[] { ("train", 1, options.Train), ("test", 2, options.Test) })
            {
                using var data = FashionMnist.Load(fashionDirectory, train: code == 1);
                if (data.Count < count)
                {
                    throw new DataError(fashionDirectory, $"the {split} split has {data.Count} items; asked for {count} (--{split})");
                }

                WriteSplit(temporary, split, code, data, count, options);
            }

            DenseManifest.WriteClasses(temporary, new DenseClasses(FashionMnist.ClassNames, ImageChannels: 1), GeneratedDataFolder.Marker(Command));
        });

        return new FashionMetadataResult(
            Path.Combine(full, "train.jsonl"), Path.Combine(full, "test.jsonl"), Path.Combine(full, DenseManifest.ClassesFile), options.Train, options.Test);
    }

    private static void WriteSplit(string folder, string split, int splitCode, LabeledImages data, int count, FashionMetadataOptions options)
    {
        var (h, w) = ((int)data.Images.shape[2], (int)data.Images.shape[3]);
        var pixels = GeneratedDataFolder.GreyBytes(data, count);
        var labels = data.Labels.data<long>().ToArray();
        Directory.CreateDirectory(Path.Combine(folder, "images", split));
        var lines = new string[count];
        Parallel.For(0, count, new ParallelOptions { MaxDegreeOfParallelism = Threads.Count }, i =>
        {
            var name = $"images/{split}/{i.ToString("D5", CultureInfo.InvariantCulture)}.png";
            using (var image = Image.LoadPixelData<L8>(pixels.AsSpan(i * h * w, h * w), w, h))
            {
                image.SaveAsPng(Path.Combine(folder, name), GeneratedDataFolder.GreyEncoder);
            }

            var label = (int)labels[i];
            lines[i] = Line(name, Metadata(options.Seed, splitCode, i, label, options.GroupAccuracy), label);
        });

        File.WriteAllLines(Path.Combine(folder, split + ".jsonl"), lines, new System.Text.UTF8Encoding(false));
    }

    private static string Line(string image, float[] metadata, int label)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, LineOptions))
        {
            json.WriteStartObject();
            json.WriteString("image", image);
            json.WriteStartArray("metadata");
            foreach (var x in metadata)
            {
                // The shortest text that reads back as the same float32.
                json.WriteNumberValue(x);
            }

            json.WriteEndArray();
            json.WriteNumber("label", label);
            json.WriteEndObject();
        }

        return System.Text.Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }
}
