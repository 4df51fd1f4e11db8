using System.Globalization;
using Dsl.Runtime.Bench;
using Dsl.Runtime.Emit;
using static TorchSharp.torch;

namespace Dsl.Bench;

/// <summary>
/// What training through the language's objective costs against the host loss it replaced: one
/// model, one batch, a training step whose loss is either the train block's objective graph
/// (dsl/Objective.fs: for <c>crossEntropy</c>, the prelude's <c>classificationLoss</c>) or
/// F.cross_entropy called directly, as the removed ClassificationTask did; timed side by side in
/// alternating rounds (<see cref="PairedComparison"/>).
/// </summary>
internal static class ObjectiveCost
{
    public static int Run(string file, string? modelName, IReadOnlyList<long> batches, int rounds, int warmup, int repeats)
    {
        if (BenchFile.Load(file, modelName) is not { } loaded)
        {
            return 1;
        }

        var (compiled, graph) = loaded;
        var recipe = compiled.Recipes.FirstOrDefault(r => r.Model == graph.Name);
        var objective = Compiler.pickObjective(compiled, graph.Name);
        if (recipe is null || objective is null || recipe.Loss is not Recipe.LossSpec.CrossEntropy ce)
        {
            Console.Error.WriteLine($"{file}: '{graph.Name}' needs a train block with loss = crossEntropy, the objective compared here");
            return 1;
        }

        Console.WriteLine($"{file}, model {graph.Name}: training step with the prelude's classificationLoss (the objective graph) vs F.cross_entropy (the former host task); {rounds} alternating rounds of {repeats} repeats; ratio = median of round ratios (objective / host)");
        Console.WriteLine("| batch | objective ms | host ms | ratio |");
        Console.WriteLine("|---:|---:|---:|---:|");
        foreach (var batch in batches)
        {
            var paired = Measure(graph, objective.Value.Loss, ce.smoothing, batch, rounds, warmup, repeats);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {batch} | {paired.TrainStepA:F3} | {paired.TrainStepB:F3} | {paired.TrainStepRatio:F4} |"));
        }

        return 0;
    }

    private static PairedResult Measure(Ir.Graph graph, Ir.Graph lossGraph, double smoothing, long batch, int rounds, int warmup, int repeats)
    {
        manual_seed(0).Dispose();
        using var model = new GraphModule(graph, seed: 0);
        using var loss = new GraphModule(lossGraph, seed: 0);
        var input = graph.Nodes[graph.Inputs.Head.Item2].Shape.Skip(1).Select(d => ((Ir.Dim.Known)d).Item).ToArray();
        using var images = randn([batch, .. input]);
        using var logits = model.Forward(images)[0];
        using var labels = randint(logits.shape[1], [batch]);

        // The objective's inputs: the model's outputs, then the fields (image, label).
        Tensor Objective(Tensor[] outputs) =>
            loss.Forward(loss.InputNames.Select(n => n.StartsWith("out.", StringComparison.Ordinal) ? outputs[0] : n == "data.label" ? labels : images).ToArray())[0];

        Tensor Host(Tensor[] outputs) => nn.functional.cross_entropy(outputs[0], labels, label_smoothing: smoothing);

        BenchResult With(Func<Tensor[], Tensor> objective, int warm, int times) =>
            Benchmark.Measure(inputs => model.Forward(inputs), model, [images], objective, warm, times);

        return PairedComparison.Run((w, n) => With(Objective, w, n), (w, n) => With(Host, w, n), rounds, warmup, repeats);
    }
}
