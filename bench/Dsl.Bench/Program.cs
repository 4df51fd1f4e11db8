using System.Globalization;
using Dsl.Bench;
using Dsl.Runtime.Bench;
using Dsl.Runtime.Emit;
using TorchSharp;
using static TorchSharp.torch;

// Times the hand-written ReferenceConvnet (forward and training step) with the same
// Benchmark harness the DSL uses for compiled graphs, so the two can be compared.
// Usage: Dsl.Bench [--batch B] [--repeats N] [--warmup W] [--seed S] [--json]
// With --compare FILE.dsl it times the DSL model of FILE and the reference side by side; with
// --depthwise-sweep, the correctness sweep behind ConvolutionBackend's depthwise allowlist; with
// --objective FILE.dsl, a training step through the train block's objective graph against the
// direct F.cross_entropy of the host task it replaced.
BenchArgs options;
try
{
    options = BenchArgs.Parse(args);
}
catch (ArgumentException e)
{
    Console.Error.WriteLine($"error: {e.Message}");
    Console.Error.WriteLine(BenchArgs.Usage);
    return 2;
}

if (options.Help)
{
    Console.WriteLine(BenchArgs.Usage);
    return 0;
}

if (options.DepthwiseSweep)
{
    return DepthwiseSweep.Run(options.Every, options.Draws, options.Seed);
}

if (options.Objective is { } objectiveFile)
{
    return ObjectiveCost.Run(objectiveFile, options.Model, options.Batches, options.Rounds, options.Warmup, options.Repeats);
}

if (options.Compare is { } file)
{
    return Compare.Run(file, options.Model, options.Batches, options.Rounds, options.Warmup, options.Repeats, options.Json);
}

ConvolutionBackend.Verify(ReferenceConvnet.ConvShapes);
manual_seed(options.Seed).Dispose();
using var model = ReferenceConvnet.Create();
using var images = randn([options.Batch, .. ReferenceConvnet.InputShape]);
using var labels = randint(ReferenceConvnet.Classes, [options.Batch]);
var result = Benchmark.Measure(
    forward: inputs => [model.forward(inputs[0])],
    module: model,
    inputs: [images],
    loss: outputs => nn.functional.cross_entropy(outputs[0], labels),
    warmup: options.Warmup,
    repeats: options.Repeats);

if (options.Json)
{
    Console.WriteLine(result.ToJson("reference-convnet", options.Batch));
}
else
{
    var culture = CultureInfo.InvariantCulture;
    Console.WriteLine(string.Create(culture, $"reference convnet, batch {options.Batch}, {result.Threads} threads, {result.ConvBackend} convolutions"));
    Console.WriteLine(string.Create(culture, $"  forward     median {result.Forward.MedianMs:F2} ms  (p10 {result.Forward.P10Ms:F2}, p90 {result.Forward.P90Ms:F2})"));
    Console.WriteLine(string.Create(culture, $"  train step  median {result.TrainStep.MedianMs:F2} ms  (p10 {result.TrainStep.P10Ms:F2}, p90 {result.TrainStep.P90Ms:F2})"));
}

return 0;
