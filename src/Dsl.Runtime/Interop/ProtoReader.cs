using System.Text;

namespace Dsl.Runtime.Interop;

/// <summary>
/// Walks the top-level fields of a protobuf message in a stream without reading the bodies of
/// the ones it skips (an ONNX file's graph may be gigabytes): enough to tell an ONNX file dsl
/// wrote from any other file.
/// </summary>
internal static class ProtoReader
{
    /// <summary>
    /// The first length-delimited top-level field <paramref name="field"/> as UTF-8 text, or null
    /// when the stream is not a well-formed message, or has no such field, or it is longer than
    /// <paramref name="maxLength"/> bytes.
    /// </summary>
    public static string? TopLevelString(Stream stream, int field, int maxLength = 4096)
    {
        while (stream.Position < stream.Length)
        {
            if (ReadVarint(stream) is not { } tag)
            {
                return null;
            }

            var (number, wireType) = ((int)(tag >> 3), (int)(tag & 7));
            switch (wireType)
            {
                case 0:
                    if (ReadVarint(stream) is null)
                    {
                        return null;
                    }

                    break;
                case 1:
                    stream.Seek(8, SeekOrigin.Current);
                    break;
                case 5:
                    stream.Seek(4, SeekOrigin.Current);
                    break;
                case 2:
                    if (ReadVarint(stream) is not { } length || length > (ulong)(stream.Length - stream.Position))
                    {
                        return null;
                    }

                    if (number == field)
                    {
                        if (length > (ulong)maxLength)
                        {
                            return null;
                        }

                        var bytes = new byte[(int)length];
                        stream.ReadExactly(bytes);
                        return Encoding.UTF8.GetString(bytes);
                    }

                    stream.Seek((long)length, SeekOrigin.Current);
                    break;
                default:
                    return null;
            }
        }

        return null;
    }

    private static ulong? ReadVarint(Stream stream)
    {
        ulong value = 0;
        for (var shift = 0; shift < 64; shift += 7)
        {
            var b = stream.ReadByte();
            if (b < 0)
            {
                return null;
            }

            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80)
            {
                return value;
            }
        }

        return null;
    }
}
