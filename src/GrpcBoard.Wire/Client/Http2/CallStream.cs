using System.Buffers;
using System.Threading.Channels;

namespace GrpcBoard.Wire.Client.Http2;

/// <summary>
/// One call on a <see cref="Http2ClientConnection"/>: its request frames, and what arrived of its response.
/// Fields are read and written under the connection's lock, or by the reader alone once the stream is open;
/// <see cref="Completion"/> hands the result to the caller, who then reads it without a lock.
///
/// A unary call's response is kept whole in <see cref="Body"/>. A server-streaming call's (<see cref="Messages"/>
/// not null) is cut into messages as it arrives, and the stream's receive window is given back as the caller
/// reads them: a caller that stops reading stops the server, instead of buffering without bound.
/// </summary>
internal sealed class CallStream(byte[] headerBlock, ReadOnlyMemory<byte> data, int maxReceiveMessageSize, bool streaming = false, bool streamsRequests = false) : IThreadPoolWorkItem
{
    /// <summary>
    /// Bytes of whole messages a streaming call may hold unread before its window is no longer given back on
    /// receipt; beyond it, only as the caller reads. Bytes of a message still arriving are always given back, so
    /// a message up to the size limit can complete whatever the window.
    /// </summary>
    public const int UnreadLimit = 1 << 20;
    /// <summary>
    /// Completed once: the response ended, or the call failed with the status in <see cref="Failure"/>. It is completed
    /// in a thread-pool work item of its own (<see cref="Ended"/>), and the caller's continuation runs there, at once.
    /// </summary>
    public TaskCompletionSource Completion { get; } = new();

    /// <summary>The HPACK block of the request headers.</summary>
    public byte[] HeaderBlock { get; } = headerBlock;

    /// <summary>The request body of a call that does not stream requests: one length-prefixed message.</summary>
    private readonly ReadOnlyMemory<byte> _data = data;

    /// <summary>
    /// Request bytes a duplex call may have waiting to be sent before its next write waits for them to leave
    /// (<see cref="RoomForRequests"/>): a server that does not read holds the writer, not our memory.
    /// </summary>
    public const int UnsentRequestLimit = 1 << 20;

    /// <summary>
    /// A duplex call: request messages are appended as the caller writes them (<see cref="AppendRequest"/>), and the
    /// stream's END_STREAM goes out once <see cref="CompleteRequests"/> was called and everything before it left.
    /// The request fields below are guarded by <see cref="RequestLock"/> (for every stream, so that sending has one
    /// path), taken after the connection's lock and after the call's, never before either.
    /// </summary>
    public bool StreamsRequests { get; } = streamsRequests;

    public object RequestLock { get; } = new();

    private byte[] _request = streamsRequests ? new byte[256] : [];
    private int _requestStart;
    private int _requestEnd;
    private bool _requestsComplete = !streamsRequests;
    private TaskCompletionSource? _room;

    /// <summary>Request bytes that went out in DATA frames.</summary>
    public long RequestBytesSent { get; private set; }

    /// <summary>
    /// Whether the stream still holds every byte of its request, so that the call can be placed again on another stream
    /// if this one is refused unprocessed. A duplex call drops what it sent.
    /// </summary>
    public bool HoldsWholeRequest => !StreamsRequests || RequestBytesSent == 0;

    /// <summary>Request bytes not sent yet.</summary>
    public ReadOnlySpan<byte> Unsent => StreamsRequests ? _request.AsSpan(_requestStart, _requestEnd - _requestStart) : _data.Span[(int)RequestBytesSent..];

    /// <summary>Whether END_STREAM may follow the unsent bytes (always, for a call that does not stream requests).</summary>
    public bool RequestsComplete => _requestsComplete;

    /// <summary>Records that <paramref name="length"/> unsent bytes left in a DATA frame.</summary>
    public void Sent(int length)
    {
        RequestBytesSent += length;
        if (!StreamsRequests)
        {
            return;
        }

        _requestStart += length;
        if (_requestStart == _requestEnd)
        {
            _requestStart = _requestEnd = 0;
        }

        if (_requestEnd - _requestStart < UnsentRequestLimit)
        {
            WakeWriter();
        }
    }

    /// <summary>Queues one framed request message (under <see cref="RequestLock"/>).</summary>
    public void AppendRequest(ReadOnlySpan<byte> framed)
    {
        var unsent = _requestEnd - _requestStart;
        if (_requestEnd + framed.Length > _request.Length)
        {
            // Copied into a larger array, dropping what was sent: at most the unsent limit and one message stay.
            var grown = new byte[Math.Max(_request.Length * 2, unsent + framed.Length)];
            _request.AsSpan(_requestStart, unsent).CopyTo(grown);
            _request = grown;
            _requestStart = 0;
            _requestEnd = unsent;
        }

        framed.CopyTo(_request.AsSpan(_requestEnd));
        _requestEnd += framed.Length;
    }

    /// <summary>Ends the request stream after what is queued (under <see cref="RequestLock"/>).</summary>
    public void CompleteRequests() => _requestsComplete = true;

