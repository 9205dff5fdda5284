using System.Net;

namespace GrpcBoard.Wire.Client;

/// <summary>
/// A connection to a gRPC server over HTTP/2, built on <see cref="HttpMessageInvoker"/>. "http://" addresses
/// use h2c with prior knowledge; "https://" addresses negotiate h2 through ALPN. Thread-safe; share one
/// per server.
/// </summary>
public sealed class GrpcChannel : IDisposable
{
    private readonly HttpMessageInvoker _invoker;

    /// <summary>Request URIs by method path: parsing one per call cost 2% of a client's CPU.</summary>
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, Uri> _uris = new(StringComparer.Ordinal);

    private GrpcChannel(Uri address, GrpcChannelOptions options)
    {
        Address = address;
        Options = options;
        var handler = options.HttpHandler ?? CreateDefaultHandler(options);
        _invoker = new HttpMessageInvoker(handler, disposeHandler: options.HttpHandler is null || options.DisposeHttpHandler);
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
    public async Task<TResponse> UnaryAsync<TRequest, TResponse>(Method<TRequest, TResponse> method, TRequest request, CallOptions options = default)
    {
        await using var call = new ClientCall<TRequest, TResponse>(this, method, options);
        call.Start(requestMessage: request);
        var (hasMessage, response) = await call.ReadNextAsync().ConfigureAwait(false);
        if (!hasMessage)
        {
            // The call ended with OK but without a message: a protocol error for a unary method.
            throw new RpcException(StatusCode.Internal, "The server ended a unary call with OK but sent no response message.");
        }

        // Drain to the trailers: a status other than OK after the message still fails the call.
        var (extra, _) = await call.ReadNextAsync().ConfigureAwait(false);
        if (extra)
        {
            throw new RpcException(StatusCode.Internal, "The server sent more than one response message for a unary call.");
        }

        return response!;
    }

    /// <summary>Sends one request and returns the call, whose responses are read as a stream.</summary>
    public StreamingCall<TRequest, TResponse> ServerStreaming<TRequest, TResponse>(Method<TRequest, TResponse> method, TRequest request, CallOptions options = default)
    {
        var call = new ClientCall<TRequest, TResponse>(this, method, options);
        call.Start(requestMessage: request);
        return new StreamingCall<TRequest, TResponse>(call);
    }

    /// <summary>Starts a call whose requests are written while responses are read.</summary>
    public StreamingCall<TRequest, TResponse> DuplexStreaming<TRequest, TResponse>(Method<TRequest, TResponse> method, CallOptions options = default)
    {
        var call = new ClientCall<TRequest, TResponse>(this, method, options);
        call.Start(requestMessage: default, streamRequests: true);
        return new StreamingCall<TRequest, TResponse>(call);
    }

    public void Dispose() => _invoker.Dispose();

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
        var headers = request.Headers;
        headers.TryAddWithoutValidation(GrpcProtocol.TeHeader, GrpcProtocol.TeTrailers);
        headers.TryAddWithoutValidation("User-Agent", Options.UserAgent);
        headers.TryAddWithoutValidation(GrpcProtocol.AcceptEncodingHeader, MessageCompression.AcceptEncodingValue);
        if (Options.SendCompression is { } compression)
        {
            headers.TryAddWithoutValidation(GrpcProtocol.EncodingHeader, compression.EncodingName);
        }

        if (timeout is { } t)
        {
            headers.TryAddWithoutValidation(GrpcProtocol.TimeoutHeader, GrpcTimeout.Format(t));
        }

        if (options.Headers is { } metadata)
        {
            foreach (var entry in metadata)
            {
                headers.TryAddWithoutValidation(entry.Key, entry.IsBinary ? BinaryHeader.Encode(entry.ValueBytes) : entry.Value);
            }
        }

        content.Headers.TryAddWithoutValidation("Content-Type", GrpcProtocol.ContentType);
        return request;
    }

    private static SocketsHttpHandler CreateDefaultHandler(GrpcChannelOptions options) => new()
    {
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
