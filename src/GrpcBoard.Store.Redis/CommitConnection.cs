using System.Buffers;
using System.Buffers.Text;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using GrpcBoard.Core;
using StackExchange.Redis;

namespace GrpcBoard.Store.Redis;

/// <summary>An error reply to a command of the direct commit connection (StackExchange.Redis's own exception cannot be created outside it).</summary>
internal sealed class RedisErrorReplyException(string message) : Exception(message);

/// <summary>
/// A connection of its own for the commit script, to a standalone Redis, with a dedicated thread that reads each
/// reply and hands it straight to its replica.
///
/// Why: the commit pipeline of a workflow is latency-bound (one batch in flight on one host), so every
/// microsecond between Redis's reply and the next batch is throughput lost. Through StackExchange.Redis every reply
/// reached the replica on a thread-pool thread, queued behind the gRPC work, and on a loaded 2-core machine Redis
/// waited for the next batch for a quarter of its time (docs/benchmarks.md).
///
/// Commands are pipelined in the order they are written, under one lock, so the batches of a workflow reach Redis
/// in send order, and replies come back in that order (RESP). Anything this connection does not do (a cluster,
/// TLS, a connection that broke) goes through StackExchange.Redis instead: the commit script is conditional on
/// the workflow's last batch, so which connection carries a batch never matters for correctness.
/// </summary>
internal sealed class CommitConnection : IDisposable
{
    private readonly Socket _socket;
    private readonly byte[] _sha;
    private readonly long _timeoutTicks;
    private readonly object _writeLock = new();
    private readonly Queue<(Action<CommitReply, Exception?> OnReply, long SentAt)> _pending = new();
    private readonly ArrayBufferWriter<byte> _out = new(64 * 1024);
    private readonly RespReader _reader;
    private readonly Thread _thread;
    private readonly Action<Exception> _onCallbackError;

    /// <summary>WAIT, sent after every commit when replicas are waited for (<see cref="RedisStoreOptions.ReplicasToWaitFor"/>); else null.</summary>
    private readonly byte[]? _waitCommand;
    private bool _broken;

