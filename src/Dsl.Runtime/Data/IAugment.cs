using static TorchSharp.torch;

namespace Dsl.Runtime.Data;

/// <summary>
/// A random transformation of a whole batch [N, C, H, W]. All randomness comes from
/// <paramref name="generator"/>, so a run is reproducible from its seed. Returns a new tensor
/// and leaves the input untouched; no other tensor outlives the call.
/// </summary>
public interface IAugment
{
    Tensor Apply(Tensor batch, Generator generator);
}
