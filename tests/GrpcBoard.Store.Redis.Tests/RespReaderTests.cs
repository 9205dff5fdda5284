using System.Net;
using System.Net.Sockets;
using System.Text;
using GrpcBoard.Testing;
using Xunit;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>
/// The reply reader of our own Redis connections (the direct commit connection, questions to sentinels): replies cut
/// anywhere are still read whole, and input that is not RESP, or a connection closed mid-reply, is refused rather than
/// misread (the connection is then broken and its commits fail with UNAVAILABLE). How long a reply may take is the
/// commit connection's watchdog's business (DirectCommitTests: a Redis that stops answering).
/// </summary>
public sealed class RespReaderTests
{
    /// <summary>A loopback connection: the reader's end, as a stream, and the writer's.</summary>
    private sealed class Pair : IDisposable
    {
        public required NetworkStream Reader { get; init; }

        public required Socket Writer { get; init; }

        public static async Task<Pair> OpenAsync()
        {
            using var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            var reader = new Socket(SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 5000 };
            await reader.ConnectAsync((IPEndPoint)listener.LocalEndpoint);
            return new Pair { Reader = new NetworkStream(reader, ownsSocket: true), Writer = await listener.AcceptSocketAsync() };
        }

        public void Dispose()
        {
            Reader.Dispose();
            Writer.Dispose();
        }
    }

    /// <summary>A stream that hands out its bytes in the given pieces, one piece per read, as TCP or TLS may.</summary>
    private sealed class PiecesStream(byte[] bytes, int[] cuts) : Stream
    {
        private int _piece;

        public int Reads { get; private set; }

        public override int Read(byte[] buffer, int offset, int count)
        {
            Reads++;
            if (_piece + 1 >= cuts.Length)
            {
                return 0;
            }

            var (from, to) = (cuts[_piece], cuts[_piece + 1]);
            var n = Math.Min(count, to - from);
            Array.Copy(bytes, from, buffer, offset, n);
            cuts[_piece] += n;
            if (cuts[_piece] == to)
            {
                _piece++;
            }

            return n;
        }

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    [Fact]
    public void AReplyCutIntoPieces_IsReadWhole()
    {
        var reply = "*4\r\n:1\r\n:42\r\n$5\r\nab\r\nc\r\n*1\r\n:-1\r\n-ERR wrong\r\n"u8.ToArray();
        // Cut between CR and LF, inside a number, inside a bulk string (before its own CRLF), and so on.
        int[] cuts = [0, 3, 6, 10, 19, 23, 30, reply.Length];
        var stream = new PiecesStream(reply, [.. cuts]);
        var reader = new RespReader(stream);

        var first = reader.ReadValue();
        var second = reader.ReadValue();

        var items = Assert.IsType<object?[]>(first);
        Assert.Equal(4, items.Length);
        Assert.Equal(1L, items[0]);
        Assert.Equal(42L, items[1]);
        Assert.Equal("ab\r\nc", Encoding.UTF8.GetString(Assert.IsType<byte[]>(items[2])));
        Assert.Equal(-1L, Assert.Single(Assert.IsType<object?[]>(items[3])));
        Assert.Equal("ERR wrong", Assert.IsType<RespError>(second).Message);
        Assert.Equal(cuts.Length - 1, stream.Reads);
    }

    [Theory]
    [InlineData("!3\r\nabc\r\n")]      // not a RESP2 type
    [InlineData(":12x\r\n")]           // not a number
    [InlineData("$3\r\nabcd\r\n")]     // a bulk string longer than its length
    public async Task InputThatIsNotRESP_IsRefused(string input)
    {
        using var pair = await Pair.OpenAsync();
        pair.Writer.Send(Encoding.ASCII.GetBytes(input));

        await Assert.ThrowsAsync<InvalidDataException>(() => Task.Run(new RespReader(pair.Reader).ReadValue)).Within();
    }

    [Fact]
    public async Task AConnectionClosedMidReply_IsAnError_NotAShortReply()
    {
        using var pair = await Pair.OpenAsync();
        pair.Writer.Send("*3\r\n:1\r\n"u8);
        pair.Writer.Shutdown(SocketShutdown.Both);
        pair.Writer.Close();

        await Assert.ThrowsAsync<IOException>(() => Task.Run(new RespReader(pair.Reader).ReadValue)).Within();
    }
}
