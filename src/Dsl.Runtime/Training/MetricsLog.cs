using System.Text;
using System.Text.Json;
using Dsl.Runtime.Checkpoints;
using System.Text.Json.Serialization;

namespace Dsl.Runtime.Training;

/// <summary>
/// metrics.jsonl: one JSON object per line, appended and flushed as training goes, so a
/// crashed run keeps everything logged before the crash.
/// </summary>
public sealed class MetricsLog : IDisposable
{
    private static readonly JsonSerializerOptions Json = new()
    {
        // A diverged run logs NaN; recording it beats failing the run.
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    private readonly FileStream stream;

    /// <summary>
    /// Opens the log for appending. Without <paramref name="resumeStep"/> it starts empty (the
    /// run folder has been checked to hold no earlier run's log); with it, lines of steps after
    /// the checkpoint (written by the interrupted run) are dropped, so the resumed run's lines
    /// follow on without duplicates. The trimmed log replaces the old one atomically (written
    /// beside it, fsynced, renamed): a kill at any instant leaves the old log or the new one.
    /// </summary>
    public MetricsLog(string path, long? resumeStep)
    {
        if (resumeStep is { } step)
        {
            if (File.Exists(path))
            {
                var lines = File.ReadAllLines(path);
                var kept = lines.Where(line => StepOf(line) <= step).ToList();
                if (kept.Count != lines.Length || (lines.Length > 0 && !EndsWithNewline(path)))
                {
                    DurableFile.WriteAllText(path, string.Concat(kept.Select(line => line + "\n")));
                }
            }
        }
        else
        {
            DurableFile.WriteAllText(path, "");
        }

        DurableFile.Probe(path);
        stream = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read);
    }

    /// <summary>Appends one line and fsyncs it: a line written is a line kept.</summary>
    public void Write(IReadOnlyDictionary<string, object> record)
    {
        var bytes = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(record, Json) + "\n");
        DurableFile.Probe(stream.Name);
        stream.Write(bytes);
        stream.Flush(flushToDisk: true);
    }

    public void Dispose() => stream.Dispose();

    private static bool EndsWithNewline(string path)
    {
        using var file = File.OpenRead(path);
        if (file.Length == 0)
        {
            return true;
        }

        file.Seek(-1, SeekOrigin.End);
        return file.ReadByte() == '\n';
    }

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
