namespace Dsl.Runtime.Data;

/// <summary>
/// A data set could not be read. The message always starts with the offending path, so the
/// user can see which file to fix or replace without a stack trace.
/// </summary>
public sealed class DataError : Exception
{
    public DataError(string path, string message)
        : base($"{path}: {message}")
    {
        Path = path;
    }

    public DataError(string path, string message, Exception innerException)
        : base($"{path}: {message}", innerException)
    {
        Path = path;
    }

    /// <summary>The file or directory the problem was found in.</summary>
    public string Path { get; }
}
