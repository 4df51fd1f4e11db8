using System.Buffers.Binary;
using System.Text;

namespace Dsl.Runtime.Interop;

/// <summary>
/// The protobuf wire format, as much of it as ONNX needs: varints (wire type 0), 32-bit floats
/// (wire type 5) and length-delimited fields (wire type 2: strings, bytes, packed repeated
/// scalars and nested messages), appended to a growable buffer. Encoding rules from the public
/// protobuf specification ("Encoding", protobuf.dev/programming-guides/encoding).
/// </summary>
internal sealed class ProtoWriter
{
    private byte[] buffer = new byte[256];

    public int Length { get; private set; }

    public ReadOnlySpan<byte> Written => buffer.AsSpan(0, Length);

    public void Varint(int field, long value)
    {
        Tag(field, 0);
        RawVarint(unchecked((ulong)value));
    }

    public void Float(int field, float value)
    {
        Tag(field, 5);
        Ensure(4);
        BinaryPrimitives.WriteSingleLittleEndian(buffer.AsSpan(Length), value);
        Length += 4;
    }

    public void String(int field, string value) => Bytes(field, Encoding.UTF8.GetBytes(value));

    public void Bytes(int field, ReadOnlySpan<byte> value)
    {
        Tag(field, 2);
        RawVarint((ulong)value.Length);
        Append(value);
    }

    public void Message(int field, ProtoWriter message) => Bytes(field, message.Written);

    /// <summary>A packed repeated int64 (proto3's default encoding of repeated scalars).</summary>
    public void PackedInt64(int field, IReadOnlyList<long> values)
    {
        var packed = new ProtoWriter();
        foreach (var value in values)
        {
            packed.RawVarint(unchecked((ulong)value));
        }

        Bytes(field, packed.Written);
    }

    /// <summary>A packed repeated float.</summary>
    public void PackedFloat(int field, IReadOnlyList<float> values)
    {
        var bytes = new byte[values.Count * 4];
        for (var i = 0; i < values.Count; i++)
        {
            BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(i * 4), values[i]);
        }

        Bytes(field, bytes);
    }

    /// <summary>The tag and length of a length-delimited field whose body the caller writes elsewhere.</summary>
    public void Header(int field, long bodyLength)
    {
        Tag(field, 2);
        RawVarint((ulong)bodyLength);
    }

    /// <summary>Bytes a varint of <paramref name="value"/> takes.</summary>
    public static int VarintSize(ulong value)
    {
        var size = 1;
        while (value >= 0x80)
        {
            value >>= 7;
            size++;
        }

        return size;
    }

    private void Tag(int field, int wireType) => RawVarint(((ulong)field << 3) | (uint)wireType);

    private void RawVarint(ulong value)
    {
        Ensure(10);
        while (value >= 0x80)
        {
            buffer[Length++] = (byte)(value | 0x80);
            value >>= 7;
        }

        buffer[Length++] = (byte)value;
    }

    private void Append(ReadOnlySpan<byte> bytes)
    {
        Ensure(bytes.Length);
        bytes.CopyTo(buffer.AsSpan(Length));
        Length += bytes.Length;
    }

    private void Ensure(int extra)
    {
        if (Length + extra > buffer.Length)
        {
            Array.Resize(ref buffer, Math.Max(buffer.Length * 2, Length + extra));
        }
    }
}
