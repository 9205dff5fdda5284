using System.Buffers;
using GrpcBoard.Wire.Client.Http2;

namespace GrpcBoard.Wire.Client;

/// <summary>
/// A server-streaming or duplex call on the channel's own HTTP/2 connections (<see cref="Http2ClientConnection"/>):
/// the same statuses as <see cref="ClientCall{TRequest, TResponse}"/> gives over HttpClient, for every way a call can
/// end. Messages are decoded as the caller reads them, and each read gives its bytes back to the stream's window.
/// A duplex call's writes are queued on its stream and sent as windows allow; a write waits while
/// <see cref="CallStream.UnsentRequestLimit"/> bytes are still unsent, so a server that stops reading stops the writer.
/// </summary>
internal sealed class OwnStreamingCall<TRequest, TResponse> : IStreamingCallCore<TRequest, TResponse>
{
    private readonly GrpcChannel _channel;
    private readonly Method<TRequest, TResponse> _method;
    private readonly CallOptions _options;
    private readonly object _lock = new();
    private readonly Task<CallStream?> _placed;

    /// <summary>A duplex call: requests are written after the start (<see cref="WriteRequestAsync"/>).</summary>
    private readonly bool _duplex;

    /// <summary>Set once the placement has settled on a stream (or on none): a refused stream is then not placed again.</summary>
    private bool _placementSettled;
    private ITimer? _deadlineTimer;
    private CancellationTokenRegistration _registration;
    private Http2ClientConnection? _connection;
    private CallStream? _stream;

    /// <summary>Set when the caller ended the call (deadline, cancellation, disposal): the status it ends with.</summary>
    private RpcException? _abort;
    private Status? _status;

    public OwnStreamingCall(GrpcChannel channel, Method<TRequest, TResponse> method, TRequest request, CallOptions options)
    {
        _channel = channel;
        _method = method;
        _options = options;
        // Framed before anything is sent, so that a request too large fails the call's start, as over HttpClient.
        var framed = new ArrayBufferWriter<byte>();
        MessageFraming.WriteMessage(framed, request, method.RequestMarshaller, channel.Options.SendCompression, channel.Options.MaxSendMessageSize);
        _placed = PlaceAsync(framed.WrittenMemory);
    }

    /// <summary>A duplex call: opened at once, with no request message yet (the server may answer first).</summary>
    public OwnStreamingCall(GrpcChannel channel, Method<TRequest, TResponse> method, CallOptions options)
    {
        _channel = channel;
        _method = method;
        _options = options;
        _duplex = true;
        _placed = PlaceAsync(ReadOnlyMemory<byte>.Empty);
    }

    public Status? Status => _status;

    public Metadata Trailers { get; private set; } = Metadata.Empty;

    public async Task<Metadata> GetResponseHeadersAsync()
    {
        var stream = await _placed.ConfigureAwait(false);
        if (stream is null)
        {
            throw new RpcException(_status!.Value, Trailers);
        }

        await stream.HeadersArrived.Task.ConfigureAwait(false);
        if (stream.Headers is null && stream.Failure is { } failure)
        {
            Finish(failure.Status);
            throw new RpcException(_status!.Value, Trailers);
        }

        return CallStream.ToMetadata(stream.Headers);
    }

    public async ValueTask<(bool HasMessage, TResponse? Message)> ReadNextAsync()
    {
        if (_status is { } done)
        {
            return Ended(done);
        }

        var stream = await _placed.ConfigureAwait(false);
        if (stream is null)
        {
            return Ended(_status!.Value);
        }

        // A call the caller ended reports that at once, with whatever is still queued left unread.
        while (Volatile.Read(ref _abort) is null)
        {
            if (!stream.Messages!.Reader.TryRead(out var message))
            {
                if (!await stream.Messages.Reader.WaitToReadAsync().ConfigureAwait(false))
                {
                    break;
                }

                continue;
            }

            _connection!.Consumed(stream, message.WireBytes);
            try
            {
                return (true, MessageFraming.Decode(new ReadOnlySequence<byte>(message.Payload), message.Compressed, _method.ResponseMarshaller, stream.Decompression, _channel.Options.MaxReceiveMessageSize));
            }
            catch (RpcException failure)
            {
                // A message that cannot be read ends the call: the server is told to stop (RST_STREAM).
                Abort(failure);
                throw new RpcException(Finish(failure.Status));
            }
        }

        await stream.Completion.Task.ConfigureAwait(false);
        if (Volatile.Read(ref _abort) is { } abort)
        {
            return Ended(Finish(abort.Status));
        }

        if (stream.Failure is { } streamFailure)
        {
            Trailers = streamFailure.Trailers;
            return Ended(Finish(streamFailure.Status));
        }

        if (stream.Body.WrittenCount > 0)
        {
            return Ended(Finish(MessageFraming.Incomplete(stream.Body.WrittenCount).Status));
        }

        var status = stream.HeaderStatus ?? ResponseRules.ReadStatus(stream.Trailers, CallStream.Find) ?? ResponseRules.NoStatusTrailer;
        Trailers = CallStream.ToMetadata(stream.Trailers);
        return Ended(Finish(status));
    }

