using System.ComponentModel;
using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using Dsl.Runtime.Data;

namespace Dsl.Runtime.Text;

/// <summary>One book of the Bible as a document: its verses without references.</summary>
/// <param name="Book">The abbreviation the <c>bible</c> program prints (Ge, Exo, …, 1Sm, …, Rev).</param>
/// <param name="Text">The verses one per line, a blank line between chapters.</param>
/// <param name="Verses">How many verses.</param>
public sealed record BibleBook(string Book, string Text, int Verses);

/// <summary>
/// The King James Bible as a text corpus, from the <c>bible</c> program of the Debian package
/// <c>bible-kjv</c> (its text is compressed in <c>bible-kjv-text</c>): <c>bible -f
/// "Gen1:1-Rev22:21"</c> prints every verse as <c>Ge1:1 In the beginning …</c>. The references
/// are stripped and each book becomes one document, so that a train/validation split by
/// document holds out whole books.
/// </summary>
public static partial class BibleKjv
{
    /// <summary>The program's name, found on PATH.</summary>
    public const string DefaultProgram = "bible";

    /// <summary>The whole text, Genesis 1:1 to Revelation 22:21.</summary>
    public const string WholeText = "Gen1:1-Rev22:21";

    /// <summary>The books in order, from the <c>bible</c> program's output lines.</summary>
    /// <exception cref="DataError">A line is not a verse (<c>Book</c><c>chapter</c>:<c>verse</c> text), or there is none.</exception>
    public static IReadOnlyList<BibleBook> Parse(IEnumerable<string> lines, string source = DefaultProgram)
    {
        var books = new List<BibleBook>();
        var text = new StringBuilder();
        string? book = null;
        string? chapter = null;
        var verses = 0;
        var number = 0;

        void Close()
        {
            if (book is not null)
            {
                books.Add(new BibleBook(book, text.ToString(), verses));
            }

            text.Clear();
            verses = 0;
        }

        foreach (var line in lines)
        {
            number++;
            if (line.Length == 0)
            {
                continue;
            }

            var verse = VerseLine().Match(line);
            if (!verse.Success)
            {
                throw new DataError(source, $"line {number} is not a verse ('Ge1:1 text'): {Truncate(line)}");
            }

            var (name, chapterNumber) = (verse.Groups["book"].Value, verse.Groups["chapter"].Value);
            if (name != book)
            {
                Close();
                (book, chapter) = (name, chapterNumber);
            }
            else if (chapterNumber != chapter)
            {
                text.Append('\n');
                chapter = chapterNumber;
            }

            text.Append(verse.Groups["text"].Value.Trim()).Append('\n');
            verses++;
        }

        Close();
        return books.Count > 0 ? books : throw new DataError(source, "printed no verse");
    }

    /// <summary>Runs the program for the whole text and parses its output.</summary>
    /// <exception cref="DataError">The program is not installed, fails, or prints something else.</exception>
    public static IReadOnlyList<BibleBook> Read(string program = DefaultProgram)
    {
        var start = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            StandardOutputEncoding = Encoding.UTF8,
        };
        start.ArgumentList.Add("-f");
        start.ArgumentList.Add(WholeText);
        Process process;
        try
        {
            process = Process.Start(start) ?? throw new DataError(program, "could not be started");
        }
        catch (Win32Exception)
        {
            throw new DataError(program, "not found: install the Debian package bible-kjv (bash build/debian-packages.sh bible-kjv), which provides the bible program");
        }

        using (process)
        {
            var errors = process.StandardError.ReadToEndAsync();
            var lines = new List<string>();
            while (process.StandardOutput.ReadLine() is { } line)
            {
                lines.Add(line);
            }

            process.WaitForExit();
            if (process.ExitCode != 0)
            {
                throw new DataError(program, $"exited with code {process.ExitCode}: {Truncate(errors.Result.Trim())}");
            }

            return Parse(lines, program);
        }
    }

    /// <summary>
    /// Writes the books as a corpus in the <c>fortunes</c> format (documents separated by lines
    /// holding only <c>%</c>, which no verse is), to a temporary file renamed into place, so a
    /// reader never sees half a corpus.
    /// </summary>
    public static void Write(string path, IReadOnlyList<BibleBook> books) =>
        WriteAtomically(path, string.Join("%\n", books.Select(b => b.Text)));

    /// <summary>
    /// Writes every verse on a line of its own (the <c>lines</c> corpus format, in which each
    /// verse is a document, so a split by document holds out single verses), atomically as
    /// <see cref="Write"/>.
    /// </summary>
    public static void WriteVerses(string path, IReadOnlyList<BibleBook> books) =>
        WriteAtomically(path, string.Concat(books.SelectMany(b => b.Text.Split('\n')).Where(v => v.Length > 0).Select(v => v + "\n")));

    private static void WriteAtomically(string path, string text)
    {
        var full = Path.GetFullPath(path);
        var folder = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(folder);
        var temporary = Path.Combine(folder, $".{Path.GetFileName(full)}.{Environment.ProcessId}.tmp");
        try
        {
            File.WriteAllText(temporary, text, new UTF8Encoding(false));
            File.Move(temporary, full, overwrite: true);
        }
        catch
        {
            File.Delete(temporary);
            throw;
        }
    }

    private static string Truncate(string s) => s.Length <= 80 ? s : s[..77] + "...";

    [GeneratedRegex(@"^(?<book>[1-3]?[A-Za-z]+)(?<chapter>\d+):(?<verse>\d+)\s(?<text>.*)$")]
    private static partial Regex VerseLine();
}
