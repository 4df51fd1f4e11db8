using System.Globalization;
using Dsl.Runtime.Checkpoints;
using Dsl.Runtime.Emit;
using static TorchSharp.torch;

namespace Dsl.Runtime.Training;

/// <summary>A training run's checkpoint: OutDir/checkpoint, written and read through <see cref="Checkpoint"/>.</summary>
internal static class TrainingCheckpoint
{
    /// <summary>Saves weights (the state_dict), optimizer state and meta (step, completed epochs, seed, metrics).</summary>
    public static void Save(GraphModule model, TrainOptions options, IOptimizer optimizer, StepPlan plan, long step, double loss, EvalResult? evaluation)
    {
        using var scope = NewDisposeScope();
        var metrics = new Dictionary<string, double> { ["loss"] = loss };
        foreach (var (name, value) in evaluation?.Metrics() ?? [])
        {
            metrics["test_" + name] = value;
        }

        var extra = new Dictionary<string, string>
        {
            ["optimizer"] = options.Optimizer,
            ["schedule"] = options.Schedule,
            ["batch_size"] = Text(options.BatchSize),
            ["accumulation_steps"] = Text(options.AccumulationSteps),
            ["total_steps"] = Text(plan.TotalSteps),
            ["conv_backend"] = ConvolutionBackend.Current,
        };
        var meta = new CheckpointMeta(
            Model: model.Graph.Name,
            SourceHash: options.SourceHash,
            Step: step,
            Epoch: (int)(step / plan.StepsPerEpoch),
            Seed: options.Seed,
            Created: DateTimeOffset.UtcNow.ToString("o", CultureInfo.InvariantCulture),
            Metrics: metrics,
            Extra: extra);
        Checkpoint.Save(options.CheckpointDir, model.state_dict(), optimizer.State(), meta);
    }

    /// <summary>Loads weights and optimizer state; returns the step the checkpoint was taken at.</summary>
    public static long Restore(GraphModule model, TrainOptions options, IOptimizer optimizer)
    {
        using var loaded = Checkpoint.Load(options.CheckpointDir);
        // A run folder reused for another model, or a model changed since: the user's mistake,
        // found before any step and listing every difference.
        if (loaded.Meta.Model != model.Graph.Name)
        {
            throw new CheckpointError(options.CheckpointDir, $"the checkpoint is of model '{loaded.Meta.Model}', not '{model.Graph.Name}'; resume needs the run's own model");
        }

        CheckpointFit.Require(options.CheckpointDir, loaded.Weights, model.state_dict(), model.Graph.Name);
        model.load_state_dict(loaded.Weights, strict: true);
        try
        {
            optimizer.LoadState(loaded.OptimizerState);
        }
        catch (ArgumentException e)
        {
            throw new CheckpointError(options.CheckpointDir, $"its optimizer state does not fit this run's {options.Optimizer} optimizer ({e.Message}); a changed optimizer cannot resume", e);
        }

        return loaded.Meta.Step;
    }

    private static string Text(long value) => value.ToString(CultureInfo.InvariantCulture);
}
