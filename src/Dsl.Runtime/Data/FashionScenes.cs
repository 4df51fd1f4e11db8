using System.Globalization;
using Dsl.Runtime.Checkpoints;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace Dsl.Runtime.Data;

/// <summary>Options of <see cref="FashionScenes.Build"/>.</summary>
public sealed record FashionScenesOptions
{
    /// <summary>Canvas side in pixels (square); at least the source items' side.</summary>
    public int Size { get; init; } = 64;

    public int Train { get; init; } = 10_000;

    public int Test { get; init; } = 2_000;

    public int Seed { get; init; }

    public int MinItems { get; init; } = 1;

    public int MaxItems { get; init; } = 4;

    public double MinScale { get; init; } = 0.75;

    public double MaxScale { get; init; } = 1.5;
}

/// <summary>
/// One item placed on a scene: source item <see cref="Source"/> of the split (class
/// <see cref="Class"/>), scaled to <see cref="Width"/>×<see cref="Height"/>, its top-left corner
/// at (<see cref="X"/>, <see cref="Y"/>), at depth <see cref="Depth"/> in depth units (millimetres).
/// </summary>
public sealed record SceneItem(int Source, int Class, int X, int Y, int Width, int Height, ushort Depth);

/// <summary>A composed scene, row-major: grey pixels, class ids (0 background, k + 1 class k) and depth in millimetres.</summary>
public sealed record Scene(byte[] Image, byte[] Mask, ushort[] Depth);

/// <summary>What <see cref="FashionScenes.Build"/> wrote.</summary>
public sealed record FashionScenesResult(string TrainManifest, string TestManifest, string ClassesFile, int Train, int Test);

/// <summary>
/// Dense-prediction scenes made of Fashion-MNIST items: each scene is a square grey canvas with
/// 1–4 items at random positions, scales (bilinear) and distinct depths; a nearer item hides a
/// farther one. A pixel belongs to an item when the item's scaled intensity is above
/// <see cref="ForegroundThreshold"/>; the image, the class mask and the depth map are all decided by
/// the nearest item whose foreground covers the pixel, and the background is black, class 0 and
/// at the far plane. Scene i depends only on (seed, split, i); train scenes use only training
/// items, test scenes only test items. See docs/dense.md.
/// </summary>
public static class FashionScenes
{
    /// <summary>A scaled item's pixel is foreground when its 8-bit value is above this (≈ 0.1 of full scale).</summary>
    public const byte ForegroundThreshold = 25;

    /// <summary>The background's depth: 10 m, in millimetres.</summary>
    public const ushort FarPlane = 10_000;

    /// <summary>The nearest an item may be: 1 m, in millimetres.</summary>
    public const ushort NearPlane = 1_000;

    /// <summary>What classes.json says of the folder, so the tool knows it made it.</summary>
    public const string Command = "data fashion-scenes";

    private static readonly string[] OwnEntries = ["train.jsonl", "test.jsonl", DenseManifest.ClassesFile, "images", "masks", "depth"];

    /// <summary>"background", then Fashion-MNIST's class names: class id k + 1 is Fashion-MNIST class k.</summary>
    public static IReadOnlyList<string> ClassNames => ["background", .. FashionMnist.ClassNames];

