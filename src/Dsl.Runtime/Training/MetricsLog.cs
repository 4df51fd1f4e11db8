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

    /// <summary>
    /// One logged quantity as (step, value) pairs in the order logged: the lines of the log that
    /// have both a step and a number named <paramref name="name"/> (a training loss logs on its
    /// step lines, a <c>test_*</c> metric on its evaluation lines). A line cut off by a crash is
    /// skipped, as a resumed run drops it.
    /// </summary>
    /// <exception cref="FileNotFoundException">No log at <paramref name="path"/>.</exception>
    public static IReadOnlyList<(long Step, double Value)> ReadSeries(string path, string name)
    {
        var series = new List<(long, double)>();
        foreach (var line in File.ReadLines(path))
        {
            try
            {
                using var document = JsonDocument.Parse(line);
                var root = document.RootElement;
                if (root.TryGetProperty("step", out var step) && step.TryGetInt64(out var s)
                    && root.TryGetProperty(name, out var value) && Number(value) is { } v)
                {
                    series.Add((s, v));
                }
            }
            catch (JsonException)
            {
            }
        }

        return series;
    }

    // A diverged value is logged as "NaN" or "Infinity" (AllowNamedFloatingPointLiterals).
    private static double? Number(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.Number => value.GetDouble(),
        JsonValueKind.String when double.TryParse(value.GetString(), System.Globalization.CultureInfo.InvariantCulture, out var x) => x,
        _ => null,
    };

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
