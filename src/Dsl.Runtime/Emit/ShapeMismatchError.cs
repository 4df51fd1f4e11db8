namespace Dsl.Runtime.Emit;

/// <summary>
/// A forward input does not have the shape the graph was compiled for. Raised before any node
/// runs, so the message names the graph input rather than some layer deep inside the model.
/// </summary>
public sealed class ShapeMismatchError : Exception
{
    public ShapeMismatchError(string inputName, string expected, string actual)
        : base($"input '{inputName}' expects shape {expected} but got {actual}")
    {
        InputName = inputName;
        Expected = expected;
        Actual = actual;
    }

    /// <summary>The graph input's name, as in <c>Graph.Inputs</c>.</summary>
    public string InputName { get; }

    /// <summary>The IR shape, e.g. <c>[B, 1, 28, 28]</c>; symbolic dimensions accept any size.</summary>
    public string Expected { get; }

    /// <summary>The shape of the tensor that was passed.</summary>
    public string Actual { get; }
}
