using System.Buffers.Binary;
using System.Text;

namespace Dsl.Runtime.Native;

/// <summary>
/// Reads and edits the symbol-version requirements (<c>.gnu.version_r</c>) of an ELF64
/// little-endian shared object.
/// </summary>
/// <remarks>
/// TorchSharp-cpu 0.107.0's libLibTorchSharp.so needs GLIBCXX_3.4.32 (GCC 13) for a single
/// symbol nothing relocates against; older system libstdc++ (Debian 12: 3.4.30) makes the
/// loader refuse the library. Marking that requirement weak turns the failure into nothing.
/// The build does the same edit in build/LibstdcxxCompat.targets (an inline task cannot use
/// this assembly); this copy lets tests inspect and exercise it.
/// </remarks>
public static class ElfVersionNeeds
{
    /// <summary>VER_FLG_WEAK: the loader ignores a missing version instead of failing.</summary>
    public const ushort WeakFlag = 0x2;

    /// <summary>Every Vernaux entry: needed library (vn_file), version name, vna_flags.</summary>
    public static IReadOnlyList<(string Library, string Version, ushort Flags)> Read(string path) =>
        Entries(File.ReadAllBytes(path), path)
            .Select(e => (e.Library, e.Version, e.Flags))
            .ToList();

    /// <summary>
    /// Sets VER_FLG_WEAK on every requirement named <paramref name="version"/>.
    /// Returns true when a byte changed; the file is rewritten only then.
    /// </summary>
    public static bool MarkWeak(string path, string version)
    {
        var bytes = File.ReadAllBytes(path);
        var changed = false;
        foreach (var e in Entries(bytes, path))
        {
            if (e.Version != version || (e.Flags & WeakFlag) != 0) continue;
            BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(e.FlagsOffset), (ushort)(e.Flags | WeakFlag));
            changed = true;
        }
        if (!changed) return false;

        // Write a new file and rename it over the old name, so a symlink or hard link
        // (e.g. into the NuGet cache) is replaced rather than written through.
        // Copying first carries over the permission bits.
        var temp = path + ".weak.tmp";
        File.Copy(path, temp, overwrite: true);
        File.WriteAllBytes(temp, bytes);
        // Keep the timestamp: MSBuild's incremental copy compares size and time, and
        // would otherwise re-copy the unpatched original on every build.
        File.SetLastWriteTimeUtc(temp, File.GetLastWriteTimeUtc(path));
        File.Move(temp, path, overwrite: true);
        return true;
    }

    private readonly record struct Entry(string Library, string Version, ushort Flags, int FlagsOffset);

    private static List<Entry> Entries(byte[] b, string path)
    {
        try
        {
            return Parse(b, path);
        }
        catch (Exception e) when (e is ArgumentOutOfRangeException or OverflowException)
        {
            throw new InvalidDataException($"{path}: truncated or corrupt ELF file.");
        }
    }

    private static List<Entry> Parse(byte[] b, string path)
    {
        if (b.Length < 64 || b[0] != 0x7F || b[1] != (byte)'E' || b[2] != (byte)'L' || b[3] != (byte)'F'
            || b[4] != 2 /* ELFCLASS64 */ || b[5] != 1 /* ELFDATA2LSB */)
            throw new InvalidDataException($"{path}: not an ELF64 little-endian file.");

        // Out-of-range offsets throw ArgumentOutOfRange/Overflow, reported as corrupt by Entries.
        ushort U16(long o) => BinaryPrimitives.ReadUInt16LittleEndian(b.AsSpan(checked((int)o)));
        uint U32(long o) => BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(checked((int)o)));
        long U64(long o) => checked((long)BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(checked((int)o))));
        string Str(long o)
        {
            var end = Array.IndexOf(b, (byte)0, checked((int)o));
            return Encoding.ASCII.GetString(b, (int)o, (end < 0 ? b.Length : end) - (int)o);
        }

        long shoff = U64(0x28);
        int shentsize = U16(0x3A), shnum = U16(0x3C), shstrndx = U16(0x3E);
        if (shoff == 0 || shnum == 0 || shstrndx >= shnum)
            throw new InvalidDataException($"{path}: no usable section header table.");

        long Section(int i) => shoff + (long)i * shentsize;
        long shstrOff = U64(Section(shstrndx) + 0x18);

        for (var i = 0; i < shnum; i++)
        {
            var sh = Section(i);
            if (Str(shstrOff + U32(sh)) != ".gnu.version_r") continue;

            long off = U64(sh + 0x18);
            uint count = U32(sh + 0x2C);                         // sh_info: number of Verneed entries
            long strOff = U64(Section((int)U32(sh + 0x28)) + 0x18); // sh_link: .dynstr
            var result = new List<Entry>();
            for (uint n = 0; n < count; n++)
            {
                // Elf64_Verneed: vn_version u16, vn_cnt u16, vn_file u32, vn_aux u32, vn_next u32
                var library = Str(strOff + U32(off + 4));
                long aux = off + U32(off + 8);
                for (int k = 0, cnt = U16(off + 2); k < cnt; k++)
                {
                    // Elf64_Vernaux: vna_hash u32, vna_flags u16, vna_other u16, vna_name u32, vna_next u32
                    result.Add(new Entry(library, Str(strOff + U32(aux + 8)), U16(aux + 4), checked((int)aux + 4)));
                    aux += U32(aux + 12);
                }
                off += U32(off + 12);
            }
            return result;
        }
        throw new InvalidDataException($"{path}: no .gnu.version_r section.");
    }
}
