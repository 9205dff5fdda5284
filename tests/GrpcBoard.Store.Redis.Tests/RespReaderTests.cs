using System.Net;
using System.Net.Sockets;
using System.Text;
using GrpcBoard.Testing;
using Xunit;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>
/// The direct commit connection's reply reader, fed over a real loopback socket: replies cut anywhere and
/// delayed past the receive timeout are still read whole, and input that is not RESP is refused rather than
/// misread (the connection is then broken and its commits fail with UNAVAILABLE).
/// </summary>
public sealed class RespReaderTests
{
    /// <summary>A loopback connection: the reader's end (with its receive timeout) and the writer's.</summary>
    private sealed class Pair : IDisposable
    {
        public required Socket Reader { get; init; }

        public required Socket Writer { get; init; }

        public static async Task<Pair> OpenAsync(int receiveTimeoutMs)
        {
            using var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            var reader = new Socket(SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = receiveTimeoutMs };
            await reader.ConnectAsync((IPEndPoint)listener.LocalEndpoint);
            return new Pair { Reader = reader, Writer = await listener.AcceptSocketAsync() };
        }

        public void Dispose()
        {
            Reader.Dispose();
            Writer.Dispose();
        }
    }

    [Fact]
    public async Task AReplyCutIntoPieces_WithPausesLongerThanTheReceiveTimeout_IsReadWhole()
    {
        using var pair = await Pair.OpenAsync(receiveTimeoutMs: 50);
        var timeouts = 0;
        var timedOut = new SemaphoreSlim(0);
        var reader = new RespReader(pair.Reader, () =>
        {
            Interlocked.Increment(ref timeouts);
            timedOut.Release();
            return false;
        });

        var reply = "*4\r\n:1\r\n:42\r\n$5\r\nab\r\nc\r\n*1\r\n:-1\r\n-ERR wrong\r\n"u8.ToArray();
        var reading = Task.Run(() => (reader.ReadValue(), reader.ReadValue()));
        // Cut between CR and LF, inside a number, inside a bulk string (before its own CRLF), and so on; after
        // each piece, the reader's receive times out before the next one is sent.
        int[] cuts = [0, 3, 6, 10, 19, 23, 30, reply.Length];
        for (var i = 1; i < cuts.Length; i++)
        {
            while (timedOut.Wait(0))
            {
            }

            pair.Writer.Send(reply.AsSpan(cuts[i - 1], cuts[i] - cuts[i - 1]));
            if (i < cuts.Length - 1)
            {
                await timedOut.WaitAsync().Within();
            }
        }

        var (first, second) = await reading.Within();

        var items = Assert.IsType<object?[]>(first);
        Assert.Equal(4, items.Length);
        Assert.Equal(1L, items[0]);
        Assert.Equal(42L, items[1]);
        Assert.Equal("ab\r\nc", Encoding.UTF8.GetString(Assert.IsType<byte[]>(items[2])));
        Assert.Equal(-1L, Assert.Single(Assert.IsType<object?[]>(items[3])));
        Assert.Equal("ERR wrong", Assert.IsType<RespError>(second).Message);
        Assert.True(timeouts > 0, "no receive timed out: this test did not exercise waiting on");
    }

    [Fact]
    public async Task WhenTheWaitIsOverdue_TheReadFailsInsteadOfWaitingOn()
    {
        using var pair = await Pair.OpenAsync(receiveTimeoutMs: 50);
        var reader = new RespReader(pair.Reader, () => true);
        pair.Writer.Send("*2\r\n:1\r\n"u8);

        var error = await Assert.ThrowsAsync<SocketException>(() => Task.Run(reader.ReadValue)).Within();
        Assert.Equal(SocketError.TimedOut, error.SocketErrorCode);
    }

    [Theory]
    [InlineData("!3\r\nabc\r\n")]      // not a RESP2 type
    [InlineData(":12x\r\n")]           // not a number
    [InlineData("$3\r\nabcd\r\n")]     // a bulk string longer than its length
    public async Task InputThatIsNotRESP_IsRefused(string input)
    {
        using var pair = await Pair.OpenAsync(receiveTimeoutMs: 5000);
        pair.Writer.Send(Encoding.ASCII.GetBytes(input));

        await Assert.ThrowsAsync<InvalidDataException>(() => Task.Run(new RespReader(pair.Reader).ReadValue)).Within();
    }

    [Fact]
    public async Task AConnectionClosedMidReply_IsAnError_NotAShortReply()
    {
        using var pair = await Pair.OpenAsync(receiveTimeoutMs: 5000);
        pair.Writer.Send("*3\r\n:1\r\n"u8);
        pair.Writer.Shutdown(SocketShutdown.Both);
        pair.Writer.Close();

        await Assert.ThrowsAsync<IOException>(() => Task.Run(new RespReader(pair.Reader).ReadValue)).Within();
    }
}
