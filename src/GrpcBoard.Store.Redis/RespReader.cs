using System.Buffers.Text;
using System.Text;

namespace GrpcBoard.Store.Redis;

/// <summary>An error reply ("-ERR ...").</summary>
internal sealed record RespError(string Message);

/// <summary>
/// A RESP2 reply reader over a blocking stream (TCP or TLS): integers as long, bulk strings as byte[], arrays as
/// object?[]. A reply may arrive in any number of pieces; a read that fails (a timeout, a closed connection) fails the
/// reply, and the connection with it.
/// </summary>
internal sealed class RespReader(Stream stream)
{
    private byte[] _buffer = new byte[64 * 1024];
    private int _start;
    private int _end;

    public object? ReadValue()
    {
        var type = ReadByte();
        var line = ReadLine();
        switch (type)
        {
            case (byte)'+':
                return Encoding.UTF8.GetString(line);
            case (byte)'-':
                return new RespError(Encoding.UTF8.GetString(line));
            case (byte)':':
                return ParseLong(line);
            case (byte)'$':
            {
                var length = ParseLong(line);
                if (length < 0)
                {
                    return null;
                }

                var bytes = new byte[length];
                Fill(bytes);
                Expect("\r\n"u8);
                return bytes;
            }

            case (byte)'*':
            {
                var count = ParseLong(line);
                if (count < 0)
                {
                    return null;
                }

                var items = new object?[count];
                for (var i = 0; i < items.Length; i++)
                {
                    items[i] = ReadValue();
                }

                return items;
            }

            default:
                throw new InvalidDataException($"Unexpected RESP type byte 0x{type:x2}.");
        }
    }

    private static long ParseLong(ReadOnlySpan<byte> line) =>
        Utf8Parser.TryParse(line, out long value, out var consumed) && consumed == line.Length
            ? value
            : throw new InvalidDataException("Malformed RESP number.");

    private byte ReadByte()
    {
        if (_start == _end)
        {
            Receive();
        }

        return _buffer[_start++];
    }

    /// <summary>The bytes up to the next CRLF (consumed with it); valid until the next read.</summary>
    private ReadOnlySpan<byte> ReadLine()
    {
        while (true)
        {
            var index = _buffer.AsSpan(_start, _end - _start).IndexOf("\r\n"u8);
            if (index >= 0)
            {
                var line = _buffer.AsSpan(_start, index);
                _start += index + 2;
                return line;
            }

            Receive();
        }
    }

    private void Fill(Span<byte> destination)
    {
        while (destination.Length > 0)
        {
            if (_start == _end)
            {
                Receive();
            }

            var n = Math.Min(destination.Length, _end - _start);
            _buffer.AsSpan(_start, n).CopyTo(destination);
            _start += n;
            destination = destination[n..];
        }
    }

    private void Expect(ReadOnlySpan<byte> bytes)
    {
        foreach (var b in bytes)
        {
            if (ReadByte() != b)
            {
                throw new InvalidDataException("Malformed RESP reply.");
            }
        }
    }

    /// <summary>Receives more bytes, keeping the unconsumed ones (a partial line stays in one piece).</summary>
    private void Receive()
    {
        if (_start > 0)
        {
            _buffer.AsSpan(_start, _end - _start).CopyTo(_buffer);
            _end -= _start;
            _start = 0;
        }

        if (_end == _buffer.Length)
        {
            Array.Resize(ref _buffer, _buffer.Length * 2);
        }

        var n = stream.Read(_buffer, _end, _buffer.Length - _end);
        if (n == 0)
        {
            throw new IOException("Redis closed the connection.");
        }

        _end += n;
    }
}
