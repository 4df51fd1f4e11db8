using static TorchSharp.torch;

namespace Dsl.Runtime.Distributed;

/// <summary>
/// BatchNorm over the global batch of a data-parallel run (PyTorch's SyncBatchNorm, Horovod's
/// hvd.SyncBatchNorm): the mean and variance are those of every rank's slice together, so N ranks
/// with B/N examples each normalise as one process with B does. Each statistic is one allreduce
/// in the forward pass and one of its gradient in the backward pass (<see cref="CrossRankSum"/>);
/// the running statistics are updated from the global ones, identically on every rank.
/// </summary>
public static class SyncBatchNorm
{
    /// <summary>Training-mode BatchNorm of <paramref name="x"/> [B, C, …] with statistics over every rank.</summary>
    public static Tensor Forward(
        Tensor x,
        World world,
        Tensor runningMean,
        Tensor runningVar,
        Tensor? weight,
        Tensor? bias,
        double momentum,
        double eps)
    {
        var channels = x.shape[1];
        var reduced = new long[x.dim() - 1];
        reduced[0] = 0;
        for (var i = 2; i < x.dim(); i++)
        {
            reduced[i - 1] = i;
        }

        var perChannel = Enumerable.Repeat(1L, (int)x.dim()).ToArray();
        perChannel[1] = channels;
        // World.Shard gives every rank the same share of each batch, so the global count needs no exchange.
        var count = x.numel() / (double)channels * world.Size;

        // Two passes, as batch_norm computes them: the mean, then the mean square deviation from it.
        var mean = CrossRankSum.Apply(x.sum(reduced), world) / count;
        var centered = x - mean.view(perChannel);
        var variance = CrossRankSum.Apply(centered.square().sum(reduced), world) / count;
        var y = centered * (variance + eps).rsqrt().view(perChannel);
        if (weight is not null)
        {
            y = y * weight.view(perChannel);
        }

        if (bias is not null)
        {
            y = y + bias.view(perChannel);
        }

        using (no_grad())
        {
            // PyTorch's update: running = (1 − momentum)·running + momentum·statistic, the variance unbiased.
            runningMean.mul_(1 - momentum).add_(mean.detach() * momentum);
            runningVar.mul_(1 - momentum).add_(variance.detach() * (momentum * count / Math.Max(1, count - 1)));
        }

        return y;
    }
}

/// <summary>
/// The sum of a tensor over every rank, differentiable: the gradient of each rank's input is the
/// sum of every rank's gradient of the result, since each rank's loss depends on every rank's
/// input through it (the backward of PyTorch's SyncBatchNorm allreduces the same sums).
/// </summary>
internal sealed class CrossRankSum : autograd.SingleTensorFunction<CrossRankSum>
{
    public override string Name => nameof(CrossRankSum);

    public static Tensor Apply(Tensor local, World world) => apply(local, world);

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var world = (World)vars[1];
        ctx.save_data("world", world);
        return world.SumOver((Tensor)vars[0]);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output)
    {
        var world = (World)ctx.get_data("world");
        return [world.SumOver(grad_output), null!];
    }
}
