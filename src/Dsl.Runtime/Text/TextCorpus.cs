using Dsl.Runtime.Data;

namespace Dsl.Runtime.Text;

/// <summary>
/// Documents read from text files, for language-model training. Where a document ends matters:
/// packing puts an end-of-text token between documents, and the train/validation split is by
/// document so that no text appears on both sides.
/// </summary>
public static class TextCorpus
{
    /// <summary>The whole file is one document.</summary>
    public const string Plain = "plain";

    /// <summary>Each non-blank line is a document.</summary>
    public const string Lines = "lines";

    /// <summary>
    /// The fortune(6) format of the Debian <c>fortunes</c> packages: entries separated by a line
    /// holding only <c>%</c>.
    /// </summary>
    public const string Fortunes = "fortunes";

    /// <exception cref="DataError">The file is missing, unreadable, the format unknown, or no document is in it.</exception>
    public static IReadOnlyList<string> Read(string path, string format)
    {
        if (!File.Exists(path))
        {
            throw new DataError(path, "text file not found");
        }

        var text = File.ReadAllText(path).Replace("\r\n", "\n", StringComparison.Ordinal);
        var documents = format switch
        {
            Plain => [text],
            Lines => text.Split('\n'),
            Fortunes => SplitFortunes(text),
            _ => throw new DataError(path, $"unknown corpus format '{format}'; use {Plain}, {Lines} or {Fortunes}"),
        };
        var kept = documents.Select(d => d.Trim('\n')).Where(d => !string.IsNullOrWhiteSpace(d)).ToArray();
        return kept.Length > 0 ? kept : throw new DataError(path, $"no {format} document in the file");
    }

    private static string[] SplitFortunes(string text)
    {
        var entries = new List<string>();
        var current = new List<string>();
        foreach (var line in text.Split('\n'))
        {
            if (line == "%")
            {
                entries.Add(string.Join('\n', current));
                current.Clear();
            }
            else
            {
                current.Add(line);
            }
        }

        entries.Add(string.Join('\n', current));
        return [.. entries];
    }
}
