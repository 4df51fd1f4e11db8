using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Dsl.Runtime.Training;

/// <summary>
/// The image–text objectives of MobileCLIP (arXiv 2311.17049; CLIP and its distillation) and of
/// CatLIP (arXiv 2404.15653), as plain functions of tensors so that tests can check them against the formulas.
/// Every function returns a scalar and leaves its intermediates to the caller's DisposeScope.
/// </summary>
public static class ImageTextLosses
{
    /// <summary>CLIP's cap on the learned temperature: s = exp(logit_scale) never exceeds 100.</summary>
    public const double MaxLogitScale = 100.0;

    /// <summary>s = min(exp(logit_scale), 100), as open_clip and corenet clamp it.</summary>
    public static Tensor Scale(Tensor logitScale) => logitScale.exp().clamp_max(MaxLogitScale);

    /// <summary>
    /// Symmetric InfoNCE (Radford et al. 2021; open_clip's ClipLoss): for L2-normalised image
    /// embeddings u [B, D] and text embeddings v [B, D], the mean of the image→text and
    /// text→image cross-entropies of s·u·vᵀ with the matching pair as the target.
    /// </summary>
    public static Tensor Clip(Tensor image, Tensor text, Tensor scale)
    {
        var logits = scale * image.matmul(text.t());
        var targets = arange(image.shape[0], dtype: ScalarType.Int64, device: image.device);
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2;
    }

    /// <summary>
    /// MobileCLIP's distillation term L_D (apple/ml-mobileclip training/open_clip_v2.patch,
    /// DistillClipLoss with --distill-average-after-softmax): the cross-entropy of the student's
    /// image→text and text→image distributions to the teachers' ones, where the teacher
    /// distribution is the mean over teachers k of softmax(s_k · û_k · v̂_kᵀ).
    /// </summary>
    /// <param name="teacherImages">Per teacher, its normalised image embeddings [B, D_k].</param>
    /// <param name="teacherTexts">Per teacher, its normalised text embeddings [B, D_k].</param>
    /// <param name="teacherScales">Per teacher, the fixed logit scale s_k (100 in the paper's runs).</param>
    public static Tensor Distill(
        Tensor image,
        Tensor text,
        Tensor scale,
        IReadOnlyList<Tensor> teacherImages,
        IReadOnlyList<Tensor> teacherTexts,
        IReadOnlyList<double> teacherScales)
    {
        if (teacherImages.Count == 0 || teacherImages.Count != teacherTexts.Count || teacherImages.Count != teacherScales.Count)
        {
            throw new ArgumentException($"distillation needs one image set, one text set and one scale per teacher, got {teacherImages.Count}, {teacherTexts.Count} and {teacherScales.Count}");
        }

        Tensor? imageTargets = null;
        Tensor? textTargets = null;
        using (no_grad())
        {
            for (var k = 0; k < teacherImages.Count; k++)
            {
                var logits = teacherImages[k].matmul(teacherTexts[k].t()) * teacherScales[k];
                var toText = logits.softmax(1);
                var toImage = logits.t().softmax(1);
                imageTargets = imageTargets is null ? toText : imageTargets + toText;
                textTargets = textTargets is null ? toImage : textTargets + toImage;
            }
        }

        imageTargets = imageTargets! / teacherImages.Count;
        textTargets = textTargets! / teacherImages.Count;
        var student = scale * image.matmul(text.t());
        var imageTerm = -(imageTargets * student.log_softmax(1)).sum(1).mean();
        var textTerm = -(textTargets * student.t().log_softmax(1)).sum(1).mean();
        return (imageTerm + textTerm) / 2;
    }

    /// <summary>
    /// MobileCLIP's DR loss for one caption stream: (1 − λ)·L_CLIP + λ·L_D. The paper evaluates
    /// it for the ground-truth caption and for a synthetic caption and sums the two.
    /// </summary>
    public static Tensor Reinforced(
        double lambda,
        Tensor image,
        Tensor text,
        Tensor scale,
        IReadOnlyList<Tensor> teacherImages,
        IReadOnlyList<Tensor> teacherTexts,
        IReadOnlyList<double> teacherScales)
    {
        if (lambda is < 0 or > 1)
        {
            throw new ArgumentOutOfRangeException(nameof(lambda), lambda, "λ must be in [0, 1]");
        }

        var clip = Clip(image, text, scale);
        return lambda == 0
            ? clip
            : (clip * (1 - lambda)) + (Distill(image, text, scale, teacherImages, teacherTexts, teacherScales) * lambda);
    }

    /// <summary>
    /// CatLIP's multi-label objective (corenet binary_cross_entropy.py, reduction batch_mean):
    /// BCE-with-logits summed over classes and batch, divided by the batch size.
    /// </summary>
    public static Tensor MultiLabel(Tensor logits, Tensor targets) =>
        F.binary_cross_entropy_with_logits(logits, targets, reduction: nn.Reduction.Sum) / logits.shape[0];
}
