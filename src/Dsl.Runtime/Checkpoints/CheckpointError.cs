namespace Dsl.Runtime.Checkpoints;

/// <summary>
/// A checkpoint could not be saved or loaded. The message starts with the offending path
/// (the directory, or the file inside it) and says what is wrong with it.
/// </summary>
public sealed class CheckpointError : Exception
{
    public CheckpointError(string path, string message)
        : base($"{path}: {message}")
    {
        Path = path;
    }

    public CheckpointError(string path, string message, Exception innerException)
        : base($"{path}: {message}", innerException)
    {
        Path = path;
    }

    public string Path { get; }
}
