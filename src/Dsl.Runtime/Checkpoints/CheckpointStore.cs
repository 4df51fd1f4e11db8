using System.Globalization;
using System.Text.Json;

namespace Dsl.Runtime.Checkpoints;

/// <summary>
/// Where a checkpoint path's contents live. <c>run/checkpoint</c> is a symbolic link to one of
/// the immutable folders <c>run/checkpoints/step-N</c>. A save writes a new folder under a
/// temporary name, fsyncs it, renames it to <c>step-N</c> and then atomically replaces the link
/// (rename(2) of a new link over the old one), so at every instant of a crash the link names a
/// complete checkpoint and any newer complete one is a <c>step-N</c> folder that
/// <see cref="Recover"/> adopts. Old folders are renamed to a <c>.del-</c> name before they are
/// deleted, so a folder named <c>step-N</c> is always whole.
/// </summary>
/// <remarks>
/// The layout follows the "immutable snapshots plus an atomically switched pointer" scheme of
/// journaling stores; a symbolic link keeps <c>run/checkpoint</c> a directory every existing
/// command and script can read. Checkpoints of the earlier layout (a real <c>checkpoint/</c>
/// folder with <c>checkpoint.tmp-*</c> and <c>checkpoint.bak-*</c> siblings left by crashes)
/// are adopted into the new one the first time a run is saved or resumed.
/// </remarks>
internal sealed class CheckpointStore
{
    public const string FolderName = "checkpoints";
    private const string StepPrefix = "step-";
    private const string TempPrefix = ".tmp-";
    private const string DeletePrefix = ".del-";
    private const string LegacyBackupInfix = ".bak-";

    private CheckpointStore(string pointer)
    {
        Pointer = pointer;
        Parent = Path.GetDirectoryName(pointer) ?? throw new CheckpointError(pointer, "cannot be a checkpoint directory");
        Folder = Path.Combine(Parent, FolderName);
    }

    /// <summary>The link users name, e.g. run/checkpoint.</summary>
    public string Pointer { get; }

    /// <summary>The folder holding it.</summary>
    public string Parent { get; }

    /// <summary>run/checkpoints, holding the step folders.</summary>
    public string Folder { get; }

    public static CheckpointStore For(string pointer) =>
        new(Path.TrimEndingDirectorySeparator(Path.GetFullPath(pointer)));

    /// <summary>Whether the path is a symbolic link (to anything, or dangling).</summary>
    public static bool IsLink(string path) => new FileInfo(path).LinkTarget is not null;

