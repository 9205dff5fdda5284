using System.Buffers;
using static GrpcBoard.Wire.Client.Http2.Http2Frames;

namespace GrpcBoard.Wire.Client.Http2;

/// <summary>
/// Puts together a header block that arrives in a HEADERS frame and the CONTINUATION frames after it (RFC 9113, 6.2
/// and 6.10), for the channel's connection and the bench's lean load generator alike. Breaches of the framing rules
/// are connection errors (<see cref="Http2ConnectionException"/>).
/// </summary>
internal sealed class HeaderBlockReader(int maxBlockSize)
{
    private readonly ArrayBufferWriter<byte> _block = new();
    private int _stream;
    private bool _endsStream;

    /// <summary>Called for every frame: while a block is open, nothing but its CONTINUATION may come (RFC 9113, 6.10).</summary>
    public void CheckNext(byte type)
    {
        if (_stream != 0 && type != ContinuationFrame)
        {
            throw new Http2ConnectionException(ProtocolError, "a header block was interrupted by another frame");
        }
    }

    /// <summary>Takes a HEADERS frame: true, with its block, when the frame holds the whole block; else it waits for CONTINUATION.</summary>
    public bool TryTakeHeaders(byte flags, int stream, ReadOnlySpan<byte> payload, out ReadOnlySpan<byte> block, out bool endsStream)
    {
        block = TryUnpad(payload, flags, out var unpadded) ? unpadded : throw new Http2ConnectionException(ProtocolError, "padding longer than its frame");
        if ((flags & PriorityFlag) != 0)
        {
            block = block.Length >= 5 ? block[5..] : throw new Http2ConnectionException(FrameSizeError, "a HEADERS frame too short for its priority fields");
        }

        endsStream = (flags & EndStreamFlag) != 0;
        if ((flags & EndHeadersFlag) != 0)
        {
            return true;
        }

        _stream = stream;
        _endsStream = endsStream;
        _block.ResetWrittenCount();
        Append(block);
        block = default;
        return false;
    }

    /// <summary>Takes a CONTINUATION frame: true, with the whole block and whether its HEADERS ended the stream, when it ends the block.</summary>
    public bool TryTakeContinuation(byte flags, int stream, ReadOnlySpan<byte> payload, out ReadOnlySpan<byte> block, out bool endsStream)
    {
        if (_stream == 0 || stream != _stream)
        {
            throw new Http2ConnectionException(ProtocolError, "a CONTINUATION frame that continues no header block");
        }

        Append(payload);
        endsStream = _endsStream;
        if ((flags & EndHeadersFlag) == 0)
        {
            block = default;
            return false;
        }

        _stream = 0;
        block = _block.WrittenSpan;
        return true;
    }

    private void Append(ReadOnlySpan<byte> fragment)
    {
        if (_block.WrittenCount + fragment.Length > maxBlockSize)
        {
            throw new Http2ConnectionException(ProtocolError, "a header block larger than the advertised limit");
        }

        _block.Write(fragment);
    }
}
