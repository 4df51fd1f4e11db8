using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Data;

/// <summary>(x − mean[c]) / std[c] per channel. Deterministic; the generator is not used.</summary>
public sealed class Normalize : IAugment
{
    private readonly float[] _mean;
    private readonly float[] _std;

    public Normalize(float[] mean, float[] std)
    {
        if (mean.Length == 0 || mean.Length != std.Length)
        {
            throw new ArgumentException($"mean and std need one value per channel; got {mean.Length} and {std.Length}");
        }

        if (std.Any(s => !(s > 0)))
        {
            throw new ArgumentException("every std must be positive", nameof(std));
        }

        _mean = mean.ToArray();
        _std = std.ToArray();
    }

    public IReadOnlyList<float> Mean => _mean;

    public IReadOnlyList<float> Std => _std;

    public Tensor Apply(Tensor batch, Generator generator)
    {
        Augments.RequireImageBatch(batch);
        if (batch.shape[1] != _mean.Length)
        {
            throw new ArgumentException($"batch has {batch.shape[1]} channels but Normalize was given {_mean.Length}", nameof(batch));
        }

        using var scope = torch.NewDisposeScope();
        var mean = torch.tensor(_mean, device: batch.device).view(1, -1, 1, 1);
        var std = torch.tensor(_std, device: batch.device).view(1, -1, 1, 1);
        var result = (batch - mean) / std;
        return scope.MoveToOuter(result);
    }
}
