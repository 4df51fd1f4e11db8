using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Data;

/// <summary>
/// What happens to a batch of stored images before the model sees it, in three parts: resizing
/// to the model's input, the random augmentations of training, and normalisation. Reinforced
/// training replays stored augmentations in place of the random ones, so the parts stay apart.
/// </summary>
public sealed record ImagePipeline(IReadOnlyList<IAugment> Resize, IReadOnlyList<IAugment> Random, IReadOnlyList<IAugment> Normalize)
{
    /// <summary>Resize, random augmentations, normalise.</summary>
    public Tensor Train(Tensor batch, Generator generator) => Augments.Run(Augments.Run(Augments.Run(batch, Resize, generator), Random, generator), Normalize, generator);

    /// <summary>Resize and normalise, nothing random.</summary>
    public Tensor Eval(Tensor batch, Generator generator) => Augments.Run(Augments.Run(batch, Resize, generator), Normalize, generator);

    /// <summary>Resize, the given stored augmentations (one row per sample), normalise.</summary>
    public Tensor Replay(Tensor batch, StoredAugmentations stored, long[] rows, Generator generator) =>
        Augments.Run(stored.Apply(Augments.Run(batch, Resize, generator), rows), Normalize, generator);
}
