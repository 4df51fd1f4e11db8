using System.Diagnostics;
using Dsl.Runtime.Bench;
using Dsl.Runtime.Checkpoints;
using Dsl.Runtime.Data;
using Dsl.Runtime.Emit;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Dsl.Runtime.Training;

/// <summary>
/// Trains a <see cref="GraphModule"/> on an <see cref="ITrainingTask"/>: the loop, the
/// optimizer, the schedule, checkpoints and metrics are the same for every objective, the task
/// says what a micro-batch's loss is. Everything random is a function of (seed, step), so a run
/// resumed from its checkpoint ends bit-identical to one that never stopped.
/// </summary>
public sealed class Trainer
{
    private readonly GraphModule model;
    private readonly TrainOptions options;

    /// <summary>Time this call's steps spent averaging gradients across ranks.</summary>
    private double allreduceSeconds;

    public Trainer(GraphModule model, TrainOptions options)
    {
        options.Validate();
        this.model = model;
        this.options = options;
    }

    /// <summary>
    /// Runs (or, with <see cref="TrainOptions.Resume"/>, continues) training of <paramref name="task"/>
    /// up to the last step of the last epoch or <see cref="TrainOptions.MaxSteps"/>. Writes
    /// metrics.jsonl and, at every epoch end, every <see cref="TrainOptions.SaveEvery"/> steps, on
    /// <see cref="TrainOptions.StopRequested"/> and at the end, a checkpoint into
    /// <see cref="TrainOptions.OutDir"/>; evaluates the task's test data every
    /// <see cref="TrainOptions.EvalEvery"/> epochs.
    /// </summary>
    public TrainResult Train(ITrainingTask task, Action<TrainProgress>? progress = null)
    {
        task.Check(model);
        var clock = Stopwatch.StartNew();
        var plan = StepPlan.For(options, task.Count);
        var world = options.World;
        Directory.CreateDirectory(options.OutDir);
        // Before the optimizer is made and `trainable` is read: frozen parameters are in neither.
        using var frozen = Freeze();
        using var optimizer = CreateOptimizer();
        if (options.Resume && world.IsRoot)
        {
            // Only rank 0 writes: it repairs what a crash left before any rank reads.
            Checkpoint.Recover(options.CheckpointDir, options.Keep);
        }

        world.Barrier();
        var startStep = options.Resume ? TrainingCheckpoint.Restore(model, options, optimizer, plan) : 0;
        // Horovod's rule: every rank starts from rank 0's weights, also on resume.
        world.BroadcastInPlace(model.parameters().Select(p => (Tensor)p).Concat(model.buffers()));
        var schedule = LrSchedule.Create(options.Schedule, options.Lr, plan.TotalSteps, options.WarmupSteps, options.MinLr);
        using var log = world.IsRoot ? new MetricsLog(options.MetricsPath, options.Resume ? startStep : null) : null;
        using var augmentGenerator = new Generator(0);
        var trainable = model.parameters().Where(p => p.requires_grad).ToArray();
        var wasTraining = model.training;
        model.SyncBatchNorm = options.SyncBatchNorm && world.Size > 1 ? world : null;
        // A language model's throughput is also read in tokens and as a share of the machine's
        // peak, measured now on the threads this run has (every rank measures its own share).
        var peak = options.TokensPerExample > 0 ? world.Sum(MatmulPeak.FlopsPerSecond()) : double.NaN;
        var parameters = model.parameters().Sum(p => p.numel());
        model.train();
        allreduceSeconds = 0;
        var stepClock = new Stopwatch();

        IEnumerator<long[]>? batches = null;
        var loss = double.NaN;
        EvalResult? lastEvaluation = null;
        TrainProgress? lastReport = null;
        var savedStep = startStep;
        try
        {
            for (var step = startStep; step < plan.LastStep; step++)
            {
                if (batches is null || step % plan.StepsPerEpoch == 0)
                {
                    batches?.Dispose();
                    batches = plan.Batches(options, task.Count, step);
                }

                var lr = schedule(step);
                stepClock.Start();
                loss = RunStep(step, lr, batches, task, optimizer, augmentGenerator, trainable);
                stepClock.Stop();
                var done = step + 1;
                var report = new TrainProgress(done, plan.LastStep, plan.EpochOf(step), loss, lr, 0, TimeSpan.Zero, null)
                {
                    EndsEpoch = done % plan.StepsPerEpoch == 0,
                };
                report = WithThroughput(report, clock.Elapsed, done - startStep, plan.ImagesPerStep);
                if (options.TokensPerExample > 0)
                {
                    // Over the steps alone: the peak's measurement, evaluations and saves are not training.
                    var tokens = (done - startStep) * plan.ImagesPerStep * options.TokensPerExample / Math.Max(stepClock.Elapsed.TotalSeconds, 1e-9);
                    report = report with { TokensPerSecond = tokens, Mfu = MatmulPeak.Utilisation(parameters, tokens, peak, training: true) };
                }

                if (world.Size > 1)
                {
                    report = report with { AllreduceShare = allreduceSeconds / Math.Max(stepClock.Elapsed.TotalSeconds, 1e-9) };
                }

                if (log is not null && (done % options.LogEvery == 0 || done == plan.LastStep))
                {
                    LogStep(log, report);
                }

                // Rank 0 evaluates, logs and saves; the others wait for it at the next allreduce.
                if (log is not null && done % plan.StepsPerEpoch == 0)
                {
                    report = report with { Evaluation = EvaluateIfDue(task, done / plan.StepsPerEpoch, report.Epoch, done, log) };
                    lastEvaluation = report.Evaluation ?? lastEvaluation;
                }
                else if (log is not null && options.EvalEverySteps > 0 && done % options.EvalEverySteps == 0)
                {
                    report = report with { Evaluation = Evaluate(task, report.Epoch, done, log) };
                    lastEvaluation = report.Evaluation ?? lastEvaluation;
                }

                var stop = world.Any(options.StopRequested?.Invoke() == true) && done < plan.LastStep;
                if (done % plan.StepsPerEpoch == 0 || (options.SaveEvery > 0 && done % options.SaveEvery == 0) || stop)
                {
                    if (world.IsRoot)
                    {
                        TrainingCheckpoint.Save(model, options, optimizer, plan, done, loss, lastEvaluation);
                    }

                    savedStep = done;
                }

                if (world.IsRoot)
                {
                    progress?.Invoke(report);
                }

                lastReport = report;

                if (stop)
                {
                    return new TrainResult(done, (int)(done / plan.StepsPerEpoch), loss, lastEvaluation, clock.Elapsed)
                    {
                        StepsThisRun = done - startStep,
                        Interrupted = true,
                        Throughput = report,
                        PeakFlops = peak,
                    };
                }
            }

            var finalStep = Math.Max(startStep, plan.LastStep);
            if (savedStep != finalStep && world.IsRoot)
            {
                TrainingCheckpoint.Save(model, options, optimizer, plan, finalStep, loss, lastEvaluation);
            }

            return new TrainResult(finalStep, (int)(finalStep / plan.StepsPerEpoch), loss, lastEvaluation, clock.Elapsed)
            {
                StepsThisRun = finalStep - startStep,
                Throughput = lastReport,
                PeakFlops = peak,
            };
        }
        finally
        {
            batches?.Dispose();
            optimizer.ZeroGrad();
            model.train(wasTraining);
            model.SyncBatchNorm = null;
        }
    }

