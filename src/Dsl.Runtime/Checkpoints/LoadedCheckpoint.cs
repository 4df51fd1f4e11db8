using static TorchSharp.torch;

namespace Dsl.Runtime.Checkpoints;

/// <summary>
/// The contents of a checkpoint directory. Owns the tensors: Dispose frees every one still in
/// <see cref="Weights"/> and <see cref="OptimizerState"/> (remove a tensor to keep it).
/// </summary>
public sealed class LoadedCheckpoint : IDisposable
{
    public LoadedCheckpoint(
        Dictionary<string, Tensor> weights,
        Dictionary<string, Tensor> optimizerState,
        CheckpointMeta meta)
    {
        Weights = weights;
        OptimizerState = optimizerState;
        Meta = meta;
    }

    /// <summary>Parameters and buffers by their dotted names.</summary>
    public Dictionary<string, Tensor> Weights { get; }

    /// <summary>Optimizer state tensors by name; may be empty.</summary>
    public Dictionary<string, Tensor> OptimizerState { get; }

    public CheckpointMeta Meta { get; }

    public void Dispose()
    {
        foreach (var tensor in Weights.Values.Concat(OptimizerState.Values))
        {
            tensor.Dispose();
        }
    }
}
