namespace Dsl.Runtime.Checkpoints;

/// <summary>
/// meta.json of a checkpoint: what was trained (model name and the hash of its DSL source),
/// how far (step, epoch), from which seed, when, and the latest metrics.
/// </summary>
/// <param name="Model">The model's name in the DSL source.</param>
/// <param name="SourceHash">Lowercase hex SHA-256 of the DSL source (<see cref="Checkpoint.SourceHash"/>).</param>
/// <param name="Step">Optimizer steps taken so far.</param>
/// <param name="Epoch">Epochs completed so far.</param>
/// <param name="Seed">The run's seed.</param>
/// <param name="Created">When the checkpoint was written, ISO-8601.</param>
/// <param name="Metrics">Latest metric values by name, e.g. "loss", "accuracy".</param>
/// <param name="Extra">Free-form facts, e.g. the optimizer kind or the DSL source path.</param>
/// <param name="FormatVersion">Layout version of the checkpoint directory.</param>
/// <param name="Checksums">
/// Lowercase hex SHA-256 of each file beside meta.json by name, set by <see cref="Checkpoint.Save"/>
/// and verified on load (absent in checkpoints from before it was recorded).
/// </param>
/// <param name="TensorChecksums">
/// Per file, the lowercase hex SHA-256 of each tensor's bytes, so a damaged file names the
/// tensors that changed (absent in checkpoints from before it was recorded).
/// </param>
public sealed record CheckpointMeta(
    string Model,
    string SourceHash,
    long Step,
    int Epoch,
    long Seed,
    string Created,
    Dictionary<string, double> Metrics,
    Dictionary<string, string> Extra,
    int FormatVersion = 1,
    Dictionary<string, string>? Checksums = null,
    Dictionary<string, Dictionary<string, string>>? TensorChecksums = null);
