using System.Text.Json;

namespace Dsl.Runtime.Bench;

/// <summary>What <see cref="Benchmark.Measure"/> found.</summary>
/// <param name="Forward">Forward pass latency (eval mode, no_grad).</param>
/// <param name="TrainStep">Training step latency (forward, loss, backward, SGD update).</param>
/// <param name="Threads">TorchSharp intra-op threads.</param>
/// <param name="ConvBackend">The convolution implementation (<see cref="Emit.ConvolutionBackend"/>).</param>
/// <param name="Warmup">Untimed iterations before each measurement.</param>
/// <param name="Repeats">Timed iterations per measurement.</param>
public sealed record BenchResult(LatencyStats Forward, LatencyStats TrainStep, int Threads, string ConvBackend, int Warmup, int Repeats)
{
    /// <summary>
    /// One flat JSON object with snake_case keys (forward_ms_median, train_step_ms_p90, …),
    /// the same for the DSL side and the hand-written bench/Dsl.Bench so the two can be diffed.
    /// </summary>
    public string ToJson(string model, long batch)
    {
        var fields = new Dictionary<string, object>
        {
            ["model"] = model,
            ["batch"] = batch,
            ["threads"] = Threads,
            ["conv_backend"] = ConvBackend,
            ["warmup"] = Warmup,
            ["repeats"] = Repeats,
            ["forward_ms_median"] = Forward.MedianMs,
            ["forward_ms_p10"] = Forward.P10Ms,
            ["forward_ms_p90"] = Forward.P90Ms,
            ["train_step_ms_median"] = TrainStep.MedianMs,
            ["train_step_ms_p10"] = TrainStep.P10Ms,
            ["train_step_ms_p90"] = TrainStep.P90Ms,
        };
        return JsonSerializer.Serialize(fields);
    }
}
