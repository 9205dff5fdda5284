using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using System.Net.Security;
using System.Net.Sockets;
using static GrpcBoard.Wire.Client.Http2.Http2Frames;

namespace GrpcBoard.Wire.Client.Http2;

/// <summary>
/// The channel's own HTTP/2 connection (h2c with prior knowledge, or h2 over TLS through ALPN) for unary and
/// server-streaming calls. HttpClient spent 22–24 µs of CPU
/// and 3.4–3.7 thread-pool work items on a claim (bench/GrpcBoard.Bench/JOURNAL.md, 2026-12-04); on the two cores a worker
/// shares with the board that is close to what the board spends serving it. Here a call costs one write (often
/// shared with other calls) and one hop to its caller: 12 µs and 1.1 work items.
///
/// Frames are written into one buffer under <see cref="_lock"/> and sent by whichever thread finds no send in
/// progress; one reader parses what arrives. The peer's SETTINGS, stream limit and both flow-control windows
/// are honoured (RFC 9113, 5.1.2, 6.5, 6.9); we advertise a header table size of 0, so header blocks never
/// refer to a dynamic table (RFC 7541, 4.2). The connection's receive window is large and given back on receipt;
/// a stream's is given back on receipt for a unary response (bounded by the message size limit anyway), and for a
/// streaming one as its caller keeps up (<see cref="CallStream"/>).
/// </summary>
internal sealed class Http2ClientConnection
{
    private const int MaxIncomingFrame = MinMaxFrameSize; // we advertise no larger SETTINGS_MAX_FRAME_SIZE
    private const int MaxHeaderListSize = 64 * 1024; // as HttpClient's default MaxResponseHeadersLength

    /// <summary>How long a new connection waits for the server's SETTINGS before it gives up on the server.</summary>
    private static readonly TimeSpan SettingsTimeout = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Our receive window for the connection, given back as data arrives: a stream whose caller reads slowly holds
    /// back its own stream, never the others (RFC 9113, 5.2.2).
    /// </summary>
    private const int ReceiveWindow = 1 << 30;

    /// <summary>
    /// Our receive window for each stream. A unary response is bounded by the message size limit, and its window is
    /// given back as it arrives; a streaming call's only as its caller keeps up (<see cref="CallStream.UnreadLimit"/>),
    /// so this bounds what a stream may hold beyond that.
    /// </summary>
    private const int StreamReceiveWindow = 4 << 20;

    private readonly Socket _socket;

    /// <summary>The TLS session over <see cref="_socket"/> for an "https://" address; null for h2c.</summary>
    private readonly SslStream? _tls;
    private readonly object _lock = new();
    private readonly Dictionary<int, CallStream> _open = [];
    private readonly Queue<CallStream> _waiting = new();

    /// <summary>Open streams whose request data is not all sent (flow control), in the order they opened.</summary>
    private readonly List<CallStream> _sending = [];
    private readonly TimeSpan _keepAliveInterval;
    private readonly TimeSpan _keepAliveTimeout;
    private readonly ITimer? _keepAliveTimer;
    private readonly ITimer _settingsTimer;
    private readonly Http2SendBuffer _send;
    /// <summary>Calls ended by <see cref="End"/>, for the reader to tell whether a parse ended any.</summary>
    private int _endedCalls;
    private int _nextStreamId = 1;
    private long _sendWindow = 65_535;
    private long _peerInitialStreamWindow = 65_535;
    /// <summary>
    /// The peer's stream limit. Until its SETTINGS arrive, calls are queued up to the 100 that RFC 9113 (6.5.2)
    /// recommends as a minimum, and none is opened: a server with a lower limit resets streams beyond it.
    /// </summary>
    private long _peerMaxStreams = 100;
    private bool _peerSettingsReceived;
    private int _peerMaxFrameSize = 16_384;
    private long _receivedSinceUpdate;

    /// <summary>Set once the connection failed: every stream has been failed with it.</summary>
    private RpcException? _failure;

    /// <summary>GOAWAY received (or stream ids used up): no new streams; the connection closes when its last one ends.</summary>
    private bool _draining;
    private long _lastFrameTimestamp;
    private long _pingSentTimestamp;

    // Header blocks split over HEADERS and CONTINUATION frames (reader only).
    private readonly HeaderBlockReader _headerBlocks = new(MaxHeaderListSize);
    private readonly List<KeyValuePair<string, string>> _decoded = [];

