using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;
using Dsl.Runtime.Text;

namespace Dsl.Runtime.Data;

/// <summary>A vocabulary entry: a WordNet noun synset ("n" + offset), the word that named it, and in how many lines it was found.</summary>
public sealed record SynsetCount(string Synset, string Lemma, long Count);

/// <summary>
/// CatLIP's labels: image–text pre-training as multi-label classification over WordNet noun
/// synsets mined from the captions (apple/corenet, wordnet_tagged_classification.py). A caption
/// is cleaned (URL-unquoted, "+" and newlines to spaces, HTML tags removed, spaces collapsed,
/// lowercased) and split into words; each word is lemmatised as a noun and kept when its first
/// noun sense is named after it ("word.n.01"); that synset is the label. corenet tags parts of
/// speech but does not look at the tags, so neither does this: any word that heads its own first
/// noun sense counts ("there", "plain"), and a plural is read as its shortest noun lemma ("pants"
/// → "pant", whose first sense is a short breath), exactly as NLTK's lemmatizer reads it.
/// A line's labels are the union over all its captions (the "captions" stream, not
/// "synthetic"); a synset's count is the number of lines it labels.
/// </summary>
public static partial class CatlipLabels
{
    /// <summary>The synset ids of a caption's nouns, in order of first appearance, without repeats.</summary>
    public static IReadOnlyList<string> Synsets(string caption, WordNet wordNet) =>
        SynsetsWithLemmas(caption, wordNet).Select(s => s.Synset).ToArray();

