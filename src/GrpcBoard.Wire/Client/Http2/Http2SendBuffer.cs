using System.Buffers;
using System.Net.Sockets;
using System.Net.Security;

namespace GrpcBoard.Wire.Client.Http2;

/// <summary>
/// The sending side of an HTTP/2 connection, shared by the channel's connection and the bench's lean load
/// generator. Frames are appended to <see cref="Pending"/> under the owner's lock; one flusher at a time sends
/// what has gathered, swapping two buffers so that appending goes on during a send. Whatever callers append
/// while a send is in progress leaves in the next write: one system call for many calls. Over TLS the bytes go
/// through <paramref name="tls"/> instead of straight to the socket.
/// </summary>
internal sealed class Http2SendBuffer(Socket socket, object gate, SslStream? tls = null)
{
    private ArrayBufferWriter<byte>? _spare = new(1 << 14);
    private bool _closed;
    private long _writes;

    /// <summary>Where frames are appended (under the owner's lock).</summary>
    public ArrayBufferWriter<byte> Pending { get; private set; } = new(1 << 14);

    /// <summary>Writes to the socket (or TLS stream) so far: how well calls share them shows in the benchmarks.</summary>
    public long Writes => Interlocked.Read(ref _writes);

    /// <summary>A send is in progress (under the owner's lock); nothing else may write to the socket meanwhile.</summary>
    public bool IsFlushing { get; private set; }

    /// <summary>
    /// Under the owner's lock: true when there is something to send and nobody sending, and the caller is now
    /// the flusher and must run <see cref="FlushAsync"/>.
    /// </summary>
    public bool BeginFlush()
    {
        if (IsFlushing || Pending.WrittenCount == 0 || _closed)
        {
            return false;
        }

        IsFlushing = true;
        return true;
    }

    /// <summary>Under the owner's lock: the connection failed; nothing more is sent.</summary>
    public void Close() => _closed = true;

    /// <summary>Sends until nothing is pending (after <see cref="BeginFlush"/> returned true); throws what the socket throws.</summary>
    public async Task FlushAsync()
    {
        while (true)
        {
            ArrayBufferWriter<byte> buffer;
            lock (gate)
            {
                if (Pending.WrittenCount == 0 || _closed)
                {
                    IsFlushing = false;
                    return;
                }

                buffer = Pending;
                Pending = _spare ?? new ArrayBufferWriter<byte>(1 << 14);
                _spare = null;
            }

            var bytes = buffer.WrittenMemory;
            if (tls is not null)
            {
                Interlocked.Increment(ref _writes);
                await tls.WriteAsync(bytes).ConfigureAwait(false);
            }
            else
            {
                while (bytes.Length > 0)
                {
                    Interlocked.Increment(ref _writes);
                    bytes = bytes[await socket.SendAsync(bytes, SocketFlags.None).ConfigureAwait(false)..];
                }
            }

            buffer.ResetWrittenCount();
            lock (gate)
            {
                _spare = buffer;
            }
        }
    }
}
