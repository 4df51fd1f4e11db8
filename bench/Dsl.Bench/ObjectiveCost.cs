using System.Globalization;
using Dsl.Runtime.Bench;

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
            var paired = Baselines.AgainstHostLoss(graph, objective.Value.Loss, ce.smoothing, batch, rounds, warmup, repeats);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {batch} | {paired.TrainStepA:F3} | {paired.TrainStepB:F3} | {paired.TrainStepRatio:F4} |"));
        }

        return 0;
    }
}
