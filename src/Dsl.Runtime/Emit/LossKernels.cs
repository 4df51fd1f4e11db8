using Dsl;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Dsl.Runtime.Emit;

/// <summary>
/// Kernels of the objective's losses (dsl/Losses.fs): each but the similarity (the [B, B]
/// logits of contrastive losses) reduces a whole batch to one number of shape [] with
/// torch.nn.functional's default mean reduction, so that a loss written in the language
/// computes what the PyTorch function of the same name computes.
/// </summary>
internal static class LossKernels
{
    public static Kernel Create(Ir.LossKind kind) => kind switch
    {
        Ir.LossKind.CrossEntropyLoss ce => (x, _) =>
            F.cross_entropy(ce.axis == 1 ? x[0] : x[0].movedim([ce.axis], [1L]), x[1], ignore_index: ce.ignoreIndex, label_smoothing: ce.smoothing),
        { IsBinaryCrossEntropyLoss: true } => (x, _) => F.binary_cross_entropy_with_logits(x[0], x[1]),
        { IsMseLoss: true } => (x, _) => F.mse_loss(x[0], x[1]),
        { IsL1Loss: true } => (x, _) => F.l1_loss(x[0], x[1]),
        Ir.LossKind.SmoothL1Loss smooth => (x, _) => F.smooth_l1_loss(x[0], x[1], beta: smooth.beta),
        Ir.LossKind.DistillLoss distill => Distill(distill.axis, distill.temperature),
        { IsInfoNceLoss: true } => InfoNce,
        { IsSimilarityLoss: true } => (x, _) => x[0].matmul(x[1].t()),
        Ir.LossKind.SoftCrossEntropyLoss soft => (x, _) => (-(x[1] * F.log_softmax(x[0], soft.axis))).sum(soft.axis).mean(),
        Ir.LossKind.ZLoss z => (x, _) => x[0].logsumexp(z.axis).square().mean(),
        { IsMeanLoss: true } => (x, _) => x[0].mean(),
        { IsMaskedMeanLoss: true } => MaskedMean,
        _ => throw new NotSupportedException($"loss {kind} has no kernel"),
    };

    /// <summary>Hinton et al. 2015: T² · Σ_axis p_t (log p_t − log p_s), p = softmax(logits / T), mean over the other positions.</summary>
    private static Kernel Distill(long axis, double temperature) => (x, _) =>
    {
        var student = F.log_softmax(x[0] / temperature, axis);
        var teacher = F.log_softmax(x[1] / temperature, axis);
        return (teacher.exp() * (teacher - student)).sum(axis).mean() * (temperature * temperature);
    };

    /// <summary>CLIP's symmetric InfoNCE (Radford et al. 2021): the mean of both directions' cross-entropy of s · x·yᵀ to the diagonal.</summary>
    private static readonly Kernel InfoNce = (x, _) =>
    {
        var logits = x[0].matmul(x[1].t());
        if (x.Length > 2)
        {
            logits = logits * x[2].reshape([]);
        }

        var targets = arange(x[0].shape[0], dtype: ScalarType.Int64, device: x[0].device);
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2;
    };

    /// <summary>Σ x·m / Σ m over m broadcast to x, and 0 (with a zero gradient) for an empty mask.</summary>
    private static readonly Kernel MaskedMean = (x, _) =>
    {
        var mask = x[1].to(x[0].dtype).expand_as(x[0]);
        var total = mask.sum();
        var sum = (x[0] * mask).sum();
        return where(total > 0, sum / total.clamp_min(1e-12), zeros_like(sum));
    };
}