    /// <summary>
    /// One optimizer step over AccumulationSteps micro-batches, inside one DisposeScope: only
    /// the loss (as a double), the parameters and the optimizer state outlive it.
    /// </summary>
    private double RunStep(
        long step,
        double lr,
        IEnumerator<long[]> batches,
        ITrainingTask task,
        IOptimizer optimizer,
        Generator augmentGenerator,
        Parameter[] trainable)
    {
        using var scope = NewDisposeScope();
        optimizer.ZeroGrad();
        var loss = 0.0;
        for (var micro = 0; micro < options.AccumulationSteps; micro++)
        {
            if (!batches.MoveNext())
            {
                throw new InvalidOperationException($"step {step}: the epoch ran out of batches");
            }

            Reseed(step, micro, augmentGenerator);
            var microLoss = task.Loss(model, options.World.Shard(batches.Current), augmentGenerator, options).div(options.AccumulationSteps);
            microLoss.backward();
            loss += microLoss.item<float>();
        }

        // Each rank's gradient is its slice's mean; their mean is the whole batch's. One process
        // skips it: the gradient list alone would be per-step work on the hot path.
        if (options.World.Size > 1)
        {
            var exchange = Stopwatch.StartNew();
            options.World.AverageInPlace(trainable.Select(p => p.grad).OfType<Tensor>().ToList(), options.BucketBytes);
            loss = options.World.Sum(loss) / options.World.Size;
            allreduceSeconds += exchange.Elapsed.TotalSeconds;
        }

        if (options.GradClip > 0)
        {
            nn.utils.clip_grad_norm_(trainable, options.GradClip);
        }

        optimizer.Step(lr);
        return loss;
    }

