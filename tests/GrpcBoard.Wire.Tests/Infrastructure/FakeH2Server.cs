using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace GrpcBoard.Wire.Tests.Infrastructure;

/// <summary>
/// A hand-driven HTTP/2 server on loopback, for what Kestrel will not do on demand: stop answering, send
/// GOAWAY mid-call, Huffman-code its headers, break the protocol. Each accepted connection runs
/// <c>serve</c>; frames are read and written one at a time, exactly as given.
/// </summary>
public sealed class FakeH2Server : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;
    private int _connections;

    public FakeH2Server(Func<Peer, Task> serve)
    {
        _listener.Start();
        _accepting = AcceptAsync(serve);
    }

    public string Address => $"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}";

    public int Connections => Volatile.Read(ref _connections);

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Stop();
        await _accepting.ConfigureAwait(false);
        _stop.Dispose();
    }

    private async Task AcceptAsync(Func<Peer, Task> serve)
    {
        var running = new List<Task>();
        try
        {
            while (true)
            {
                var socket = await _listener.AcceptSocketAsync(_stop.Token).ConfigureAwait(false);
                Interlocked.Increment(ref _connections);
                running.Add(Task.Run(async () =>
                {
                    using var peer = new Peer(socket);
                    try
                    {
                        await peer.ReadPrefaceAsync().ConfigureAwait(false);
                        await serve(peer).ConfigureAwait(false);
                    }
                    catch (Exception ex) when (ex is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
                    {
                        // The client went away: that is how most of these conversations end.
                    }
                }));
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }

        await Task.WhenAll(running).WaitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
    }

    public readonly record struct Frame(byte Type, byte Flags, int Stream, byte[] Payload)
    {
        public bool EndStream => (Flags & 0x1) != 0;
    }

    /// <summary>One accepted connection.</summary>
    public sealed class Peer(Socket socket) : IDisposable
    {
        public const byte Data = 0, Headers = 1, RstStream = 3, Settings = 4, Ping = 6, GoAway = 7, WindowUpdate = 8;

        public async Task ReadPrefaceAsync()
        {
            var preface = await ReadExactlyAsync(24).ConfigureAwait(false);
            if (preface[0] != (byte)'P')
            {
                throw new IOException("not an HTTP/2 client preface");
            }
        }

        public async Task<Frame> ReadFrameAsync()
        {
            var header = await ReadExactlyAsync(9).ConfigureAwait(false);
            var length = (header[0] << 16) | (header[1] << 8) | header[2];
            return new Frame(header[3], header[4], (int)(BinaryPrimitives.ReadUInt32BigEndian(header.AsSpan(5)) & 0x7FFF_FFFF), await ReadExactlyAsync(length).ConfigureAwait(false));
        }

        /// <summary>Reads frames until one matches (the request's last DATA frame, say).</summary>
        public async Task<Frame> ReadUntilAsync(Func<Frame, bool> match)
        {
            while (true)
            {
                var frame = await ReadFrameAsync().ConfigureAwait(false);
                if (match(frame))
                {
                    return frame;
                }
            }
        }

        public Task SendAsync(byte type, byte flags, int stream, ReadOnlySpan<byte> payload) => SendTogetherAsync(FrameBytes(type, flags, stream, payload));

        /// <summary>Sends bytes in one write: several frames that the client then reads together.</summary>
        public async Task SendTogetherAsync(byte[] frames)
        {
            for (var sent = 0; sent < frames.Length;)
            {
                sent += await socket.SendAsync(frames.AsMemory(sent), SocketFlags.None).ConfigureAwait(false);
            }
        }

        /// <summary>One frame as bytes.</summary>
        public static byte[] FrameBytes(byte type, byte flags, int stream, ReadOnlySpan<byte> payload)
        {
            var bytes = new byte[9 + payload.Length];
            bytes[0] = (byte)(payload.Length >> 16);
            bytes[1] = (byte)(payload.Length >> 8);
            bytes[2] = (byte)payload.Length;
            bytes[3] = type;
            bytes[4] = flags;
            BinaryPrimitives.WriteUInt32BigEndian(bytes.AsSpan(5), (uint)stream);
            payload.CopyTo(bytes.AsSpan(9));
            return bytes;
        }

        /// <summary>A whole unary response as bytes: headers, one message, trailers with the status.</summary>
        public static byte[] UnaryResponse(int stream, byte[] headerBlock, byte[] message, byte[] trailerBlock) =>
            [.. FrameBytes(Headers, 0x4, stream, headerBlock), .. FrameBytes(Data, 0, stream, RawHttp2.Frame(message)), .. FrameBytes(Headers, 0x4 | 0x1, stream, trailerBlock)];

        public Task SendSettingsAsync() => SendAsync(Settings, 0, 0, []);

        public Task SendGoAwayAsync(int lastStream, uint code)
        {
            var payload = new byte[8];
            BinaryPrimitives.WriteUInt32BigEndian(payload, (uint)lastStream);
            BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(4), code);
            return SendAsync(GoAway, 0, 0, payload);
        }

        /// <summary>A whole unary response (<see cref="UnaryResponse"/>), in one write.</summary>
        public Task SendUnaryResponseAsync(int stream, byte[] headerBlock, byte[] message, byte[] trailerBlock) =>
            SendTogetherAsync(UnaryResponse(stream, headerBlock, message, trailerBlock));

        public void Dispose() => socket.Dispose();

        private async Task<byte[]> ReadExactlyAsync(int length)
        {
            var buffer = new byte[length];
            var read = 0;
            while (read < length)
            {
                var n = await socket.ReceiveAsync(buffer.AsMemory(read), SocketFlags.None).ConfigureAwait(false);
                if (n == 0)
                {
                    throw new IOException("the client closed the connection");
                }

                read += n;
            }

            return buffer;
        }
    }
}
