using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Data;

/// <summary>Running <see cref="IAugment"/> lists, and checks shared by the implementations.</summary>
public static class Augments
{
    /// <summary>Runs <paramref name="batch"/> through the transforms in order (inside the caller's DisposeScope).</summary>
    public static Tensor Run(Tensor batch, IReadOnlyList<IAugment> transforms, Generator generator)
    {
        foreach (var transform in transforms)
        {
            batch = transform.Apply(batch, generator);
        }

        return batch;
    }

    internal static void RequireImageBatch(Tensor batch)
    {
        if (batch.dim() != 4)
        {
            throw new ArgumentException($"expected an image batch [N, C, H, W], got [{string.Join(", ", batch.shape)}]", nameof(batch));
        }
    }
}