    /// <summary>
    /// The <paramref name="vocabularySize"/> synsets that label the most lines, most frequent
    /// first; ties go to the smaller synset id (ordinal), so mining is deterministic.
    /// </summary>
    public static IReadOnlyList<SynsetCount> Mine(IEnumerable<ImageTextRecord> records, WordNet wordNet, int vocabularySize)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocabularySize);
        var counts = new Dictionary<string, (string Lemma, long Count)>(StringComparer.Ordinal);
        var cache = new Dictionary<string, (string Synset, string Lemma)?>(StringComparer.Ordinal);
        foreach (var record in records)
        {
            foreach (var (synset, lemma) in LineSynsets(record, wordNet, cache))
            {
                counts[synset] = counts.TryGetValue(synset, out var c) ? (c.Lemma, c.Count + 1) : (lemma, 1);
            }
        }

        return counts
            .OrderByDescending(kv => kv.Value.Count)
            .ThenBy(kv => kv.Key, StringComparer.Ordinal)
            .Take(vocabularySize)
            .Select(kv => new SynsetCount(kv.Key, kv.Value.Lemma, kv.Value.Count))
            .ToArray();
    }

    /// <summary>
    /// Each line's labels: the vocabulary indices of its synsets, ascending, without repeats;
    /// empty when none of its nouns is in the vocabulary.
    /// </summary>
    public static IReadOnlyList<int[]> Apply(IReadOnlyList<SynsetCount> vocabulary, IEnumerable<ImageTextRecord> records, WordNet wordNet)
    {
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < vocabulary.Count; i++)
        {
            index.TryAdd(vocabulary[i].Synset, i);
        }

        var cache = new Dictionary<string, (string Synset, string Lemma)?>(StringComparer.Ordinal);
        return records
            .Select(r => LineSynsets(r, wordNet, cache)
                .Select(s => index.TryGetValue(s.Synset, out var i) ? i : -1)
                .Where(i => i >= 0)
                .Distinct()
                .Order()
                .ToArray())
            .ToArray();
    }

    /// <summary>The records with their <see cref="ImageTextRecord.Labels"/> set, line for line.</summary>
    public static IReadOnlyList<ImageTextRecord> Labelled(IReadOnlyList<ImageTextRecord> records, IReadOnlyList<int[]> labels)
    {
        if (records.Count != labels.Count)
        {
            throw new ArgumentException($"{records.Count} records but {labels.Count} label lists");
        }

        return records.Select((r, i) => r with { Labels = labels[i] }).ToArray();
    }

    /// <summary>
    /// Multi-hot targets: float32 [N, V], 1 at each label's index, all zero for a line without labels.
    /// </summary>
    public static TorchSharp.torch.Tensor MultiHot(IReadOnlyList<int[]> labels, int vocabularySize)
    {
        var hot = new float[labels.Count * vocabularySize];
        for (var n = 0; n < labels.Count; n++)
        {
            foreach (var i in labels[n])
            {
                if (i < 0 || i >= vocabularySize)
                {
                    throw new ArgumentOutOfRangeException(nameof(labels), $"label {i} of line {n} is outside the vocabulary of {vocabularySize}");
                }

                hot[(n * vocabularySize) + i] = 1f;
            }
        }

        return TorchSharp.torch.tensor(hot, [labels.Count, vocabularySize]);
    }

    /// <summary>Writes the vocabulary as TSV, one line per synset in index order: synset, lemma, count.</summary>
    public static void WriteVocabulary(string path, IReadOnlyList<SynsetCount> vocabulary) =>
        File.WriteAllLines(path, vocabulary.Select(v => $"{v.Synset}\t{v.Lemma}\t{v.Count.ToString(CultureInfo.InvariantCulture)}"));

    /// <summary>Reads a vocabulary written by <see cref="WriteVocabulary"/>.</summary>
    /// <exception cref="DataError">The file is missing or a line is not synset, lemma, count.</exception>
    public static IReadOnlyList<SynsetCount> ReadVocabulary(string path)
    {
        if (!File.Exists(path))
        {
            throw new DataError(path, "vocabulary file not found");
        }

        var vocabulary = new List<SynsetCount>();
        var lineNumber = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNumber++;
            if (line.Length == 0)
            {
                continue;
            }

            var f = line.Split('\t');
            if (f.Length != 3 || !SynsetId().IsMatch(f[0]) || !long.TryParse(f[2], NumberStyles.None, CultureInfo.InvariantCulture, out var count))
            {
                throw new DataError($"{path}:{lineNumber}", "expected synset<TAB>lemma<TAB>count, e.g. n3236735\tdress\t120");
            }

            vocabulary.Add(new SynsetCount(f[0], f[1], count));
        }

        if (vocabulary.Count == 0)
        {
            throw new DataError(path, "the vocabulary is empty");
        }

        return vocabulary;
    }

    /// <summary>corenet's caption_preprocessing, without ftfy's mojibake repair.</summary>
    public static string Preprocess(string caption)
    {
        var text = WebUtility.UrlDecode(caption); // also turns '+' into ' '
        text = HtmlTag().Replace(text, "");
        text = Whitespace().Replace(text, " ");
        return text.Trim().ToLowerInvariant();
    }

    /// <summary>The words of a preprocessed caption: letters and digits, hyphenated words kept whole ("t-shirt").</summary>
    public static IEnumerable<string> Words(string caption) =>
        Word().Matches(Preprocess(caption)).Select(m => m.Value);

    private static IEnumerable<(string Synset, string Lemma)> LineSynsets(
        ImageTextRecord record, WordNet wordNet, Dictionary<string, (string Synset, string Lemma)?> cache) =>
        record.Captions.SelectMany(c => SynsetsWithLemmas(c, wordNet, cache)).DistinctBy(s => s.Synset);

    private static IEnumerable<(string Synset, string Lemma)> SynsetsWithLemmas(
        string caption, WordNet wordNet, Dictionary<string, (string Synset, string Lemma)?>? cache = null)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var word in Words(caption))
        {
            (string Synset, string Lemma)? found;
            if (cache is null || !cache.TryGetValue(word, out found))
            {
                found = WordSynset(word, wordNet);
                cache?.Add(word, found);
            }

            if (found is { } s && seen.Add(s.Synset))
            {
                yield return s;
            }
        }
    }

    /// <summary>corenet: lemmatize, take synset "lemma.n.01", keep it only if it is named after the lemma.</summary>
    private static (string Synset, string Lemma)? WordSynset(string word, WordNet wordNet)
    {
        if (wordNet.Lemmatize(word) is not { } lemma
            || wordNet.FirstNounSynsetName(lemma) != lemma + ".n.01"
            || wordNet.FirstNounSynset(lemma) is not { } synset)
        {
            return null;
        }

        return (synset, lemma);
    }

    [GeneratedRegex("<.*?>")]
    private static partial Regex HtmlTag();

    [GeneratedRegex(@"\s+")]
    private static partial Regex Whitespace();

    [GeneratedRegex(@"[\p{L}\p{N}]+(?:-[\p{L}\p{N}]+)*")]
    private static partial Regex Word();

    [GeneratedRegex(@"^n[0-9]+$")]
    private static partial Regex SynsetId();
}
