using Dsl.Runtime.Data;

namespace Dsl.Runtime.Training;

/// <summary>
/// How a run's steps map onto the data: each epoch is a fresh permutation of the training set
/// (a function of seed and epoch) cut into full micro-batches, AccumulationSteps of them per
/// optimizer step; leftovers that do not fill a step are skipped.
/// </summary>
internal sealed record StepPlan(long StepsPerEpoch, long TotalSteps, long LastStep, long ImagesPerStep)
{
    public static StepPlan For(TrainOptions options, int count)
    {
        var stepsPerEpoch = (long)(count / options.BatchSize) / options.AccumulationSteps;
        if (stepsPerEpoch == 0)
        {
            // Too little data for the train block's batch: the user's to change, not a bug.
            throw new DataError(
                "training data",
                $"{count} examples do not fill one step of {options.AccumulationSteps} × {options.BatchSize}; lower the train block's batch or accumulate");
        }

        var totalSteps = stepsPerEpoch * options.Epochs;
        var lastStep = Math.Min(totalSteps, options.MaxSteps ?? totalSteps);
        return new StepPlan(stepsPerEpoch, totalSteps, lastStep, (long)options.BatchSize * options.AccumulationSteps);
    }

    /// <summary>The (0-based) epoch a step belongs to.</summary>
    public int EpochOf(long step) => (int)(step / StepsPerEpoch);

    /// <summary>The micro-batches of <paramref name="step"/>'s epoch, starting at that step's first one.</summary>
    public IEnumerator<long[]> Batches(TrainOptions options, int count, long step)
    {
        var epoch = EpochOf(step);
        var done = (int)(step % StepsPerEpoch * options.AccumulationSteps);
        return Data.Batches.Shuffled(count, options.BatchSize, options.Seed, epoch, dropLast: true).Skip(done).GetEnumerator();
    }
}
