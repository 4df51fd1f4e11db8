using Dsl.Runtime.Emit;
using static TorchSharp.torch;

namespace Dsl.Runtime.Bench;

/// <summary>
/// A compiled model timed against a host-side baseline in alternating rounds
/// (<see cref="PairedComparison"/>), A being the compiled side: the hand-written
/// <see cref="ReferenceConvnet"/> (what compiling through the IR costs), and the same model
/// trained with <c>F.cross_entropy</c> called directly instead of its objective graph (what the
/// language's objectives cost against the host loss they replaced). Shared by
/// <c>bench/Dsl.Bench</c> and an experiment's <c>Stage.compare … (against = …)</c>.
/// </summary>
public static class Baselines
{
    /// <summary>The compiled graph against the hand-written convnet it mirrors, on random images.</summary>
    /// <exception cref="ArgumentException">The graph does not take and give what the convnet does.</exception>
    public static PairedResult AgainstReference(Ir.Graph graph, long batch, int rounds, int warmup, int repeats)
    {
        ConvolutionBackend.Verify(ReferenceConvnet.ConvShapes);
        manual_seed(0).Dispose();
        using var dsl = new GraphModule(graph, seed: 0);
        var input = InputShape(graph);
        if (!input.SequenceEqual(ReferenceConvnet.InputShape))
        {
            throw new ArgumentException(
                $"model '{graph.Name}' takes [{string.Join(", ", input)}] but the hand-written convnet takes [{string.Join(", ", ReferenceConvnet.InputShape)}]");
        }

        using var reference = ReferenceConvnet.Create();
        using var images = randn([batch, .. ReferenceConvnet.InputShape]);
        using var labels = randint(ReferenceConvnet.Classes, [batch]);
        Tensor Loss(Tensor[] outputs) => nn.functional.cross_entropy(outputs[0], labels);

        BenchResult MeasureDsl(int warm, int times) => Benchmark.Measure(inputs => dsl.Forward(inputs), dsl, [images], Loss, warm, times);
        BenchResult MeasureReference(int warm, int times) => Benchmark.Measure(inputs => [reference.forward(inputs[0])], reference, [images], Loss, warm, times);
        return PairedComparison.Run(MeasureDsl, MeasureReference, rounds, warmup, repeats);
    }

    /// <summary>
    /// One model's training step with its objective graph (<paramref name="lossGraph"/>, whose
    /// inputs are the model's outputs <c>out.*</c> and the fields <c>data.image</c>,
    /// <c>data.label</c>) against <c>F.cross_entropy</c> with the same label smoothing.
    /// </summary>
    public static PairedResult AgainstHostLoss(Ir.Graph graph, Ir.Graph lossGraph, double smoothing, long batch, int rounds, int warmup, int repeats)
    {
        manual_seed(0).Dispose();
        using var model = new GraphModule(graph, seed: 0);
        using var loss = new GraphModule(lossGraph, seed: 0);
        using var images = randn([batch, .. InputShape(graph)]);
        using var logits = model.Forward(images)[0];
        using var labels = randint(logits.shape[1], [batch]);

        Tensor Objective(Tensor[] outputs) =>
            loss.Forward(loss.InputNames.Select(n => n.StartsWith("out.", StringComparison.Ordinal) ? outputs[0] : n == "data.label" ? labels : images).ToArray())[0];

        Tensor Host(Tensor[] outputs) => nn.functional.cross_entropy(outputs[0], labels, label_smoothing: smoothing);

        BenchResult With(Func<Tensor[], Tensor> objective, int warm, int times) =>
            Benchmark.Measure(inputs => model.Forward(inputs), model, [images], objective, warm, times);

        return PairedComparison.Run((w, n) => With(Objective, w, n), (w, n) => With(Host, w, n), rounds, warmup, repeats);
    }

    private static long[] InputShape(Ir.Graph graph) =>
        graph.Nodes[graph.Inputs.Head.Item2].Shape.Skip(1).Select(d => d is Ir.Dim.Known k ? (long)k.Item : -1L).ToArray();
}
