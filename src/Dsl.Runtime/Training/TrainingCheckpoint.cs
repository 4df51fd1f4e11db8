using System.Globalization;
using Dsl.Runtime.Checkpoints;
using Dsl.Runtime.Emit;
using static TorchSharp.torch;

namespace Dsl.Runtime.Training;

/// <summary>A training run's checkpoint: OutDir/checkpoint (a link into OutDir/checkpoints), written and read through <see cref="Checkpoint"/>.</summary>
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

        var extra = new Dictionary<string, string>(Settings(options, plan))
        {
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
        Checkpoint.Save(options.CheckpointDir, model.state_dict(), optimizer.State(), meta, options.Keep);
    }

    /// <summary>Loads weights and optimizer state; returns the step the checkpoint was taken at.</summary>
    public static long Restore(GraphModule model, TrainOptions options, IOptimizer optimizer, StepPlan plan)
    {
        // The trainer has already recovered what a crash left (Checkpoint.Recover, on rank 0).
        using var loaded = Checkpoint.Load(options.CheckpointDir);
        // A run folder reused for another model, or a model changed since: the user's mistake,
        // found before any step and listing every difference.
        if (loaded.Meta.Model != model.Graph.Name)
        {
            throw new CheckpointError(options.CheckpointDir, $"the checkpoint is of model '{loaded.Meta.Model}', not '{model.Graph.Name}'; resume needs the run's own model");
        }

        if (!options.AllowChanges)
        {
            RequireSameSettings(options, plan, loaded.Meta);
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

    /// <summary>
    /// The settings a resumed run must share with the checkpoint's to continue bit-exactly:
    /// everything that decides the data order, the randomness and the update of a step.
    /// </summary>
    public static IReadOnlyDictionary<string, string> Settings(TrainOptions options, StepPlan plan) =>
        new Dictionary<string, string>
        {
            ["optimizer"] = options.Optimizer,
            ["schedule"] = options.Schedule,
            ["batch_size"] = Text(options.BatchSize),
            ["accumulation_steps"] = Text(options.AccumulationSteps),
            ["total_steps"] = Text(plan.TotalSteps),
            ["lr"] = Text(options.Lr),
            ["min_lr"] = Text(options.MinLr),
            ["warmup_steps"] = Text(options.WarmupSteps),
            ["weight_decay"] = Text(options.WeightDecay),
            ["grad_clip"] = Text(options.GradClip),
            ["label_smoothing"] = Text(options.LabelSmoothing),
            ["momentum"] = Text(options.Momentum),
            ["epochs"] = Text(options.Epochs),
            ["decay_norm_and_bias"] = options.DecayNormAndBias ? "true" : "false",
            ["freeze"] = string.Join("; ", options.Freeze),
            ["param_groups"] = string.Join("; ", options.ParamGroups.Select(Text)),
        };

    /// <summary>A group as the train block writes it, with only the fields it sets.</summary>
    private static string Text(ParamGroup group)
    {
        var fields = new List<string> { $"path = {group.Pattern}" };
        if (group.Lr is { } lr)
        {
            fields.Add($"lr = {Text(lr)}");
        }

        if (group.LrScale is { } scale)
        {
            fields.Add($"lrScale = {Text(scale)}");
        }

        if (group.WeightDecay is { } decay)
        {
            fields.Add($"weightDecay = {Text(decay)}");
        }

        return "{ " + string.Join("; ", fields) + " }";
    }

    /// <summary>
    /// Refuses a resume whose settings differ from those the checkpoint recorded (a setting it
    /// did not record, from an older version, is not compared), listing every difference.
    /// </summary>
    private static void RequireSameSettings(TrainOptions options, StepPlan plan, CheckpointMeta meta)
    {
        var differences = new List<string>();
        if (meta.Seed != options.Seed)
        {
            differences.Add($"seed: checkpoint {Text(meta.Seed)}, now {Text(options.Seed)}");
        }

        foreach (var (name, now) in Settings(options, plan))
        {
            if (meta.Extra.TryGetValue(name, out var then) && then != now)
            {
                differences.Add($"{name}: checkpoint {then}, now {now}");
            }
        }

        if (differences.Count > 0)
        {
            throw new CheckpointError(
                Path.Combine(options.CheckpointDir, Checkpoint.MetaFile),
                $"the run's settings differ from the checkpoint's, so resuming would not continue the same run ({string.Join("; ", differences)}); "
                + "restore them, or pass --allow-changes to resume with the new ones");
        }
    }

    private static string Text(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    private static string Text(long value) => value.ToString(CultureInfo.InvariantCulture);
}
