using System.Diagnostics;
using Dsl.Runtime.Data;
using Dsl.Runtime.Emit;
using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Training;

/// <summary>
/// Training with a loss written in the language (a train block's <c>loss = fun out r -> …</c>):
/// each step takes a batch of records, feeds the fields bound to the model's inputs to the model,
/// and runs the loss graph (inputs <c>out.NAME</c>, the model's outputs, and <c>data.FIELD</c>,
/// the batch's fields) to one number. Evaluation reports the mean of every number the loss
/// graph gives and the declared metrics over the test records.
/// </summary>
public sealed class ObjectiveTask : ITrainingTask, IDisposable
{
    private readonly IRecords train;
    private readonly IRecords? test;
    private readonly GraphModule loss;
    private readonly GraphModule? metrics;
    private readonly string[][] modelFields;
    private readonly JointAugments? joint;
    private readonly string[] imageFields;
    private readonly GraphModule? teacher;
    private readonly string[] teacherFields;
    private bool testLabelsChecked;

    /// <param name="train">The training records (owned by the caller).</param>
    /// <param name="test">Held-out records, or null.</param>
    /// <param name="lossGraph">The elaborated loss; its first output is minimised.</param>
    /// <param name="modelFields">
    /// The fields that feed each model input, in the model's input order: several are
    /// concatenated along the batch into one pass, and the loss reads an output computed from
    /// them per field ("out.NAME.FIELD", the field's rows).
    /// </param>
    /// <param name="joint">Crops and flips applied to every spatial field together (records data), or null.</param>
    /// <param name="metricsGraph">The elaborated metrics, or null.</param>
    /// <param name="teacher">
    /// A model run frozen on every batch (eval mode, no gradient; owned by the caller, on the
    /// trained model's device), whose outputs feed the objective's "teacher.NAME" inputs; or null.
    /// </param>
    /// <param name="teacherFields">The field that feeds each teacher input, in its input order.</param>
    public ObjectiveTask(
        IRecords train,
        IRecords? test,
        Ir.Graph lossGraph,
        IReadOnlyList<IReadOnlyList<string>> modelFields,
        JointAugments? joint,
        Ir.Graph? metricsGraph = null,
        GraphModule? teacher = null,
        IReadOnlyList<string>? teacherFields = null)
    {
        this.teacher = teacher;
        this.teacherFields = [.. teacherFields ?? []];
        teacher?.eval();
        this.train = train;
        this.test = test;
        // The objective has no parameters: the seed draws nothing.
        loss = new GraphModule(lossGraph, 0);
        metrics = metricsGraph is null ? null : new GraphModule(metricsGraph, 0);
        this.modelFields = [.. modelFields.Select(fields => fields.ToArray())];
        this.joint = joint;
        imageFields = train.PreparesImages ? [] : train.Schema.Where(f => f.Kind == FieldKind.Image).Select(f => f.Name).ToArray();
    }

    public int Count => train.Count;

    /// <summary>The names of the numbers the loss graph gives, the minimised one first.</summary>
    public IReadOnlyList<string> LossNames => loss.OutputNames;

    public Tensor Loss(GraphModule model, long[] indices, Generator augment, TrainOptions options)
    {
        var batch = Prepare(train, indices, options.Augmentations, augment, model.Device, training: true);
        return Run(loss, model, batch)[0];
    }