    private CommitConnection(Socket socket, string sha, TimeSpan timeout, ReplicaWait wait, Action<Exception> onCallbackError)
    {
        _onCallbackError = onCallbackError;
        if (wait.Replicas > 0)
        {
            var command = new ArrayBufferWriter<byte>();
            ArrayHeader(command, 3);
            Bulk(command, "WAIT"u8);
            Bulk(command, Encoding.ASCII.GetBytes(wait.Replicas.ToString(System.Globalization.CultureInfo.InvariantCulture)));
            Bulk(command, Encoding.ASCII.GetBytes(wait.TimeoutMs.ToString(System.Globalization.CultureInfo.InvariantCulture)));
            _waitCommand = command.WrittenSpan.ToArray();
        }
        _socket = socket;
        _sha = Encoding.ASCII.GetBytes(sha);
        _timeoutTicks = (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        _reader = new RespReader(socket, OldestOverdue);
        _thread = new Thread(ReadLoop) { IsBackground = true, Name = "GrpcBoard Redis commits" };
    }

    /// <summary>
    /// Connects to the primary, authenticates, selects the database and loads the commit script. Null when the
    /// configuration is one this connection does not serve (TLS, a cluster, a sentinel, or one endpoint that is a
    /// replica): StackExchange.Redis carries the commits then. With several endpoints (a primary and its
    /// replicas), it goes to the one StackExchange.Redis sees as the primary; after a failover this connection
    /// breaks (or is told READONLY) and the next one goes to the new primary. With Sentinel
    /// (<paramref name="followsSentinel"/>) the one endpoint is the primary Sentinel named, and if it answers as a
    /// replica, that is a failover under way, not a configuration: the caller tries again later.
    /// </summary>
    public static async Task<CommitConnection?> OpenAsync(
        ConfigurationOptions config, ConnectionMultiplexer redis, TimeSpan timeout, ReplicaWait wait, bool followsSentinel, Action<Exception> onCallbackError)
    {
        if (config.Ssl)
        {
            return null;
        }

        var servers = config.EndPoints.Select(e => redis.GetServer(e)).ToList();
        if (servers.Any(s => s.IsConnected && s.ServerType != ServerType.Standalone) || servers is [{ IsConnected: true, IsSlave: true }] && !followsSentinel)
        {
            return null;
        }

        var server = servers.FirstOrDefault(s => s.IsConnected && !s.IsSlave);
        if (server is null && (servers.Count > 1 || followsSentinel))
        {
            // After a failover StackExchange.Redis goes on calling the promoted replica a replica until its next
            // periodic check (60 s by default; still so after 30 s in a test): ask it to look at every role now.
            await redis.ConfigureAsync().ConfigureAwait(false);
            server = servers.FirstOrDefault(s => s.IsConnected && !s.IsSlave);
        }

        // Not connected yet, or a failover under way: what to connect to cannot be known now, and the caller tries
        // again later (at most once a second).
        if (server is null)
        {
            throw new InvalidOperationException($"No Redis primary is connected among {string.Join(", ", config.EndPoints)}.");
        }

        var endpoint = server.EndPoint;
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true, SendTimeout = (int)timeout.TotalMilliseconds };
        try
        {
            using (var connect = new CancellationTokenSource(timeout))
            {
                await (endpoint switch
                {
                    DnsEndPoint dns => socket.ConnectAsync(dns.Host, dns.Port, connect.Token),
                    _ => socket.ConnectAsync(endpoint, connect.Token),
                }).ConfigureAwait(false);
            }

            // The handshake is read before the reader thread starts, with a receive timeout as its deadline.
            socket.ReceiveTimeout = (int)timeout.TotalMilliseconds;
            var handshake = new RespReader(socket);
            if (!string.IsNullOrEmpty(config.Password))
            {
                Expect(socket, handshake, "AUTH", config.Password);
            }

            if (config.DefaultDatabase is { } db and not 0)
            {
                Expect(socket, handshake, "SELECT", db.ToString(System.Globalization.CultureInfo.InvariantCulture));
            }

            var sha = Expect(socket, handshake, "SCRIPT", "LOAD", Scripts.Commit) as byte[]
                ?? throw new InvalidDataException("SCRIPT LOAD answered no SHA.");
            var connection = new CommitConnection(socket, Encoding.ASCII.GetString(sha), timeout, wait, onCallbackError);
            connection._reader.Adopt(handshake);
            // The reader wakes up every so often to time out a reply that does not come.
            socket.ReceiveTimeout = (int)Math.Clamp(timeout.TotalMilliseconds / 4, 50, 1000);
            connection._thread.Start();
            return connection;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Sends one commit (EVALSHA) for the workflow whose meta key is <paramref name="key"/>. False when the
    /// connection is broken (nothing was sent). <paramref name="onReply"/> runs on the reader thread, in send order,
    /// with the reply or the failure. When replicas are waited for, a WAIT follows the script in the same write, so
    /// it covers this commit, and the reply carries how many replicas acknowledged it.
    /// </summary>
    public bool TrySend(RedisKey key, RedisValue[] args, Action<CommitReply, Exception?> onReply)
    {
        lock (_writeLock)
        {
            if (_broken)
            {
                return false;
            }

            _out.ResetWrittenCount();
            ArrayHeader(_out, 3 + 1 + args.Length);
            Bulk(_out, "EVALSHA"u8);
            Bulk(_out, _sha);
            Bulk(_out, "1"u8);
            Bulk(_out, (byte[])key!);
            foreach (var arg in args)
            {
                Bulk(_out, (byte[])arg!);
            }

            if (_waitCommand is not null)
            {
                _out.Write(_waitCommand);
            }

            try
            {
                var written = _out.WrittenSpan;
                while (written.Length > 0)
                {
                    written = written[_socket.Send(written)..];
                }
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                // Part of the command may have gone out: its outcome is unknown, as for any lost reply.
                _pending.Enqueue((onReply, Stopwatch.GetTimestamp()));
                BreakLocked();
                return true;
            }

            _pending.Enqueue((onReply, Stopwatch.GetTimestamp()));
            return true;
        }
    }

    public void Dispose()
    {
        Fail(new BoardException(BoardError.StoreUnavailable, "Redis is unavailable: the commit connection was closed."));
    }

    private void ReadLoop()
    {
        while (true)
        {
            object? value, replicas = null;
            try
            {
                value = _reader.ReadValue();
                // Read before the command leaves the queue, so a WAIT that never ends still times out.
                if (_waitCommand is not null)
                {
                    replicas = _reader.ReadValue();
                }
            }
            catch (SocketException ex) when (ex.SocketErrorCode == SocketError.TimedOut)
            {
                Fail(new BoardException(BoardError.StoreUnavailable, "Redis is unavailable: no reply to a commit within the command timeout."));
                return;
            }
            catch (Exception ex)
            {
                Fail(new BoardException(BoardError.StoreUnavailable, "Redis is unavailable: " + ex.Message, inner: ex));
                return;
            }

            Action<CommitReply, Exception?> onReply;
            lock (_writeLock)
            {
                if (!_pending.TryDequeue(out var pending))
                {
                    // A reply nobody asked for: the stream is out of step, and no later reply can be trusted.
                    BreakLocked();
                    continue;
                }

                onReply = pending.OnReply;
            }

            if (value is RespError error)
            {
                if (error.Message.StartsWith("NOSCRIPT", StringComparison.Ordinal) || error.Message.StartsWith("READONLY", StringComparison.Ordinal))
                {
                    // The script cache was flushed, or this server is a replica now (a failover): this connection is
                    // done; a new one loads the script again, on the server that is the primary then.
                    Break();
                }

                Deliver(onReply, default, ErrorReply(error.Message));
                continue;
            }

            if (replicas is RespError waitError)
            {
                Deliver(onReply, default, ErrorReply(waitError.Message));
                continue;
            }

            CommitReply reply;
            try
            {
                reply = CommitReply.From(value);
                if (replicas is not null)
                {
                    reply = reply with
                    {
                        Replicas = replicas as long? ?? throw new InvalidDataException("WAIT answered something other than a number: " + replicas),
                    };
                }
            }
            catch (Exception ex)
            {
                Deliver(onReply, default, ex);
                continue;
            }

            Deliver(onReply, reply, null);
        }
    }

    private bool OldestOverdue()
    {
        lock (_writeLock)
        {
            return _pending.TryPeek(out var oldest) && Stopwatch.GetTimestamp() - oldest.SentAt > _timeoutTicks;
        }
    }

    private void Break()
    {
        lock (_writeLock)
        {
            BreakLocked();
        }
    }

    private void BreakLocked()
    {
        _broken = true;
        // Wakes the reader (its receive fails), which then fails what is pending.
        _socket.Dispose();
    }

    /// <summary>Fails every command still waiting for a reply, in send order, and closes the connection.</summary>
    private void Fail(Exception error)
    {
        List<Action<CommitReply, Exception?>> failed;
        lock (_writeLock)
        {
            BreakLocked();
            failed = _pending.Select(p => p.OnReply).ToList();
            _pending.Clear();
        }

        foreach (var onReply in failed)
        {
            Deliver(onReply, default, error);
        }
    }

    /// <summary>A callback that throws must not end the reader thread (and with it the process).</summary>
    private void Deliver(Action<CommitReply, Exception?> onReply, CommitReply reply, Exception? error)
    {
        try
        {
            onReply(reply, error);
        }
        catch (Exception ex)
        {
            _onCallbackError(ex);
        }
    }

    /// <summary>An error reply; RedisStore maps it as StackExchange.Redis's (the transient ones are UNAVAILABLE).</summary>
    private static Exception ErrorReply(string message) => new RedisErrorReplyException(message);

    /// <summary>Sends one command on a blocking socket and reads its reply; an error reply throws.</summary>
    internal static object? Expect(Socket socket, RespReader reader, params string[] command)
    {
        var buffer = new ArrayBufferWriter<byte>();
        ArrayHeader(buffer, command.Length);
        foreach (var part in command)
        {
            Bulk(buffer, Encoding.UTF8.GetBytes(part));
        }

        socket.Send(buffer.WrittenSpan);
        var reply = reader.ReadValue();
        return reply is RespError error ? throw new InvalidOperationException($"Redis refused {command[0]}: {error.Message}") : reply;
    }

    private static void ArrayHeader(ArrayBufferWriter<byte> w, int count)
    {
        w.Write("*"u8);
        Number(w, count);
        w.Write("\r\n"u8);
    }

    private static void Bulk(ArrayBufferWriter<byte> w, ReadOnlySpan<byte> value)
    {
        w.Write("$"u8);
        Number(w, value.Length);
        w.Write("\r\n"u8);
        w.Write(value);
        w.Write("\r\n"u8);
    }

    private static void Number(ArrayBufferWriter<byte> w, long value)
    {
        var span = w.GetSpan(20);
        Utf8Formatter.TryFormat(value, span, out var written);
        w.Advance(written);
    }
}
