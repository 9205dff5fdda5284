using System.Buffers;
using System.Net;
using GrpcBoard.Wire.Client.Http2;

namespace GrpcBoard.Wire.Client;

/// <summary>
/// A connection to a gRPC server over HTTP/2. "http://" addresses use h2c with prior knowledge; "https://"
/// addresses negotiate h2 through ALPN (<see cref="GrpcChannelOptions.SslOptions"/>). Calls go through the channel's own
/// HTTP/2 connections (see <see cref="GrpcChannelOptions.HttpClientForCalls"/>); with that option, or through
/// <see cref="GrpcChannelOptions.HttpHandler"/>, through <see cref="HttpMessageInvoker"/>.
/// Thread-safe; share one per server.
/// </summary>
public sealed class GrpcChannel : IDisposable
{
    private readonly HttpMessageInvoker _invoker;

    /// <summary>Whether calls use <see cref="Http2ClientConnection"/>.</summary>
    private readonly bool _ownConnections;
    private readonly object _connectionsLock = new();
    private readonly List<Http2ClientConnection> _connections = [];
    private long _writesOfRemoved;
    private Task<Http2ClientConnection>? _connecting;
    private bool _disposed;

    /// <summary>The HPACK block every unary call of a method starts with, by method path.</summary>
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, byte[]> _headerPrefixes = new(StringComparer.Ordinal);

    /// <summary>Request URIs by method path: parsing one per call cost 2% of a client's CPU.</summary>
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, Uri> _uris = new(StringComparer.Ordinal);

    private GrpcChannel(Uri address, GrpcChannelOptions options)
    {
        Address = address;
        Options = options;
        var handler = options.HttpHandler ?? CreateDefaultHandler(options);
        _invoker = new HttpMessageInvoker(handler, disposeHandler: options.HttpHandler is null || options.DisposeHttpHandler);
        _ownConnections = options.HttpHandler is null && !options.HttpClientForCalls;
    }

    public Uri Address { get; }

    public GrpcChannelOptions Options { get; }

    public static GrpcChannel ForAddress(string address, GrpcChannelOptions? options = null) =>
        ForAddress(new Uri(address), options);

    public static GrpcChannel ForAddress(Uri address, GrpcChannelOptions? options = null)
    {
        if (address.Scheme != Uri.UriSchemeHttp && address.Scheme != Uri.UriSchemeHttps)
        {
            throw new ArgumentException("The address must be http:// (h2c) or https:// (h2 over TLS).", nameof(address));
        }

        return new GrpcChannel(address, options ?? new GrpcChannelOptions());
    }

    /// <summary>Sends one request and reads one response.</summary>
    public Task<TResponse> UnaryAsync<TRequest, TResponse>(Method<TRequest, TResponse> method, TRequest request, CallOptions options = default) =>
        _ownConnections ? OwnUnaryAsync(method, request, options) : HttpClientUnaryAsync(method, request, options);

    private async Task<TResponse> HttpClientUnaryAsync<TRequest, TResponse>(Method<TRequest, TResponse> method, TRequest request, CallOptions options)
    {
        await using var call = new ClientCall<TRequest, TResponse>(this, method, options);
        call.Start(requestMessage: request);
        var (hasMessage, response) = await call.ReadNextAsync().ConfigureAwait(false);
        if (!hasMessage)
        {
            throw new RpcException(ResponseRules.UnaryWithoutMessage);
        }

        // Drain to the trailers: a status other than OK after the message still fails the call.
        var (extra, _) = await call.ReadNextAsync().ConfigureAwait(false);
        if (extra)
        {
            throw new RpcException(ResponseRules.UnaryWithExtraMessage);
        }

        return response!;
    }

    /// <summary>Sends one request and returns the call, whose responses are read as a stream.</summary>
    public StreamingCall<TRequest, TResponse> ServerStreaming<TRequest, TResponse>(Method<TRequest, TResponse> method, TRequest request, CallOptions options = default)
    {
        if (_ownConnections)
        {
            return new StreamingCall<TRequest, TResponse>(new OwnStreamingCall<TRequest, TResponse>(this, method, request, options));
        }

        var call = new ClientCall<TRequest, TResponse>(this, method, options);
        call.Start(requestMessage: request);
        return new StreamingCall<TRequest, TResponse>(call);
    }

