using System.Globalization;
using Dsl.Runtime.Data;

namespace Dsl.Runtime.Text;

/// <summary>
/// The noun part of WordNet 3.0, read from its database files (index.noun, data.noun, noun.exc)
/// as the Debian package <c>wordnet</c> installs them. CatLIP mines its labels from captions with
/// NLTK's WordNet interface; this reproduces the parts it uses — noun lemmatisation (morphy), a
/// lemma's first noun sense and that synset's name — without Python, so labels mined here are
/// the ones corenet would mine.
/// </summary>
public sealed class WordNet
{
    /// <summary>Where the Debian package <c>wordnet</c> puts the database files.</summary>
    public const string DefaultDirectory = "/usr/share/wordnet";

    private const string InstallHint = "install the Debian package wordnet or pass --wordnet DIR";

    /// <summary>
    /// NLTK's noun detachment rules (WordNet's morphy rules plus "ves" → "f"), tried in this order.
    /// </summary>
    private static readonly (string Suffix, string Ending)[] NounRules =
    [
        ("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"),
        ("ches", "ch"), ("shes", "sh"), ("men", "man"), ("ies", "y"),
    ];

    /// <summary>Lemma → synset offsets, most frequent sense first (index.noun's order).</summary>
    private readonly Dictionary<string, long[]> senses;

    /// <summary>Synset offset → its words in data.noun's order, as written there ('_' for spaces).</summary>
    private readonly Dictionary<long, string[]> synsetWords;

    /// <summary>Irregular inflection → its lemmas (noun.exc).</summary>
    private readonly Dictionary<string, string[]> exceptions;

    private WordNet(Dictionary<string, long[]> senses, Dictionary<long, string[]> synsetWords, Dictionary<string, string[]> exceptions)
    {
        this.senses = senses;
        this.synsetWords = synsetWords;
        this.exceptions = exceptions;
    }

    /// <summary>Number of noun lemmas in index.noun.</summary>
    public int LemmaCount => senses.Count;

    /// <summary>
    /// Reads index.noun, data.noun and noun.exc from <paramref name="directory"/> (default
    /// <see cref="DefaultDirectory"/>).
    /// </summary>
    /// <exception cref="DataError">The directory or a file is missing, or a line is malformed.</exception>
    public static WordNet Load(string? directory = null)
    {
        directory ??= DefaultDirectory;
        if (!Directory.Exists(directory))
        {
            throw new DataError(directory, $"WordNet directory not found; {InstallHint}");
        }

        var index = Required(directory, "index.noun");
        var data = Required(directory, "data.noun");
        var exc = Required(directory, "noun.exc");
        return new WordNet(ReadIndex(index), ReadData(data), ReadExceptions(exc));
    }

    /// <summary>
    /// The noun lemma of <paramref name="word"/> as NLTK's <c>WordNetLemmatizer.lemmatize</c>
    /// finds it: when the word is in noun.exc, the word and its listed lemmas; otherwise the word
    /// and each detachment rule applied once; of the candidates that are noun lemmas, the
    /// shortest (the first of equal length). Null when no candidate is a noun lemma.
    /// </summary>
    public string? Lemmatize(string word)
    {
        var form = word.Trim().ToLowerInvariant().Replace(' ', '_');
        if (form.Length == 0)
        {
            return null;
        }

        IEnumerable<string> candidates = exceptions.TryGetValue(form, out var irregular)
            ? [form, .. irregular]
            : [form, .. NounRules.Where(r => form.EndsWith(r.Suffix, StringComparison.Ordinal))
                .Select(r => form[..^r.Suffix.Length] + r.Ending)];

        string? best = null;
        foreach (var candidate in candidates)
        {
            if (senses.ContainsKey(candidate) && (best is null || candidate.Length < best.Length))
            {
                best = candidate;
            }
        }

        return best;
    }

    /// <summary>
    /// The id of the lemma's first (most frequent) noun sense, "n" + its offset without leading
    /// zeros as CatLIP writes synsets (e.g. "n3236735" for dress); null when it is no noun lemma.
    /// </summary>
    public string? FirstNounSynset(string lemma) =>
        FirstOffset(lemma) is { } offset ? "n" + offset.ToString(CultureInfo.InvariantCulture) : null;

