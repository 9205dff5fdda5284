using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Http.Headers;
using System.Threading.Channels;

namespace GrpcBoard.Wire.Client;

/// <summary>
/// One call on the wire: sends the request (one message, or a stream of them), then reads response
/// headers, messages and trailers, and turns every way a call can end into a <see cref="Status"/>.
/// </summary>
internal sealed class ClientCall<TRequest, TResponse> : IStreamingCallCore<TRequest, TResponse>
{
    private readonly GrpcChannel _channel;
    private readonly Method<TRequest, TResponse> _method;
    private readonly CallOptions _options;
    private readonly CancellationTokenSource _cts;
    private ITimer? _deadlineTimer;
    private volatile bool _deadlineExceeded;
    private Task<HttpResponseMessage>? _responseTask;
    private HttpResponseMessage? _response;
    private PipeReader? _reader;
    private ICompressionProvider? _responseDecompression;
    private Channel<TRequest>? _requests;
    private Status? _status;

    /// <summary>Why a streamed request message could not be sent (too large, say): the call's status, whatever HttpClient makes of it.</summary>
    private volatile RpcException? _sendFailure;

    public ClientCall(GrpcChannel channel, Method<TRequest, TResponse> method, CallOptions options)
    {
        _channel = channel;
        _method = method;
        _options = options;
        _cts = CancellationTokenSource.CreateLinkedTokenSource(options.CancellationToken);
    }

    public Metadata Trailers { get; private set; } = Metadata.Empty;

    public Metadata ResponseHeaders { get; private set; } = Metadata.Empty;

    public Status? Status => _status;

    public void Start(TRequest? requestMessage, bool streamRequests = false)
    {
        TimeSpan? timeout = null;
        if (_options.Deadline is { } deadline)
        {
            var remaining = deadline - _channel.Options.TimeProvider.GetUtcNow();
            if (remaining <= TimeSpan.Zero)
            {
                // Already past the deadline: fail without sending, as other implementations do.
                _deadlineExceeded = true;
                _status = ResponseRules.DeadlineBeforeStart;
                return;
            }

            timeout = remaining;
            _deadlineTimer = _channel.Options.TimeProvider.CreateTimer(
                static state =>
                {
                    var call = (ClientCall<TRequest, TResponse>)state!;
                    call._deadlineExceeded = true;
                    call.Cancel();
                },
                this, remaining, Timeout.InfiniteTimeSpan);
        }

        HttpContent content;
        if (streamRequests)
        {
            _requests = Channel.CreateUnbounded<TRequest>(new UnboundedChannelOptions { SingleReader = true });
            content = new StreamingRequestContent(this);
        }
        else
        {
            var framed = new ArrayBufferWriter<byte>();
            MessageFraming.WriteMessage(framed, requestMessage!, _method.RequestMarshaller, _channel.Options.SendCompression, _channel.Options.MaxSendMessageSize);
            content = new ReadOnlyMemoryContent(framed.WrittenMemory);
        }

        var request = _channel.CreateRequest(_method.FullName, _options, timeout, content);
        try
        {
            _responseTask = _channel.SendAsync(request, _cts.Token);
        }
        catch (Exception ex)
        {
            // A disposed channel throws before sending; report it like any failure to send, as a status.
            _responseTask = Task.FromException<HttpResponseMessage>(ex);
        }
    }

    public ValueTask WriteRequestAsync(TRequest message, CancellationToken cancellationToken)
    {
        if (_requests is null)
        {
            throw new InvalidOperationException("This call does not stream requests.");
        }

        return _requests.Writer.WriteAsync(message, cancellationToken);
    }

    public void CompleteRequests() => _requests?.Writer.TryComplete();

    /// <summary>Cancels the call; a pending or later read reports CANCELLED (or DEADLINE_EXCEEDED if that came first).</summary>
    public void Cancel()
    {
        try
        {
            _cts.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // The call has already been disposed: nothing is left to cancel.
        }
    }

    public async Task<Metadata> GetResponseHeadersAsync()
    {
        await EnsureResponseAsync().ConfigureAwait(false);
        return ResponseHeaders;
    }

