using static TorchSharp.torch;

namespace Dsl.Runtime.Text;

/// <summary>
/// A corpus packed for next-token training: the documents' ids joined with end-of-text between
/// them and cut into rows of Length + 1 ids. Row[..Length] is the input and Row[1..] the
/// target. The split is by document: a seeded shuffle puts the last fraction of documents in
/// validation, so the same seed always gives the same split and no document is on both sides.
/// </summary>
public sealed class PackedSequences : IDisposable
{
    private PackedSequences(Tensor train, Tensor validation, int length)
    {
        Train = train;
        Validation = validation;
        Length = length;
    }

    /// <summary>int64 [rows, Length + 1].</summary>
    public Tensor Train { get; }

    /// <summary>int64 [rows, Length + 1]; no rows when the validation documents are shorter than one row.</summary>
    public Tensor Validation { get; }

    public int Length { get; }

    /// <param name="encode">Text to ids, e.g. <see cref="ByteTokens.Encode"/> or <see cref="TextTokenizer.EncodeAll"/>.</param>
    /// <param name="endOfText">The id put after every document.</param>
    /// <param name="length">Tokens a model sees per row.</param>
    /// <param name="validationFraction">Share of documents held out, in [0, 1).</param>
    public static PackedSequences Pack(
        IReadOnlyList<string> documents,
        Func<string, int[]> encode,
        int endOfText,
        int length,
        double validationFraction,
        long seed)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        if (validationFraction is < 0 or >= 1)
        {
            throw new ArgumentOutOfRangeException(nameof(validationFraction), validationFraction, "must be in [0, 1)");
        }

        var order = Enumerable.Range(0, documents.Count).ToArray();
        new Random(unchecked((int)seed)).Shuffle(order);
        var held = (int)Math.Round(documents.Count * validationFraction);
        var trainDocuments = order.Take(documents.Count - held).Order().Select(i => documents[i]);
        var validationDocuments = order.Skip(documents.Count - held).Order().Select(i => documents[i]);
        return new PackedSequences(
            Rows(trainDocuments, encode, endOfText, length),
            Rows(validationDocuments, encode, endOfText, length),
            length);
    }

    /// <summary>The stream doc₀ EOT doc₁ EOT …, cut into whole rows; the tail shorter than a row is dropped.</summary>
    private static Tensor Rows(IEnumerable<string> documents, Func<string, int[]> encode, int endOfText, int length)
    {
        var stream = new List<long>();
        foreach (var document in documents)
        {
            stream.AddRange(encode(document).Select(id => (long)id));
            stream.Add(endOfText);
        }

        var rows = stream.Count / (length + 1);
        return tensor(stream.Take(rows * (length + 1)).ToArray(), [rows, length + 1]);
    }

    public void Dispose()
    {
        Train.Dispose();
        Validation.Dispose();
    }
}