    /// <summary>Every random stream restarts from a seed of (run seed, step, micro-batch).</summary>
    private void Reseed(long step, int micro, Generator augmentGenerator)
    {
        var global = RunSeeds.For(options.Seed, step, micro, RunSeeds.Stream.Global);
        torch.manual_seed(global).Dispose();
        if (model.Device.type == DeviceType.CUDA)
        {
            cuda.manual_seed(global);
        }

        augmentGenerator.manual_seed(RunSeeds.For(options.Seed, step, micro, RunSeeds.Stream.Augment));
        model.MaskGenerator.manual_seed(RunSeeds.For(options.Seed, step, micro, RunSeeds.Stream.Masks));
    }

    /// <summary>Evaluates on the test set after epochs EvalEvery, 2·EvalEvery, … and the last one.</summary>
    private EvalResult? EvaluateIfDue(ITrainingTask task, long epochsCompleted, int epoch, long step, MetricsLog log)
    {
        if (epochsCompleted % options.EvalEvery != 0 && epochsCompleted != options.Epochs && (options.EvalEverySteps <= 0 || step % options.EvalEverySteps != 0))
        {
            return null;
        }

        return Evaluate(task, epoch, step, log);
    }

    /// <summary>Evaluates on the test set now and logs the metrics as <c>test_*</c> at this step.</summary>
    private EvalResult? Evaluate(ITrainingTask task, int epoch, long step, MetricsLog log)
    {
        var evaluation = task.Evaluate(model, options);
        if (evaluation is null)
        {
            return null;
        }

        var record = new Dictionary<string, object>
        {
            ["step"] = step,
            ["epoch"] = epoch,
            ["eval_images_per_s"] = evaluation.ImagesPerSecond,
        };
        foreach (var (name, value) in evaluation.Metrics())
        {
            record["test_" + name] = value;
        }

        log.Write(record);
        return evaluation;
    }

    private static void LogStep(MetricsLog log, TrainProgress report)
    {
        var record = new Dictionary<string, object>
        {
            ["step"] = report.Step,
            ["epoch"] = report.Epoch,
            ["loss"] = report.Loss,
            ["lr"] = report.Lr,
            ["images_per_s"] = report.ImagesPerSecond,
        };
        if (report.TokensPerSecond is double tokens)
        {
            record["tokens_per_s"] = tokens;
            record["mfu"] = report.Mfu ?? double.NaN;
        }

        if (report.AllreduceShare is double share)
        {
            record["allreduce_share"] = share;
            // A rank is a process of its own, so its peak since it started is the training's
            // (rank 0's, which writes the log; the others hold the same model and as much data).
            record["peak_rss_mb"] = Bench.PeakMemory.Bytes() / 1048576.0;
        }

        log.Write(record);
    }

    /// <summary>Images per second over this call's steps, and the time the remaining steps take at that rate.</summary>
    private static TrainProgress WithThroughput(TrainProgress report, TimeSpan elapsed, long stepsThisCall, long imagesPerStep)
    {
        var seconds = Math.Max(elapsed.TotalSeconds, 1e-9);
        var remaining = report.TotalSteps - report.Step;
        return report with
        {
            ImagesPerSecond = stepsThisCall * imagesPerStep / seconds,
            Eta = TimeSpan.FromSeconds(seconds / stepsThisCall * remaining),
        };
    }

    private IOptimizer CreateOptimizer()
    {
        var named = model.named_parameters().Select(entry => (entry.name, entry.parameter)).ToList();
        var settings = ParameterGroups.Settings(
            options,
            named.Where(entry => entry.parameter.requires_grad).Select(entry => (entry.name, (int)entry.parameter.dim())));
        return options.Optimizer == TrainOptions.SgdKind
            ? new SgdMomentum(named, options.Momentum, options.Nesterov, options.WeightDecay, options.DecayNormAndBias, settings)
            : new AdamW(named, options.Betas.Beta1, options.Betas.Beta2, options.Eps, options.WeightDecay, options.DecayNormAndBias, settings);
    }

    /// <summary>
    /// Sets requires_grad = false on the parameters <see cref="TrainOptions.Freeze"/> matches, as
    /// a PyTorch fine-tuning script freezes a backbone, so autograd computes no gradient for
    /// them; disposing sets it back, so the model leaves the run as it came.
    /// </summary>
    private IDisposable Freeze()
    {
        var frozen = model.named_parameters()
            .Where(entry => entry.parameter.requires_grad && ParameterGroups.IsFrozen(options, entry.name))
            .Select(entry => entry.parameter)
            .ToList();
        foreach (var p in frozen)
        {
            p.requires_grad = false;
        }

        return new Unfreeze(frozen);
    }

    private sealed class Unfreeze(List<Parameter> frozen) : IDisposable
    {
        public void Dispose()
        {
            foreach (var p in frozen)
            {
                p.requires_grad = true;
            }
        }
    }
}