    public EvalResult? Evaluate(GraphModule model, TrainOptions options)
    {
        if (test is null || test.Count == 0)
        {
            return null;
        }

        // Labels beyond the logits are one DataError here, not a libtorch trace mid-evaluation
        // (once: the labels do not change, and Check has done it before a training run).
        if (!testLabelsChecked)
        {
            CheckLabels([("test", test)]);
            testLabelsChecked = true;
        }

        var wasTraining = model.training;
        model.eval();
        // Evaluation transforms are deterministic; a fixed seed keeps them so anyway.
        using var generator = new Generator(0);
        var sums = new double[loss.OutputNames.Count];
        var metricSums = new double[metrics?.OutputNames.Count ?? 0];
        // Metric.… outputs are statistics summed over the set and finalized once (exact mIoU);
        // any other number a metrics function gives is averaged over the records.
        var statistics = new MetricAccumulator();
        var kinds = MetricKinds();
        var clock = Stopwatch.StartNew();
        try
        {
            using var noGrad = no_grad();
            foreach (var indices in Batches.Sequential(test.Count, options.EvalBatchSize))
            {
                using var scope = NewDisposeScope();
                var batch = Prepare(test, indices, options.EvalTransforms, generator, model.Device, training: false);
                var outputs = model.Forward(Bound(batch));
                Accumulate(Run(loss, model, outputs, batch), sums, indices.Length);
                if (metrics is not null)
                {
                    var values = Run(metrics, model, outputs, batch);
                    for (var i = 0; i < values.Length; i++)
                    {
                        if (kinds[i] is { } kind)
                        {
                            statistics.Add(metrics.OutputNames[i], kind, values[i]);
                        }
                        else
                        {
                            metricSums[i] += values[i].to_type(ScalarType.Float64).mean().item<double>() * indices.Length;
                        }
                    }
                }
            }
        }
        finally
        {
            model.train(wasTraining);
        }

        var extra = new Dictionary<string, double>();
        for (var i = 1; i < sums.Length; i++)
        {
            extra[loss.OutputNames[i]] = sums[i] / test.Count;
        }

        var finalized = statistics.Results();
        var shares = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < metricSums.Length; i++)
        {
            var name = metrics!.OutputNames[i];
            extra[name] = kinds[i] is null ? metricSums[i] / test.Count : finalized[name];
            if (kinds[i] is { } kind && IsShare(kind))
            {
                shares.Add(name);
            }
        }

        // A metric named "loss" is the reported test loss (the plain cross-entropy of a smoothed
        // objective, as timm validates); "accuracy" and "top5" together are a classifier's.
        var testLoss = extra.Remove("loss", out var declared) ? declared : sums[0] / test.Count;
        var (accuracy, top5) = (double.NaN, double.NaN);
        if (extra.ContainsKey("accuracy") && extra.ContainsKey("top5"))
        {
            (accuracy, top5) = (extra["accuracy"], extra["top5"]);
            extra.Remove("accuracy");
            extra.Remove("top5");
        }

