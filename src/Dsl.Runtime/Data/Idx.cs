using System.Buffers.Binary;
using System.Globalization;
using System.IO.Compression;
using TorchSharp;
using static TorchSharp.torch;

namespace Dsl.Runtime.Data;

/// <summary>
/// Reads IDX files (the MNIST container format): a big-endian magic number whose low byte is
/// the number of dimensions, one big-endian int32 per dimension, then the raw uint8 values.
/// Files may be gzip-compressed; that is detected from the content, not the file name.
/// The header is read first and only the data it declares (at most <see cref="MaxDataBytes"/>) is
/// ever held in memory.
/// </summary>
public static class Idx
{
    /// <summary>uint8 values, 3 dimensions: count, rows, columns.</summary>
    public const int ImagesMagic = 0x00000803;

    /// <summary>uint8 values, 1 dimension: count.</summary>
    public const int LabelsMagic = 0x00000801;

    /// <summary>
    /// The most data bytes an IDX file may declare: 1 GiB of uint8 values, 20 times Fashion-MNIST's
    /// training images and already 4 GiB as float32. The header is checked against it before
    /// anything is allocated, so a small (or gzip-compressed) file cannot declare its way to
    /// gigabytes.
    /// </summary>
    public const long MaxDataBytes = 1L << 30;

    /// <summary>Reads an image file as float32 [N, 1, H, W] with values in [0, 1].</summary>
    public static Tensor ReadImages(string path)
    {
        var (dims, data) = Read(path, ImagesMagic, "image");
        using var raw = torch.frombuffer(data, ScalarType.Byte, count: data.LongLength);
        using var shaped = raw.view(dims[0], 1, dims[1], dims[2]);
        var images = shaped.to_type(ScalarType.Float32);
        images.div_(255f);
        return images;
    }

    /// <summary>Reads a label file as int64 [N].</summary>
    public static Tensor ReadLabels(string path)
    {
        var (_, data) = Read(path, LabelsMagic, "label");
        using var raw = torch.frombuffer(data, ScalarType.Byte, count: data.LongLength);
        return raw.to_type(ScalarType.Int64);
    }

    private static int HeaderLength(int dimensionCount) => 4 + (4 * dimensionCount);

    /// <summary>
    /// The header's dimensions and exactly the data bytes it declares, decompressing on the fly
    /// when the file starts with the gzip signature. Nothing is buffered beyond the declared size:
    /// a stream that ends early or goes on past it is refused, naming the file.
    /// </summary>
    private static (long[] Dims, byte[] Data) Read(string path, int expectedMagic, string what)
    {
        Stream? file = null;
        try
        {
            file = File.OpenRead(path);
            var signature = new byte[2];
            var signatureLength = file.ReadAtLeast(signature, 2, throwOnEndOfStream: false);
            file.Position = 0;
            var gzip = signatureLength == 2 && signature[0] == 0x1f && signature[1] == 0x8b;
            using var content = gzip ? new GZipStream(file, CompressionMode.Decompress) : file;
            var source = gzip ? "decompressed " : "";
            var dims = ReadDimensions(path, content, expectedMagic, what, source);
            var expected = dims.Aggregate(1L, (product, d) => product * d);
            var data = new byte[expected];
            var found = content.ReadAtLeast(data, data.Length, throwOnEndOfStream: false);
            if (found < expected)
            {
                throw new DataError(path, $"truncated: expected {expected} bytes of {what} data, found {found}{(gzip ? " after decompression" : "")}");
            }

            // One more byte says whether the file goes on; its length is not needed, and reading
            // the rest of a bomb to count it would be the very cost this avoids.
            if (content.ReadByte() >= 0)
            {
                throw new DataError(path, $"unexpected bytes after the {expected} bytes of {what} data the header declares{(gzip ? " (decompressed)" : "")}");
            }

            return (dims, data);
        }
        catch (InvalidDataException e)
        {
            throw new DataError(path, $"corrupt gzip data: {e.Message}", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new DataError(path, $"cannot read: {e.Message}", e);
        }
        finally
        {
            file?.Dispose();
        }
    }

    /// <summary>Checks magic and dimensions, each positive and their product within <see cref="MaxDataBytes"/>; returns the dimensions.</summary>
    private static long[] ReadDimensions(string path, Stream content, int expectedMagic, string what, string source)
    {
        var dimensionCount = expectedMagic & 0xff;
        var headerLength = HeaderLength(dimensionCount);
        var header = new byte[headerLength];
        var length = content.ReadAtLeast(header, headerLength, throwOnEndOfStream: false);
        if (length < 4)
        {
            throw new DataError(path, $"truncated: {length} {source}bytes is too short for an IDX {what} file");
        }

        var magic = BinaryPrimitives.ReadInt32BigEndian(header);
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
            dims[i] = BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(4 + (4 * i)));
            if (dims[i] <= 0)
            {
                throw new DataError(path, $"invalid header: dimension {i} is {dims[i]}, expected a positive size");
            }
        }

        // Int128: three int32 dimensions cannot overflow it, however corrupt the header.
        var declared = dims.Aggregate((Int128)1, (product, d) => product * d);
        if (declared > MaxDataBytes)
        {
            throw new DataError(
                path,
                $"the header declares {string.Join(" × ", dims)} = {declared.ToString("N0", CultureInfo.InvariantCulture)} bytes of {what} data, more than the {MaxDataBytes.ToString("N0", CultureInfo.InvariantCulture)} this reader accepts");
        }

        return dims;
    }
}