    /// <summary>Returns the next message, or false once the call ended with OK; throws for any other status.</summary>
    public async ValueTask<(bool HasMessage, TResponse? Message)> ReadNextAsync()
    {
        if (_status is { } done)
        {
            return done.Code == StatusCode.OK ? (false, default) : throw new RpcException(done, Trailers);
        }

        try
        {
            await EnsureResponseAsync().ConfigureAwait(false);
            if (_status is { } trailersOnly)
            {
                return trailersOnly.Code == StatusCode.OK ? (false, default) : throw new RpcException(trailersOnly, Trailers);
            }

            var (has, message) = await MessageFraming.ReadMessageAsync(
                _reader!, _method.ResponseMarshaller, _responseDecompression, _channel.Options.MaxReceiveMessageSize, _cts.Token).ConfigureAwait(false);
            if (has)
            {
                return (true, message);
            }

            var read = ReadStatus(_response!.TrailingHeaders, out var trailers);
            Trailers = read is null ? ToMetadata(_response.TrailingHeaders) : trailers;
            var status = read ?? ResponseRules.NoStatusTrailer;
            Finish(status);
            return status.Code == StatusCode.OK ? (false, default) : throw new RpcException(status, Trailers);
        }
        catch (Exception ex) when (ex is not RpcException || _status is null)
        {
            var rpc = MapException(ex);
            Finish(rpc.Status);
            // Stop the stream on the wire too: the server sees RST_STREAM(CANCEL). Cancelling the token alone
            // does not reset a stream whose response headers have arrived; disposing the response does.
            _cts.Cancel();
            _response?.Dispose();
            throw rpc;
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_status is null)
        {
            // Abandoning a call that is still open cancels it on the wire (RST_STREAM).
            _cts.Cancel();
        }

        _requests?.Writer.TryComplete();
        if (_responseTask is not null)
        {
            try
            {
                await _responseTask.ConfigureAwait(false);
            }
            catch (Exception)
            {
                // Ending an abandoned or failed call; its outcome was already reported or is not wanted.
            }
        }

        _response?.Dispose();
        _deadlineTimer?.Dispose();
        _cts.Dispose();
    }

    private async ValueTask EnsureResponseAsync()
    {
        if (_response is not null || _status is not null)
        {
            return;
        }

        HttpResponseMessage response;
        try
        {
            response = await _responseTask!.ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            var rpc = MapException(ex);
            Finish(rpc.Status);
            throw rpc;
        }

        _response = response;
        ResponseHeaders = ToMetadata(response.Headers);
        var status = ValidateHeaders(response, out var trailersOnlyTrailers);
        if (status is { } s)
        {
            Trailers = trailersOnlyTrailers;
            Finish(s);
            return;
        }

        var stream = await response.Content.ReadAsStreamAsync(_cts.Token).ConfigureAwait(false);
        _reader = PipeReader.Create(stream, new StreamPipeReaderOptions(leaveOpen: false));
    }

    /// <summary>Checks the response headers (<see cref="ResponseRules.Validate"/>); a status means the call has already ended.</summary>
    private Status? ValidateHeaders(HttpResponseMessage response, out Metadata trailers)
    {
        var contentType = response.Content.Headers.ContentType?.ToString()
            ?? (response.Content.Headers.TryGetValues("Content-Type", out var raw) ? string.Join(",", raw) : null);
        var status = ResponseRules.Validate((int)response.StatusCode, response.ReasonPhrase, contentType, First(response.Headers), out _responseDecompression);
        trailers = status is not null && response.Headers.Contains(GrpcProtocol.StatusHeader) ? ToMetadata(response.Headers) : Metadata.Empty;
        return status;
    }

    /// <summary>The status in these headers, if any; <paramref name="metadata"/> is the rest of them (only built when there is a status).</summary>
    private static Status? ReadStatus(HttpHeaders headers, out Metadata metadata)
    {
        var status = ResponseRules.ReadStatus(First(headers));
        metadata = status is null ? Metadata.Empty : ToMetadata(headers);
        return status;
    }

    private static Func<string, string?> First(HttpHeaders headers) =>
        name => headers.TryGetValues(name, out var values) ? values.FirstOrDefault() : null;

    private static Metadata ToMetadata(HttpHeaders headers)
    {
        Metadata? metadata = null;
        foreach (var (name, values) in headers.NonValidated)
        {
            if (!ResponseRules.IsMetadata(name))
            {
                continue;
            }

            metadata ??= new Metadata();
            foreach (var value in values)
            {
                metadata.AddReceived(name, value);
            }
        }

        return metadata ?? Metadata.Empty;
    }