        var seconds = clock.Elapsed.TotalSeconds;
        return new EvalResult(testLoss, accuracy, top5, seconds > 0 ? test.Count / seconds : 0, test.Count)
        {
            Extra = extra,
            Shares = shares,
        };
    }

    /// <summary>Metrics whose value is a share of what was counted (shown as a percentage).</summary>
    private static bool IsShare(Ir.MetricKind kind) =>
        kind.IsAccuracyMetric || kind.IsTopKMetric || kind.IsMiouMetric || kind.IsPixelAccuracyMetric || kind.IsDelta1Metric;

    /// <summary>
    /// Every label and mask a cross-entropy of the loss reads must index its logits (ignore index
    /// aside): checked on the whole data before the first step, where libtorch would stop mid-step.
    /// </summary>
    public void Check(GraphModule model)
    {
        CheckLabels([("training", train), ("test", test)]);
        testLabelsChecked = true;
    }

    /// <summary>The label check of <see cref="Check"/> over the given splits.</summary>
    private void CheckLabels((string Split, IRecords? Data)[] splits)
    {
        var nodes = loss.Graph.Nodes.ToDictionary(n => n.Id);
        foreach (var node in loss.Graph.Nodes)
        {
            if (node.Op is not Ir.Op.Loss { Item: Ir.LossKind.CrossEntropyLoss ce }
                || nodes[node.Inputs[1]].Op is not Ir.Op.Input input
                || !input.name.StartsWith("data.", StringComparison.Ordinal)
                || nodes[node.Inputs[0]].Shape[ce.axis] is not Ir.Dim.Known classes)
            {
                continue;
            }

            var field = input.name["data.".Length..];
            foreach (var (split, data) in splits)
            {
                if (data is null || data.Count == 0)
                {
                    continue;
                }

                using var scope = NewDisposeScope();
                if (data.Stored(field) is not { } values)
                {
                    continue;
                }

                var counted = values.ne(ce.ignoreIndex);
                if (!counted.any().item<bool>())
                {
                    continue;
                }

                var ids = values.masked_select(counted);
                var largest = ids.max().item<long>();
                var smallest = ids.min().item<long>();
                if (largest >= classes.Item || smallest < 0)
                {
                    throw new DataError(
                        $"field '{field}'",
                        $"the {split} data has class ids {smallest} to {largest} but the loss's logits give {classes.Item} classes; the head needs {largest + 1}");
                }
            }
        }
    }

    /// <summary>The kind of each metrics output that is a Metric.… op, else null.</summary>
    private Ir.MetricKind?[] MetricKinds()
    {
        if (metrics is null)
        {
            return [];
        }

        var nodes = metrics.Graph.Nodes.ToDictionary(n => n.Id);
        return metrics.Graph.Outputs
            .Select(output => nodes[output.Item2].Op is Ir.Op.Metric m ? m.Item : null)
            .ToArray();
    }

    public void Dispose()
    {
        loss.Dispose();
        metrics?.Dispose();
    }

    private Dictionary<string, Tensor> Prepare(IRecords data, long[] indices, IReadOnlyList<IAugment> imageTransforms, Generator generator, Device device, bool training)
    {
        var batch = data.Take(indices, generator, training);
        if (training && joint is not null)
        {
            batch = joint.Apply(batch, data.Schema, generator);
        }

        foreach (var name in imageFields)
        {
            batch[name] = Augments.Run(batch[name], imageTransforms, generator);
        }

        foreach (var name in batch.Keys.ToArray())
        {
            batch[name] = batch[name].to(device);
        }

        if (teacher is not null)
        {
            // The teacher sees the batch the student sees (after augmentation), frozen.
            using var noGrad = no_grad();
            var outputs = teacher.Forward(teacherFields.Select(f => batch[f]).ToArray());
            for (var i = 0; i < outputs.Length; i++)
            {
                batch["teacher." + teacher.OutputNames[i]] = outputs[i];
            }
        }

        return batch;
    }

    /// <summary>Each model input's field, or its fields one after another along the batch.</summary>
    private Tensor[] Bound(Dictionary<string, Tensor> batch) =>
        [.. modelFields.Select(fields => fields.Length == 1 ? batch[fields[0]] : cat([.. fields.Select(f => batch[f])], 0))];

    private Tensor[] Run(GraphModule objective, GraphModule model, Dictionary<string, Tensor> batch) =>
        Run(objective, model, model.Forward(Bound(batch)), batch);

    /// <summary>
    /// The objective's inputs are the model's outputs ("out.NAME", or "out.NAME.FIELD": the rows of
    /// FIELD in an output of an input fed several fields), the fields ("data.FIELD") and the
    /// teacher's outputs ("teacher.NAME", which <see cref="Prepare"/> put in the batch under that name).
    /// </summary>
    private Tensor[] Run(GraphModule objective, GraphModule model, Tensor[] outputs, Dictionary<string, Tensor> batch)
    {
        var inputs = new Tensor[objective.InputNames.Count];
        for (var i = 0; i < inputs.Length; i++)
        {
            var name = objective.InputNames[i];
            inputs[i] = name.StartsWith("out.", StringComparison.Ordinal) ? Output(model, outputs, name["out.".Length..])
                : name.StartsWith("data.", StringComparison.Ordinal) ? batch[name["data.".Length..]]
                : batch[name];
        }

        return objective.Forward(inputs);
    }

    /// <summary>Output NAME, or of output NAME.FIELD the rows its field took in the concatenated input.</summary>
    private Tensor Output(GraphModule model, Tensor[] outputs, string name)
    {
        var dot = name.IndexOf('.', StringComparison.Ordinal);
        var key = dot < 0 ? name : name[..dot];
        var output = outputs[Enumerable.Range(0, outputs.Length).First(i => model.OutputNames[i] == key)];
        if (dot < 0)
        {
            return output;
        }

        var field = name[(dot + 1)..];
        var fields = modelFields.First(fs => fs.Length > 1 && fs.Contains(field));
        var rows = output.shape[0] / fields.Length;
        return output.narrow(0, Array.IndexOf(fields, field) * rows, rows);
    }

    /// <summary>Adds each number times the batch size: the means over the set are then exact.</summary>
    private static void Accumulate(Tensor[] values, double[] sums, int batchSize)
    {
        for (var i = 0; i < values.Length; i++)
        {
            sums[i] += values[i].to_type(ScalarType.Float64).mean().item<double>() * batchSize;
        }
    }
}
