using Dsl.Runtime.Data;

namespace Dsl.Runtime.Training;

/// <summary>Everything a <see cref="Trainer"/> run is configured by.</summary>
public sealed class TrainOptions
{
    public const string AdamWKind = "adamw";
    public const string SgdKind = "sgd";

    public int Epochs { get; set; } = 10;

    /// <summary>Images per micro-batch; one optimizer step sees BatchSize × AccumulationSteps images.</summary>
    public int BatchSize { get; set; } = 128;

    /// <summary>"adamw" or "sgd" (with momentum).</summary>
    public string Optimizer { get; set; } = AdamWKind;

    /// <summary>The peak learning rate (reached at the end of the warmup).</summary>
    public double Lr { get; set; } = 1e-3;

    public double WeightDecay { get; set; } = 0.05;

    /// <summary>Also decay 1-D parameters (norm weights, biases). Off, as in timm.</summary>
    public bool DecayNormAndBias { get; set; }

    /// <summary>
    /// BatchNorm statistics over the global batch of a data-parallel run (SyncBatchNorm), not
    /// each rank's slice. Off, as in Horovod and PyTorch DDP; no effect on one process.
    /// </summary>
    public bool SyncBatchNorm { get; set; }

    /// <summary>
    /// Globs over full parameter names (the language's, <c>Dsl.Primitives.globMatch</c>): the
    /// parameters they match get requires_grad = false for the run, so they have no gradient,
    /// are not in the optimizer and are neither updated nor decayed.
    /// </summary>
    public IReadOnlyList<string> Freeze { get; set; } = [];

    /// <summary>Parameter groups with their own lr and weight decay; the first matching group wins (<see cref="ParameterGroups"/>).</summary>
    public IReadOnlyList<ParamGroup> ParamGroups { get; set; } = [];

    /// <summary>SGD momentum.</summary>
    public double Momentum { get; set; } = 0.9;

    /// <summary>SGD with Nesterov momentum.</summary>
    public bool Nesterov { get; set; }

    /// <summary>AdamW's (beta1, beta2).</summary>
    public (double Beta1, double Beta2) Betas { get; set; } = (0.9, 0.999);

    /// <summary>AdamW's epsilon.</summary>
    public double Eps { get; set; } = 1e-8;

    /// <summary>"cosine", "linear" or "constant"; see <see cref="LrSchedule"/>.</summary>
    public string Schedule { get; set; } = LrSchedule.CosineKind;

    public int WarmupSteps { get; set; }

    public double MinLr { get; set; }

    /// <summary>Maximum global gradient norm; 0 turns clipping off.</summary>
    public double GradClip { get; set; }

    public double LabelSmoothing { get; set; }

    /// <summary>Micro-batches per optimizer step; each micro-batch's loss is divided by this.</summary>
    public int AccumulationSteps { get; set; } = 1;

    /// <summary>Seeds the data order, augmentations, dropout and DropPath (not the initial weights: those come from the model).</summary>
    public long Seed { get; set; }

    /// <summary>Applied in order to every training batch (Normalize belongs here and in <see cref="EvalTransforms"/>).</summary>
    public IReadOnlyList<IAugment> Augmentations { get; set; } = [];

    /// <summary>Applied in order to every evaluation batch, e.g. the same Normalize as in training.</summary>
    public IReadOnlyList<IAugment> EvalTransforms { get; set; } = [];

    /// <summary>Where metrics.jsonl and the checkpoint directory go.</summary>
    public string OutDir { get; set; } = "runs";

    /// <summary>Evaluate on the test set every this many epochs (and after the last one).</summary>
    public int EvalEvery { get; set; } = 1;

    /// <summary>
    /// Also evaluate every this many optimizer steps (0 = only per epoch): learning curves for
    /// steps-to-target comparisons such as weight subcloning's (weight subcloning, arXiv 2312.09299).
    /// </summary>
    public int EvalEverySteps { get; set; }

    public int EvalBatchSize { get; set; } = 256;

    /// <summary>Write a metrics line every this many optimizer steps (and at the last one).</summary>
    public int LogEvery { get; set; } = 10;

    /// <summary>Stop after this many optimizer steps in total; the schedule still spans all epochs.</summary>
    public long? MaxSteps { get; set; }

    /// <summary>Also save a checkpoint every this many optimizer steps (0 = at epoch ends and the end only).</summary>
    public int SaveEvery { get; set; }

    /// <summary>How many of the newest checkpoints stay in OutDir/checkpoints (0 = all).</summary>
    public int Keep { get; set; } = 3;

    /// <summary>
    /// Polled after every optimizer step; when it returns true (a SIGINT or SIGTERM, say) the
    /// run saves a checkpoint at that step and returns with <see cref="TrainResult.Interrupted"/>.
    /// </summary>
    public Func<bool>? StopRequested { get; set; }