    private Http2ClientConnection(Socket socket, SslStream? tls, GrpcChannelOptions options)
    {
        _socket = socket;
        _tls = tls;
        _send = new Http2SendBuffer(socket, _lock, tls);
        _keepAliveInterval = options.KeepAliveInterval;
        _keepAliveTimeout = options.KeepAliveTimeout;
        _lastFrameTimestamp = TimeProvider.System.GetTimestamp();

        // No stream is opened before the server's SETTINGS: a server that never sends them must not hold calls forever.
        _settingsTimer = TimeProvider.System.CreateTimer(
            static c =>
            {
                var connection = (Http2ClientConnection)c!;
                if (!Volatile.Read(ref connection._peerSettingsReceived))
                {
                    connection.Fail(new RpcException(StatusCode.Unavailable, $"The server sent no HTTP/2 SETTINGS within {SettingsTimeout.TotalSeconds:0} s; is it an HTTP/2 server?"), ProtocolError);
                }
            },
            this, SettingsTimeout, Timeout.InfiniteTimeSpan);
        if (_keepAliveInterval > TimeSpan.Zero)
        {
            // Checked four times per interval (or timeout, if shorter): a ping goes out at most a quarter late.
            // An infinite timeout (negative, like Timeout.InfiniteTimeSpan) waits for answers forever.
            var shortest = _keepAliveTimeout > TimeSpan.Zero ? Math.Min(_keepAliveInterval.Ticks, _keepAliveTimeout.Ticks) : _keepAliveInterval.Ticks;
            var tick = TimeSpan.FromTicks(Math.Max(TimeSpan.FromMilliseconds(10).Ticks, shortest / 4));
            _keepAliveTimer = TimeProvider.System.CreateTimer(static c => ((Http2ClientConnection)c!).OnKeepAliveTick(), this, tick, tick);
        }
    }

    /// <summary>True once the connection takes no new calls and has none left: the channel drops it.</summary>
    public bool IsFinished
    {
        get
        {
            lock (_lock)
            {
                return _failure is not null || (_draining && _open.Count == 0 && _waiting.Count == 0);
            }
        }
    }

