using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using GrpcBoard.Wire;
using GrpcBoard.Wire.Client;
using GrpcBoard.Wire.Client.Http2;
using static GrpcBoard.Wire.Client.Http2.Http2Frames;

namespace GrpcBoard.Bench.LoadGen;

/// <summary>
/// The bench's lean load generator: one HTTP/2 connection (h2c, prior knowledge) that makes unary gRPC calls
/// and nothing else, written at the frame level so that the tool costs the machine as little as
/// redis-benchmark does. The board and etcd run on the same two cores as the tool, so every microsecond the
/// load generator spends is taken from the system under test: per claim, GrpcBoard's own C# client cost
/// 13–18 µs over HttpClient, and costs about 12 µs over its own HTTP/2 connection; this one 5–9 µs.
///
/// What it leaves out, on purpose: deadlines, cancellation per call, compression, response headers other
/// than the gRPC status. Frame layout and HPACK are the C# client's (<see cref="Http2Frames"/>,
/// <see cref="HPackEncoder"/>, <see cref="HPackDecoder"/>, <see cref="ResponseRules.ReadStatus"/>); what differs
/// is how calls complete, below.
///
/// Calls complete on the connection's reader: a caller's continuation runs there, makes its next call,
/// and all calls made while one read is parsed leave in one write, as in an event loop.
/// </summary>
public sealed class LeanH2Connection : IAsyncDisposable
{
    private const int MaxOutgoingFrame = MinMaxFrameSize; // the peer's SETTINGS_MAX_FRAME_SIZE is at least this
    private const int MaxHeaderListSize = 64 * 1024;

    /// <summary>Our receive window, per stream and for the connection: large, so the peer never waits on us.</summary>
    private const int ReceiveWindow = 1 << 30;

    /// <summary>Set on the reader's thread while it parses: calls made there are written after the parse, together.</summary>
    [ThreadStatic]
    private static LeanH2Connection? t_parsing;

    private readonly Socket _socket;
    private readonly object _lock = new();
    private readonly Dictionary<int, LeanCall> _active = [];
    private readonly Queue<LeanCall> _waiting = new();
    private readonly CancellationTokenRegistration _cancellation;
    private readonly Http2SendBuffer _send;
    private int _nextStreamId = 1;
    private long _sendWindow = 65_535;
    private long _peerInitialStreamWindow = 65_535;
    private long _peerMaxStreams = long.MaxValue;
    private long _receivedSinceUpdate;
    private Exception? _failure;
    private Task _reader = Task.CompletedTask;

    // A header block split over HEADERS and CONTINUATION frames.
    private readonly HeaderBlockReader _headerBlocks = new(MaxHeaderListSize);
    private readonly List<KeyValuePair<string, string>> _decoded = [];

    /// <summary>Writes to the socket so far.</summary>
    public long Writes => _send.Writes;

    private LeanH2Connection(Socket socket, string authority, CancellationToken cancellationToken)
    {
        _socket = socket;
        _send = new Http2SendBuffer(socket, _lock);
        Authority = authority;
        _cancellation = cancellationToken.Register(static c => ((LeanH2Connection)c!).Fail(new OperationCanceledException("the run was cancelled")), this);
    }

    /// <summary>host:port, as sent in :authority.</summary>
    public string Authority { get; }