    /// <summary>Starts a call whose requests are written while responses are read.</summary>
    public StreamingCall<TRequest, TResponse> DuplexStreaming<TRequest, TResponse>(Method<TRequest, TResponse> method, CallOptions options = default)
    {
        if (_ownConnections)
        {
            return new StreamingCall<TRequest, TResponse>(new OwnStreamingCall<TRequest, TResponse>(this, method, options));
        }

        var call = new ClientCall<TRequest, TResponse>(this, method, options);
        call.Start(requestMessage: default, streamRequests: true);
        return new StreamingCall<TRequest, TResponse>(call);
    }

    public void Dispose()
    {
        List<Http2ClientConnection> connections;
        lock (_connectionsLock)
        {
            _disposed = true;
            connections = [.. _connections];
            _writesOfRemoved += connections.Sum(c => c.Writes);
            _connections.Clear();
        }

        foreach (var connection in connections)
        {
            connection.Close(new RpcException(ResponseRules.ChannelDisposed));
        }

        _invoker.Dispose();
    }

    /// <summary>Writes to the sockets of the channel's own HTTP/2 connections so far, closed ones included (for the benchmarks).</summary>
    internal long OwnConnectionWrites
    {
        get
        {
            lock (_connectionsLock)
            {
                return _writesOfRemoved + _connections.Sum(c => c.Writes);
            }
        }
    }

    /// <summary>The channel's own HTTP/2 connections open now (for tests).</summary>
    internal int OwnConnectionCount
    {
        get
        {
            lock (_connectionsLock)
            {
                return _connections.Count;
            }
        }
    }

    /// <summary>How many times a call the server did no work on (never sent, refused, above a GOAWAY) is placed before its failure is reported.</summary>
    internal const int MaxPlacements = 5;

    /// <summary>A unary call on the channel's own HTTP/2 connections: the same statuses as the HttpClient path, for every way a call can end.</summary>
    private async Task<TResponse> OwnUnaryAsync<TRequest, TResponse>(Method<TRequest, TResponse> method, TRequest request, CallOptions options)
    {
        var time = Options.TimeProvider;
        TimeSpan? timeout = null;
        if (options.Deadline is { } deadline)
        {
            timeout = deadline - time.GetUtcNow();
            if (timeout <= TimeSpan.Zero)
            {
                // Already past the deadline: fail without sending, as other implementations do.
                throw new RpcException(ResponseRules.DeadlineBeforeStart);
            }
        }

        var cancellation = options.CancellationToken;
        if (cancellation.IsCancellationRequested)
        {
            throw new RpcException(ResponseRules.CancelledByCaller);
        }

        var framed = new ArrayBufferWriter<byte>();
        MessageFraming.WriteMessage(framed, request, method.RequestMarshaller, Options.SendCompression, Options.MaxSendMessageSize);
        var started = time.GetTimestamp();
        for (var attempt = 1; ; attempt++)
        {
            var left = timeout - time.GetElapsedTime(started);
            if (left <= TimeSpan.Zero)
            {
                throw new RpcException(ResponseRules.DeadlinePassed);
            }

            var stream = new CallStream(RequestHeaders(method.FullName, left, options.Headers), framed.WrittenMemory, Options.MaxReceiveMessageSize);
            var connection = await StartAsync(stream, left, cancellation).ConfigureAwait(false);

            // Set up once the stream belongs to a connection, so that ending the call early (at the deadline, or on
            // cancellation) also resets its stream.
            left = timeout - time.GetElapsedTime(started);
            using (var deadlineTimer = left is { } l ? time.CreateTimer(AbortAtDeadline, (connection, stream), l > TimeSpan.Zero ? l : TimeSpan.Zero, Timeout.InfiniteTimeSpan) : null)
            using (cancellation.CanBeCanceled ? cancellation.UnsafeRegister(AbortOnCancellation, (connection, stream)) : default)
            {
                await stream.Completion.Task.ConfigureAwait(false);
            }

            if (stream.Failure is not { } failure)
            {
                return ReadResponse(stream, method);
            }

            if (!stream.Unprocessed || attempt == MaxPlacements)
            {
                throw failure;
            }

            // The server did no work on it: another connection may take it.
        }
    }

    private static readonly TimerCallback AbortAtDeadline = static s =>
    {
        var (c, st) = ((Http2ClientConnection, CallStream))s!;
        c.Abort(st, new RpcException(ResponseRules.DeadlinePassed));
    };

    private static readonly Action<object?> AbortOnCancellation = static s =>
    {
        var (c, st) = ((Http2ClientConnection, CallStream))s!;
        c.Abort(st, new RpcException(ResponseRules.CancelledByCaller));
    };

