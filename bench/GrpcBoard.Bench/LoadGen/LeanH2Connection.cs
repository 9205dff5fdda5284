using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using GrpcBoard.Wire;

namespace GrpcBoard.Bench.LoadGen;

/// <summary>
/// The bench's lean load generator: one HTTP/2 connection (h2c, prior knowledge) that makes unary gRPC calls
/// and nothing else, written at the frame level so that the tool costs the machine as little as
/// redis-benchmark does. The board and etcd run on the same two cores as the tool, so every microsecond the
/// load generator spends is taken from the system under test: per claim, GrpcBoard's own C# client cost
/// 13–18 µs over HttpClient, and costs about 12 µs over its own HTTP/2 connection; this one 5–9 µs.
///
/// What it leaves out, on purpose: deadlines, cancellation per call, compression, response headers other
/// than the gRPC status. It advertises a header table size of 0, so once the peer has seen its SETTINGS no
/// header block refers to a dynamic table; it decodes grpc-status, grpc-message and grpc-status-details-bin
/// when they are sent as plain literals (Kestrel never uses Huffman coding; Go's encoder may), and otherwise
/// judges a call by whether a response message arrived, which for a unary gRPC call means OK.
///
/// Calls complete on the connection's reader: a caller's continuation runs there, makes its next call,
/// and all calls made while one read is parsed leave in one write, as in an event loop.
/// </summary>
public sealed class LeanH2Connection : IAsyncDisposable
{
    private const int FrameHeaderLength = 9;
    private const int MaxOutgoingFrame = 16_384; // the peer's SETTINGS_MAX_FRAME_SIZE is at least this
    private const byte DataFrame = 0, HeadersFrame = 1, RstStreamFrame = 3, SettingsFrame = 4, PushPromiseFrame = 5, PingFrame = 6, GoAwayFrame = 7, WindowUpdateFrame = 8, ContinuationFrame = 9;
    private const byte EndStreamFlag = 0x1, AckFlag = 0x1, EndHeadersFlag = 0x4, PaddedFlag = 0x8, PriorityFlag = 0x20;

    /// <summary>Our receive window, per stream and for the connection: large, so the peer never waits on us.</summary>
    private const int ReceiveWindow = 1 << 30;

    private static readonly byte[] Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray();

    /// <summary>Set on the reader's thread while it parses: calls made there are written after the parse, together.</summary>
    [ThreadStatic]
    private static LeanH2Connection? t_parsing;

    private readonly Socket _socket;
    private readonly object _lock = new();
    private readonly Dictionary<int, LeanCall> _active = [];
    private readonly Queue<LeanCall> _waiting = new();
    private readonly CancellationTokenRegistration _cancellation;
    private ArrayBufferWriter<byte> _out = new(1 << 16);
    private ArrayBufferWriter<byte>? _spare = new(1 << 16);
    private bool _flushing;
    private int _nextStreamId = 1;
    private long _sendWindow = 65_535;
    private long _peerInitialStreamWindow = 65_535;
    private long _peerMaxStreams = long.MaxValue;
    private long _receivedSinceUpdate;
    private Exception? _failure;
    private Task _reader = Task.CompletedTask;

    // A header block split over HEADERS and CONTINUATION frames.
    private int _continuationStream;
    private bool _continuationEndsStream;
    private readonly ArrayBufferWriter<byte> _continuationBlock = new();

    private LeanH2Connection(Socket socket, string authority, CancellationToken cancellationToken)
    {
        _socket = socket;
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
        var block = new List<byte>(96)
        {
            0x83, // :method POST (static index 3)
            0x86, // :scheme http (static index 6)
        };
        // Literal header fields without indexing, names from the static table: :path (4), :authority (1), content-type (31).
        LiteralWithIndexedName(block, 4, path);
        LiteralWithIndexedName(block, 1, Authority);
        LiteralWithIndexedName(block, 31, "application/grpc");
        block.Add(0x00);
        LiteralString(block, "te");
        LiteralString(block, "trailers");
        return [.. block];
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
            if (_flushing || _out.WrittenCount == 0)
            {
                return;
            }

            _flushing = true;
        }

