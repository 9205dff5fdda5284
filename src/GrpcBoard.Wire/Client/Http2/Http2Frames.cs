using System.Buffers;
using System.Buffers.Binary;

namespace GrpcBoard.Wire.Client.Http2;

/// <summary>
/// HTTP/2 frame layout (RFC 9113, 4.1 and 6), shared by the channel's connection and the bench's lean load
/// generator: the 9-byte frame header, the frame types and flags a client uses, and the writers of the small
/// frames. Import with <c>using static</c>.
/// </summary>
internal static class Http2Frames
{
    public const int FrameHeaderLength = 9;

    /// <summary>The smallest SETTINGS_MAX_FRAME_SIZE a peer may set, and the default: frames up to it are always allowed.</summary>
    public const int MinMaxFrameSize = 16_384;

    public const byte DataFrame = 0, HeadersFrame = 1, PriorityFrame = 2, RstStreamFrame = 3, SettingsFrame = 4, PushPromiseFrame = 5, PingFrame = 6, GoAwayFrame = 7, WindowUpdateFrame = 8, ContinuationFrame = 9;

    public const byte EndStreamFlag = 0x1, AckFlag = 0x1, EndHeadersFlag = 0x4, PaddedFlag = 0x8, PriorityFlag = 0x20;

    /// <summary>Error codes of RST_STREAM and GOAWAY (RFC 9113, 7).</summary>
    public const uint NoError = 0x0, ProtocolError = 0x1, FlowControlError = 0x3, FrameSizeError = 0x6, RefusedStream = 0x7, CancelError = 0x8, CompressionError = 0x9;

    /// <summary>The client connection preface (RFC 9113, 3.4), followed by the client's SETTINGS.</summary>
    public static ReadOnlySpan<byte> Preface => "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8;

    public static void AppendFrame(IBufferWriter<byte> output, byte type, byte flags, int stream, ReadOnlySpan<byte> payload)
    {
        var span = output.GetSpan(FrameHeaderLength + payload.Length);
        WriteFrameHeader(span, payload.Length, type, flags, stream);
        payload.CopyTo(span[FrameHeaderLength..]);
        output.Advance(FrameHeaderLength + payload.Length);
    }

    /// <summary>The 9-byte header of a frame whose payload the caller writes after it.</summary>
    public static void WriteFrameHeader(Span<byte> header, int length, byte type, byte flags, int stream)
    {
        header[0] = (byte)(length >> 16);
        header[1] = (byte)(length >> 8);
        header[2] = (byte)length;
        header[3] = type;
        header[4] = flags;
        BinaryPrimitives.WriteUInt32BigEndian(header[5..], (uint)stream);
    }

    public static void AppendWindowUpdate(IBufferWriter<byte> output, int stream, int increment)
    {
        Span<byte> payload = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(payload, (uint)increment);
        AppendFrame(output, WindowUpdateFrame, 0, stream, payload);
    }

    public static void AppendRstStream(IBufferWriter<byte> output, int stream, uint code)
    {
        Span<byte> payload = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(payload, code);
        AppendFrame(output, RstStreamFrame, 0, stream, payload);
    }

    public static void WriteSetting(Span<byte> span, ushort id, uint value)
    {
        BinaryPrimitives.WriteUInt16BigEndian(span, id);
        BinaryPrimitives.WriteUInt32BigEndian(span[2..], value);
    }

    /// <summary>The fields of a frame header (at least 9 bytes); the stream id without its reserved bit.</summary>
    public static (int Length, byte Type, byte Flags, int Stream) ReadFrameHeader(ReadOnlySpan<byte> header) =>
        ((header[0] << 16) | (header[1] << 8) | header[2], header[3], header[4], (int)(BinaryPrimitives.ReadUInt32BigEndian(header[5..]) & 0x7FFF_FFFF));

    /// <summary>A padded frame's payload without its padding (RFC 9113, 6.1); false when the padding is longer than the frame.</summary>
    public static bool TryUnpad(ReadOnlySpan<byte> payload, byte flags, out ReadOnlySpan<byte> data)
    {
        data = payload;
        if ((flags & PaddedFlag) == 0)
        {
            return true;
        }

        if (payload.Length == 0 || payload[0] >= payload.Length)
        {
            return false;
        }

        data = payload[1..^payload[0]];
        return true;
    }
}

/// <summary>An error of the whole connection (RFC 9113, 5.4.1): it ends with GOAWAY and this code.</summary>
internal sealed class Http2ConnectionException(uint code, string message) : Exception(message)
{
    public uint Code { get; } = code;
}
