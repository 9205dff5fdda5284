using System.Globalization;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging;

namespace GrpcBoard.Wire.Server;

/// <summary>
/// The state of one call on Kestrel: request validation, deadline, response headers, message writes
/// and the final status. Every call handler goes through this one funnel.
/// </summary>
internal sealed class HttpServerCallContext : ServerCallContext, IDisposable
{
    private static readonly string[] StatusStrings = Enumerable.Range(0, 17).Select(i => i.ToString(CultureInfo.InvariantCulture)).ToArray();

    private readonly HttpContext _http;
    private readonly GrpcServerOptions _options;
    private readonly ILogger _logger;
    private readonly string _method;
    private CancellationTokenSource? _deadlineCts;
    private CancellationToken _token;
    private Metadata? _requestHeaders;
    private Metadata? _responseTrailers;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private bool _headersPrepared;
    private bool _ended;
    private ITimer? _deadlineTimer;
    private DateTimeOffset _deadline = DateTimeOffset.MaxValue;

    public HttpServerCallContext(HttpContext http, GrpcServerOptions options, ILogger logger, string method)
    {
        _http = http;
        _options = options;
        _logger = logger;
        _method = method;
        _token = http.RequestAborted;
    }

    public override string Method => _method;

    public override string Peer
    {
        get
        {
            var connection = _http.Connection;
            var ip = connection.RemoteIpAddress;
            return ip is null ? "unknown"
                : ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6
                    ? $"ipv6:[{ip}]:{connection.RemotePort}"
                    : $"ipv4:{ip}:{connection.RemotePort}";
        }
    }

    public override DateTimeOffset Deadline => _deadline;

    public bool DeadlineExceeded { get; private set; }

    public override Metadata RequestHeaders => _requestHeaders ??= ReadRequestHeaders();

    public override CancellationToken CancellationToken => _token;

    public override Metadata ResponseTrailers => _responseTrailers ??= new Metadata();

    public override HttpContext HttpContext => _http;

    public PipeReader RequestBody => _http.Request.BodyReader;

    public ICompressionProvider? RequestDecompression { get; private set; }

    public ICompressionProvider? ResponseCompression { get; private set; }

    public bool MessageWritten { get; private set; }

    public int MaxReceiveMessageSize => _options.MaxReceiveMessageSize;

    /// <summary>
    /// Checks what must hold before a handler runs. Returns false after answering the call itself
    /// (an HTTP error or a Trailers-Only status).
    /// </summary>
    public bool TryStart()
    {
        var deadline = DateTimeOffset.MaxValue;
        var request = _http.Request;
        if (!HttpProtocol.IsHttp2(request.Protocol) && !HttpProtocol.IsHttp3(request.Protocol))
        {
            // Spec: gRPC requires HTTP/2. 426 tells an HTTP/1.1 client what to do about it.
            WriteHttpError(StatusCodes.Status426UpgradeRequired, new Status(StatusCode.Internal, $"Request protocol '{request.Protocol}' is not supported; gRPC needs HTTP/2."));
            return false;
        }

        if (!HttpMethods.IsPost(request.Method))
        {
            WriteHttpError(StatusCodes.Status405MethodNotAllowed, new Status(StatusCode.Internal, $"Request method '{request.Method}' is not supported; gRPC uses POST."));
            return false;
        }

        if (!GrpcProtocol.IsGrpcContentType(request.ContentType))
        {
            // Spec: a server should answer a non-gRPC content-type with 415, so that non-gRPC clients see an
            // HTTP error they understand; gRPC clients read the status we add.
            WriteHttpError(StatusCodes.Status415UnsupportedMediaType, new Status(StatusCode.Internal, $"Content-Type '{request.ContentType}' is not supported."));
            return false;
        }

        _http.Response.ContentType = GrpcProtocol.ContentType;

        var encoding = request.Headers[GrpcProtocol.EncodingHeader].ToString();
        if (!MessageCompression.TryGetProvider(encoding, out var decompression))
        {
            // Spec: an unsupported message encoding is UNIMPLEMENTED, with the encodings we do support.
            _http.Response.Headers[GrpcProtocol.AcceptEncodingHeader] = MessageCompression.AcceptEncodingValue;
            WriteTrailersOnly(new Status(StatusCode.Unimplemented, $"Unsupported grpc-encoding value '{encoding}'. Supported encodings: {MessageCompression.AcceptEncodingValue}."));
            return false;
        }

        RequestDecompression = decompression;
        if (_options.ResponseCompression is { } compression
            && MessageCompression.Accepts(request.Headers[GrpcProtocol.AcceptEncodingHeader], compression.EncodingName))
        {
            ResponseCompression = compression;
        }

        // gRPC messages are framed and limited one by one; Kestrel's whole-body limit would cut streams.
        if (_http.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } bodySize)
        {
            bodySize.MaxRequestBodySize = null;
        }

