using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Data;

/// <summary>
/// Augmentations kept as parameters rather than pixels (MobileCLIP's DataCompDR stores, for each
/// image, N augmentations and the teachers' embeddings of each; MobileCLIP, arXiv 2311.17049; apple/ml-mobileclip). A row is
/// (crop top, crop left, flip) for the <see cref="RandomCrop"/> and <see cref="HorizontalFlip"/>
/// of a recipe; rows are indexed image·N + k.
/// </summary>
public sealed class StoredAugmentations
{
    /// <param name="parameters">int64 [rows, 3]: crop top, crop left, flip (0 or 1).</param>
    /// <param name="crop">The crop the offsets belong to, or null when the recipe has none.</param>
    public StoredAugmentations(long[,] parameters, RandomCrop? crop)
    {
        if (parameters.GetLength(1) != 3)
        {
            throw new ArgumentException($"stored augmentations have 3 parameters per row, got {parameters.GetLength(1)}", nameof(parameters));
        }

        Parameters = parameters;
        Crop = crop;
    }

    public long[,] Parameters { get; }

    public RandomCrop? Crop { get; }

    public int Rows => Parameters.GetLength(0);

    /// <summary>
    /// Draws <paramref name="count"/> rows for images at the given size, as the recipe's random
    /// augmentations would (any crop and flip among <paramref name="random"/>; other kinds are refused,
    /// since they could not be replayed).
    /// </summary>
    public static StoredAugmentations Sample(int count, long height, long width, IReadOnlyList<IAugment> random, Generator generator)
    {
        RandomCrop? crop = null;
        HorizontalFlip? flip = null;
        foreach (var augment in random)
        {
            switch (augment)
            {
                case RandomCrop c: crop = c; break;
                case HorizontalFlip f: flip = f; break;
                default: throw new NotSupportedException($"{augment.GetType().Name} cannot be stored as parameters; reinforced data supports randomCrop and hflip");
            }
        }

        var parameters = new long[count, 3];
        using var scope = NewDisposeScope();
        if (crop is not null)
        {
            var tops = randint((2 * crop.Padding) + height - crop.Size + 1, [count], generator: generator).data<long>().ToArray();
            var lefts = randint((2 * crop.Padding) + width - crop.Size + 1, [count], generator: generator).data<long>().ToArray();
            for (var i = 0; i < count; i++)
            {
                (parameters[i, 0], parameters[i, 1]) = (tops[i], lefts[i]);
            }
        }

        if (flip is not null)
        {
            var draws = rand(count, generator: generator).data<float>().ToArray();
            for (var i = 0; i < count; i++)
            {
                parameters[i, 2] = draws[i] < flip.P ? 1 : 0;
            }
        }

        return new StoredAugmentations(parameters, crop);
    }

    /// <summary>Applies row <paramref name="rows"/>[i] to sample i.</summary>
    public Tensor Apply(Tensor batch, long[] rows)
    {
        var result = batch;
        if (Crop is not null)
        {
            result = Crop.ApplyAt(result, rows.Select(r => Parameters[r, 0]).ToArray(), rows.Select(r => Parameters[r, 1]).ToArray());
        }

        var flips = rows.Select(r => Parameters[r, 2] != 0).ToArray();
        return flips.Any(f => f) ? HorizontalFlip.ApplyWhere(result, flips) : result;
    }

    /// <summary>As an int64 [rows, 3] tensor, for storing.</summary>
    public Tensor ToTensor() => tensor(Parameters.Cast<long>().ToArray(), [Rows, 3]);

    /// <summary>From an int64 [rows, 3] tensor.</summary>
    public static StoredAugmentations FromTensor(Tensor stored, RandomCrop? crop)
    {
        var values = stored.data<long>().ToArray();
        var rows = (int)stored.shape[0];
        var parameters = new long[rows, 3];
        Buffer.BlockCopy(values, 0, parameters, 0, values.Length * sizeof(long));
        return new StoredAugmentations(parameters, crop);
    }
}
