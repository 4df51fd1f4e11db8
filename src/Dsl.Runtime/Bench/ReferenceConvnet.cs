using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Dsl.Runtime.Bench;

/// <summary>
/// The hand-written TorchSharp twin of examples/fashion/convnet.dsl (1×28×28 in, 10 classes),
/// used to check the compiled graph's numerics and to compare its speed. Built from
/// nn.Sequential so that its state_dict keys (<c>0.weight</c>, <c>1.running_mean</c>, …)
/// are the ones the DSL gives the same layers.
/// </summary>
public static class ReferenceConvnet
{
    public const int Classes = 10;

    /// <summary>[1, 28, 28]: the input shape without the batch axis.</summary>
    public static readonly long[] InputShape = [1, 28, 28];

    /// <summary>
    /// Index: 0 conv 1→32, 1 bn, 2 relu, 3 conv 32→32, 4 bn, 5 relu, 6 maxpool,
    /// 7 conv 32→64, 8 bn, 9 relu, 10 conv 64→64, 11 bn, 12 relu, 13 maxpool,
    /// 14 flatten, 15 linear 64·7·7→10. Weights use TorchSharp's default inits,
    /// drawn from the global generator (seed it with torch.manual_seed for repeatability).
    /// </summary>
    public static Sequential Create() =>
        nn.Sequential(
            Conv(1, 32), nn.BatchNorm2d(32), nn.ReLU(),
            Conv(32, 32), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
            Conv(32, 64), nn.BatchNorm2d(64), nn.ReLU(),
            Conv(64, 64), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, Classes));

    /// <summary>
    /// Its convolutions, for <see cref="Emit.ConvolutionBackend.Verify"/>: the hand-written
    /// model should run on the backend a GraphModule of the same layers would choose.
    /// </summary>
    public static IReadOnlyList<Emit.ConvShape> ConvShapes { get; } =
    [
        Shape(1, 32, 28), Shape(32, 32, 28), Shape(32, 64, 14), Shape(64, 64, 14),
    ];

    private static Emit.ConvShape Shape(long inChannels, long outChannels, long size) =>
        new(inChannels, outChannels, [3, 3], [1, 1], [1, 1], [1, 1], 1, [size, size]);

    private static Conv2d Conv(long inChannels, long outChannels) =>
        nn.Conv2d(inChannels, outChannels, kernel_size: 3, padding: 1, bias: false);
}