    /// <summary>Opens the connection and sends the preface and our SETTINGS; the peer's arrive on the reader.</summary>
    public static async Task<LeanH2Connection> ConnectAsync(Uri address, CancellationToken cancellationToken)
    {
        if (address.Scheme != "http")
        {
            throw new NotSupportedException("The lean load generator speaks h2c (http://) only.");
        }

        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(address.Host, address.Port, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        var connection = new LeanH2Connection(socket, address.Authority, cancellationToken);
        lock (connection._lock)
        {
            connection.Append(Preface);
            Span<byte> settings = stackalloc byte[18];
            WriteSetting(settings, 0x1, 0);              // HEADER_TABLE_SIZE: our decoder keeps no dynamic table
            WriteSetting(settings[6..], 0x2, 0);         // ENABLE_PUSH
            WriteSetting(settings[12..], 0x4, ReceiveWindow); // INITIAL_WINDOW_SIZE
            connection.AppendFrame(SettingsFrame, 0, 0, settings);
            connection.AppendWindowUpdate(0, ReceiveWindow - 65_535);
        }

        connection._reader = Task.Run(connection.ReadLoopAsync, CancellationToken.None);
        connection.RequestFlush();
        return connection;
    }

    /// <summary>The HPACK block of a call's request headers, built once per method and reused by every call.</summary>
    public byte[] RequestHeaders(string path)
    {
        var block = new ArrayBufferWriter<byte>(96);
        HPackEncoder.Indexed(block, HPackEncoder.MethodPost);
        HPackEncoder.Indexed(block, HPackEncoder.SchemeHttp);
        HPackEncoder.LiteralWithIndexedName(block, HPackEncoder.Path, path);
        HPackEncoder.LiteralWithIndexedName(block, HPackEncoder.Authority, Authority);
        HPackEncoder.LiteralWithIndexedName(block, HPackEncoder.ContentType, GrpcProtocol.ContentType);
        HPackEncoder.Literal(block, GrpcProtocol.TeHeader, GrpcProtocol.TeTrailers);
        return block.WrittenSpan.ToArray();
    }

    /// <summary>
    /// One unary call: the request message (protobuf bytes, without gRPC's length prefix) under the given
    /// request headers; returns the response message. Throws <see cref="RpcException"/> with the call's
    /// status when it ended without a message or with a non-OK status.
    /// </summary>
    public Task<byte[]> CallAsync(byte[] requestHeaders, byte[] message)
    {
        var call = new LeanCall(requestHeaders, message);
        if (5 + message.Length > _peerInitialStreamWindow)
        {
            throw new NotSupportedException("A request larger than the peer's initial stream window needs stream flow control, which the lean load generator does not do.");
        }

        lock (_lock)
        {
            if (_failure is { } failure)
            {
                return Task.FromException<byte[]>(Unavailable(failure));
            }

            _waiting.Enqueue(call);
            SendWaiting();
        }

        RequestFlush();
        return call.Completion.Task;
    }

    public async ValueTask DisposeAsync()
    {
        Fail(new ObjectDisposedException(nameof(LeanH2Connection)));
        await _cancellation.DisposeAsync().ConfigureAwait(false);
        try
        {
            await _reader.ConfigureAwait(false);
        }
        catch (Exception)
        {
            // The reader ends with the socket's failure, which Fail has reported to every call.
        }
    }

    /// <summary>Starts waiting calls while the peer's stream limit and connection window allow (under the lock).</summary>
    private void SendWaiting()
    {
        Span<byte> prefix = stackalloc byte[5];
        while (_waiting.Count > 0 && _active.Count < _peerMaxStreams && _sendWindow >= _waiting.Peek().DataLength)
        {
            var call = _waiting.Dequeue();
            var id = _nextStreamId;
            _nextStreamId += 2;
            _active.Add(id, call);
            _sendWindow -= call.DataLength;
            AppendFrame(HeadersFrame, EndHeadersFlag, id, call.RequestHeaders);
            var payload = call.Message;
            BinaryPrimitives.WriteUInt32BigEndian(prefix[1..], (uint)payload.Length);
            if (payload.Length + 5 <= MaxOutgoingFrame)
            {
                WriteFrameHeader(Reserve(FrameHeaderLength), payload.Length + 5, DataFrame, EndStreamFlag, id);
                Append(prefix);
                Append(payload);
            }
            else
            {
                var data = new byte[payload.Length + 5];
                prefix.CopyTo(data);
                payload.CopyTo(data, 5);
                for (var offset = 0; offset < data.Length; offset += MaxOutgoingFrame)
                {
                    var length = Math.Min(MaxOutgoingFrame, data.Length - offset);
                    AppendFrame(DataFrame, offset + length == data.Length ? EndStreamFlag : (byte)0, id, data.AsSpan(offset, length));
                }
            }
        }
    }

    private void RequestFlush()
    {
        if (t_parsing == this)
        {
            return; // the reader writes once it has parsed what it read
        }

        lock (_lock)
        {
            if (!_send.BeginFlush())
            {
                return;
            }
        }

        ThreadPool.UnsafeQueueUserWorkItem(static c => _ = c.FlushLoopAsync(), this, preferLocal: false);
    }

    private async Task FlushLoopAsync()
    {
        try
        {
            await _send.FlushAsync().ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            Fail(ex);
        }
    }

    private async Task ReadLoopAsync()
    {
        var buffer = new byte[1 << 18];
        int start = 0, end = 0;
        try
        {
            while (true)
            {
                if (end == buffer.Length)
                {
                    if (start > 0)
                    {
                        Buffer.BlockCopy(buffer, start, buffer, 0, end - start);
                        end -= start;
                        start = 0;
                    }
                    else
                    {
                        Array.Resize(ref buffer, buffer.Length * 2);
                    }
                }

                var read = await _socket.ReceiveAsync(buffer.AsMemory(end), SocketFlags.None).ConfigureAwait(false);
                if (read == 0)
                {
                    throw new IOException("The peer closed the connection.");
                }

                end += read;
                t_parsing = this;
                try
                {
                    start = ParseFrames(buffer, start, end);
                }
                finally
                {
                    t_parsing = null;
                }

                if (start == end)
                {
                    start = end = 0;
                }

                bool flush;
                lock (_lock)
                {
                    flush = _send.BeginFlush();
                }

                if (flush)
                {
                    // Not awaited: a send that cannot complete at once must not stop this loop from reading,
                    // or both ends could wait on full socket buffers.
                    _ = FlushLoopAsync();
                }
            }
        }
        catch (Exception ex)
        {
            Fail(ex);
        }
    }

    /// <summary>Handles every whole frame in buffer[start..end); returns where the first incomplete one begins.</summary>
    private int ParseFrames(byte[] buffer, int start, int end)
    {
        while (end - start >= FrameHeaderLength)
        {
            var (length, type, flags, stream) = ReadFrameHeader(buffer.AsSpan(start));
            if (end - start < FrameHeaderLength + length)
            {
                break;
            }

            OnFrame(type, flags, stream, buffer.AsSpan(start + FrameHeaderLength, length));
            start += FrameHeaderLength + length;
        }

        return start;
    }

    private void OnFrame(byte type, byte flags, int stream, ReadOnlySpan<byte> payload)
    {
        _headerBlocks.CheckNext(type);
        switch (type)
        {
            case DataFrame:
                _receivedSinceUpdate += payload.Length;
                if (_receivedSinceUpdate >= ReceiveWindow / 2)
                {
                    lock (_lock)
                    {
                        AppendWindowUpdate(0, (int)_receivedSinceUpdate);
                    }

                    _receivedSinceUpdate = 0;
                }

                if (Find(stream) is { } receiving)
                {
                    receiving.Receive(Unpad(payload, flags));
                    if ((flags & EndStreamFlag) != 0)
                    {
                        Finish(stream, receiving, null);
                    }
                }

                break;
            case HeadersFrame:
                if (_headerBlocks.TryTakeHeaders(flags, stream, payload, out var block, out var endsStream))
                {
                    OnHeaderBlock(stream, block, endsStream);
                }

                break;
            case ContinuationFrame:
                if (_headerBlocks.TryTakeContinuation(flags, stream, payload, out block, out endsStream))
                {
                    OnHeaderBlock(stream, block, endsStream);
                }

                break;
            case RstStreamFrame:
                if (Find(stream) is { } reset)
                {
                    var code = BinaryPrimitives.ReadUInt32BigEndian(payload);
                    Finish(stream, reset, new RpcException(StatusCode.Unavailable, string.Create(CultureInfo.InvariantCulture, $"stream reset by the peer (HTTP/2 error {code})")));
                }

                break;
            case SettingsFrame:
                if ((flags & AckFlag) == 0)
                {
                    OnSettings(payload);
                }

                break;
            case PingFrame:
                if ((flags & AckFlag) == 0)
                {
                    lock (_lock)
                    {
                        AppendFrame(PingFrame, AckFlag, 0, payload);
                    }
                }

                break;
            case GoAwayFrame:
                OnGoAway(payload);
                break;
            case WindowUpdateFrame:
                if (stream == 0)
                {
                    lock (_lock)
                    {
                        _sendWindow += BinaryPrimitives.ReadUInt32BigEndian(payload) & 0x7FFF_FFFF;
                        SendWaiting();
                    }
                }

                break;
            case PushPromiseFrame:
                throw new IOException("The peer sent PUSH_PROMISE although push was disabled.");
            default:
                break; // PRIORITY and unknown frame types carry nothing a unary call needs
        }
    }

    private void OnSettings(ReadOnlySpan<byte> payload)
    {
        lock (_lock)
        {
            for (var i = 0; i + 6 <= payload.Length; i += 6)
            {
                var id = BinaryPrimitives.ReadUInt16BigEndian(payload[i..]);
                var value = BinaryPrimitives.ReadUInt32BigEndian(payload[(i + 2)..]);
                switch (id)
                {
                    case 0x3:
                        _peerMaxStreams = value;
                        break;
                    case 0x4:
                        _peerInitialStreamWindow = value;
                        break;
                }
            }

            AppendFrame(SettingsFrame, AckFlag, 0, []);
            SendWaiting();
        }
    }

    /// <summary>Streams above the peer's last processed one were not handled and fail; the others may still finish.</summary>
    private void OnGoAway(ReadOnlySpan<byte> payload)
    {
        var last = (int)(BinaryPrimitives.ReadUInt32BigEndian(payload) & 0x7FFF_FFFF);
        var code = BinaryPrimitives.ReadUInt32BigEndian(payload[4..]);
        var error = new RpcException(StatusCode.Unavailable, string.Create(CultureInfo.InvariantCulture, $"the peer sent GOAWAY (HTTP/2 error {code})"));
        List<KeyValuePair<int, LeanCall>> refused;
        lock (_lock)
        {
            _failure ??= error;
            _send.Close();
            refused = [.. _active.Where(a => a.Key > last || code != 0)];
            foreach (var (id, _) in refused)
            {
                _active.Remove(id);
            }

            refused.AddRange(_waiting.Select(w => new KeyValuePair<int, LeanCall>(0, w)));
            _waiting.Clear();
        }

        foreach (var (_, call) in refused)
        {
            call.Completion.TrySetException(error);
        }
    }

    private void OnHeaderBlock(int stream, ReadOnlySpan<byte> block, bool endsStream)
    {
        if (Find(stream) is not { } call)
        {
            return;
        }

        _decoded.Clear();
        HPackDecoder.Decode(block, _decoded, MaxHeaderListSize);
        call.Status ??= ResponseRules.ReadStatus(name => _decoded.Find(h => h.Key == name) is { Key: not null } h ? h.Value : null);
        if (endsStream)
        {
            Finish(stream, call, null);
        }
    }

    private LeanCall? Find(int stream)
    {
        lock (_lock)
        {
            return _active.GetValueOrDefault(stream);
        }
    }

    /// <summary>Ends a call: removes it (starting a waiting one in its place), then completes it outside the lock.</summary>
    private void Finish(int stream, LeanCall call, Exception? error)
    {
        lock (_lock)
        {
            _active.Remove(stream);
            SendWaiting();
        }

        if (error is not null)
        {
            call.Completion.TrySetException(error);
        }
        else
        {
            call.Complete();
        }
    }

    private void Fail(Exception error)
    {
        List<LeanCall> calls;
        lock (_lock)
        {
            _failure ??= error;
            _send.Close();
            calls = [.. _active.Values, .. _waiting];
            _active.Clear();
            _waiting.Clear();
        }

        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
        }
        catch (ObjectDisposedException)
        {
        }

        _socket.Dispose();
        var failure = Unavailable(error);
        foreach (var call in calls)
        {
            call.Completion.TrySetException(failure);
        }
    }

