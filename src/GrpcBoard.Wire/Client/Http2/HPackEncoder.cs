using System.Buffers;
using System.Text;

namespace GrpcBoard.Wire.Client.Http2;

/// <summary>
/// HPACK encoding of request headers (RFC 7541) the simplest legal way: static-table names where there is
/// one, literal values, never Huffman, never the dynamic table ("literal without indexing", 6.2.2). The
/// headers are a few short strings per call; compressing them would cost more CPU than the bytes it saves on
/// the loopback and LAN links a board runs on.
/// </summary>
internal static class HPackEncoder
{
    // Static table indexes (RFC 7541, Appendix A).
    public const int Authority = 1, MethodPost = 3, Path = 4, SchemeHttp = 6, SchemeHttps = 7, ContentType = 31;

    public static void Indexed(IBufferWriter<byte> block, int index) => Integer(block, index, 7, 0x80);

    public static void LiteralWithIndexedName(IBufferWriter<byte> block, int nameIndex, string value)
    {
        Integer(block, nameIndex, 4, 0x00);
        String(block, value);
    }

    public static void Literal(IBufferWriter<byte> block, string name, string value)
    {
        Integer(block, 0, 4, 0x00);
        String(block, name);
        String(block, value);
    }

    private static void String(IBufferWriter<byte> block, string value)
    {
        // Latin1: header values are octets (RFC 9110, 5.5); gRPC metadata is ASCII, or base64 for -bin keys.
        var length = Encoding.Latin1.GetByteCount(value);
        Integer(block, length, 7, 0x00); // H = 0: not Huffman-coded
        var span = block.GetSpan(length);
        Encoding.Latin1.GetBytes(value, span);
        block.Advance(length);
    }

    /// <summary>An integer with an N-bit prefix (RFC 7541, 5.1).</summary>
    private static void Integer(IBufferWriter<byte> block, int value, int prefixBits, byte firstBits)
    {
        var span = block.GetSpan(6);
        var max = (1 << prefixBits) - 1;
        if (value < max)
        {
            span[0] = (byte)(firstBits | value);
            block.Advance(1);
            return;
        }

        span[0] = (byte)(firstBits | max);
        var i = 1;
        value -= max;
        while (value >= 128)
        {
            span[i++] = (byte)((value & 0x7F) | 0x80);
            value >>= 7;
        }

        span[i++] = (byte)value;
        block.Advance(i);
    }
}