    private void Finish(Status status)
    {
        _status ??= status;
        _deadlineTimer?.Dispose();
    }

    private RpcException MapException(Exception ex)
    {
        if (_deadlineExceeded)
        {
            return new RpcException(ResponseRules.DeadlinePassed, inner: ex);
        }

        if (_options.CancellationToken.IsCancellationRequested || ex is OperationCanceledException && _cts.IsCancellationRequested)
        {
            return new RpcException(ResponseRules.CancelledByCaller, inner: ex);
        }

        if (_sendFailure is { } sendFailure)
        {
            // HttpClient reports a request body that failed as a failed request or a broken response stream,
            // depending on whether the response headers had arrived: the reason is the same either way.
            return sendFailure;
        }

        return ex switch
        {
            RpcException rpc => rpc,
            HttpProtocolException protocol => FromHttp2Error(protocol, ex),
            // An HTTP/2 error before the response headers arrives wrapped.
            HttpRequestException { InnerException: HttpProtocolException protocol } => FromHttp2Error(protocol, ex),
            HttpRequestException request => new RpcException(
                new Status(StatusCode.Unavailable, "Error connecting to the server: " + request.Message), inner: ex),
            IOException io => new RpcException(new Status(StatusCode.Unavailable, "The connection failed: " + io.Message), inner: ex),
            ObjectDisposedException => new RpcException(ResponseRules.ChannelDisposed, inner: ex),
            OperationCanceledException => new RpcException(new Status(StatusCode.Cancelled, "The call was cancelled."), inner: ex),
            _ => new RpcException(new Status(StatusCode.Internal, "The call failed: " + ex.Message), inner: ex),
        };
    }

    /// <summary>
    /// A reset of this stream maps by its error code (the spec's "Errors" table). An error of the whole
    /// connection is a transport failure, UNAVAILABLE as in other gRPC clients: a GOAWAY, or a first frame
    /// that is not SETTINGS, which is what a server that is shutting down sends on a connection it has just
    /// accepted. Mapping that to INTERNAL would make resuming watches and workers give up on a restart.
    /// </summary>
    private static RpcException FromHttp2Error(HttpProtocolException protocol, Exception ex) =>
        IsStreamReset(protocol)
            ? new RpcException(new Status(ResponseRules.StatusFromStreamReset(protocol.ErrorCode), $"The server reset the stream (HTTP/2 error {protocol.ErrorCode}): {protocol.Message}"), inner: ex)
            : new RpcException(new Status(StatusCode.Unavailable, $"The connection failed (HTTP/2 error {protocol.ErrorCode}): {protocol.Message}"), inner: ex);

    /// <summary>
    /// SocketsHttpHandler raises the same exception type, with the same error codes, for RST_STREAM and for
    /// connection errors; only its message (not localized: the HTTP/2 names are fixed) tells them apart. The
    /// wire tests pin both sides, so a runtime that words it differently fails them rather than misreporting.
    /// </summary>
    private static bool IsStreamReset(HttpProtocolException protocol) =>
        protocol.Message.Contains("reset the stream", StringComparison.Ordinal);

    /// <summary>Request body of a streaming call: writes each queued message as it arrives.</summary>
    private sealed class StreamingRequestContent(ClientCall<TRequest, TResponse> call) : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
        {
            // SocketsHttpHandler holds back the HEADERS frame of a request whose body has not ended, to send it with
            // the first DATA frame; it usually goes out with the next flush of the connection, but not always. A
            // duplex call whose server answers before reading then never starts (seen: about 1 call in 60 under CPU
            // load, the handler never entered). Flushing the empty body sends the headers now.
            await stream.FlushAsync(cancellationToken).ConfigureAwait(false);

            var buffer = new ArrayBufferWriter<byte>();
            await foreach (var message in call._requests!.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                buffer.ResetWrittenCount();
                try
                {
                    MessageFraming.WriteMessage(buffer, message, call._method.RequestMarshaller, call._channel.Options.SendCompression, call._channel.Options.MaxSendMessageSize);
                }
                catch (RpcException ex)
                {
                    call._sendFailure = ex;
                    throw;
                }

                await stream.WriteAsync(buffer.WrittenMemory, cancellationToken).ConfigureAwait(false);
                await stream.FlushAsync(cancellationToken).ConfigureAwait(false);
            }
        }

        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) =>
            SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }
}
