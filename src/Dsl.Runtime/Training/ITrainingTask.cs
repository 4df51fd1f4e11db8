using Dsl.Runtime.Emit;
using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Training;

/// <summary>
/// What a <see cref="Trainer"/> optimises: examples numbered 0..Count−1, the loss of a
/// micro-batch of them, and how to measure the model on held-out data.
/// </summary>
public interface ITrainingTask
{
    /// <summary>Training examples per epoch.</summary>
    int Count { get; }

    /// <summary>
    /// The mean loss over the examples <paramref name="indices"/>, called inside the step's
    /// DisposeScope; random choices (augmentations, which caption) come from
    /// <paramref name="augment"/>, which the trainer reseeds per step.
    /// </summary>
    Tensor Loss(GraphModule model, long[] indices, Generator augment, TrainOptions options);

    /// <summary>Metrics on the task's test data, or null when it has none.</summary>
    EvalResult? Evaluate(GraphModule model, TrainOptions options);

    /// <summary>
    /// Throws a <see cref="Data.DataError"/> when the data cannot train the model (labels beyond
    /// its logits); the trainer calls it before any step, where libtorch would fail mid-step
    /// with a native trace.
    /// </summary>
    void Check(GraphModule model)
    {
    }
}
