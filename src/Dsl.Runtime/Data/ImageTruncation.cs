using System.Buffers.Binary;

namespace Dsl.Runtime.Data;

/// <summary>
/// Finds image files that end early. ImageSharp decodes a cut-off JPEG, GIF, BMP or
/// multi-chunk PNG without complaint and fills the missing pixels, which would quietly put
/// broken samples into a training set; walking the container structure catches that.
/// Only truncation is judged here: other corruption is left to the decoder.
/// </summary>
internal static class ImageTruncation
{
    private static ReadOnlySpan<byte> PngSignature => [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];

    /// <summary>Why the file is incomplete, or null when it is complete or of an unknown format.</summary>
    public static string? Find(ReadOnlySpan<byte> file)
    {
        if (file.StartsWith(PngSignature))
        {
            return Png(file);
        }

        if (file.Length >= 2 && file[0] == 0xFF && file[1] == 0xD8)
        {
            return Jpeg(file);
        }

        if (file.StartsWith("GIF87a"u8) || file.StartsWith("GIF89a"u8))
        {
            return Gif(file);
        }

        if (file.StartsWith("BM"u8))
        {
            return Bmp(file);
        }

        return null;
    }

    private static string Truncated(long needed, int length) =>
        $"truncated: needs at least {needed} bytes, the file has {length}";

    /// <summary>Chunks (length, type, data, CRC) up to and including IEND.</summary>
    private static string? Png(ReadOnlySpan<byte> file)
    {
        long offset = PngSignature.Length;
        while (offset + 8 <= file.Length)
        {
            var length = BinaryPrimitives.ReadUInt32BigEndian(file[(int)offset..]);
            var isEnd = file.Slice((int)offset + 4, 4).SequenceEqual("IEND"u8);
            offset += 12 + (long)length;
            if (offset > file.Length)
            {
                return Truncated(offset, file.Length);
            }

            if (isEnd)
            {
                return null;
            }
        }

        return "truncated: the PNG has no IEND chunk";
    }

    /// <summary>
    /// Marker segments are skipped by their length (so an EXIF thumbnail's end marker is not
    /// mistaken for the image's); between them, entropy-coded data is scanned for the next
    /// marker. The file is complete once the end-of-image marker (FF D9) is reached.
    /// </summary>
    private static string? Jpeg(ReadOnlySpan<byte> file)
    {
        var offset = 2;
        while (true)
        {
            var next = file[offset..].IndexOf((byte)0xFF);
            if (next < 0 || offset + next + 1 >= file.Length)
            {
                return "truncated: the JPEG has no end-of-image marker";
            }

            offset += next;
            var marker = file[offset + 1];
            if (marker == 0xD9)
            {
                return null;
            }

            // Fill bytes, stuffed zero bytes and restart markers stand alone.
            if (marker is 0xFF or 0x00 or 0x01 or (>= 0xD0 and <= 0xD7))
            {
                offset += marker == 0xFF ? 1 : 2;
                continue;
            }

            if (offset + 4 > file.Length)
            {
                return Truncated(offset + 4, file.Length);
            }

            var segmentEnd = offset + 2L + BinaryPrimitives.ReadUInt16BigEndian(file[(offset + 2)..]);
            if (segmentEnd > file.Length)
            {
                return Truncated(segmentEnd, file.Length);
            }

            offset = (int)segmentEnd;
        }
    }

    /// <summary>Header, colour tables, then extension and image blocks, each complete, up to the trailer (0x3B).</summary>
    private static string? Gif(ReadOnlySpan<byte> file)
    {
        const int ScreenDescriptorEnd = 13;
        if (file.Length < ScreenDescriptorEnd)
        {
            return Truncated(ScreenDescriptorEnd, file.Length);
        }

        long offset = ScreenDescriptorEnd + ColourTableLength(file[10]);
        while (offset < file.Length)
        {
            switch (file[(int)offset])
            {
                case 0x3B:
                    return null;
                case 0x21:
                    offset = SkipSubBlocks(file, offset + 2);
                    break;
                case 0x2C:
                    if (offset + 10 > file.Length)
                    {
                        return Truncated(offset + 10, file.Length);
                    }

                    // Descriptor (10 bytes), local colour table, LZW code size (1 byte), data.
                    offset = SkipSubBlocks(file, offset + 10 + ColourTableLength(file[(int)offset + 9]) + 1);
                    break;
                default:
                    return null;
            }
        }

        // Some writers omit the trailer after the last complete block; the image is still whole.
        return offset > file.Length ? Truncated(offset, file.Length) : null;
    }

    internal static int ColourTableLength(byte flags) =>
        (flags & 0x80) == 0 ? 0 : 3 * (1 << ((flags & 0x07) + 1));

    /// <summary>Offset after a chain of length-prefixed sub-blocks ending in a zero length; beyond the file if cut.</summary>
    internal static long SkipSubBlocks(ReadOnlySpan<byte> file, long offset)
    {
        while (offset < file.Length)
        {
            var size = file[(int)offset];
            offset += 1 + size;
            if (size == 0)
            {
                return offset;
            }
        }

        return offset + 1;
    }

    /// <summary>The pixel array must fit: from the data offset, rows padded to 4 bytes, or the stated size if compressed.</summary>
    private static string? Bmp(ReadOnlySpan<byte> file)
    {
        const int CoreHeaderEnd = 14 + 12;
        if (file.Length < CoreHeaderEnd)
        {
            return Truncated(CoreHeaderEnd, file.Length);
        }

        long dataOffset = BinaryPrimitives.ReadUInt32LittleEndian(file[10..]);
        var headerSize = BinaryPrimitives.ReadUInt32LittleEndian(file[14..]);
        long width, height, bitsPerPixel, compression = 0, imageSize = 0;
        if (headerSize == 12)
        {
            width = BinaryPrimitives.ReadUInt16LittleEndian(file[18..]);
            height = BinaryPrimitives.ReadUInt16LittleEndian(file[20..]);
            bitsPerPixel = BinaryPrimitives.ReadUInt16LittleEndian(file[24..]);
        }
        else
        {
            if (file.Length < 14 + 40)
            {
                return Truncated(14 + 40, file.Length);
            }

            width = BinaryPrimitives.ReadInt32LittleEndian(file[18..]);
            height = Math.Abs((long)BinaryPrimitives.ReadInt32LittleEndian(file[22..]));
            bitsPerPixel = BinaryPrimitives.ReadUInt16LittleEndian(file[28..]);
            compression = BinaryPrimitives.ReadUInt32LittleEndian(file[30..]);
            imageSize = BinaryPrimitives.ReadUInt32LittleEndian(file[34..]);
        }

        // 0 = BI_RGB, 3 = BI_BITFIELDS, 6 = BI_ALPHABITFIELDS: uncompressed rows.
        var pixelBytes = compression is 0 or 3 or 6
            ? ((bitsPerPixel * Math.Max(width, 0)) + 31) / 32 * 4 * height
            : imageSize;
        var needed = dataOffset + pixelBytes;
        return needed > file.Length ? Truncated(needed, file.Length) : null;
    }
}
