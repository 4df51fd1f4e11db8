namespace Dsl.Runtime.Training;

/// <summary>
/// Reported after every optimizer step, for a progress bar. <see cref="Evaluation"/> is set on
/// the step that ended an evaluated epoch.
/// </summary>
/// <param name="Step">Optimizer steps done, counting from the start of the run (1 after the first).</param>
/// <param name="TotalSteps">The step the run will stop at.</param>
/// <param name="Epoch">The epoch the step belongs to (0-based).</param>
/// <param name="Loss">The step's training loss (mean over its micro-batches).</param>
/// <param name="Lr">The learning rate the step used.</param>
/// <param name="ImagesPerSecond">Training throughput over this process's steps so far.</param>
/// <param name="Eta">Estimated time to <see cref="TotalSteps"/> at that rate.</param>
public sealed record TrainProgress(
    long Step,
    long TotalSteps,
    int Epoch,
    double Loss,
    double Lr,
    double ImagesPerSecond,
    TimeSpan Eta,
    EvalResult? Evaluation)
{
    /// <summary>
    /// Whether the step ended an epoch: an evaluation then belongs to the epoch, otherwise
    /// (TrainOptions.EvalEverySteps) to the step.
    /// </summary>
    public bool EndsEpoch { get; init; }

    /// <summary>A language model's tokens per second over this process's steps so far (all ranks), else null.</summary>
    public double? TokensPerSecond { get; init; }

    /// <summary>Model FLOPs utilisation at <see cref="TokensPerSecond"/> (6·parameters per token over the measured peak).</summary>
    public double? Mfu { get; init; }

    /// <summary>With several ranks, the share of step time spent averaging gradients and the loss.</summary>
    public double? AllreduceShare { get; init; }
}

/// <summary>How a <see cref="Trainer.Train"/> call ended.</summary>
/// <param name="Steps">Optimizer steps done in total, including those before a resume.</param>
/// <param name="EpochsCompleted">Whole epochs done.</param>
/// <param name="FinalLoss">The last step's training loss (NaN when no step ran).</param>
/// <param name="LastEvaluation">The latest test-set evaluation, if any ran.</param>
/// <param name="Elapsed">Wall time of this call.</param>
public sealed record TrainResult(long Steps, int EpochsCompleted, double FinalLoss, EvalResult? LastEvaluation, TimeSpan Elapsed)
{
    /// <summary>Optimizer steps this call ran: <see cref="Steps"/> less those before a resume.</summary>
    public long StepsThisRun { get; init; }

    /// <summary>The run stopped early on <see cref="TrainOptions.StopRequested"/>, after saving at <see cref="Steps"/>.</summary>
    public bool Interrupted { get; init; }

    /// <summary>The last step's report: throughput, tokens/s, utilisation, allreduce share (null when no step ran).</summary>
    public TrainProgress? Throughput { get; init; }

    /// <summary>The peak FLOP/s utilisation is measured against (all ranks), NaN for models that are not language models.</summary>
    public double PeakFlops { get; init; } = double.NaN;
}
