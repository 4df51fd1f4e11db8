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
        if (loaded.Meta.Model != model.Graph.Name)
        {
            throw new InvalidOperationException($"{options.CheckpointDir}: the checkpoint is of model '{loaded.Meta.Model}', not '{model.Graph.Name}'");
        }

        var expected = model.state_dict().Keys.ToHashSet(StringComparer.Ordinal);
        var missing = expected.Where(key => !loaded.Weights.ContainsKey(key)).Order(StringComparer.Ordinal).ToList();
        var unexpected = loaded.Weights.Keys.Where(key => !expected.Contains(key)).Order(StringComparer.Ordinal).ToList();
        if (missing.Count > 0 || unexpected.Count > 0)
        {
            throw new InvalidOperationException(
                $"{options.CheckpointDir}: the checkpoint's weights do not fit the model " +
                $"(missing: {string.Join(", ", missing.Take(5))}; unexpected: {string.Join(", ", unexpected.Take(5))})");
        }

        model.load_state_dict(loaded.Weights, strict: true);
        optimizer.LoadState(loaded.OptimizerState);
        return loaded.Meta.Step;
    }

    private static string Text(long value) => value.ToString(CultureInfo.InvariantCulture);
}
