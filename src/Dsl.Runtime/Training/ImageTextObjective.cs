namespace Dsl.Runtime.Training;

/// <summary>Which image–text objective trained a model: what <see cref="ImageTextEvaluator"/> reports as its test loss.</summary>
public enum ImageTextObjectiveKind
{
    /// <summary>CLIP's symmetric InfoNCE.</summary>
    Clip,

    /// <summary>MobileCLIP's reinforced (1 − λ)·CLIP + λ·distillation, ground-truth plus synthetic caption.</summary>
    Reinforced,

    /// <summary>CatLIP's multi-label BCE on mined synsets.</summary>
    MultiLabel,
}

/// <summary>An image–text loss and its parameters (λ and the teachers' logit scale for <see cref="ImageTextObjectiveKind.Reinforced"/>).</summary>
public sealed record ImageTextObjective(ImageTextObjectiveKind Kind, double Lambda = 0, double TeacherScale = 100);
