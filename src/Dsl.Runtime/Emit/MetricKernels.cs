using Dsl;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Dsl.Runtime.Emit;

/// <summary>
/// Kernels of the evaluation's metrics (dsl/Metrics.fs): each maps a batch to its sufficient
/// statistics (shape [2], or [2, classes] for mIoU), float64 with no batch axis, which
/// <see cref="Training.MetricAccumulator"/> sums over the data set and finalizes. Counts are
/// taken as int64 and sums of values in float64, so a count of millions of pixels is exact (float32
/// stops at 2^24) and a data set's sum is not rounded per batch. They run under no_grad: a metric
/// measures a model, it is not differentiated.
/// </summary>
internal static class MetricKernels
{
    public static Kernel Create(Ir.MetricKind kind) => kind switch
    {
        Ir.MetricKind.AccuracyMetric a => (x, _) => Guarded(() => Accuracy(x[0], x[1], a.axis, a.ignoreIndex)),
        Ir.MetricKind.TopKMetric t => (x, _) => Guarded(() => TopK(x[0], x[1], t.k, t.axis, t.ignoreIndex)),
        Ir.MetricKind.MiouMetric m => (x, _) => Guarded(() => Miou(x[0], x[1], m.classes, m.axis, m.ignoreIndex)),
        Ir.MetricKind.PixelAccuracyMetric p => (x, _) => Guarded(() => PixelAccuracy(x[0], x[1], p.axis, p.ignoreIndex)),
        { IsRmseMetric: true } => (x, _) => Guarded(() => Depth(x, (p, t) => (p - t).square())),
        { IsAbsRelMetric: true } => (x, _) => Guarded(() => Depth(x, (p, t) => (p - t).abs() / t)),
        // Eigen et al. 2014 (and monodepth's evaluation): a pixel is within the threshold when
        // max(p/t, t/p) < 1.25; a prediction ≤ 0 never is (the ratios would be negative).
        { IsDelta1Metric: true } => (x, _) => Guarded(() => Depth(x, (p, t) => maximum(p / t, t / p).lt(1.25).logical_and(p.gt(0)).to(ScalarType.Float64))),
        Ir.MetricKind.PerplexityMetric p => (x, _) => Guarded(() => Perplexity(x[0], x[1], p.axis, p.ignoreIndex)),
        { IsMeanMetric: true } => (x, _) => Guarded(() => Mean(x[0])),
        _ => throw new NotSupportedException($"metric {kind} has no kernel"),
    };

    private static Tensor Guarded(Func<Tensor> stats)
    {
        using var noGrad = no_grad();
        return stats();
    }

    /// <summary>Two statistics as one float64 vector [a, b].</summary>
    private static Tensor Pair(Tensor a, Tensor b) => stack([a.to(ScalarType.Float64), b.to(ScalarType.Float64)]);

    /// <summary>timm's accuracy: argmax along the class axis equals the label, over the labels that are not ignored.</summary>
    private static Tensor Accuracy(Tensor logits, Tensor labels, long axis, long ignoreIndex)
    {
        var counted = labels.ne(ignoreIndex);
        var correct = logits.argmax(axis).eq(labels).logical_and(counted);
        return Pair(correct.sum(ScalarType.Int64), counted.sum(ScalarType.Int64));
    }

    /// <summary>timm's top-k accuracy: the label is among the k largest logits.</summary>
    private static Tensor TopK(Tensor logits, Tensor labels, long k, long axis, long ignoreIndex)
    {
        var counted = labels.ne(ignoreIndex);
        var (_, top) = logits.topk((int)k, dim: (int)axis);
        var hits = top.eq(labels.unsqueeze(axis)).any(axis).logical_and(counted);
        return Pair(hits.sum(ScalarType.Int64), counted.sum(ScalarType.Int64));
    }

    /// <summary>
    /// The pixels a segmentation metric counts: neither the ignore index nor outside [0, C), as
    /// mmsegmentation's intersect_and_union counts by a histogram over the classes 0 … C − 1.
    /// </summary>
    private static (Tensor Predicted, Tensor Labels) CountedPixels(Tensor logits, Tensor mask, long classes, long axis, long ignoreIndex)
    {
        var keep = mask.ne(ignoreIndex).logical_and(mask.ge(0)).logical_and(mask.lt(classes));
        return (logits.argmax(axis).masked_select(keep), mask.masked_select(keep));
    }

    /// <summary>
    /// Per-class intersection |pred = c ∧ label = c| and union |pred = c ∨ label = c| pixel counts
    /// as [2, classes]: the sums over a data set give its IoU per class (Everingham et al.'s
    /// PASCAL VOC measure, torchmetrics' JaccardIndex, mmsegmentation's mIoU).
    /// </summary>
    private static Tensor Miou(Tensor logits, Tensor mask, long classes, long axis, long ignoreIndex)
    {
        var (predicted, labels) = CountedPixels(logits, mask, classes, axis, ignoreIndex);
        var intersection = labels.masked_select(predicted.eq(labels)).bincount(null, classes);
        var union = predicted.bincount(null, classes) + labels.bincount(null, classes) - intersection;
        return stack([intersection.to(ScalarType.Float64), union.to(ScalarType.Float64)]);
    }

    /// <summary>mmsegmentation's aAcc: correct pixels over counted pixels.</summary>
    private static Tensor PixelAccuracy(Tensor logits, Tensor mask, long axis, long ignoreIndex)
    {
        var (predicted, labels) = CountedPixels(logits, mask, logits.shape[axis], axis, ignoreIndex);
        return Pair(predicted.eq(labels).sum(ScalarType.Int64), tensor(labels.numel(), ScalarType.Int64, labels.device));
    }

    /// <summary>
    /// A depth metric's [Σ f(p, t), count] over the valid pixels: a given 0/1 mask (third input),
    /// or target &gt; 0 (depth benchmarks, and docs/dense.md's data, store unknown depth as 0).
    /// </summary>
    private static Tensor Depth(Tensor[] x, Func<Tensor, Tensor, Tensor> perPixel)
    {
        var valid = x.Length > 2 ? x[2].ne(0) : x[1].gt(0);
        var p = x[0].to(ScalarType.Float64).masked_select(valid);
        var t = x[1].to(ScalarType.Float64).masked_select(valid);
        return Pair(perPixel(p, t).sum(), valid.sum(ScalarType.Int64));
    }

    /// <summary>[Σ −log softmax(logits)[target], count] over the targets that are not ignored, in float64.</summary>
    private static Tensor Perplexity(Tensor logits, Tensor targets, long axis, long ignoreIndex)
    {
        var classesSecond = axis == 1 ? logits : logits.movedim([axis], [1L]);
        var nll = F.cross_entropy(classesSecond.to(ScalarType.Float64), targets, ignore_index: ignoreIndex, reduction: nn.Reduction.Sum);
        return Pair(nll, targets.ne(ignoreIndex).sum(ScalarType.Int64));
    }

    /// <summary>[Σ x, count]: one number per batch counts once, a per-example vector its length.</summary>
    private static Tensor Mean(Tensor x) =>
        Pair(x.to(ScalarType.Float64).sum(), tensor(x.numel(), ScalarType.Int64, x.device));
}
