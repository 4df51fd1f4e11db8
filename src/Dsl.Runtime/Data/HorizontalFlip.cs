using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Data;

/// <summary>Mirrors each image left–right with probability <see cref="P"/>, decided per sample.</summary>
public sealed class HorizontalFlip : IAugment
{
    public HorizontalFlip(double p = 0.5)
    {
        if (p is < 0 or > 1 || double.IsNaN(p))
        {
            throw new ArgumentOutOfRangeException(nameof(p), p, "probability must be in [0, 1]");
        }

        P = p;
    }

    public double P { get; }

    public Tensor Apply(Tensor batch, Generator generator)
    {
        Augments.RequireImageBatch(batch);
        var n = batch.shape[0];
        using var scope = torch.NewDisposeScope();
        var flip = torch.rand(n, device: batch.device, generator: generator).lt(P).view(n, 1, 1, 1);
        var result = torch.where(flip, batch.flip(3), batch);
        return scope.MoveToOuter(result);
    }

    /// <summary>Mirrors exactly the samples whose flag is set (stored augmentations are replayed with this).</summary>
    public static Tensor ApplyWhere(Tensor batch, bool[] flips)
    {
        Augments.RequireImageBatch(batch);
        if (flips.Length != batch.shape[0])
        {
            throw new ArgumentException($"need one flip flag per sample ({batch.shape[0]}), got {flips.Length}");
        }

        using var scope = torch.NewDisposeScope();
        var flip = torch.tensor(flips, device: batch.device).view(flips.Length, 1, 1, 1);
        return scope.MoveToOuter(torch.where(flip, batch.flip(3), batch));
    }
}
