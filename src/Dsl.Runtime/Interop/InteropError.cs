namespace Dsl.Runtime.Interop;

/// <summary>
/// A model or a weights file cannot be exported or imported as asked: a file that is not dsl's
/// in the way, a state dict whose keys do not fit, a model too large for the format. Nothing has
/// been written when it is thrown.
/// </summary>
public sealed class InteropError : Exception
{
    public InteropError(string message)
        : base(message)
    {
    }

    public InteropError(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
