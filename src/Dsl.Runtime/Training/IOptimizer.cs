using static TorchSharp.torch;

namespace Dsl.Runtime.Training;

/// <summary>
/// An optimizer whose whole state is a flat dictionary of named tensors, so a checkpoint can
/// save and restore it bit for bit. Keys are "&lt;state&gt;.&lt;parameter name&gt;" (e.g.
/// <c>exp_avg.3.weight</c>) plus <c>step</c>, an int64 scalar. Dispose frees the state.
/// </summary>
public interface IOptimizer : IDisposable
{
    /// <summary>Optimizer steps taken so far (restored by <see cref="LoadState"/>).</summary>
    long StepCount { get; }

    /// <summary>Updates every parameter that has a gradient, in place, with learning rate <paramref name="lr"/>.</summary>
    void Step(double lr);

    /// <summary>Drops the gradients (sets them to none, as PyTorch's default).</summary>
    void ZeroGrad();

    /// <summary>A snapshot of the state: new tensors, owned by the caller.</summary>
    Dictionary<string, Tensor> State();

    /// <summary>Replaces the state with copies of <paramref name="state"/> (as returned by <see cref="State"/>).</summary>
    void LoadState(IReadOnlyDictionary<string, Tensor> state);
}
