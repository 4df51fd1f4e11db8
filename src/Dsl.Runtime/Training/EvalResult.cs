namespace Dsl.Runtime.Training;

/// <summary>A model's performance on a labelled set.</summary>
/// <param name="Loss">Mean cross-entropy (no label smoothing).</param>
/// <param name="Accuracy">Fraction whose top prediction is the label.</param>
/// <param name="Top5">Fraction whose label is among the five highest logits (all of them with fewer classes).</param>
/// <param name="ImagesPerSecond">Evaluation throughput.</param>
/// <param name="Count">How many images were evaluated.</param>
public sealed record EvalResult(double Loss, double Accuracy, double Top5, double ImagesPerSecond, int Count);
