using System.Buffers.Binary;
using System.Text;

namespace GrpcBoard.Store.Redis;

/// <summary>
/// The subset of MessagePack the commit script reads with Redis's built-in <c>cmsgpack.unpack</c>: arrays,
/// strings (UTF-8 text, or any bytes) and non-negative integers. A batch travels as one argument: StackExchange.Redis then
/// writes one bulk string instead of a hundred small ones, and Redis decodes it in C.
/// </summary>
internal sealed class MessagePackWriter
{
    private byte[] _buffer;
    private int _length;

    /// <param name="capacity">Bytes to start with; the buffer grows (copying) past them.</param>
    public MessagePackWriter(int capacity = 1024) => _buffer = new byte[Math.Max(16, capacity)];

    public int Length => _length;

    public byte[] ToArray() => _buffer.AsSpan(0, _length).ToArray();

    public void ArrayHeader(int count)
    {
        if (count < 16)
        {
            Byte((byte)(0x90 | count));
        }
        else if (count <= ushort.MaxValue)
        {
            Byte(0xdc);
            BinaryPrimitives.WriteUInt16BigEndian(Reserve(2), (ushort)count);
        }
        else
        {
            Byte(0xdd);
            BinaryPrimitives.WriteUInt32BigEndian(Reserve(4), (uint)count);
        }
    }

    public void String(string value)
    {
        var length = Encoding.UTF8.GetByteCount(value);
        StringHeader(length);
        Encoding.UTF8.GetBytes(value, Reserve(length));
    }

    private void StringHeader(int length)
    {
        if (length < 32)
        {
            Byte((byte)(0xa0 | length));
        }
        else if (length <= byte.MaxValue)
        {
            Byte(0xd9);
            Byte((byte)length);
        }
        else if (length <= ushort.MaxValue)
        {
            Byte(0xda);
            BinaryPrimitives.WriteUInt16BigEndian(Reserve(2), (ushort)length);
        }
        else
        {
            Byte(0xdb);
            BinaryPrimitives.WriteUInt32BigEndian(Reserve(4), (uint)length);
        }
    }

    /// <summary>A number as a string of decimal digits (how Lua is given revisions and scores).</summary>
    public void Decimal(long value)
    {
        Span<byte> digits = stackalloc byte[20];
        value.TryFormat(digits, out var length, default, System.Globalization.CultureInfo.InvariantCulture);
        StringHeader(length);
        digits[..length].CopyTo(Reserve(length));
    }

    /// <summary>
    /// Bytes as a MessagePack str: Redis's cmsgpack predates the bin types and refuses them, and a Lua string
    /// holds any bytes.
    /// </summary>
    public void Bytes(ReadOnlySpan<byte> value)
    {
        StringHeader(value.Length);
        value.CopyTo(Reserve(value.Length));
    }

    /// <summary>Non-negative integers only (indices, counts): what the script needs.</summary>
    public void Integer(long value)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(value);
        if (value < 128)
        {
            Byte((byte)value);
        }
        else if (value <= uint.MaxValue)
        {
            Byte(0xce);
            BinaryPrimitives.WriteUInt32BigEndian(Reserve(4), (uint)value);
        }
        else
        {
            Byte(0xcf);
            BinaryPrimitives.WriteUInt64BigEndian(Reserve(8), (ulong)value);
        }
    }

    private void Byte(byte value) => Reserve(1)[0] = value;

    private Span<byte> Reserve(int count)
    {
        if (_length + count > _buffer.Length)
        {
            Array.Resize(ref _buffer, Math.Max(_buffer.Length * 2, _length + count));
        }

        var span = _buffer.AsSpan(_length, count);
        _length += count;
        return span;
    }
}
