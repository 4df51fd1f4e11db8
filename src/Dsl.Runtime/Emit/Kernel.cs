using static TorchSharp.torch;

namespace Dsl.Runtime.Emit;

/// <summary>
/// One node's computation with its parameters and attributes already bound. It receives the
/// values of the node's inputs (in <c>Node.Inputs</c> order) and must return a tensor it
/// created, never one of its inputs or a parameter object itself (an alias is fine): the
/// schedule disposes every intermediate value once its last consumer has run.
/// </summary>
internal delegate Tensor Kernel(Tensor[] inputs, bool training);