    private static RpcException Unavailable(Exception error) =>
        error as RpcException ?? new RpcException(new Status(StatusCode.Unavailable, "connection failed: " + error.Message), inner: error);

    private static ReadOnlySpan<byte> Unpad(ReadOnlySpan<byte> payload, byte flags) =>
        TryUnpad(payload, flags, out var data) ? data : throw new IOException("The peer sent padding longer than its frame.");

    // ---- output buffer (under _lock) ----

    private Span<byte> Reserve(int length)
    {
        var span = _send.Pending.GetSpan(length)[..length];
        _send.Pending.Advance(length);
        return span;
    }

    private void Append(ReadOnlySpan<byte> bytes) => _send.Pending.Write(bytes);

    private void AppendFrame(byte type, byte flags, int stream, ReadOnlySpan<byte> payload) => Http2Frames.AppendFrame(_send.Pending, type, flags, stream, payload);

    private void AppendWindowUpdate(int stream, int increment) => Http2Frames.AppendWindowUpdate(_send.Pending, stream, increment);

    /// <summary>One call: its request, and what has arrived of its response (touched by the reader only).</summary>
    private sealed class LeanCall(byte[] requestHeaders, byte[] message)
    {
        private readonly ArrayBufferWriter<byte> _response = new(256);

        // Continuations run on the reader (no RunContinuationsAsynchronously): the caller's next call is
        // buffered during the parse and leaves with the others in one write.
        public TaskCompletionSource<byte[]> Completion { get; } = new();