        var timeoutHeader = request.Headers[GrpcProtocol.TimeoutHeader].ToString();
        if (timeoutHeader.Length > 0)
        {
            if (GrpcTimeout.TryParse(timeoutHeader, out var timeout))
            {
                var now = _options.TimeProvider.GetUtcNow();
                deadline = timeout >= DateTimeOffset.MaxValue - now ? DateTimeOffset.MaxValue : now + timeout;
                if (timeout <= TimeSpan.Zero)
                {
                    DeadlineExceeded = true;
                    WriteTrailersOnly(new Status(StatusCode.DeadlineExceeded, "The deadline had passed when the call arrived."));
                    return false;
                }

                // The handler's token fires at the deadline or when the client goes away, whichever is first.
                _deadlineCts = CancellationTokenSource.CreateLinkedTokenSource(_http.RequestAborted);
                _deadlineTimer = _options.TimeProvider.CreateTimer(static s => ((HttpServerCallContext)s!).OnDeadline(), this, timeout, Timeout.InfiniteTimeSpan);
                _token = _deadlineCts.Token;
            }
            else
            {
                Log.InvalidTimeout(_logger, timeoutHeader);
            }
        }

        _deadline = deadline;
        return true;
    }

    private void OnDeadline()
    {
        DeadlineExceeded = true;
        try
        {
            _deadlineCts?.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // The call ended first.
        }
    }

    /// <summary>Writes one message, under a lock so concurrent writers cannot interleave frames.</summary>
    public async Task WriteMessageAsync<T>(T message, Marshaller<T> marshaller, bool flush, CancellationToken cancellationToken)
    {
        await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_ended)
            {
                throw new InvalidOperationException("The call has ended; no more messages can be written.");
            }

            _token.ThrowIfCancellationRequested();
            PrepareResponseHeaders();
            MessageFraming.WriteMessage(_http.Response.BodyWriter, message, marshaller, ResponseCompression, _options.MaxSendMessageSize);
            MessageWritten = true;
            if (flush)
            {
                // Cancelling FlushAsync through its token makes Kestrel reset the stream (INTERNAL_ERROR), so a
                // deadline during a flush blocked by flow control would reach the client as INTERNAL. Cancel the
                // pending flush instead: the call then ends normally, with DEADLINE_EXCEEDED in its trailers.
                var writer = _http.Response.BodyWriter;
                await using var registration = cancellationToken.UnsafeRegister(static w => ((PipeWriter)w!).CancelPendingFlush(), writer).ConfigureAwait(false);
                var result = await writer.FlushAsync(CancellationToken.None).ConfigureAwait(false);
                if (result.IsCanceled)
                {
                    throw new OperationCanceledException(cancellationToken);
                }
            }
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <summary>Sends the status: as trailers after messages, or Trailers-Only when no message was written.</summary>
    public async Task EndAsync(Status status)
    {
        await _writeLock.WaitAsync().ConfigureAwait(false);
        try
        {
            if (_ended)
            {
                return;
            }

            _ended = true;
            if (!MessageWritten)
            {
                WriteTrailersOnly(status);
                return;
            }

            var trailers = _http.Features.Get<IHttpResponseTrailersFeature>()?.Trailers;
            if (trailers is null)
            {
                // Without trailer support there is no way to send a status after a message; abort the stream.
                _http.Abort();
                return;
            }

            SetStatus(trailers, status);
            AddCustom(trailers, _responseTrailers);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <summary>Maps what a handler threw to the status the client gets.</summary>
    public Status StatusFromException(Exception ex)
    {
        if (DeadlineExceeded)
        {
            return new Status(StatusCode.DeadlineExceeded, "The deadline passed before the call completed.");
        }

        switch (ex)
        {
            case RpcException rpc:
                foreach (var entry in rpc.Trailers)
                {
                    if (entry.IsBinary)
                    {
                        ResponseTrailers.Add(entry.Key, entry.ValueBytes);
                    }
                    else
                    {
                        ResponseTrailers.Add(entry.Key, entry.Value);
                    }
                }

                return rpc.Status;
            // The client reset the stream or dropped the connection. A handler waiting on the request stream then fails
            // with an IOException (Kestrel's "request stream was aborted"), not a cancellation; it is no fault of the
            // handler, and nobody hears the status, so it is not logged as one (it was, at Error, for every `buf curl`
            // that closed its reflection stream by closing the connection).
            case OperationCanceledException or IOException when _http.RequestAborted.IsCancellationRequested:
                return new Status(StatusCode.Cancelled, "The call was cancelled by the client.");
        }

        if (_options.ExceptionMapper?.Invoke(ex) is { } mapped)
        {
            return mapped;
        }

        Log.HandlerError(_logger, _method, ex);
        return new Status(StatusCode.Unknown, _options.EnableDetailedErrors
            ? "Exception was thrown by handler. " + ex.GetType().Name + ": " + ex.Message
            : "Exception was thrown by handler.");
    }

    public void Dispose()
    {
        _deadlineTimer?.Dispose();
        _deadlineCts?.Dispose();
    }

    private void PrepareResponseHeaders()
    {
        if (_headersPrepared)
        {
            return;
        }

        _headersPrepared = true;
        if (ResponseCompression is { } compression)
        {
            _http.Response.Headers[GrpcProtocol.EncodingHeader] = compression.EncodingName;
        }
    }

    private void WriteHttpError(int httpStatus, Status status)
    {
        _ended = true;
        _http.Response.StatusCode = httpStatus;
        _http.Response.ContentType = GrpcProtocol.ContentType;
        SetStatus(_http.Response.Headers, status);
    }

    private void WriteTrailersOnly(Status status)
    {
        _ended = true;
        var headers = _http.Response.Headers;
        headers.ContentType = GrpcProtocol.ContentType;
        SetStatus(headers, status);
        AddCustom(headers, _responseTrailers);
    }

    private static void SetStatus(IHeaderDictionary headers, Status status)
    {
        var code = (int)status.Code;
        headers[GrpcProtocol.StatusHeader] = code is >= 0 and < 17 ? StatusStrings[code] : code.ToString(CultureInfo.InvariantCulture);
        if (!string.IsNullOrEmpty(status.Detail))
        {
            headers[GrpcProtocol.MessageHeader] = PercentEncoding.Encode(status.Detail);
        }

        if (!status.DetailsBin.IsEmpty)
        {
            headers[GrpcProtocol.StatusDetailsHeader] = BinaryHeader.Encode(status.DetailsBin.Span);
        }
    }

    private static void AddCustom(IHeaderDictionary headers, Metadata? metadata)
    {
        if (metadata is null)
        {
            return;
        }

        foreach (var entry in metadata)
        {
            headers.Append(entry.Key, entry.IsBinary ? BinaryHeader.Encode(entry.ValueBytes) : entry.Value);
        }
    }

    private Metadata ReadRequestHeaders()
    {
        var metadata = new Metadata();
        foreach (var (name, values) in _http.Request.Headers)
        {
            if (GrpcProtocol.IsReservedHeader(name) || name.Equals("user-agent", StringComparison.OrdinalIgnoreCase))
            {
                continue;
            }

            foreach (var value in values)
            {
                if (value is not null)
                {
                    metadata.AddReceived(name, value);
                }
            }
        }

        return metadata;
    }
}