    /// <summary>
    /// The response of a whole unary stream, read in the order the HttpClient path reads it: the message
    /// first, then the status (from the headers when they settled it, else from the trailers). The connection
    /// has already refused a body that cannot be one message within the limit.
    /// </summary>
    private TResponse ReadResponse<TRequest, TResponse>(CallStream stream, Method<TRequest, TResponse> method)
    {
        var body = new ReadOnlySequence<byte>(stream.Body.WrittenMemory);
        var status = stream.HeaderStatus ?? ResponseRules.ReadStatus(stream.Trailers, CallStream.Find) ?? ResponseRules.NoStatusTrailer;
        if (!MessageFraming.TryReadMessage(ref body, Options.MaxReceiveMessageSize, out var compressed, out var payload))
        {
            throw body.Length > 0 ? MessageFraming.Incomplete(body.Length)
                : status.Code == StatusCode.OK ? new RpcException(ResponseRules.UnaryWithoutMessage)
                : new RpcException(status, CallStream.ToMetadata(stream.Trailers));
        }

        var response = MessageFraming.Decode(payload, compressed, method.ResponseMarshaller, stream.Decompression, Options.MaxReceiveMessageSize);
        return status.Code == StatusCode.OK ? response : throw new RpcException(status, CallStream.ToMetadata(stream.Trailers));
    }

    /// <summary>
    /// Puts a call on a connection that can take it, opening one when none can: every connection has reached
    /// its server's stream limit (long waiting claims and the like hold their streams), or there is none yet.
    /// </summary>
    internal async ValueTask<Http2ClientConnection> StartAsync(CallStream stream, TimeSpan? timeout, CancellationToken cancellation)
    {
        while (true)
        {
            Task<Http2ClientConnection> connecting;
            List<Http2ClientConnection>? finished = null;
            lock (_connectionsLock)
            {
                if (_disposed)
                {
                    throw new RpcException(ResponseRules.ChannelDisposed);
                }

                for (var i = 0; i < _connections.Count; i++)
                {
                    var connection = _connections[i];
                    if (connection.IsFinished)
                    {
                        (finished ??= []).Add(connection);
                        _writesOfRemoved += connection.Writes;
                        _connections.RemoveAt(i--);
                    }
                    else if (connection.TryStart(stream))
                    {
                        CloseAll(finished);
                        return connection;
                    }
                }

                if (_connecting is { IsCompleted: true })
                {
                    _connecting = null; // it failed: a later call tries again
                }

                connecting = _connecting ??= ConnectAsync();
            }

            CloseAll(finished);
            try
            {
                await (timeout is { } t ? connecting.WaitAsync(t, cancellation) : connecting.WaitAsync(cancellation)).ConfigureAwait(false);
            }
            catch (TimeoutException ex)
            {
                throw new RpcException(new Status(StatusCode.DeadlineExceeded, "The deadline passed while connecting to the server."), inner: ex);
            }
            catch (OperationCanceledException ex) when (cancellation.IsCancellationRequested)
            {
                throw new RpcException(ResponseRules.CancelledByCaller, inner: ex);
            }
            catch (Exception ex) when (ex is not RpcException)
            {
                var detail = "Error connecting to the server: " + ex.Message;
                throw new RpcException(new Status(StatusCode.Unavailable, detail), inner: new CallNotSentException(detail, ex));
            }
        }

        static void CloseAll(List<Http2ClientConnection>? connections)
        {
            foreach (var connection in connections ?? [])
            {
                connection.Close(new RpcException(StatusCode.Unavailable, "The connection was closed."));
            }
        }
    }

    private async Task<Http2ClientConnection> ConnectAsync()
    {
        await Task.Yield(); // not under the caller's lock
        var connection = await Http2ClientConnection.ConnectAsync(Address, Options, CancellationToken.None).ConfigureAwait(false);
        lock (_connectionsLock)
        {
            if (_disposed)
            {
                connection.Close(new RpcException(ResponseRules.ChannelDisposed));
            }
            else
            {
                _connections.Add(connection);
            }

            _connecting = null;
        }

        return connection;
    }

    /// <summary>
    /// The headers of every call after its pseudo-headers and content-type, the same for both transports; then
    /// come <see cref="AddPerCallHeaders"/>.
    /// </summary>
    private IEnumerable<KeyValuePair<string, string>> ChannelHeaders()
    {
        yield return new(GrpcProtocol.TeHeader, GrpcProtocol.TeTrailers);
        yield return new("user-agent", Options.UserAgent);
        yield return new(GrpcProtocol.AcceptEncodingHeader, MessageCompression.AcceptEncodingValue);
        if (Options.SendCompression is { } compression)
        {
            yield return new(GrpcProtocol.EncodingHeader, compression.EncodingName);
        }
    }

