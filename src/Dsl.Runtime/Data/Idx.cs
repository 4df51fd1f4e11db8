using System.Buffers.Binary;
using System.IO.Compression;
using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Data;

/// <summary>
/// Reads IDX files (the MNIST container format): a big-endian magic number whose low byte is
/// the number of dimensions, one big-endian int32 per dimension, then the raw uint8 values.
/// Files may be gzip-compressed; that is detected from the content, not the file name.
/// </summary>
public static class Idx
{
    /// <summary>uint8 values, 3 dimensions: count, rows, columns.</summary>
    public const int ImagesMagic = 0x00000803;

    /// <summary>uint8 values, 1 dimension: count.</summary>
    public const int LabelsMagic = 0x00000801;

    /// <summary>Reads an image file as float32 [N, 1, H, W] with values in [0, 1].</summary>
    public static Tensor ReadImages(string path)
    {
        var (bytes, length) = ReadContent(path);
        var dims = ReadDimensions(path, bytes, length, ImagesMagic, "image");
        using var raw = torch.frombuffer(bytes, ScalarType.Byte, count: dims[0] * dims[1] * dims[2], offset: HeaderLength(dims.Length));
        using var shaped = raw.view(dims[0], 1, dims[1], dims[2]);
        var images = shaped.to_type(ScalarType.Float32);
        images.div_(255f);
        return images;
    }

    /// <summary>Reads a label file as int64 [N].</summary>
    public static Tensor ReadLabels(string path)
    {
        var (bytes, length) = ReadContent(path);
        var dims = ReadDimensions(path, bytes, length, LabelsMagic, "label");
        using var raw = torch.frombuffer(bytes, ScalarType.Byte, count: dims[0], offset: HeaderLength(dims.Length));
        return raw.to_type(ScalarType.Int64);
    }

    private static int HeaderLength(int dimensionCount) => 4 + (4 * dimensionCount);

    /// <summary>
    /// The file's bytes, decompressed when they start with the gzip signature. Returns the
    /// buffer and how much of it is content (a MemoryStream's buffer is used without copying).
    /// </summary>
    private static (byte[] Bytes, int Length) ReadContent(string path)
    {
        byte[] file;
        try
        {
            file = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new DataError(path, $"cannot read: {e.Message}", e);
        }

        if (file.Length < 2 || file[0] != 0x1f || file[1] != 0x8b)
        {
            return (file, file.Length);
        }

        try
        {
            using var output = new MemoryStream(GzipSizeHint(file));
            using (var gzip = new GZipStream(new MemoryStream(file), CompressionMode.Decompress))
            {
                gzip.CopyTo(output);
            }

            return (output.GetBuffer(), (int)output.Length);
        }
        catch (InvalidDataException e)
        {
            throw new DataError(path, $"corrupt gzip data: {e.Message}", e);
        }
    }

    /// <summary>
    /// The gzip trailer's ISIZE (uncompressed length mod 2^32), so the output buffer is
    /// allocated once. Only a hint: a corrupt trailer merely costs a reallocation.
    /// </summary>
    private static int GzipSizeHint(byte[] file)
    {
        const int MaxHint = 1 << 30;
        if (file.Length < 18)
        {
            return 0;
        }

        var size = BinaryPrimitives.ReadUInt32LittleEndian(file.AsSpan(file.Length - 4));
        return size <= MaxHint ? (int)size : 0;
    }

    /// <summary>Checks magic, dimensions and exact length; returns the dimensions.</summary>
    private static long[] ReadDimensions(string path, byte[] bytes, int length, int expectedMagic, string what)
    {
        var dimensionCount = expectedMagic & 0xff;
        var headerLength = HeaderLength(dimensionCount);
        if (length < 4)
        {
            throw new DataError(path, $"truncated: {length} bytes is too short for an IDX {what} file");
        }

        var magic = BinaryPrimitives.ReadInt32BigEndian(bytes);
        if (magic != expectedMagic)
        {
            throw new DataError(path, $"not an IDX {what} file: magic number 0x{magic:x8}, expected 0x{expectedMagic:x8}");
        }

        if (length < headerLength)
        {
            throw new DataError(path, $"truncated: expected a {headerLength}-byte header, found {length} bytes");
        }

        var dims = new long[dimensionCount];
        for (var i = 0; i < dimensionCount; i++)
        {
            dims[i] = BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(4 + (4 * i)));
            if (dims[i] <= 0)
            {
                throw new DataError(path, $"invalid header: dimension {i} is {dims[i]}, expected a positive size");
            }
        }

        // Int128: three int32 dimensions cannot overflow it, however corrupt the header.
        var expected = dims.Aggregate((Int128)1, (product, d) => product * d);
        var found = (Int128)(length - headerLength);
        if (found < expected)
        {
            throw new DataError(path, $"truncated: expected {expected} bytes of {what} data, found {found}");
        }

        if (found > expected)
        {
            throw new DataError(path, $"{found - expected} unexpected bytes after the {expected} bytes of {what} data");
        }

        return dims;
    }
}