        ThreadPool.UnsafeQueueUserWorkItem(static c => _ = c.FlushLoopAsync(), this, preferLocal: false);
    }

    /// <summary>Writes what is buffered until nothing is; one runs at a time (<see cref="_flushing"/>).</summary>
    private async Task FlushLoopAsync()
    {
        try
        {
            while (true)
            {
                ArrayBufferWriter<byte> buffer;
                lock (_lock)
                {
                    if (_out.WrittenCount == 0 || _failure is not null)
                    {
                        _flushing = false;
                        return;
                    }

                    buffer = _out;
                    _out = _spare!;
                    _spare = null;
                }

                var bytes = buffer.WrittenMemory;
                while (bytes.Length > 0)
                {
                    bytes = bytes[await _socket.SendAsync(bytes, SocketFlags.None).ConfigureAwait(false)..];
                }

                buffer.ResetWrittenCount();
                lock (_lock)
                {
                    _spare = buffer;
                }
            }
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
                    flush = !_flushing && _out.WrittenCount > 0;
                    _flushing |= flush;
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
            var length = (buffer[start] << 16) | (buffer[start + 1] << 8) | buffer[start + 2];
            if (end - start < FrameHeaderLength + length)
            {
                break;
            }

            var type = buffer[start + 3];
            var flags = buffer[start + 4];
            var stream = (int)(BinaryPrimitives.ReadUInt32BigEndian(buffer.AsSpan(start + 5)) & 0x7FFF_FFFF);
            OnFrame(type, flags, stream, buffer.AsSpan(start + FrameHeaderLength, length));
            start += FrameHeaderLength + length;
        }

        return start;
    }

    private void OnFrame(byte type, byte flags, int stream, ReadOnlySpan<byte> payload)
    {
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
                var block = Unpad(payload, flags);
                if ((flags & PriorityFlag) != 0)
                {
                    block = block[5..];
                }

                if ((flags & EndHeadersFlag) != 0)
                {
                    OnHeaderBlock(stream, block, (flags & EndStreamFlag) != 0);
                }
                else
                {
                    _continuationStream = stream;
                    _continuationEndsStream = (flags & EndStreamFlag) != 0;
                    _continuationBlock.ResetWrittenCount();
                    _continuationBlock.Write(block);
                }

                break;
            case ContinuationFrame:
                _continuationBlock.Write(payload);
                if ((flags & EndHeadersFlag) != 0)
                {
                    OnHeaderBlock(_continuationStream, _continuationBlock.WrittenSpan, _continuationEndsStream);
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

        HeaderDecoder.Decode(block, call);
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

    private static ReadOnlySpan<byte> Unpad(ReadOnlySpan<byte> payload, byte flags)
    {
        if ((flags & PaddedFlag) == 0)
        {
            return payload;
        }

        var pad = payload[0];
        return payload[1..^pad];
    }

    // ---- output buffer (under _lock) ----

    private Span<byte> Reserve(int length)
    {
        var span = _out.GetSpan(length)[..length];
        _out.Advance(length);
        return span;
    }

    private void Append(ReadOnlySpan<byte> bytes) => _out.Write(bytes);

    private void AppendFrame(byte type, byte flags, int stream, ReadOnlySpan<byte> payload)
    {
        WriteFrameHeader(Reserve(FrameHeaderLength), payload.Length, type, flags, stream);
        Append(payload);
    }

    private void AppendWindowUpdate(int stream, int increment)
    {
        Span<byte> payload = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(payload, (uint)increment);
        AppendFrame(WindowUpdateFrame, 0, stream, payload);
    }

    private static void WriteFrameHeader(Span<byte> header, int length, byte type, byte flags, int stream)
    {
        header[0] = (byte)(length >> 16);
        header[1] = (byte)(length >> 8);
        header[2] = (byte)length;
        header[3] = type;
        header[4] = flags;
        BinaryPrimitives.WriteUInt32BigEndian(header[5..], (uint)stream);
    }

    private static void WriteSetting(Span<byte> span, ushort id, uint value)
    {
        BinaryPrimitives.WriteUInt16BigEndian(span, id);
        BinaryPrimitives.WriteUInt32BigEndian(span[2..], value);
    }

    // ---- HPACK, encoding side: literals only, never Huffman, never the dynamic table ----

    private static void LiteralWithIndexedName(List<byte> block, int nameIndex, string value)
    {
        Integer(block, nameIndex, 4, 0x00); // literal header field without indexing, indexed name
        LiteralString(block, value);
    }

    private static void LiteralString(List<byte> block, string value)
    {
        var bytes = Encoding.ASCII.GetBytes(value);
        Integer(block, bytes.Length, 7, 0x00); // H = 0: not Huffman-coded
        block.AddRange(bytes);
    }

    /// <summary>An HPACK integer with an N-bit prefix (RFC 7541, 5.1).</summary>
    private static void Integer(List<byte> block, int value, int prefixBits, byte firstBits)
    {
        var max = (1 << prefixBits) - 1;
        if (value < max)
        {
            block.Add((byte)(firstBits | value));
            return;
        }

        block.Add((byte)(firstBits | max));
        value -= max;
        while (value >= 128)
        {
            block.Add((byte)((value & 0x7F) | 0x80));
            value >>= 7;
        }

        block.Add((byte)value);
    }

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

        public int? StatusCode { get; set; }

        public string StatusMessage { get; set; } = "";

        public byte[]? StatusDetails { get; set; }

        public void Receive(ReadOnlySpan<byte> data) => _response.Write(data);

        public void Complete()
        {
            if (StatusCode is { } code && code != 0)
            {
                Completion.TrySetException(new RpcException(new Status((Wire.StatusCode)code, StatusMessage, StatusDetails)));
                return;
            }

            // A unary response is one message: a 5-byte prefix (compressed flag, length) and the bytes.
            if (_response.WrittenCount < 5)
            {
                Completion.TrySetException(new RpcException(StatusCode is null
                    ? new Status(Wire.StatusCode.Unknown, "the call ended without a response message, and its status was not readable (Huffman-coded or indexed)")
                    : new Status(Wire.StatusCode.Internal, "status OK without a response message")));
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

    /// <summary>
    /// HPACK decoding of just enough to read the gRPC status: literal fields with literal names, not
    /// Huffman-coded. Indexed fields and Huffman-coded strings are stepped over (RFC 7541, 6).
    /// </summary>
    private static class HeaderDecoder
    {
        public static void Decode(ReadOnlySpan<byte> block, LeanCall call)
        {
            var i = 0;
            while (i < block.Length)
            {
                var b = block[i];
                if ((b & 0x80) != 0)
                {
                    ReadInteger(block, ref i, 7); // indexed field: no gRPC status name is in the static table
                    continue;
                }

                if ((b & 0xE0) == 0x20)
                {
                    ReadInteger(block, ref i, 5); // dynamic table size update
                    continue;
                }

                var nameIndex = ReadInteger(block, ref i, (b & 0xC0) == 0x40 ? 6 : 4);
                var name = nameIndex == 0 ? ReadString(block, ref i) : null;
                var value = ReadString(block, ref i);
                if (name is null || value is null)
                {
                    continue;
                }

                switch (name)
                {
                    case "grpc-status" when int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var code):
                        call.StatusCode = code;
                        break;
                    case "grpc-message":
                        call.StatusMessage = Uri.UnescapeDataString(value);
                        break;
                    case "grpc-status-details-bin":
                        call.StatusDetails = FromUnpaddedBase64(value);
                        break;
                }
            }
        }

        private static int ReadInteger(ReadOnlySpan<byte> block, ref int i, int prefixBits)
        {
            var max = (1 << prefixBits) - 1;
            var value = block[i++] & max;
            if (value < max)
            {
                return value;
            }

            for (var shift = 0; ; shift += 7)
            {
                var b = block[i++];
                value += (b & 0x7F) << shift;
                if ((b & 0x80) == 0)
                {
                    return value;
                }
            }
        }

        /// <summary>A string literal, or null (after stepping over it) when it is Huffman-coded.</summary>
        private static string? ReadString(ReadOnlySpan<byte> block, ref int i)
        {
            var huffman = (block[i] & 0x80) != 0;
            var length = ReadInteger(block, ref i, 7);
            var text = huffman ? null : Encoding.ASCII.GetString(block.Slice(i, length));
            i += length;
            return text;
        }

        private static byte[]? FromUnpaddedBase64(string value)
        {
            var padded = value.Length % 4 == 0 ? value : value + new string('=', 4 - value.Length % 4);
            try
            {
                return Convert.FromBase64String(padded);
            }
            catch (FormatException)
            {
                return null;
            }
        }
    }
}
