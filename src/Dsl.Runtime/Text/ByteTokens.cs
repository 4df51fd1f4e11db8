using System.Text;

namespace Dsl.Runtime.Text;

/// <summary>
/// The simplest tokenizer: a text's UTF-8 bytes are its ids (0–255) and 256 ends a document.
/// Useful for tiny language models, whose embedding table then has 257 rows instead of GPT-2's 50,257.
/// </summary>
public static class ByteTokens
{
    public const int EndOfText = 256;

    public const int Vocabulary = 257;

    public static int[] Encode(string text) => [.. Encoding.UTF8.GetBytes(text).Select(b => (int)b)];

    /// <summary>The text of ids up to the first end-of-text; invalid UTF-8 becomes U+FFFD.</summary>
    public static string Decode(IEnumerable<long> ids) =>
        Encoding.UTF8.GetString([.. ids.TakeWhile(id => id != EndOfText).Select(id => (byte)id)]);
}