    /// <summary>
    /// The items of scene <paramref name="index"/> of a split (1 train, 2 test), drawn from its
    /// own generator: count, then per item source, scale, position and depth (distinct).
    /// </summary>
    public static SceneItem[] Plan(int seed, int split, int index, int sourceCount, int sourceHeight, int sourceWidth, IReadOnlyList<int> labels, FashionScenesOptions options)
    {
        var random = new Random(GeneratedDataFolder.RecordSeed(seed, split, index));
        var count = random.Next(options.MinItems, options.MaxItems + 1);
        var used = new HashSet<ushort>();
        var items = new SceneItem[count];
        for (var k = 0; k < count; k++)
        {
            var source = random.Next(sourceCount);
            var maxScale = Math.Min(options.MaxScale, Math.Min((double)options.Size / sourceHeight, (double)options.Size / sourceWidth));
            var scale = Math.Min(options.MinScale, maxScale) + (random.NextDouble() * Math.Max(0, maxScale - options.MinScale));
            var height = Math.Clamp((int)Math.Round(sourceHeight * scale), 1, options.Size);
            var width = Math.Clamp((int)Math.Round(sourceWidth * scale), 1, options.Size);
            var x = random.Next(options.Size - width + 1);
            var y = random.Next(options.Size - height + 1);
            ushort depth;
            do
            {
                depth = (ushort)random.Next(NearPlane, FarPlane);
            }
            while (!used.Add(depth));

            items[k] = new SceneItem(source, labels[source], x, y, width, height, depth);
        }

        return items;
    }

    /// <summary>
    /// Paints the items farthest first, so a nearer item's foreground overwrites image, mask and
    /// depth; of two at one depth, the later in the list wins. <paramref name="sources"/> holds
    /// each source item's pixels (row-major, <paramref name="sourceHeight"/>×<paramref name="sourceWidth"/>).
    /// </summary>
    public static Scene Compose(int size, Func<int, ReadOnlyMemory<byte>> sources, int sourceHeight, int sourceWidth, IReadOnlyList<SceneItem> items)
    {
        var image = new byte[size * size];
        var mask = new byte[size * size];
        var depth = new ushort[size * size];
        Array.Fill(depth, FarPlane);
        foreach (var item in items.Select((item, order) => (item, order)).OrderByDescending(p => p.item.Depth).ThenBy(p => p.order).Select(p => p.item))
        {
            var scaled = Bilinear(sources(item.Source).Span, sourceHeight, sourceWidth, item.Height, item.Width);
            for (var y = 0; y < item.Height; y++)
            {
                for (var x = 0; x < item.Width; x++)
                {
                    var value = scaled[(y * item.Width) + x];
                    if (value > ForegroundThreshold)
                    {
                        var at = ((item.Y + y) * size) + item.X + x;
                        image[at] = value;
                        mask[at] = (byte)(item.Class + 1);
                        depth[at] = item.Depth;
                    }
                }
            }
        }

        return new Scene(image, mask, depth);
    }

    /// <summary>Bilinear resampling with pixel centres aligned (torch's align_corners = false), rounded to bytes.</summary>
    public static byte[] Bilinear(ReadOnlySpan<byte> source, int height, int width, int toHeight, int toWidth)
    {
        var result = new byte[toHeight * toWidth];
        for (var y = 0; y < toHeight; y++)
        {
            var sy = Math.Clamp(((y + 0.5) * height / toHeight) - 0.5, 0, height - 1);
            var y0 = (int)sy;
            var y1 = Math.Min(y0 + 1, height - 1);
            var fy = sy - y0;
            for (var x = 0; x < toWidth; x++)
            {
                var sx = Math.Clamp(((x + 0.5) * width / toWidth) - 0.5, 0, width - 1);
                var x0 = (int)sx;
                var x1 = Math.Min(x0 + 1, width - 1);
                var fx = sx - x0;
                var top = (source[(y0 * width) + x0] * (1 - fx)) + (source[(y0 * width) + x1] * fx);
                var bottom = (source[(y1 * width) + x0] * (1 - fx)) + (source[(y1 * width) + x1] * fx);
                result[(y * toWidth) + x] = (byte)Math.Clamp(Math.Round((top * (1 - fy)) + (bottom * fy)), 0, 255);
            }
        }

        return result;
    }