    public async ValueTask WriteRequestAsync(TRequest message, CancellationToken cancellationToken)
    {
        if (!_duplex)
        {
            throw new InvalidOperationException("This call does not stream requests.");
        }

        var framed = new ArrayBufferWriter<byte>();
        try
        {
            MessageFraming.WriteMessage(framed, message, _method.RequestMarshaller, _channel.Options.SendCompression, _channel.Options.MaxSendMessageSize);
        }
        catch (RpcException failure)
        {
            // Too large to send: the call ends with that status, as the server could not be given a part of it.
            Abort(failure);
            throw;
        }

        while (true)
        {
            Task? room;
            Http2ClientConnection? connection;
            lock (_lock)
            {
                if (_abort is { } abort)
                {
                    throw new RpcException(abort.Status);
                }

                if (_status is { } ended)
                {
                    // Never placed (a connection that could not be opened), or over and read to its end.
                    throw ended.Code == StatusCode.OK
                        ? new InvalidOperationException("The call has ended; the server takes no more requests.")
                        : new RpcException(ended, Trailers);
                }

                // Set before the placement's first await, unless the call ended there (its status then set above).
                var stream = _stream!;
                lock (stream.RequestLock)
                {
                    // A stream refused unprocessed takes writes until the placement settles: they move with the call if it is
                    // placed again.
                    if (stream.IsEnded && (!stream.Unprocessed || _placementSettled))
                    {
                        throw stream.Failure is { } failure
                            ? new RpcException(failure.Status, failure.Trailers)
                            : new InvalidOperationException("The call has ended; the server takes no more requests.");
                    }

                    if (stream.RequestsComplete)
                    {
                        throw new InvalidOperationException("The request stream has been completed.");
                    }

                    room = stream.RoomForRequests();
                    if (room is null)
                    {
                        stream.AppendRequest(framed.WrittenSpan);
                    }
                }

                connection = _connection;
            }

            if (room is null)
            {
                // With no connection yet, the placement sends it once the stream has one.
                connection?.RequestsQueued();
                return;
            }

            await room.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    public void CompleteRequests()
    {
        Http2ClientConnection? connection;
        lock (_lock)
        {
            if (!_duplex || _stream is not { } stream)
            {
                return;
            }

            lock (stream.RequestLock)
            {
                stream.CompleteRequests();
            }

            connection = _connection;
        }

        connection?.RequestsQueued();
    }

    public void Cancel() => Abort(new RpcException(ResponseRules.CancelledByCaller));

    public async ValueTask DisposeAsync()
    {
        if (_status is null)
        {
            // Abandoning a call that is still open cancels it on the wire (RST_STREAM).
            Abort(new RpcException(ResponseRules.CancelledByCaller));
        }

        try
        {
            await _placed.ConfigureAwait(false);
        }
        catch (Exception)
        {
            // Ending an abandoned call; its outcome is not wanted.
        }

        _deadlineTimer?.Dispose();
        await _registration.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>Whether the stream still holds its whole request to place again (<see cref="CallStream.HoldsWholeRequest"/>).</summary>
    private static bool HoldsWholeRequest(CallStream stream)
    {
        lock (stream.RequestLock)
        {
            return stream.HoldsWholeRequest;
        }
    }

    private (bool, TResponse?) Ended(Status status) =>
        status.Code == StatusCode.OK ? (false, default) : throw new RpcException(status, Trailers);

    private Status Finish(Status status)
    {
        _status ??= status;
        _deadlineTimer?.Dispose();
        return _status.Value;
    }

    /// <summary>
    /// Ends the call from the caller's side. The first reason wins: a deadline that passed before a cancellation
    /// stays DEADLINE_EXCEEDED. A stream already open is reset with CANCEL, so the server stops working on it.
    /// </summary>
    private void Abort(RpcException status)
    {
        Http2ClientConnection? connection;
        CallStream? stream;
        lock (_lock)
        {
            if (_abort is not null)
            {
                return;
            }

            _abort = status;
            connection = _connection;
            stream = _stream;
        }

        if (connection is not null && stream is not null)
        {
            connection.Abort(stream, status);
        }
        else
        {
            stream?.TryFail(status);
        }
    }

    /// <summary>
    /// Puts the call on a connection, and again on another while the server did no work on it. Null when the call
    /// ended before any stream answered (its status is then set).
    /// </summary>
    private async Task<CallStream?> PlaceAsync(ReadOnlyMemory<byte> framed)
    {
        try
        {
            return await PlaceOnAConnectionAsync(framed).ConfigureAwait(false);
        }
        finally
        {
            lock (_lock)
            {
                _placementSettled = true;
                if (_stream is { } stream)
                {
                    // A writer waiting on a stream refused unprocessed, and not placed again, finds the call over.
                    lock (stream.RequestLock)
                    {
                        stream.WakeWriter();
                    }
                }
            }
        }
    }

    private async Task<CallStream?> PlaceOnAConnectionAsync(ReadOnlyMemory<byte> framed)
    {
        var time = _channel.Options.TimeProvider;
        TimeSpan? timeout = null;
        if (_options.Deadline is { } deadline)
        {
            timeout = deadline - time.GetUtcNow();
            if (timeout <= TimeSpan.Zero)
            {
                // Already past the deadline: fail without sending, as other implementations do.
                Finish(ResponseRules.DeadlineBeforeStart);
                return null;
            }

            _deadlineTimer = time.CreateTimer(static s => ((OwnStreamingCall<TRequest, TResponse>)s!).Abort(new RpcException(ResponseRules.DeadlinePassed)), this, timeout.Value, Timeout.InfiniteTimeSpan);
        }

        var cancellation = _options.CancellationToken;
        if (cancellation.CanBeCanceled)
        {
            _registration = cancellation.UnsafeRegister(static s => ((OwnStreamingCall<TRequest, TResponse>)s!).Abort(new RpcException(ResponseRules.CancelledByCaller)), this);
        }

        try
        {
            var started = time.GetTimestamp();
            for (var attempt = 1; ; attempt++)
            {
                var left = timeout - time.GetElapsedTime(started);
                if (left <= TimeSpan.Zero)
                {
                    // Due before its timer fired (a re-placement late in the call): not sent with a timeout already spent.
                    Abort(new RpcException(ResponseRules.DeadlinePassed));
                }

                if (Volatile.Read(ref _abort) is { } aborted)
                {
                    Finish(aborted.Status);
                    return null;
                }

                var stream = new CallStream(_channel.RequestHeaders(_method.FullName, left, _options.Headers), framed, _channel.Options.MaxReceiveMessageSize, streaming: true, streamsRequests: _duplex);
                lock (_lock)
                {
                    if (_stream is { } refused && _duplex)
                    {
                        // Placed again: what was written to the refused stream (none of it sent) goes with the call.
                        lock (refused.RequestLock)
                        {
                            lock (stream.RequestLock)
                            {
                                refused.MoveRequestsTo(stream);
                            }
                        }
                    }

                    _stream = stream;
                    _connection = null;
                }

                var connection = await _channel.StartAsync(stream, left, cancellation).ConfigureAwait(false);
                RpcException? abort;
                lock (_lock)
                {
                    _connection = connection;
                    abort = _abort;
                }

                if (abort is not null)
                {
                    // Ended while it was being placed: the stream may be open by now, so reset it.
                    connection.Abort(stream, abort);
                }
                else if (_duplex)
                {
                    // Writes made before the call had a connection wait in the stream for this.
                    connection.RequestsQueued();
                }

                await stream.HeadersArrived.Task.ConfigureAwait(false);
                if (stream.Failure is null || !stream.Unprocessed || attempt == GrpcChannel.MaxPlacements || Volatile.Read(ref _abort) is not null || !HoldsWholeRequest(stream))
                {
                    return stream;
                }

                // The server did no work on it: another connection may take it.
            }
        }
        catch (RpcException failure)
        {
            // Not placed: a deadline or cancellation while connecting, a disposed channel, a request too large.
            Finish((Volatile.Read(ref _abort) ?? failure).Status);
            return null;
        }
    }
}
