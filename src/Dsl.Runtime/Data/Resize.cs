using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Data;

/// <summary>
/// Bilinear resize of a batch to height × width, and grey-scale to RGB by repeating the channel,
/// so a dataset can feed a model declared for another input size (Fashion-MNIST at 3×64×64 for
/// an ImageNet-shaped encoder). Deterministic; the generator is not used.
/// </summary>
public sealed class Resize : IAugment
{
    public Resize(int channels, int height, int width)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(channels);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(height);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
        Channels = channels;
        Height = height;
        Width = width;
    }

    public int Channels { get; }

    public int Height { get; }

    public int Width { get; }

    public Tensor Apply(Tensor batch, Generator generator)
    {
        Augments.RequireImageBatch(batch);
        var inChannels = batch.shape[1];
        if (inChannels != Channels && inChannels != 1)
        {
            throw new ArgumentException($"cannot turn {inChannels} channels into {Channels}; only 1 channel can be repeated", nameof(batch));
        }

        using var scope = torch.NewDisposeScope();
        var sized = batch.shape[2] == Height && batch.shape[3] == Width
            ? batch.alias()
            : nn.functional.interpolate(batch, [Height, Width], mode: InterpolationMode.Bilinear, align_corners: false);
        var result = inChannels == Channels ? sized : sized.expand(-1, Channels, -1, -1).contiguous();
        return scope.MoveToOuter(result);
    }
}
