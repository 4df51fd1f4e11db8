using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Dsl.Runtime.Emit;

/// <summary>
/// Where a module's BatchNorms take their training statistics from: this process's batch, or
/// (<see cref="World"/> set, the trainer's SyncBatchNorm option) every rank's.
/// </summary>
public sealed class BatchStatistics
{
    public Distributed.World? World { get; set; }
}

/// <summary>Kernels of the normalisation ops.</summary>
internal static class NormKernels
{
    /// <summary>
    /// Batch statistics and an update of running_mean/running_var in training mode, the running
    /// statistics in eval mode. num_batches_tracked counts training batches, as PyTorch's
    /// BatchNorm module does (the functional form alone would not). While the module's
    /// <see cref="BatchStatistics.World"/> is set, training statistics are over every rank's batch.
    /// </summary>
    public static Kernel BatchNorm(double eps, double momentum, NodeParams parameters, BatchStatistics statistics)
    {
        var weight = parameters.Optional("weight");
        var bias = parameters.Optional("bias");
        var runningMean = parameters.Required("running_mean");
        var runningVar = parameters.Required("running_var");
        var batchesTracked = parameters.Optional("num_batches_tracked");
        return (x, training) =>
        {
            if (training)
            {
                batchesTracked?.add_(1);
            }

            return training && statistics.World is { Size: > 1 } world
                ? Distributed.SyncBatchNorm.Forward(x[0], world, runningMean, runningVar, weight, bias, momentum, eps)
                : F.batch_norm(x[0], runningMean, runningVar, weight, bias, training, momentum, eps);
        };
    }

    /// <summary>Over the last axis; weight only when affine, bias only when affine and not gain-only.</summary>
    public static Kernel LayerNorm(int features, double eps, bool affine, bool hasBias, NodeParams parameters)
    {
        var weight = affine ? parameters.Required("weight") : null;
        var bias = hasBias ? parameters.Required("bias") : null;
        long[] normalizedShape = [features];
        return (x, _) => F.layer_norm(x[0], normalizedShape, weight, bias, eps);
    }

    /// <summary>x * rsqrt(mean(x², last axis) + eps) * weight.</summary>
    public static Kernel RmsNorm(double eps, NodeParams parameters)
    {
        var weight = parameters.Required("weight");
        return (x, _) =>
        {
            using var squared = x[0].square();
            using var meanSquare = squared.mean([-1], keepdim: true);
            using var shifted = meanSquare.add(eps);
            using var inverseRms = shifted.rsqrt();
            using var normalized = x[0].mul(inverseRms);
            return normalized.mul(weight);
        };
    }

    public static Kernel GroupNorm(int groups, double eps, NodeParams parameters)
    {
        var weight = parameters.Optional("weight");
        var bias = parameters.Optional("bias");
        return (x, _) => F.group_norm(x[0], groups, weight, bias, eps);
    }

    /// <summary>L2 normalisation along an axis, eps 1e-12 like torch.nn.functional.normalize.</summary>
    public static Kernel Normalize(int axis) =>
        (x, _) => F.normalize(x[0], p: 2.0, dim: axis, eps: 1e-12);
}
