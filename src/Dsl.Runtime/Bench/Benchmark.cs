using System.Diagnostics;
using Dsl.Runtime.Emit;
using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Bench;

/// <summary>
/// Times a model's forward pass and training step the same way for any TorchSharp module,
/// so the DSL's compiled graph and a hand-written module can be compared fairly.
/// </summary>
public static class Benchmark
{
    /// <summary>The learning rate of the plain SGD update in a timed training step.</summary>
    private const double StepLr = 1e-4;

    /// <summary>
    /// Sets TorchSharp's intra-op thread count to the machine's core count and returns it.
    /// <see cref="Measure"/> calls this, so every side of a comparison runs with the same threads.
    /// </summary>
    public static int UseAllCores()
    {
        // DSL_THREADS caps the threads, e.g. to run two jobs side by side on a shared machine
        // without libtorch's OpenMP workers spinning against each other.
        var cores = Threads.Count;
        set_num_threads(cores);
        return cores;
    }

    /// <summary>
    /// Runs <paramref name="warmup"/> untimed then <paramref name="repeats"/> timed iterations of
    /// (a) forward in eval mode under no_grad and (b) a training step in train mode: zero_grad,
    /// forward, <paramref name="loss"/>, backward and a plain SGD update. Each iteration runs in
    /// its own DisposeScope. The module's mode is restored afterwards; its weights and running
    /// statistics have moved by the SGD updates.
    /// </summary>
    public static BenchResult Measure(
        Func<Tensor[], Tensor[]> forward,
        nn.Module module,
        Tensor[] inputs,
        Func<Tensor[], Tensor> loss,
        int warmup,
        int repeats)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(warmup);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(repeats);
        var threads = UseAllCores();
        // Whichever backend the process's convolutions run on (see ConvolutionBackend).
        var backend = ConvolutionBackend.Current;
        var wasTraining = module.training;
        var parameters = module.parameters().ToArray();
        try
        {
            var forwardMs = MeasureForward(forward, module, inputs, warmup, repeats);
            module.train();
            var trainMs = Time(warmup, repeats, () => TrainStep(forward, module, parameters, inputs, loss));
            return new BenchResult(forwardMs, LatencyStats.Of(trainMs), threads, backend, warmup, repeats);
        }
        finally
        {
            module.zero_grad();
            module.train(wasTraining);
        }
    }

    /// <summary>
    /// Forward latency alone, in eval mode under no_grad: <paramref name="warmup"/> untimed then
    /// <paramref name="repeats"/> timed runs, each in its own DisposeScope. The mode is restored.
    /// </summary>
    public static LatencyStats MeasureForward(Func<Tensor[], Tensor[]> forward, nn.Module module, Tensor[] inputs, int warmup, int repeats)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(warmup);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(repeats);
        UseAllCores();
        var wasTraining = module.training;
        try
        {
            module.eval();
            return LatencyStats.Of(Time(warmup, repeats, () =>
            {
                using var noGrad = no_grad();
                forward(inputs);
            }));
        }
        finally
        {
            module.train(wasTraining);
        }
    }

    private static void TrainStep(Func<Tensor[], Tensor[]> forward, nn.Module module, Tensor[] parameters, Tensor[] inputs, Func<Tensor[], Tensor> loss)
    {
        module.zero_grad();
        var value = loss(forward(inputs));
        value.backward();
        using var noGrad = no_grad();
        foreach (var parameter in parameters)
        {
            using var grad = parameter.grad;
            if (grad is not null)
            {
                parameter.add_(grad, alpha: -StepLr);
            }
        }
    }

    /// <summary>Milliseconds of each timed repeat; everything one run creates is disposed after it.</summary>
    private static List<double> Time(int warmup, int repeats, Action run)
    {
        var timings = new List<double>(repeats);
        for (var i = 0; i < warmup + repeats; i++)
        {
            using var scope = NewDisposeScope();
            var clock = Stopwatch.StartNew();
            run();
            Synchronize();
            clock.Stop();
            if (i >= warmup)
            {
                timings.Add(clock.Elapsed.TotalMilliseconds);
            }
        }

        return timings;
    }

    /// <summary>CUDA runs asynchronously; wait for it so the clock measures the work, not its launch.</summary>
    private static void Synchronize()
    {
        if (cuda.is_available())
        {
            cuda.synchronize();
        }
    }
}