    /// <summary>A new, empty temporary folder inside the store to write a checkpoint into.</summary>
    public string NewTemporary()
    {
        Directory.CreateDirectory(Folder);
        var temp = Path.Combine(Folder, TempPrefix + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(temp);
        return temp;
    }

    /// <summary>
    /// Makes a fully written temporary folder the newest checkpoint: fsyncs it, renames it to
    /// step-N (step-N-2, … if that exists), points the link at it and, with
    /// <paramref name="keep"/> above zero, deletes all but the newest <paramref name="keep"/>.
    /// </summary>
    public string Commit(string temp, long step, int keep)
    {
        DurableFile.SyncDirectory(temp);
        var final = Path.Combine(Folder, UniqueStepName(step));
        DurableFile.Probe(final);
        Directory.Move(temp, final);
        DurableFile.SyncDirectory(Folder);
        Point(final);
        if (keep > 0)
        {
            Prune(keep, final);
        }

        return final;
    }

    /// <summary>
    /// The folder a reader should load: the link's target when it is a whole checkpoint,
    /// otherwise the newest whole one (a crash left the link missing, or a user deleted the
    /// folder it named). With no whole checkpoint anywhere, the link's folder when it exists
    /// (so that reading it names the file that is missing), else null.
    /// </summary>
    public string? Resolve()
    {
        if (IsWhole(Pointer))
        {
            return Pointer;
        }

        return Candidates().OrderByDescending(c => c.Step).ThenByDescending(c => c.Order).Select(c => c.Path).FirstOrDefault()
            ?? (Directory.Exists(Pointer) ? Pointer : null);
    }

    /// <summary>
    /// Repairs what a crash can leave, before a run continues: adopts a checkpoint of the
    /// earlier layout and its crash leftovers into step folders, points the link at the newest
    /// whole checkpoint, removes the store's temporaries and, with <paramref name="keep"/> above
    /// zero, the step folders beyond the newest <paramref name="keep"/>. Returns the newest
    /// checkpoint, or null when there is none (and then changes nothing but temporaries).
    /// </summary>
    public string? Recover(int keep = 0)
    {
        AdoptLegacy();
        RemoveTemporaries();
        var newest = Candidates().OrderByDescending(c => c.Step).ThenByDescending(c => c.Order).FirstOrDefault();
        var current = IsWhole(Pointer) ? StepOf(Pointer) : null;
        if (newest.Path is not null && (current is null || newest.Step > current))
        {
            // A crash fell between the new folder's rename and the link's, or the link is gone.
            Point(newest.Path);
        }
        else if (current is null)
        {
            return null;
        }

        // A crash during a prune leaves more folders than the run keeps.
        if (keep > 0 && IsLink(Pointer) && File.ResolveLinkTarget(Pointer, returnFinalTarget: true) is { } target)
        {
            Prune(keep, Path.TrimEndingDirectorySeparator(target.FullName));
        }

        return Pointer;
    }

    /// <summary>Deletes the store's temporaries and half-deleted folders: only this code makes them.</summary>
    public void RemoveTemporaries()
    {
        if (!Directory.Exists(Folder))
        {
            return;
        }

        foreach (var entry in Directory.GetDirectories(Folder))
        {
            var name = Path.GetFileName(entry);
            if (name.StartsWith(TempPrefix, StringComparison.Ordinal) || name.StartsWith(DeletePrefix, StringComparison.Ordinal))
            {
                DeleteQuietly(entry);
            }
        }
    }

    /// <summary>Atomically points the link at <paramref name="folder"/>, adopting a real checkpoint folder that stands in its place.</summary>
    private void Point(string folder)
    {
        if (Directory.Exists(Pointer) && !IsLink(Pointer))
        {
            AdoptLegacy();
        }

        var link = Pointer + DurableFile.TempInfix + Guid.NewGuid().ToString("N");
        File.CreateSymbolicLink(link, Path.Combine(FolderName, Path.GetFileName(folder)));
        try
        {
            DurableFile.Probe(Pointer);
            DurableFile.Rename(link, Pointer);
        }
        catch
        {
            File.Delete(link);
            throw;
        }

        DurableFile.SyncDirectory(Parent);
    }

    /// <summary>Deletes step folders beyond the newest <paramref name="keep"/>, never the one just written.</summary>
    private void Prune(int keep, string newest)
    {
        var old = Candidates()
            .Where(c => Path.GetDirectoryName(c.Path) == Folder && c.Path != newest)
            .OrderByDescending(c => c.Step)
            .ThenByDescending(c => c.Order)
            .Skip(keep - 1)
            .ToList();
        foreach (var (path, _, _) in old)
        {
            // Renamed first, so a kill halfway through the delete leaves no partial step-N.
            var doomed = Path.Combine(Folder, DeletePrefix + Guid.NewGuid().ToString("N"));
            DurableFile.Probe(path);
            Directory.Move(path, doomed);
            DeleteQuietly(doomed);
        }

        DurableFile.SyncDirectory(Folder);
    }

    /// <summary>
    /// Moves a real checkpoint folder at the link's place, and the checkpoints crashes of the
    /// earlier layout left beside it (checkpoint.tmp-*, checkpoint.bak-*, written whole before
    /// their meta.json), into step folders; deletes such leftovers that are not whole.
    /// </summary>
    private void AdoptLegacy()
    {
        if (!Directory.Exists(Parent))
        {
            return;
        }

        var name = Path.GetFileName(Pointer);
        var leftovers = Directory.GetDirectories(Parent, name + ".*")
            .Where(d => IsLegacyLeftover(Path.GetFileName(d), name))
            .ToList();
        if (Directory.Exists(Pointer) && !IsLink(Pointer))
        {
            leftovers.Insert(0, Pointer);
        }

        foreach (var folder in leftovers)
        {
            if (IsLink(folder))
            {
                // A new link a crash left before it was renamed over the old one.
                File.Delete(folder);
                continue;
            }

            var step = IsWhole(folder) ? StepOf(folder) : null;
            if (step is null)
            {
                if (folder == Pointer)
                {
                    throw new CheckpointError(Pointer, "is a folder that holds no checkpoint (no readable meta.json), so no new checkpoint can be linked in its place; move it away");
                }

                DeleteQuietly(folder);
                continue;
            }

            Directory.CreateDirectory(Folder);
            DurableFile.Probe(folder);
            Directory.Move(folder, Path.Combine(Folder, UniqueStepName(step.Value)));
            DurableFile.SyncDirectory(Folder);
            DurableFile.SyncDirectory(Parent);
        }
    }

    /// <summary>"checkpoint.tmp-&lt;guid&gt;" or "checkpoint.bak-&lt;guid&gt;", as the earlier layout named them.</summary>
    private static bool IsLegacyLeftover(string entry, string name)
    {
        foreach (var infix in new[] { DurableFile.TempInfix, LegacyBackupInfix })
        {
            var prefix = name + infix;
            if (entry.StartsWith(prefix, StringComparison.Ordinal) && entry.Length == prefix.Length + 32 && entry[prefix.Length..].All(char.IsAsciiHexDigitLower))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Whole checkpoints of the store: step-N folders with a readable meta.json.</summary>
    private IEnumerable<(string Path, long Step, int Order)> Candidates()
    {
        if (!Directory.Exists(Folder))
        {
            yield break;
        }

        foreach (var folder in Directory.GetDirectories(Folder, StepPrefix + "*"))
        {
            if (ParseStepName(Path.GetFileName(folder)) is { } parsed && IsWhole(folder))
            {
                yield return (folder, parsed.Step, parsed.Order);
            }
        }
    }

    private string UniqueStepName(long step)
    {
        var name = StepPrefix + step.ToString(CultureInfo.InvariantCulture);
        for (var k = 2; Directory.Exists(Path.Combine(Folder, name)); k++)
        {
            name = $"{StepPrefix}{step.ToString(CultureInfo.InvariantCulture)}-{k.ToString(CultureInfo.InvariantCulture)}";
        }

        return name;
    }

    /// <summary>step-N → (N, 1); step-N-k → (N, k).</summary>
    private static (long Step, int Order)? ParseStepName(string name)
    {
        if (!name.StartsWith(StepPrefix, StringComparison.Ordinal))
        {
            return null;
        }

        var parts = name[StepPrefix.Length..].Split('-');
        if (parts.Length is < 1 or > 2 || !long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var step))
        {
            return null;
        }

        if (parts.Length == 1)
        {
            return (step, 1);
        }

        return int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var order) ? (step, order) : null;
    }

    private static bool IsWhole(string folder) =>
        Directory.Exists(folder) && File.Exists(Path.Combine(folder, Checkpoint.MetaFile)) && File.Exists(Path.Combine(folder, Checkpoint.ModelFile));

    /// <summary>The step meta.json records, or null when it cannot be read.</summary>
    private static long? StepOf(string folder)
    {
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(folder, Checkpoint.MetaFile)));
            return document.RootElement.TryGetProperty("step", out var step) && step.TryGetInt64(out var value) && value >= 0 ? value : null;
        }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static void DeleteQuietly(string folder)
    {
        try
        {
            Directory.Delete(folder, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Only disk space is at stake; the next save or resume tries again.
        }
    }
}
