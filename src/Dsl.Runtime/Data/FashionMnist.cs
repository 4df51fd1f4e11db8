using TorchSharp;

namespace Dsl.Runtime.Data;

/// <summary>
/// Fashion-MNIST (28×28 grey-scale clothing images, 10 classes) from its four IDX files,
/// as installed by the Debian package dataset-fashion-mnist.
/// </summary>
public static class FashionMnist
{
    public const string DefaultDirectory = "/usr/share/datasets/fashion-mnist";

    public static readonly string[] ClassNames =
    [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ];

    private const string InstallHint = "install the Debian package dataset-fashion-mnist or pass --data DIR";

    private const string DataHint = $"check --data DIR (the Debian package dataset-fashion-mnist installs the files in {DefaultDirectory})";

    /// <summary>
    /// Loads the training split (train-*) or the test split (t10k-*) from
    /// <paramref name="directory"/>; each file may be gzip-compressed (.gz) or not.
    /// </summary>
    public static LabeledImages Load(string directory, bool train)
    {
        if (!Directory.Exists(directory))
        {
            throw new DataError(directory, WithHint(directory, "Fashion-MNIST directory not found"));
        }

        var split = train ? "train" : "t10k";
        var imagesPath = FindFile(directory, $"{split}-images-idx3-ubyte");
        var labelsPath = FindFile(directory, $"{split}-labels-idx1-ubyte");

        torch.Tensor? images = null;
        torch.Tensor? labels = null;
        try
        {
            images = Idx.ReadImages(imagesPath);
            labels = Idx.ReadLabels(labelsPath);
            Validate(images, imagesPath, labels, labelsPath);
            return new LabeledImages(images, labels, Array.AsReadOnly(ClassNames.ToArray()));
        }
        catch
        {
            images?.Dispose();
            labels?.Dispose();
            throw;
        }
    }

    /// <summary>The gzip file if present, else the uncompressed one.</summary>
    private static string FindFile(string directory, string name)
    {
        var plain = Path.Combine(directory, name);
        var gzip = plain + ".gz";
        if (File.Exists(gzip))
        {
            return gzip;
        }

        if (File.Exists(plain))
        {
            return plain;
        }

        throw new DataError(gzip, WithHint(directory, $"file not found (nor {name} uncompressed)"));
    }

    private static void Validate(torch.Tensor images, string imagesPath, torch.Tensor labels, string labelsPath)
    {
        var imageCount = images.shape[0];
        var labelCount = labels.shape[0];
        if (imageCount != labelCount)
        {
            throw new DataError(labelsPath, $"{labelCount} labels but {imageCount} images in {imagesPath}");
        }

        using var largest = labels.max();
        var maxLabel = largest.item<long>();
        if (maxLabel >= ClassNames.Length)
        {
            throw new DataError(labelsPath, $"label {maxLabel} is out of range; Fashion-MNIST has {ClassNames.Length} classes");
        }
    }

    private static string WithHint(string directory, string message) =>
        $"{message}; {(IsDefaultDirectory(directory) ? InstallHint : DataHint)}";

    private static bool IsDefaultDirectory(string directory) =>
        string.Equals(
            Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory)),
            DefaultDirectory,
            StringComparison.Ordinal);
}