    /// <summary>
    /// Opens a connection (and over "https://" its TLS session, which must agree to h2 through ALPN) and sends the
    /// preface and our SETTINGS; the peer's arrive on the reader.
    /// </summary>
    public static async Task<Http2ClientConnection> ConnectAsync(Uri address, GrpcChannelOptions options, CancellationToken cancellationToken)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        SslStream? tls = null;
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(10));
            await socket.ConnectAsync(address.IdnHost, address.Port, timeout.Token).ConfigureAwait(false);
            if (address.Scheme == Uri.UriSchemeHttps)
            {
                tls = new SslStream(new NetworkStream(socket, ownsSocket: false));
                await tls.AuthenticateAsClientAsync(TlsOptions(address, options.SslOptions), timeout.Token).ConfigureAwait(false);
                if (tls.NegotiatedApplicationProtocol != SslApplicationProtocol.Http2)
                {
                    // A server that speaks only HTTP/1.1 over TLS: sending HTTP/2 frames would be answered with garbage.
                    throw new IOException("the server did not agree to HTTP/2 in the TLS handshake (ALPN).");
                }
            }
        }
        catch
        {
            tls?.Dispose();
            socket.Dispose();
            throw;
        }

        var connection = new Http2ClientConnection(socket, tls, options);
        lock (connection._lock)
        {
            connection._send.Pending.Write(Preface);
            Span<byte> settings = stackalloc byte[24];
            WriteSetting(settings, 0x1, 0);                   // HEADER_TABLE_SIZE: our decoder keeps no dynamic table
            WriteSetting(settings[6..], 0x2, 0);              // ENABLE_PUSH
            WriteSetting(settings[12..], 0x4, StreamReceiveWindow); // INITIAL_WINDOW_SIZE
            WriteSetting(settings[18..], 0x6, MaxHeaderListSize); // MAX_HEADER_LIST_SIZE
            connection.AppendFrame(SettingsFrame, 0, 0, settings);
            connection.AppendWindowUpdate(0, ReceiveWindow - 65_535);
        }

        _ = Task.Run(connection.ReadLoopAsync, CancellationToken.None);
        connection.Flush(inline: true);
        return connection;
    }

    /// <summary>
    /// Queues a call and sends it as soon as the peer's stream limit allows. False when this connection takes
    /// no more calls (failed, draining, or its stream limit already reached): the channel tries another.
    /// </summary>
    public bool TryStart(CallStream stream)
    {
        lock (_lock)
        {
            if (_failure is not null || _draining || _open.Count + _waiting.Count >= _peerMaxStreams)
            {
                return false;
            }

            _waiting.Enqueue(stream);
            Pump();
        }

        Flush();
        return true;
    }

    /// <summary>
    /// Ends a call from the caller's side (deadline, cancellation): a stream already open is reset with
    /// CANCEL (RFC 9113, 8.7 and the gRPC spec), so the server stops working on it.
    /// </summary>
    public void Abort(CallStream stream, RpcException status)
    {
        End(stream, status, CancelError);
        Flush();
    }

    /// <summary>Fails every call and closes the socket (the channel is disposed).</summary>
    public void Close(RpcException status) => Fail(status, NoError);

    // ---- sending (under _lock) ----

    /// <summary>Opens waiting streams while the peer's limit allows, then sends request data while windows allow.</summary>
    private void Pump()
    {
        while (_waiting.Count > 0 && _open.Count < _peerMaxStreams && !_draining && _peerSettingsReceived)
        {
            var stream = _waiting.Dequeue();
            if (stream.IsEnded)
            {
                continue; // cancelled while it waited
            }

            if (_nextStreamId > int.MaxValue - 2)
            {
                // Stream ids are used up (RFC 9113, 5.1.1): this connection takes no more, the channel opens another.
                _draining = true;
                stream.TryFailUnprocessed(NotSent("The connection has used up its stream ids."));
                continue;
            }

            stream.Id = _nextStreamId;
            _nextStreamId += 2;
            stream.SendWindow = _peerInitialStreamWindow;
            _open.Add(stream.Id, stream);
            AppendHeaders(stream.Id, stream.HeaderBlock);
            _sending.Add(stream);
        }

        if (_draining)
        {
            while (_waiting.TryDequeue(out var refused))
            {
                refused.TryFailUnprocessed(NotSent("The connection closed before the call was sent."));
            }
        }

        // Every sending stream is looked at, even with the connection's window closed: a duplex call's END_STREAM can
        // be an empty DATA frame, which needs no window, and must not wait for another stream's bytes to be read.
        for (var i = 0; i < _sending.Count; i++)
        {
            var stream = _sending[i];
            bool done;
            lock (stream.RequestLock)
            {
                done = SendData(stream);
            }

            if (done)
            {
                _sending.RemoveAt(i--);
            }
        }
    }

    /// <summary>Sends a stream's unsent request bytes while windows allow; true once its END_STREAM went out.</summary>
    private bool SendData(CallStream stream)
    {
        while (true)
        {
            var unsent = stream.Unsent;
            var left = unsent.Length;
            var length = (int)Math.Min(Math.Min(left, _peerMaxFrameSize), Math.Min(_sendWindow, stream.SendWindow));
            if (length <= 0 && left > 0)
            {
                return false; // this stream's window is closed; others may still send
            }

            var last = length == left && stream.RequestsComplete;
            if (length == 0 && !last)
            {
                return false; // a duplex call between writes
            }

            AppendFrame(DataFrame, last ? EndStreamFlag : (byte)0, stream.Id, unsent[..length]);
            stream.Sent(length);
            stream.SendWindow -= length;
            _sendWindow -= length;
            if (last)
            {
                return true;
            }
        }
    }

    /// <summary>A duplex call queued request bytes or completed its requests: sends what the windows allow.</summary>
    public void RequestsQueued()
    {
        lock (_lock)
        {
            if (_failure is not null)
            {
                return;
            }

            Pump();
        }

        Flush();
    }

    private void AppendHeaders(int streamId, byte[] block)
    {
        // A block larger than the peer's frame size continues in CONTINUATION frames, with nothing between them.
        var first = Math.Min(block.Length, _peerMaxFrameSize);
        AppendFrame(HeadersFrame, first == block.Length ? EndHeadersFlag : (byte)0, streamId, block.AsSpan(0, first));
        for (var offset = first; offset < block.Length; offset += _peerMaxFrameSize)
        {
            var length = Math.Min(_peerMaxFrameSize, block.Length - offset);
            AppendFrame(ContinuationFrame, offset + length == block.Length ? EndHeadersFlag : (byte)0, streamId, block.AsSpan(offset, length));
        }
    }

    /// <summary>Writes to the socket so far (<see cref="Http2SendBuffer.Writes"/>).</summary>
    public long Writes => _send.Writes;

    private void AppendFrame(byte type, byte flags, int stream, ReadOnlySpan<byte> payload) => Http2Frames.AppendFrame(_send.Pending, type, flags, stream, payload);

    private void AppendWindowUpdate(int stream, int increment) => Http2Frames.AppendWindowUpdate(_send.Pending, stream, increment);

    private void AppendRstStream(int stream, uint code) => Http2Frames.AppendRstStream(_send.Pending, stream, code);

    /// <summary>
    /// Sends what is buffered, unless a send is already in progress (it will take this too). The reader sends
    /// at once, after parsing a read's worth of frames that ended no call; other threads, and the reader after a
    /// read that ended calls, hand the send to the thread pool's global queue, so that the calls callers make
    /// meanwhile (and those the ended calls' callers make next, see <see cref="CallStream.Completion"/>) leave in
    /// the same write: one system call for many calls, on both ends.
    /// A send that cannot complete at once goes on asynchronously; nobody waits for it.
    /// </summary>
    private void Flush(bool inline = false)
    {
        lock (_lock)
        {
            if (!_send.BeginFlush())
            {
                return;
            }
        }

        if (inline)
        {
            _ = FlushLoopAsync();
        }
        else
        {
            ThreadPool.UnsafeQueueUserWorkItem(static c => _ = c.FlushLoopAsync(), this, preferLocal: false);
        }
    }

    private async Task FlushLoopAsync()
    {
        try
        {
            await _send.FlushAsync().ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            Fail(Unavailable("The connection failed: " + ex.Message, ex), NoError);
        }
    }

    // ---- receiving (the reader) ----

    private async Task ReadLoopAsync()
    {
        var buffer = ArrayPool<byte>.Shared.Rent(4 * (MaxIncomingFrame + FrameHeaderLength));
        int start = 0, end = 0;
        try
        {
            while (true)
            {
                if (end == buffer.Length)
                {
                    // Frames are at most MaxIncomingFrame long, so moving the unparsed tail down always makes room.
                    Buffer.BlockCopy(buffer, start, buffer, 0, end - start);
                    end -= start;
                    start = 0;
                }

                var read = _tls is null
                    ? await _socket.ReceiveAsync(buffer.AsMemory(end), SocketFlags.None).ConfigureAwait(false)
                    : await _tls.ReadAsync(buffer.AsMemory(end)).ConfigureAwait(false);
                if (read == 0)
                {
                    throw new IOException("The server closed the connection.");
                }

                end += read;
                Volatile.Write(ref _lastFrameTimestamp, TimeProvider.System.GetTimestamp());
                var endedBefore = Volatile.Read(ref _endedCalls);
                start = ParseFrames(buffer, start, end);
                if (start == end)
                {
                    start = end = 0;
                }

                // What parsing produced: SETTINGS and PING acks, window updates, resets, waiting calls. When it ended
                // calls, the send is queued behind their completions instead, to take the calls their callers make next.
                Flush(inline: endedBefore == Volatile.Read(ref _endedCalls));
                if (_draining)
                {
                    CloseIfDrained();
                }

                if (Volatile.Read(ref _failure) is not null)
                {
                    return;
                }
            }
        }
        catch (Http2ConnectionException ex)
        {
            Fail(Unavailable($"The connection failed (HTTP/2 error {ex.Code}): {ex.Message}", ex), ex.Code);
        }
        catch (Exception ex)
        {
            Fail(Unavailable("The connection failed: " + ex.Message, ex), NoError);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Handles every whole frame in buffer[start..end); returns where the first incomplete one begins.</summary>
    private int ParseFrames(byte[] buffer, int start, int end)
    {
        while (end - start >= FrameHeaderLength)
        {
            var (length, type, flags, stream) = ReadFrameHeader(buffer.AsSpan(start));
            if (length > MaxIncomingFrame)
            {
                // Also what a peer that does not speak HTTP/2 looks like ("HTTP/1.1 400" read as a frame header).
                throw new Http2ConnectionException(FrameSizeError, string.Create(CultureInfo.InvariantCulture, $"a frame of {length} bytes, larger than the {MaxIncomingFrame} allowed; is the server speaking HTTP/2?"));
            }

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
                OnData(flags, stream, payload);
                break;
            case HeadersFrame:
                RequireStream(stream, "HEADERS");
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
                RequireStream(stream, "RST_STREAM");
                if (payload.Length != 4)
                {
                    throw new Http2ConnectionException(FrameSizeError, "an RST_STREAM frame that is not 4 bytes");
                }

                var code = BinaryPrimitives.ReadUInt32BigEndian(payload);
                if (Find(stream) is { } reset)
                {
                    // A whole response ends its stream, so a stream reset while open has no answer to read.
                    var detail = string.Create(CultureInfo.InvariantCulture, $"The server reset the stream (HTTP/2 error {code}).");
                    End(reset, code == RefusedStream ? NotSent(detail) : new RpcException(new Status(ResponseRules.StatusFromStreamReset(code), detail)),
                        unprocessed: code == RefusedStream); // REFUSED_STREAM: the server did no work on it (RFC 9113, 8.7)
                }

                break;
            case SettingsFrame:
                if (stream != 0)
                {
                    throw new Http2ConnectionException(ProtocolError, "a SETTINGS frame on a stream");
                }

                if ((flags & AckFlag) == 0)
                {
                    OnSettings(payload);
                }

                break;
            case PingFrame:
                if (stream != 0 || payload.Length != 8)
                {
                    throw new Http2ConnectionException(payload.Length != 8 ? FrameSizeError : ProtocolError, "a malformed PING frame");
                }

                lock (_lock)
                {
                    if ((flags & AckFlag) == 0)
                    {
                        AppendFrame(PingFrame, AckFlag, 0, payload);
                    }
                    else
                    {
                        _pingSentTimestamp = 0;
                    }
                }

                break;
            case GoAwayFrame:
                if (stream != 0 || payload.Length < 8)
                {
                    throw new Http2ConnectionException(ProtocolError, "a malformed GOAWAY frame");
                }

                OnGoAway(payload);
                break;
            case WindowUpdateFrame:
                OnWindowUpdate(stream, payload);
                break;
            case PushPromiseFrame:
                throw new Http2ConnectionException(ProtocolError, "PUSH_PROMISE although push was disabled");
            case PriorityFrame:
            default:
                break; // carries nothing a client needs; unknown types are ignored (RFC 9113, 5.5)
        }
    }

    private void OnData(byte flags, int stream, ReadOnlySpan<byte> payload)
    {
        RequireStream(stream, "DATA");
        _receivedSinceUpdate += payload.Length;
        if (_receivedSinceUpdate >= ReceiveWindow / 2)
        {
            lock (_lock)
            {
                AppendWindowUpdate(0, (int)_receivedSinceUpdate);
            }

            _receivedSinceUpdate = 0;
        }

        var data = Unpad(payload, flags);
        if (Find(stream) is not { } s)
        {
            return; // a stream we reset or abandoned: its data still counted against the connection's window
        }

        if (s.Headers is null)
        {
            End(s, new RpcException(StatusCode.Internal, "The server sent DATA before the response headers."), ProtocolError);
            return;
        }

        var endsStream = (flags & EndStreamFlag) != 0;
        if (s.Messages is not null)
        {
            if (TakeStreamedBytes(s, data, payload.Length, endsStream) && endsStream)
            {
                End(s);
            }

            return;
        }

        if (!endsStream)
        {
            lock (_lock)
            {
                GiveBack(s, payload.Length);
            }
        }

        if (TakeMessageBytes(s, data) && endsStream)
        {
            End(s);
        }
    }

    /// <summary>
    /// Cuts a streaming response into messages as they complete and queues them for the caller. The frame's
    /// bytes go back to the stream's window at once while the caller has at most <see cref="CallStream.UnreadLimit"/>
    /// unread; otherwise they are owed until it reads (<see cref="Consumed"/>).
    /// </summary>
    private bool TakeStreamedBytes(CallStream s, ReadOnlySpan<byte> data, int frameBytes, bool endsStream)
    {
        s.Body.Write(data);
        var body = new ReadOnlySequence<byte>(s.Body.WrittenMemory);
        List<StreamedMessage>? messages = null;
        RpcException? refused = null;
        try
        {
            while (MessageFraming.TryReadMessage(ref body, s.MaxReceiveMessageSize, out var compressed, out var payload))
            {
                (messages ??= []).Add(new StreamedMessage(payload.ToArray(), compressed, GrpcProtocol.MessageHeaderSize + (int)payload.Length));
            }
        }
        catch (RpcException ex)
        {
            // The messages before it are still the caller's to read; the call then ends with this status.
            refused = ex;
        }

        if (messages is not null && refused is null)
        {
            var rest = body.ToArray();
            s.Body.ResetWrittenCount();
            s.Body.Write(rest);
        }

        lock (_lock)
        {
            foreach (var message in messages ?? [])
            {
                // Counted before the caller can see it, so that its read never takes Unread below zero.
                s.Unread += message.WireBytes;
                s.Messages!.Writer.TryWrite(message);
            }

            if (refused is not null)
            {
                End(s, refused, CancelError);
                return false;
            }

            if (endsStream)
            {
                return true;
            }

            if (s.Unread <= CallStream.UnreadLimit)
            {
                GiveBack(s, frameBytes + s.Owed);
                s.Owed = 0;
            }
            else
            {
                s.Owed += frameBytes;
            }
        }

        return true;
    }

    /// <summary>The caller of a streaming call read a message: its bytes, and any owed, may go back to the stream's window.</summary>
    public void Consumed(CallStream s, int wireBytes)
    {
        lock (_lock)
        {
            s.Unread -= wireBytes;
            if (s.Owed == 0 || s.Unread > CallStream.UnreadLimit || !_open.ContainsKey(s.Id))
            {
                return;
            }

            GiveBack(s, s.Owed);
            s.Owed = 0;
        }

        Flush();
    }

    /// <summary>
    /// Returns received bytes to a stream's window, in WINDOW_UPDATEs of at least half the window: the peer can always
    /// send that much more before it waits, so batching them never stalls a stream (under the lock).
    /// </summary>
    private void GiveBack(CallStream s, long bytes)
    {
        s.ReceivedSinceUpdate += bytes;
        if (s.ReceivedSinceUpdate >= StreamReceiveWindow / 2)
        {
            AppendWindowUpdate(s.Id, (int)s.ReceivedSinceUpdate);
            s.ReceivedSinceUpdate = 0;
        }
    }

    /// <summary>
    /// Keeps a unary response's bytes, refusing them as soon as they cannot be a single message within the
    /// limit (<see cref="MessageFraming.TryReadMessage"/> checks the length once the prefix is in): a memory
    /// bound the server cannot talk us out of.
    /// </summary>
    private bool TakeMessageBytes(CallStream s, ReadOnlySpan<byte> data)
    {
        s.Body.Write(data);
        var body = new ReadOnlySequence<byte>(s.Body.WrittenMemory);
        try
        {
            if (MessageFraming.TryReadMessage(ref body, s.MaxReceiveMessageSize, out _, out _) && body.Length > 0)
            {
                throw new RpcException(ResponseRules.UnaryWithExtraMessage);
            }

            return true;
        }
        catch (RpcException refused)
        {
            End(s, refused, CancelError);
            return false;
        }
    }

    private void OnHeaderBlock(int stream, ReadOnlySpan<byte> block, bool endsStream)
    {
        _decoded.Clear();
        try
        {
            HPackDecoder.Decode(block, _decoded, MaxHeaderListSize);
        }
        catch (HPackDecodingException ex)
        {
            // The peer's encoder state is now unknown to us: a connection error (RFC 9113, 4.3).
            throw new Http2ConnectionException(CompressionError, "an undecodable header block: " + ex.Message);
        }

        if (Find(stream) is not { } s)
        {
            return;
        }

        var headers = new List<KeyValuePair<string, string>>(_decoded);
        if (s.Headers is null)
        {
            var statusText = CallStream.Find(headers, ":status");
            if (!int.TryParse(statusText, NumberStyles.None, CultureInfo.InvariantCulture, out var httpStatus))
            {
                End(s, new RpcException(StatusCode.Internal, $"The response headers have no valid :status ('{statusText}')."), ProtocolError);
                return;
            }

            if (httpStatus is >= 100 and < 200)
            {
                if (endsStream)
                {
                    End(s, new RpcException(StatusCode.Internal, "An informational response ended the stream."), ProtocolError);
                }

                return; // informational (1xx): the final headers follow (RFC 9113, 8.1)
            }

            s.Headers = headers;
            s.HeaderStatus = ResponseRules.Validate(httpStatus, ReasonOf(httpStatus), CallStream.Find(headers, "content-type"),
                name => CallStream.Find(headers, name), out var decompression);
            s.Decompression = decompression;
            if (s.HeaderStatus is not null)
            {
                // Settled by the headers: a body could not change it, so a stream the server keeps open is reset.
                // A status among them (Trailers-Only) comes with them as its trailers.
                s.Trailers = CallStream.Find(headers, GrpcProtocol.StatusHeader) is null ? null : headers;
                End(s, reset: endsStream ? null : CancelError);
                return;
            }

            s.HeadersArrived.TrySetResult();
        }
        else if (!endsStream)
        {
            End(s, new RpcException(StatusCode.Internal, "The server sent a second header block that does not end the stream."), ProtocolError);
            return;
        }
        else
        {
            s.Trailers = headers;
        }

        if (endsStream)
        {
            End(s);
        }
    }

    private CallStream? Find(int stream)
    {
        lock (_lock)
        {
            return _open.GetValueOrDefault(stream);
        }
    }

    /// <summary>
    /// Ends one call, leaving the connection's others alone: forgets its stream, resets it on the wire with
    /// <paramref name="reset"/> (with none, NO_ERROR if request data was still unsent: the peer ended its side
    /// and wants no more, RFC 9113, 8.1), completes the call (or fails it with <paramref name="failure"/>), and
    /// opens a waiting call in its place. A call that is already over is left as it is.
    /// </summary>
    private void End(CallStream s, RpcException? failure = null, uint? reset = null, bool unprocessed = false)
    {
        lock (_lock)
        {
            if (_open.Remove(s.Id))
            {
                var unsent = _sending.Remove(s);
                if ((reset ?? (unsent ? NoError : null)) is { } code)
                {
                    AppendRstStream(s.Id, code);
                }
            }

            _ = failure is null ? s.TryComplete() : unprocessed ? s.TryFailUnprocessed(failure) : s.TryFail(failure);
            _endedCalls++;
            Pump();
        }
    }

    private void OnSettings(ReadOnlySpan<byte> payload)
    {
        if (payload.Length % 6 != 0)
        {
            throw new Http2ConnectionException(FrameSizeError, "a SETTINGS frame whose length is not a multiple of 6");
        }

        lock (_lock)
        {
            for (var i = 0; i < payload.Length; i += 6)
            {
                var id = BinaryPrimitives.ReadUInt16BigEndian(payload[i..]);
                var value = BinaryPrimitives.ReadUInt32BigEndian(payload[(i + 2)..]);
                switch (id)
                {
                    case 0x3:
                        _peerMaxStreams = value;
                        break;
                    case 0x4:
                        if (value > int.MaxValue)
                        {
                            throw new Http2ConnectionException(FlowControlError, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1");
                        }

                        // A new initial window changes every open stream's window by the difference (RFC 9113, 6.9.2).
                        var delta = value - _peerInitialStreamWindow;
                        _peerInitialStreamWindow = value;
                        foreach (var open in _open.Values)
                        {
                            open.SendWindow += delta;
                        }

                        break;
                    case 0x5:
                        if (value is < 16_384 or > 16_777_215)
                        {
                            throw new Http2ConnectionException(ProtocolError, "SETTINGS_MAX_FRAME_SIZE out of range");
                        }

                        _peerMaxFrameSize = (int)value;
                        break;
                }
            }

            AppendFrame(SettingsFrame, AckFlag, 0, []);
            Volatile.Write(ref _peerSettingsReceived, true);
            _settingsTimer.Dispose();

            // Calls queued beyond the limit the peer has now given would wait behind its open streams, some of
            // which may be long claims: they go back to the channel, to another connection.
            var keep = (int)Math.Max(0, Math.Min(int.MaxValue, _peerMaxStreams - _open.Count));
            if (_waiting.Count > keep)
            {
                var kept = new Queue<CallStream>();
                while (_waiting.TryDequeue(out var waiting))
                {
                    if (kept.Count < keep)
                    {
                        kept.Enqueue(waiting);
                    }
                    else
                    {
                        waiting.TryFailUnprocessed(NotSent("The connection takes fewer streams than were queued on it."));
                    }
                }

                while (kept.TryDequeue(out var waiting))
                {
                    _waiting.Enqueue(waiting);
                }
            }

            Pump();
        }
    }

    private void OnWindowUpdate(int stream, ReadOnlySpan<byte> payload)
    {
        if (payload.Length != 4)
        {
            throw new Http2ConnectionException(FrameSizeError, "a WINDOW_UPDATE frame that is not 4 bytes");
        }

        var increment = BinaryPrimitives.ReadUInt32BigEndian(payload) & 0x7FFF_FFFF;
        lock (_lock)
        {
            if (stream == 0)
            {
                if (increment == 0 || _sendWindow + increment > int.MaxValue)
                {
                    throw new Http2ConnectionException(increment == 0 ? ProtocolError : FlowControlError, "an invalid connection WINDOW_UPDATE");
                }

                _sendWindow += increment;
            }
            else if (_open.TryGetValue(stream, out var s))
            {
                if (increment == 0 || s.SendWindow + increment > int.MaxValue)
                {
                    End(s, new RpcException(StatusCode.Internal, "The server sent an invalid WINDOW_UPDATE for the call's stream."), increment == 0 ? ProtocolError : FlowControlError);
                }
                else
                {
                    s.SendWindow += increment;
                }
            }

            Pump();
        }
    }

    /// <summary>
    /// Streams above the peer's last processed one were not handled: they fail with UNAVAILABLE (safe to retry).
    /// With NO_ERROR the others may still finish; with an error code they fail too.
    /// </summary>
    private void OnGoAway(ReadOnlySpan<byte> payload)
    {
        var last = (int)(BinaryPrimitives.ReadUInt32BigEndian(payload) & 0x7FFF_FFFF);
        var code = BinaryPrimitives.ReadUInt32BigEndian(payload[4..]);
        lock (_lock)
        {
            _draining = true;
            foreach (var (id, s) in _open.ToList())
            {
                if (id > last)
                {
                    End(s, NotSent(string.Create(CultureInfo.InvariantCulture, $"The server is going away (GOAWAY, HTTP/2 error {code}) and did not process the call.")), unprocessed: true);
                }
                else if (code != NoError)
                {
                    End(s, new RpcException(StatusCode.Unavailable, string.Create(CultureInfo.InvariantCulture, $"The connection failed (GOAWAY, HTTP/2 error {code}).")));
                }
            }

            Pump(); // fails the waiting calls: this connection opens no more streams
        }

        CloseIfDrained();
    }

    private void CloseIfDrained()
    {
        bool close;
        lock (_lock)
        {
            close = _draining && _open.Count == 0 && _waiting.Count == 0 && _failure is null;
        }

        if (close)
        {
            Fail(new RpcException(StatusCode.Unavailable, "The connection was closed after GOAWAY."), NoError);
        }
    }

    private void OnKeepAliveTick()
    {
        RpcException? dead = null;
        lock (_lock)
        {
            if (_failure is not null)
            {
                return;
            }

            if (_open.Count == 0)
            {
                _pingSentTimestamp = 0; // pings only while calls are open: an idle connection costs nothing
                if (_draining)
                {
                    dead = new RpcException(StatusCode.Unavailable, "The connection was closed after GOAWAY.");
                }
            }
            else if (_pingSentTimestamp != 0)
            {
                if (_keepAliveTimeout > TimeSpan.Zero && TimeProvider.System.GetElapsedTime(_pingSentTimestamp) >= _keepAliveTimeout)
                {
                    var detail = $"The server did not answer a keepalive PING within {_keepAliveTimeout.TotalSeconds:0.###} s; the connection is presumed dead.";
                    dead = new RpcException(new Status(StatusCode.Unavailable, detail), inner: new TimeoutException(detail));
                }
            }
            else if (TimeProvider.System.GetElapsedTime(Volatile.Read(ref _lastFrameTimestamp)) >= _keepAliveInterval)
            {
                _pingSentTimestamp = TimeProvider.System.GetTimestamp();
                Span<byte> payload = stackalloc byte[8];
                BinaryPrimitives.WriteInt64BigEndian(payload, _pingSentTimestamp);
                AppendFrame(PingFrame, 0, 0, payload);
            }
        }

        if (dead is not null)
        {
            Fail(dead, NoError);
        }
        else
        {
            Flush();
        }
    }

    /// <summary>Fails every call, tells the peer why (GOAWAY), and closes the socket. Idempotent.</summary>
    private void Fail(RpcException failure, uint code)
    {
        List<CallStream> calls;
        bool canSend;
        lock (_lock)
        {
            if (_failure is not null)
            {
                return;
            }

            _failure = failure;
            canSend = !_send.IsFlushing; // a send in progress must not be interleaved with ours
            _send.Close();
            calls = [.. _open.Values];
            foreach (var waiting in _waiting)
            {
                waiting.TryFailUnprocessed(NotSent(failure.Status.Detail));
            }

            _open.Clear();
            _waiting.Clear();
            _sending.Clear();
        }

        _keepAliveTimer?.Dispose();
        _settingsTimer.Dispose();
        try
        {
            if (code != NoError && canSend)
            {
                // Best effort, and not through the buffer (it is closed); nothing else is being sent (canSend).
                Span<byte> goAway = stackalloc byte[FrameHeaderLength + 8];
                goAway[2] = 8;
                goAway[3] = GoAwayFrame;
                BinaryPrimitives.WriteUInt32BigEndian(goAway[13..], code);
                if (_tls is null)
                {
                    _socket.Send(goAway, SocketFlags.None);
                }
                else
                {
                    _tls.Write(goAway);
                }
            }

            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or IOException)
        {
            // Already gone: the calls below learn why from the failure.
        }

        _tls?.Dispose();
        _socket.Dispose();
        foreach (var call in calls)
        {
            call.TryFail(failure);
        }
    }

    private void RequireStream(int stream, string frame)
    {
        if (stream == 0)
        {
            throw new Http2ConnectionException(ProtocolError, $"a {frame} frame on stream 0");
        }

        if ((stream & 1) == 0 || stream >= Volatile.Read(ref _nextStreamId))
        {
            // Even ids would be pushed streams (push is disabled); odd ones above ours were never opened (RFC 9113, 5.1).
            throw new Http2ConnectionException(ProtocolError, string.Create(CultureInfo.InvariantCulture, $"a {frame} frame on stream {stream}, which this client never opened"));
        }
    }

    private static ReadOnlySpan<byte> Unpad(ReadOnlySpan<byte> payload, byte flags) =>
        TryUnpad(payload, flags, out var data) ? data : throw new Http2ConnectionException(ProtocolError, "padding longer than its frame");

    /// <summary>
    /// The caller's TLS settings (<see cref="GrpcChannelOptions.SslOptions"/>) for this address, with ALPN offering h2
    /// only and the address's host as the name to verify unless the caller named another.
    /// </summary>
    private static SslClientAuthenticationOptions TlsOptions(Uri address, SslClientAuthenticationOptions? given) => new()
    {
        TargetHost = given?.TargetHost ?? address.IdnHost,
        ApplicationProtocols = [SslApplicationProtocol.Http2],
        RemoteCertificateValidationCallback = given?.RemoteCertificateValidationCallback,
        ClientCertificates = given?.ClientCertificates,
        ClientCertificateContext = given?.ClientCertificateContext,
        LocalCertificateSelectionCallback = given?.LocalCertificateSelectionCallback,
        EnabledSslProtocols = given?.EnabledSslProtocols ?? System.Security.Authentication.SslProtocols.None,
        CertificateRevocationCheckMode = given?.CertificateRevocationCheckMode ?? System.Security.Cryptography.X509Certificates.X509RevocationMode.NoCheck,
        CertificateChainPolicy = given?.CertificateChainPolicy,
        CipherSuitesPolicy = given?.CipherSuitesPolicy,
    };

    private static string? ReasonOf(int httpStatus) =>
        Enum.IsDefined(typeof(System.Net.HttpStatusCode), httpStatus) ? ((System.Net.HttpStatusCode)httpStatus).ToString() : null;

    private static RpcException Unavailable(string message, Exception inner) => new(new Status(StatusCode.Unavailable, message), inner: inner);

    private static RpcException NotSent(string message) => new(new Status(StatusCode.Unavailable, message), inner: new CallNotSentException(message));
}