    /// <summary>
    /// A call's own headers, each handed to <paramref name="add"/> (a static lambda: nothing allocated per call for
    /// the walk): its grpc-timeout and its metadata (binary values base64).
    /// </summary>
    private static void AddPerCallHeaders<TTarget>(TTarget target, TimeSpan? timeout, Metadata? metadata, Action<TTarget, string, string> add)
    {
        if (timeout is { } t)
        {
            add(target, GrpcProtocol.TimeoutHeader, GrpcTimeout.Format(t));
        }

        for (var i = 0; i < (metadata?.Count ?? 0); i++)
        {
            var entry = metadata![i];
            add(target, entry.Key, entry.IsBinary ? BinaryHeader.Encode(entry.ValueBytes) : entry.Value);
        }
    }

    /// <summary>
    /// The HPACK block of a call's request headers. The part every call of a method shares is encoded
    /// once; a call without deadline or metadata sends it as it is.
    /// </summary>
    internal byte[] RequestHeaders(string path, TimeSpan? timeout, Metadata? metadata)
    {
        var prefix = _headerPrefixes.GetOrAdd(path, static (p, channel) => channel.HeaderPrefix(p), this);
        if (timeout is null && metadata is not { Count: > 0 })
        {
            return prefix;
        }

        var block = new ArrayBufferWriter<byte>(prefix.Length + 64);
        block.Write(prefix);
        AddPerCallHeaders(block, timeout, metadata, static (b, name, value) => HPackEncoder.Literal(b, name, value));
        return block.WrittenSpan.ToArray();
    }

    private byte[] HeaderPrefix(string path)
    {
        var block = new ArrayBufferWriter<byte>(128);
        HPackEncoder.Indexed(block, HPackEncoder.MethodPost);
        HPackEncoder.Indexed(block, Address.Scheme == Uri.UriSchemeHttps ? HPackEncoder.SchemeHttps : HPackEncoder.SchemeHttp);
        HPackEncoder.LiteralWithIndexedName(block, HPackEncoder.Path, path);
        HPackEncoder.LiteralWithIndexedName(block, HPackEncoder.Authority, Address.Authority);
        HPackEncoder.LiteralWithIndexedName(block, HPackEncoder.ContentType, GrpcProtocol.ContentType);
        foreach (var (name, value) in ChannelHeaders())
        {
            HPackEncoder.Literal(block, name, value);
        }

        return block.WrittenSpan.ToArray();
    }

    internal Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) =>
        _invoker.SendAsync(request, cancellationToken);

    internal HttpRequestMessage CreateRequest(string path, CallOptions options, TimeSpan? timeout, HttpContent content)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, _uris.GetOrAdd(path, static (p, address) => new Uri(address, p), Address))
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = content,
        };
        foreach (var (name, value) in ChannelHeaders())
        {
            request.Headers.TryAddWithoutValidation(name, value);
        }

        AddPerCallHeaders(request.Headers, timeout, options.Headers, static (h, name, value) => h.TryAddWithoutValidation(name, value));

        content.Headers.TryAddWithoutValidation("Content-Type", GrpcProtocol.ContentType);
        return request;
    }

    private static SocketsHttpHandler CreateDefaultHandler(GrpcChannelOptions options) => new()
    {
        SslOptions = options.SslOptions ?? new System.Net.Security.SslClientAuthenticationOptions(),
        // Several connections once one reaches the server's stream limit (long Watch streams count too).
        EnableMultipleHttp2Connections = true,
        PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
        PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
        // Pings only while calls are open: an idle pool costs nothing, a dead connection under a watch is found.
        KeepAlivePingDelay = options.KeepAliveInterval,
        KeepAlivePingTimeout = options.KeepAliveTimeout,
        KeepAlivePingPolicy = HttpKeepAlivePingPolicy.WithActiveRequests,
        ConnectTimeout = TimeSpan.FromSeconds(10),
        AutomaticDecompression = DecompressionMethods.None,
        UseProxy = false,
        UseCookies = false,
        // A redirect would re-send the call somewhere the caller did not choose (307/308 with its body): it is
        // reported as its HTTP status instead, as other gRPC clients do.
        AllowAutoRedirect = false,
        InitialHttp2StreamWindowSize = 1024 * 1024,
    };
}
