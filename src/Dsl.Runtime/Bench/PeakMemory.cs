namespace Dsl.Runtime.Bench;

/// <summary>
/// The process's peak resident memory (Linux's VmHWM), which the kernel lets a process reset by
/// writing 5 to /proc/self/clear_refs (proc(5)); elsewhere, or where that is refused, nothing
/// is known and the reads give NaN. The peak is of the whole process: stages run side by side
/// (dsl run --jobs N) share it.
/// </summary>
public static class PeakMemory
{
    // glibc keeps freed heap pages mapped; without giving them back first, a stage's peak would
    // start from whatever the stages before it in the same process once held (measured in
    // bench/slm.dsl: 1.1 GB for d 256 at batch 8, run early; 3.6 to 4.2 GB for d 256 at batches
    // 1 to 32, which need no more, when run after the 27M-parameter model).
    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "malloc_trim")]
    private static extern int MallocTrim(nuint pad);

    /// <summary>
    /// Starts a new peak at the current resident size, after collecting tensors nothing holds and
    /// returning free heap memory to the kernel; false when the kernel does not allow it.
    /// </summary>
    public static bool Reset()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        try
        {
            MallocTrim(0);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            // Not glibc: the peak starts from the resident size as it is.
        }

        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>The peak resident size since the last <see cref="Reset"/> (or the process start), in bytes.</summary>
    public static double Bytes()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
            {
                // "VmHWM:    123456 kB"
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                {
                    var kb = line["VmHWM:".Length..].Trim().Split(' ')[0];
                    return long.Parse(kb, System.Globalization.CultureInfo.InvariantCulture) * 1024.0;
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }

        return double.NaN;
    }
}