        public byte[] RequestHeaders { get; } = requestHeaders;

        public byte[] Message { get; } = message;

        public int DataLength => Message.Length + 5;

        /// <summary>The status the response's header blocks carried (grpc-status and the rest), once one did.</summary>
        public Status? Status { get; set; }

        public void Receive(ReadOnlySpan<byte> data) => _response.Write(data);

        public void Complete()
        {
            if (Status is { Code: not Wire.StatusCode.OK } failed)
            {
                Completion.TrySetException(new RpcException(failed));
                return;
            }

            // A unary response is one message: a 5-byte prefix (compressed flag, length) and the bytes.
            if (_response.WrittenCount < 5)
            {
                Completion.TrySetException(new RpcException(Status is null ? ResponseRules.NoStatusTrailer : ResponseRules.UnaryWithoutMessage));
                return;
            }

            var length = (int)BinaryPrimitives.ReadUInt32BigEndian(_response.WrittenSpan[1..]);
            if (_response.WrittenSpan[0] != 0 || length != _response.WrittenCount - 5)
            {
                Completion.TrySetException(new RpcException(Wire.StatusCode.Internal, _response.WrittenSpan[0] != 0
                    ? "a compressed response message (the lean load generator accepts none)"
                    : string.Create(CultureInfo.InvariantCulture, $"response message length {length} does not match the {_response.WrittenCount - 5} bytes received")));
                return;
            }

            Completion.TrySetResult(_response.WrittenSpan[5..].ToArray());
        }
    }
}
