using Dsl.Runtime.Data;
using Microsoft.ML.Tokenizers;
using static TorchSharp.torch;

namespace Dsl.Runtime.Text;

/// <summary>
/// Captions to fixed-length rows of token ids, the way CLIP feeds its text encoder: the text's
/// tokens, truncated to leave room for the end-of-text token, then end-of-text, then padding.
/// Pooling at the end-of-text position (the language's <c>selectWhere</c>) therefore finds it in
/// every row.
/// </summary>
public sealed class TextTokenizer
{
    /// <summary>tiktoken's GPT-2 vocabulary, shipped in Microsoft.ML.Tokenizers.Data.R50kBase.</summary>
    public const string R50kBase = "r50k_base";

    private readonly Tokenizer tokenizer;

    private TextTokenizer(Tokenizer tokenizer, int vocabulary, int endOfText, int contextLength, int padId)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(contextLength, 2);
        this.tokenizer = tokenizer;
        Vocabulary = vocabulary;
        EndOfText = endOfText;
        ContextLength = contextLength;
        PadId = padId;
    }

    /// <summary>Number of token ids (the embedding table's rows).</summary>
    public int Vocabulary { get; }

    public int EndOfText { get; }

    public int ContextLength { get; }

    public int PadId { get; }

    /// <summary>
    /// The GPT-2 byte-level BPE (r50k_base: 50,257 ids, <c>&lt;|endoftext|&gt;</c> = 50256, also
    /// used to pad), from the NuGet data package: nothing is downloaded.
    /// </summary>
    public static TextTokenizer Gpt2(int contextLength)
    {
        var tiktoken = TiktokenTokenizer.CreateForEncoding(R50kBase);
        const int endOfText = 50256;
        return new TextTokenizer(tiktoken, endOfText + 1, endOfText, contextLength, padId: 0);
    }

    /// <summary>
    /// A user's own vocabulary: a <c>.tiktoken</c> file (base64 token, rank per line), or a
    /// GPT-2-style <c>vocab.json</c> with its <c>merges.txt</c>. The end-of-text token is
    /// <paramref name="endOfText"/> when the vocabulary has it, else the id after the last.
    /// </summary>
    /// <exception cref="DataError">A file is missing or not a vocabulary.</exception>
    public static TextTokenizer FromFiles(string vocabulary, string? merges, int contextLength, string endOfText = "<|endoftext|>")
    {
        foreach (var file in new[] { vocabulary, merges }.OfType<string>())
        {
            if (!File.Exists(file))
            {
                throw new DataError(file, "no such vocabulary file");
            }
        }

        try
        {
            if (merges is null)
            {
                var ranks = File.ReadLines(vocabulary).Count(line => line.Length > 0);
                var special = new Dictionary<string, int> { [endOfText] = ranks };
                var tiktoken = TiktokenTokenizer.Create(vocabulary, preTokenizer: null, normalizer: null, special);
                return new TextTokenizer(tiktoken, ranks + 1, ranks, contextLength, padId: 0);
            }

            var bpe = BpeTokenizer.Create(vocabulary, merges);
            var eot = bpe.Vocabulary.TryGetValue(endOfText, out var id) ? id : bpe.Vocabulary.Count;
            return new TextTokenizer(bpe, Math.Max(bpe.Vocabulary.Count, eot + 1), eot, contextLength, padId: 0);
        }
        catch (Exception e) when (e is FormatException or ArgumentException or InvalidOperationException or IOException)
        {
            throw new DataError(vocabulary, $"not a vocabulary this tokenizer reads: {e.Message}");
        }
    }

    /// <summary>All of a text's ids, untruncated and without end-of-text (for packing corpora).</summary>
    public int[] EncodeAll(string text) => [.. tokenizer.EncodeToIds(text)];

    /// <summary>One caption's row: ids, end-of-text, then padding, exactly ContextLength long.</summary>
    public int[] Encode(string text)
    {
        var ids = tokenizer.EncodeToIds(text, ContextLength - 1, out _, out _);
        var row = new int[ContextLength];
        Array.Fill(row, PadId);
        for (var i = 0; i < ids.Count; i++)
        {
            row[i] = ids[i];
        }

        row[ids.Count] = EndOfText;
        return row;
    }

    /// <summary>The captions as a [count, ContextLength] int64 tensor.</summary>
    public Tensor Batch(IReadOnlyList<string> texts)
    {
        var data = new long[texts.Count * ContextLength];
        for (var i = 0; i < texts.Count; i++)
        {
            var row = Encode(texts[i]);
            for (var j = 0; j < row.Length; j++)
            {
                data[(i * ContextLength) + j] = row[j];
            }
        }

        return tensor(data, [texts.Count, ContextLength], ScalarType.Int64);
    }

    /// <summary>The text of a row, up to its end-of-text token.</summary>
    public string Decode(IEnumerable<long> row) =>
        tokenizer.Decode(row.TakeWhile(id => id != EndOfText).Select(id => (int)id)) ?? "";
}