    /// <summary>
    /// The ranks training together (<see cref="Distributed.World.Single"/> outside mpirun):
    /// <see cref="BatchSize"/> is the global batch, split evenly among them.
    /// </summary>
    public Distributed.World World { get; set; } = Distributed.World.Single;

    /// <summary>Gradients are averaged across ranks in fused buckets of at most this many bytes (PyTorch DDP's 25 MB).</summary>
    public long BucketBytes { get; set; } = 25L << 20;

    /// <summary>
    /// Tokens in one example of a language model (its context length), 0 for other models: the
    /// run then reports tokens/s and model FLOPs utilisation against <see cref="Bench.MatmulPeak"/>.
    /// </summary>
    public long TokensPerExample { get; set; }

    /// <summary>Continue from the checkpoint in OutDir, exactly as if the run had not stopped.</summary>
    public bool Resume { get; set; }

    /// <summary>
    /// Resume even when the settings differ from those the checkpoint recorded (the seed, batch
    /// size, learning rate, …); the run then no longer matches one that never stopped.
    /// </summary>
    public bool AllowChanges { get; set; }

    /// <summary>Recorded in checkpoints: the SHA-256 of the DSL source the model came from.</summary>
    public string SourceHash { get; set; } = "";

    /// <summary>The checkpoint directory: OutDir/checkpoint, beside metrics.jsonl.</summary>
    public string CheckpointDir => Path.Combine(OutDir, "checkpoint");

    public string MetricsPath => Path.Combine(OutDir, "metrics.jsonl");

    /// <summary>Throws ArgumentException naming the first option that makes no sense.</summary>
    public void Validate()
    {
        Require(Epochs > 0, nameof(Epochs), "must be positive");
        Require(BatchSize > 0, nameof(BatchSize), "must be positive");
        Require(Optimizer is AdamWKind or SgdKind, nameof(Optimizer), $"must be '{AdamWKind}' or '{SgdKind}'");
        Require(Lr > 0, nameof(Lr), "must be positive");
        Require(WeightDecay >= 0, nameof(WeightDecay), "must not be negative");
        Require(Momentum >= 0, nameof(Momentum), "must not be negative");
        Require(Betas.Beta1 is >= 0 and < 1 && Betas.Beta2 is >= 0 and < 1, nameof(Betas), "must both be in [0, 1)");
        Require(LrSchedule.Kinds.Contains(Schedule), nameof(Schedule), $"must be one of {string.Join(", ", LrSchedule.Kinds)}");
        Require(WarmupSteps >= 0, nameof(WarmupSteps), "must not be negative");
        Require(MinLr >= 0 && MinLr <= Lr, nameof(MinLr), "must be in [0, Lr]");
        Require(GradClip >= 0, nameof(GradClip), "must not be negative (0 turns clipping off)");
        Require(LabelSmoothing is >= 0 and < 1, nameof(LabelSmoothing), "must be in [0, 1)");
        Require(AccumulationSteps > 0, nameof(AccumulationSteps), "must be positive");
        Require(EvalEvery > 0, nameof(EvalEvery), "must be positive");
        Require(EvalEverySteps >= 0, nameof(EvalEverySteps), "must not be negative");
        Require(EvalBatchSize > 0, nameof(EvalBatchSize), "must be positive");
        Require(LogEvery > 0, nameof(LogEvery), "must be positive");
        Require(SaveEvery >= 0, nameof(SaveEvery), "must not be negative (0 saves at epoch ends only)");
        Require(Keep >= 0, nameof(Keep), "must not be negative (0 keeps every checkpoint)");
        Require(BatchSize % World.Size == 0, nameof(BatchSize), $"must divide evenly among the {World.Size} ranks");
        Require(BucketBytes > 0, nameof(BucketBytes), "must be positive");
        Require(MaxSteps is null or > 0, nameof(MaxSteps), "must be positive when set");
        Require(!string.IsNullOrWhiteSpace(OutDir), nameof(OutDir), "must be set");
        Require(Freeze.All(p => !string.IsNullOrEmpty(p)), nameof(Freeze), "must not hold an empty pattern");
        foreach (var g in ParamGroups)
        {
            Require(!string.IsNullOrEmpty(g.Pattern), nameof(ParamGroups), "must not hold an empty pattern");
            Require(g.Lr is null || g.LrScale is null, nameof(ParamGroups), $"'{g.Pattern}' must give Lr or LrScale, not both");
            Require(g.Lr is null or >= 0 && g.LrScale is null or >= 0, nameof(ParamGroups), $"'{g.Pattern}' must not have a negative lr");
            Require(g.WeightDecay is null or >= 0, nameof(ParamGroups), $"'{g.Pattern}' must not have a negative weight decay");
        }
    }

    private static void Require(bool ok, string option, string rule)
    {
        if (!ok)
        {
            throw new ArgumentException($"TrainOptions.{option} {rule}", option);
        }
    }
}