    /// <summary>
    /// Null when a write may go ahead; otherwise a task that completes when there is room, when the stream ends or moves,
    /// or when the call's placement settles (<see cref="WakeWriter"/>); the writer looks again either way (under
    /// <see cref="RequestLock"/>). A stream refused unprocessed keeps its limit while the call is placed again.
    /// </summary>
    public Task? RoomForRequests() =>
        _requestEnd - _requestStart < UnsentRequestLimit
            ? null
            : (_room ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;

    /// <summary>Lets a writer waiting for room look again (under <see cref="RequestLock"/>).</summary>
    public void WakeWriter()
    {
        _room?.TrySetResult();
        _room = null;
    }

    /// <summary>
    /// Moves this refused stream's unsent requests to the stream that replaces it (under both streams'
    /// <see cref="RequestLock"/>). Only a stream that sent no request byte can move: what it sent is gone.
    /// </summary>
    public void MoveRequestsTo(CallStream next)
    {
        next.AppendRequest(Unsent);
        next._requestsComplete = _requestsComplete;
        WakeWriter(); // it writes to the call's new stream
    }

    public int MaxReceiveMessageSize { get; } = maxReceiveMessageSize;

    private int _ended;

    /// <summary>0 until the stream is opened (under the connection's lock).</summary>
    public int Id { get; set; }

    /// <summary>Completed or failed; set once, by whichever thread gets there first.</summary>
    public bool IsEnded => Volatile.Read(ref _ended) != 0;

    /// <summary>What the peer lets this stream send, beyond the connection's window (RFC 9113, 6.9).</summary>
    public long SendWindow { get; set; }

    /// <summary>Bytes received since this stream's last WINDOW_UPDATE.</summary>
    public long ReceivedSinceUpdate { get; set; }

    /// <summary>The final (non-1xx) response headers, once they arrived.</summary>
    public List<KeyValuePair<string, string>>? Headers { get; set; }

    public List<KeyValuePair<string, string>>? Trailers { get; set; }

    /// <summary>
    /// The call's status when the response headers settled it (an HTTP error, not a gRPC response, Trailers-Only):
    /// nothing in a body could change it. Null when the status is in the trailers.
    /// </summary>
    public Status? HeaderStatus { get; set; }

    public ICompressionProvider? Decompression { get; set; }

    public ArrayBufferWriter<byte> Body { get; } = new(256);

    /// <summary>A streaming call's messages, in order, as they arrived; completed when the stream ends (null: unary).</summary>
    public Channel<StreamedMessage>? Messages { get; } = streaming ? Channel.CreateUnbounded<StreamedMessage>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true }) : null;

    /// <summary>Completed when the final response headers arrived or the stream ended: what a streaming caller waits for first.</summary>
    public TaskCompletionSource HeadersArrived { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Bytes of whole messages in <see cref="Messages"/> not yet read (a streaming call; under the connection's lock).</summary>
    public long Unread { get; set; }

    /// <summary>Received bytes not given back to the stream's window because the caller was behind (under the connection's lock).</summary>
    public long Owed { get; set; }

    /// <summary>Why the call ended without a response to read: its status, for the caller to throw.</summary>
    public RpcException? Failure { get; private set; }

    /// <summary>
    /// The call failed before the server did any work on it: never sent (its connection closed, or turned out to
    /// take fewer streams than it had queued), refused (REFUSED_STREAM), or above a GOAWAY's last stream. The
    /// channel may place it on another connection (RFC 9113, 8.7: such requests can be retried safely).
    /// </summary>
    public bool Unprocessed { get; private set; }

    public bool TryFailUnprocessed(RpcException failure)
    {
        if (Interlocked.Exchange(ref _ended, 1) != 0)
        {
            return false;
        }

        Unprocessed = true;
        Failure = failure;
        Ended();
        return true;
    }

    /// <summary>Ends the call with a response to read. False if it had already ended.</summary>
    public bool TryComplete()
    {
        if (Interlocked.Exchange(ref _ended, 1) != 0)
        {
            return false;
        }

        Ended();
        return true;
    }

    /// <summary>Ends the call with a status. False if it had already ended.</summary>
    public bool TryFail(RpcException failure)
    {
        if (Interlocked.Exchange(ref _ended, 1) != 0)
        {
            return false;
        }

        Failure = failure;
        Ended();
        return true;
    }

    private void Ended()
    {
        if (StreamsRequests)
        {
            lock (RequestLock)
            {
                // A writer waiting for room looks again, and finds the call over (or, refused unprocessed, waits for the
                // placement).
                WakeWriter();
            }
        }

        Messages?.Writer.TryComplete();
        HeadersArrived.TrySetResult();

        // The caller's continuation must not run here, on the reader or under the connection's lock: a caller that blocks
        // would hold back every other call's answer. It runs in a work item of its own, queued in the thread pool's global
        // queue (first in, first out) rather than in this thread's local one, where an asynchronous continuation goes and
        // where idle threads look only after the global queue. The send that the continuations' next calls ask for
        // (Http2ClientConnection.Flush) is queued in that same global queue, behind the other answers of the read, so
        // those calls mostly leave together, in one write. Measured: bench/GrpcBoard.Bench/JOURNAL.md, "Completing calls".
        ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
    }

    void IThreadPoolWorkItem.Execute() => Completion.TrySetResult();

    public static string? Find(List<KeyValuePair<string, string>>? headers, string name)
    {
        if (headers is null)
        {
            return null;
        }

        foreach (var (key, value) in headers)
        {
            if (key == name)
            {
                return value;
            }
        }

        return null;
    }

    public static Metadata ToMetadata(List<KeyValuePair<string, string>>? headers)
    {
        Metadata? metadata = null;
        if (headers is not null)
        {
            foreach (var (name, value) in headers)
            {
                if (ResponseRules.IsMetadata(name))
                {
                    (metadata ??= new Metadata()).AddReceived(name, value);
                }
            }
        }

        return metadata ?? Metadata.Empty;
    }
}

/// <summary>One message of a streaming response: its payload, and its bytes with the 5-byte prefix (what it holds of the stream's window).</summary>
internal readonly record struct StreamedMessage(byte[] Payload, bool Compressed, int WireBytes);
