using System.Runtime.InteropServices;
using System.Text;

namespace Dsl.Runtime.Checkpoints;

/// <summary>
/// Writes that survive a kill or a power cut at any instant: the new content goes to a
/// temporary sibling, is fsynced, renamed over the target (atomic on POSIX) and the directory
/// entry is fsynced, so a reader sees the old file or the new one, never a part of either.
/// </summary>
public static class DurableFile
{
    /// <summary>Temporary siblings are named "&lt;name&gt;.tmp-&lt;guid&gt;"; a crash may leave one behind.</summary>
    public const string TempInfix = ".tmp-";

    /// <summary>
    /// Called before each durable write with the path it is about to write; tests throw from it
    /// to inject a failure at that instant. Null in production.
    /// </summary>
    public static Action<string>? BeforeWrite { get; set; }

    public static void WriteAllText(string path, string text) => WriteAllBytes(path, Encoding.UTF8.GetBytes(text));

    public static void WriteAllBytes(string path, byte[] bytes)
    {
        var full = Path.GetFullPath(path);
        var temp = full + TempInfix + Guid.NewGuid().ToString("N");
        try
        {
            Probe(full);
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                stream.Write(bytes);
                stream.Flush(flushToDisk: true);
            }

            Probe(full);
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }

        SyncDirectory(Path.GetDirectoryName(full)!);
    }

    /// <summary>
    /// rename(2): atomically replaces <paramref name="target"/> (a file or a symbolic link, not
    /// a directory) with <paramref name="source"/>. .NET's File.Move follows a link at the
    /// target and refuses directories, so this goes to libc.
    /// </summary>
    public static void Rename(string source, string target)
    {
        if (rename(source, target) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new IOException($"{target}: cannot rename {source} over it ({Marshal.GetPInvokeErrorMessage(errno)})");
        }
    }

    /// <summary>Whether a file name is one of this class's temporaries: "&lt;name&gt;.tmp-&lt;32 hex digits&gt;".</summary>
    public static bool IsTemporary(string name)
    {
        var at = name.LastIndexOf(TempInfix, StringComparison.Ordinal);
        return at > 0 && name.Length == at + TempInfix.Length + 32 && name[(at + TempInfix.Length)..].All(char.IsAsciiHexDigitLower);
    }

    /// <summary>Runs the test hook for <paramref name="path"/>.</summary>
    public static void Probe(string path) => BeforeWrite?.Invoke(path);

    /// <summary>
    /// fsyncs a directory, making the renames and creations inside it durable. .NET cannot open
    /// a directory as a stream, so this goes to libc; elsewhere it is a no-op.
    /// </summary>
    public static void SyncDirectory(string directory)
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS())
        {
            return;
        }

        var fd = open(directory, 0);
        if (fd < 0)
        {
            return;
        }

        try
        {
            fsync(fd);
        }
        finally
        {
            close(fd);
        }
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

    [DllImport("libc", SetLastError = true)]
    private static extern int fsync(int fd);

    [DllImport("libc", SetLastError = true)]
    private static extern int rename([MarshalAs(UnmanagedType.LPUTF8Str)] string oldPath, [MarshalAs(UnmanagedType.LPUTF8Str)] string newPath);

    [DllImport("libc", SetLastError = true)]
    private static extern int close(int fd);
}