    /// <summary>
    /// NLTK's name of the lemma's first noun synset, "head.n.NN": the synset's first word
    /// (lowercased) and the synset's sense number for that word. CatLIP keeps a word only when
    /// this is "word.n.01", i.e. when the word is the head word of its own first sense; that
    /// drops words whose first sense belongs to another word (such as "a", whose first sense is
    /// the angstrom). Null when the lemma is no noun lemma.
    /// </summary>
    public string? FirstNounSynsetName(string lemma)
    {
        if (FirstOffset(lemma) is not { } offset || !synsetWords.TryGetValue(offset, out var words) || words.Length == 0)
        {
            return null;
        }

        var head = words[0].ToLowerInvariant();
        var sense = senses.TryGetValue(head, out var headSenses) ? Array.IndexOf(headSenses, offset) : -1;
        return sense < 0 ? null : $"{head}.n.{sense + 1:00}";
    }

    /// <summary>
    /// The words of the lemma's first noun synset, in data.noun's order, with spaces for
    /// underscores (for "dress": "dress", "frock"); empty when it is no noun lemma.
    /// </summary>
    public IReadOnlyList<string> Synonyms(string lemma) =>
        FirstOffset(lemma) is { } offset && synsetWords.TryGetValue(offset, out var words)
            ? Array.AsReadOnly(words.Select(w => w.Replace('_', ' ')).ToArray())
            : [];

    private long? FirstOffset(string lemma) =>
        senses.TryGetValue(lemma.Trim().ToLowerInvariant().Replace(' ', '_'), out var offsets) ? offsets[0] : null;

    private static string Required(string directory, string name)
    {
        var path = Path.Combine(directory, name);
        return File.Exists(path) ? path : throw new DataError(path, $"WordNet file not found; {InstallHint}");
    }

    /// <summary>
    /// index.noun: <c>lemma pos synset_cnt p_cnt [ptr_symbol…] sense_cnt tagsense_cnt
    /// synset_offset…</c>; the licence header's lines start with spaces.
    /// </summary>
    private static Dictionary<string, long[]> ReadIndex(string path)
    {
        var senses = new Dictionary<string, long[]>(StringComparer.Ordinal);
        var lineNumber = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNumber++;
            if (line.Length == 0 || line[0] == ' ')
            {
                continue;
            }

            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length < 4 || !int.TryParse(f[2], out var synsetCount) || !int.TryParse(f[3], out var pointerCount)
                || synsetCount < 1 || f.Length < 4 + pointerCount + 2 + synsetCount)
            {
                throw new DataError($"{path}:{lineNumber}", "not an index line (lemma pos synset_cnt p_cnt [ptr…] sense_cnt tagsense_cnt offset…)");
            }

            var first = 4 + pointerCount + 2;
            var offsets = new long[synsetCount];
            for (var i = 0; i < synsetCount; i++)
            {
                if (!long.TryParse(f[first + i], NumberStyles.None, CultureInfo.InvariantCulture, out offsets[i]))
                {
                    throw new DataError($"{path}:{lineNumber}", $"synset offset '{f[first + i]}' is not a number");
                }
            }

            senses[f[0]] = offsets;
        }

        return senses;
    }

    /// <summary>data.noun: <c>offset lex_filenum ss_type w_cnt(hex) word lex_id [word lex_id…] …</c>.</summary>
    private static Dictionary<long, string[]> ReadData(string path)
    {
        var words = new Dictionary<long, string[]>();
        var lineNumber = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNumber++;
            if (line.Length == 0 || line[0] == ' ')
            {
                continue;
            }

            var f = line.Split(' ', 5, StringSplitOptions.RemoveEmptyEntries);
            if (f.Length < 5
                || !long.TryParse(f[0], NumberStyles.None, CultureInfo.InvariantCulture, out var offset)
                || !int.TryParse(f[3], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var count)
                || count < 1)
            {
                throw new DataError($"{path}:{lineNumber}", "not a data line (offset lex_filenum ss_type w_cnt word lex_id …)");
            }

            // Only the words are needed: split off 2 × w_cnt fields (word, lex_id) and leave the pointers.
            var rest = f[4].Split(' ', (2 * count) + 1, StringSplitOptions.RemoveEmptyEntries);
            if (rest.Length < 2 * count)
            {
                throw new DataError($"{path}:{lineNumber}", $"{count} words announced, fewer found");
            }

            words[offset] = Enumerable.Range(0, count).Select(i => rest[2 * i]).ToArray();
        }

        return words;
    }

    /// <summary>noun.exc: <c>inflected_form lemma [lemma…]</c>.</summary>
    private static Dictionary<string, string[]> ReadExceptions(string path)
    {
        var exceptions = new Dictionary<string, string[]>(StringComparer.Ordinal);
        foreach (var line in File.ReadLines(path))
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length >= 2)
            {
                exceptions[f[0]] = f[1..];
            }
        }

        return exceptions;
    }
}
