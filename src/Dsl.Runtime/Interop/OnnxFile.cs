using Dsl.Runtime.Checkpoints;

namespace Dsl.Runtime.Interop;

/// <summary>
/// Writing an exported model: the whole file goes to a temporary sibling, is flushed to disk and
/// renamed over the target, so a reader (or a crash) sees the old file or the new one. A file
/// already at the target is replaced only when it is an ONNX model dsl wrote (producer_name
/// "dsl"); anything else there is a user's and is refused before anything is written.
/// </summary>
public static class OnnxFile
{
    /// <summary>Whether <paramref name="path"/> is an ONNX ModelProto whose producer_name is "dsl".</summary>
    public static bool IsOurs(string path)
    {
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 4096);
            return ProtoReader.TopLevelString(stream, field: 2) == OnnxGraph.Producer;
        }
        catch (IOException)
        {
            return false;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>Refuses a target that <see cref="Write"/> would refuse, before any work is done for it.</summary>
    /// <exception cref="InteropError">The target is a folder, a file dsl export did not write, or in a missing folder.</exception>
    public static void CheckTarget(string path)
    {
        var full = Path.GetFullPath(path);
        if (Directory.Exists(full))
        {
            throw new InteropError($"{path}: is a folder; --out names the .onnx file to write");
        }

        if (File.Exists(full) && !IsOurs(full))
        {
            throw new InteropError(
                $"{path}: exists and is not an ONNX file written by dsl export; it is left alone (remove it or choose another --out)");
        }

        var folder = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(folder))
        {
            throw new InteropError($"{path}: the folder {folder} does not exist");
        }
    }

    /// <exception cref="InteropError">The target is a folder, a file dsl export did not write, or in a missing folder.</exception>
    public static void Write(string path, OnnxGraph graph, int opset, string producerVersion)
    {
        ArgumentNullException.ThrowIfNull(graph);
        CheckTarget(path);
        var full = Path.GetFullPath(path);
        var folder = Path.GetDirectoryName(full)!;

        var temporary = full + DurableFile.TempInfix + Guid.NewGuid().ToString("N");
        DurableFile.Probe(full);
        try
        {
            using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                graph.WriteTo(stream, opset, producerVersion);
                stream.Flush(flushToDisk: true);
            }

            DurableFile.Rename(temporary, full);
            DurableFile.SyncDirectory(folder);
        }
        catch
        {
            File.Delete(temporary);
            throw;
        }
    }
}
