using static TorchSharp.torch;

namespace Dsl.Runtime.Data;

/// <summary>Checks shared by the <see cref="IAugment"/> implementations.</summary>
internal static class Augments
{
    public static void RequireImageBatch(Tensor batch)
    {
        if (batch.dim() != 4)
        {
            throw new ArgumentException($"expected an image batch [N, C, H, W], got [{string.Join(", ", batch.shape)}]", nameof(batch));
        }
    }
}
