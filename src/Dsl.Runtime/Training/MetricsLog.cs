using System.Text.Json;
using System.Text.Json.Serialization;

namespace Dsl.Runtime.Training;

/// <summary>
/// metrics.jsonl: one JSON object per line, appended and flushed as training goes, so a
/// crashed run keeps everything logged before the crash.
/// </summary>
internal sealed class MetricsLog : IDisposable
{
    private static readonly JsonSerializerOptions Json = new()
    {
        // A diverged run logs NaN; recording it beats failing the run.
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    private readonly StreamWriter writer;

    /// <summary>
    /// Opens the log. Without <paramref name="resumeStep"/> it starts empty; with it, lines of
    /// steps after the checkpoint (written by the interrupted run) are dropped, so the resumed
    /// run's lines follow on without duplicates.
    /// </summary>
    public MetricsLog(string path, long? resumeStep)
    {
        var kept = resumeStep is { } step && File.Exists(path)
            ? File.ReadAllLines(path).Where(line => StepOf(line) <= step).ToList()
            : [];
        File.WriteAllLines(path, kept);
        writer = new StreamWriter(path, append: true) { AutoFlush = true };
    }

    public void Write(IReadOnlyDictionary<string, object> record) =>
        writer.WriteLine(JsonSerializer.Serialize(record, Json));

    public void Dispose() => writer.Dispose();

    private static long StepOf(string line)
    {
        try
        {
            using var document = JsonDocument.Parse(line);
            return document.RootElement.TryGetProperty("step", out var step) && step.TryGetInt64(out var value)
                ? value
                : long.MaxValue;
        }
        catch (JsonException)
        {
            // A line cut off by a crash.
            return long.MaxValue;
        }
    }
}
