using System.Buffers;

namespace GrpcBoard.Wire.Client.Http2;

/// <summary>
/// One unary call on a <see cref="Http2ClientConnection"/>: its request frames, and what arrived of its
/// response. Fields are read and written under the connection's lock, or by the reader alone once the stream
/// is open; <see cref="Completion"/> hands the result to the caller, who then reads it without a lock.
/// </summary>
internal sealed class UnaryStream(byte[] headerBlock, ReadOnlyMemory<byte> data, int maxReceiveMessageSize)
{
    /// <summary>Completed once: the response ended, or the call failed with the status in <see cref="Failure"/>.</summary>
    public TaskCompletionSource Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>The HPACK block of the request headers.</summary>
    public byte[] HeaderBlock { get; } = headerBlock;

    /// <summary>The request body: one length-prefixed message.</summary>
    public ReadOnlyMemory<byte> Data { get; } = data;

    public int DataSent { get; set; }

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
        Completion.TrySetResult();
        return true;
    }

    /// <summary>Ends the call with a response to read. False if it had already ended.</summary>
    public bool TryComplete()
    {
        if (Interlocked.Exchange(ref _ended, 1) != 0)
        {
            return false;
        }

        Completion.TrySetResult();
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
        Completion.TrySetResult();
        return true;
    }

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