    /// <summary>
    /// Reads Fashion-MNIST from <paramref name="fashionDirectory"/> and writes
    /// <c>out/{train,test}.jsonl</c> (<see cref="DenseManifest"/>), <c>out/images/SPLIT/NNNNN.png</c>
    /// (8-bit grey), <c>out/masks/SPLIT/NNNNN.png</c> (8-bit class ids), <c>out/depth/SPLIT/NNNNN.png</c>
    /// (16-bit millimetres) and <c>out/classes.json</c>. Everything is written into a temporary
    /// folder beside <paramref name="outDirectory"/> and renamed into place at the end, so an
    /// interrupted build leaves no half data set. An existing folder is replaced only when empty or
    /// made by this command and holding nothing else.
    /// </summary>
    /// <exception cref="OutputFolderError">The folder holds files this command did not make; nothing was written.</exception>
    public static FashionScenesResult Build(string fashionDirectory, string outDirectory, FashionScenesOptions options)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.Train);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.Test);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.MinItems);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxItems, options.MinItems);
        if (!(options.MinScale > 0 && options.MaxScale >= options.MinScale))
        {
            throw new ArgumentOutOfRangeException(nameof(options), "scales must satisfy 0 < MinScale ≤ MaxScale");
        }

        var full = GeneratedDataFolder.Write(outDirectory, Command, OwnEntries, temporary =>
        {
            using (var train = FashionMnist.Load(fashionDirectory, train: true))
            {
                CheckSize(train, fashionDirectory, options.Size);
                WriteSplit(temporary, "train", 1, train, options.Train, options);
            }

            using (var test = FashionMnist.Load(fashionDirectory, train: false))
            {
                CheckSize(test, fashionDirectory, options.Size);
                WriteSplit(temporary, "test", 2, test, options.Test, options);
            }

            DenseManifest.WriteClasses(
                temporary,
                new DenseClasses(ClassNames, DenseManifest.DefaultIgnoreIndex, DenseManifest.DefaultDepthScale, FarPlane * DenseManifest.DefaultDepthScale, 1),
                GeneratedDataFolder.Marker(Command));
        });

        return new FashionScenesResult(
            Path.Combine(full, "train.jsonl"), Path.Combine(full, "test.jsonl"), Path.Combine(full, DenseManifest.ClassesFile), options.Train, options.Test);
    }

    private static void CheckSize(LabeledImages data, string directory, int size)
    {
        if (data.Images.shape[2] > size || data.Images.shape[3] > size)
        {
            throw new DataError(directory, $"items are {data.Images.shape[3]}×{data.Images.shape[2]}, larger than the {size}×{size} canvas; give a larger --size");
        }
    }

    private static void WriteSplit(string folder, string split, int splitCode, LabeledImages data, int count, FashionScenesOptions options)
    {
        var (h, w) = ((int)data.Images.shape[2], (int)data.Images.shape[3]);
        var pixels = GeneratedDataFolder.GreyBytes(data, (int)data.Images.shape[0]);
        var labels = data.Labels.data<long>().ToArray().Select(l => (int)l).ToArray();
        var sources = new Func<int, ReadOnlyMemory<byte>>(i => pixels.AsMemory(i * h * w, h * w));
        foreach (var kind in new[] { "images", "masks", "depth" })
        {
            Directory.CreateDirectory(Path.Combine(folder, kind, split));
        }

        var records = new DenseRecord[count];
        Parallel.For(0, count, new ParallelOptions { MaxDegreeOfParallelism = Threads.Count }, i =>
        {
            var items = Plan(options.Seed, splitCode, i, labels.Length, h, w, labels, options);
            var scene = Compose(options.Size, sources, h, w, items);
            var name = $"{split}/{i.ToString("D5", CultureInfo.InvariantCulture)}.png";
            using (var image = Image.LoadPixelData<L8>(scene.Image, options.Size, options.Size))
            {
                image.SaveAsPng(Path.Combine(folder, "images", name), GeneratedDataFolder.GreyEncoder);
            }

            DenseManifest.WriteMask(Path.Combine(folder, "masks", name), scene.Mask, options.Size, options.Size);
            DenseManifest.WriteDepth(Path.Combine(folder, "depth", name), scene.Depth, options.Size, options.Size);
            records[i] = new DenseRecord($"images/{name}", $"masks/{name}", $"depth/{name}");
        });

        DenseManifest.Write(Path.Combine(folder, split + ".jsonl"), records);
    }
}
