using System.Buffers;
using System.Diagnostics;
using System.Net.Sockets;
using GrpcBoard.Core;
using StackExchange.Redis;

namespace GrpcBoard.Store.Redis;

/// <summary>An error reply to a command of the direct commit connection (StackExchange.Redis's own exception cannot be created outside it).</summary>
/// <param name="toWait">The reply was WAIT's, after a script that ran: its error says nothing of whether the script ran.</param>
internal sealed class RedisErrorReplyException(string message, bool toWait = false) : Exception(message)
{
    public bool ToWait { get; } = toWait;
}

/// <summary>
/// Why a command was never written: there was no connection to send it on. It cannot have run, so its batch is undone
/// like one Redis refused before running it (<see cref="RedisStore.RefusedBeforeRunning"/>), and the replica is kept.
/// </summary>
internal sealed class NotSentException(string message) : Exception(message)
{
    /// <summary>UNAVAILABLE for the callers, with why nothing was sent inside.</summary>
    public static BoardException Unavailable(string why) =>
        new(BoardError.StoreUnavailable, "Redis is unavailable: " + why, inner: new NotSentException(why));
}

/// <summary>
/// A connection of its own for the commit script, to a standalone Redis, with a dedicated thread that reads each
/// reply and hands it straight to its replica.
///
/// Why: the commit pipeline of a workflow is latency-bound (one batch in flight on one host), so every
/// microsecond between Redis's reply and the next batch is throughput lost. Through StackExchange.Redis every reply
/// reached the replica on a thread-pool thread, queued behind the gRPC work, and on a loaded 2-core machine Redis
/// waited for the next batch for a quarter of its time (bench/GrpcBoard.Bench/JOURNAL.md).
///
/// Commands are pipelined in the order they are written, under one lock, so the batches of a workflow reach Redis
/// in send order, and replies come back in that order (RESP). One goes to a standalone primary; on a cluster, one
/// to each master that owns a workflow's slot (<see cref="ClusterLinks"/>). While none is open (a connection that
/// broke, one still opening), commits go through StackExchange.Redis instead: the commit script is conditional on the
/// workflow's last batch, so which connection carries a batch never matters for correctness. It also carries the
/// log reads that replicas are waited for on a cluster, since their WAIT must reach the same node.
///
/// The reader blocks until data comes; a watchdog timer breaks the connection when the oldest reply is overdue.
/// (A receive timeout on the reader would do on TCP, but a TLS read that timed out cannot be resumed.)
/// </summary>
internal sealed class CommitConnection : IDisposable
{
    private readonly RespLink _link;
    private readonly byte[] _commitSha;
    private readonly byte[] _readLogSha;
    private readonly byte[] _readMetaSha;
    private readonly long _timeoutTicks;
    private readonly object _writeLock = new();
    private readonly Queue<(Action<object?, long?, Exception?> OnReply, long SentAt)> _pending = new();
    private readonly ArrayBufferWriter<byte> _out = new(64 * 1024);
    private readonly Thread _thread;
    private readonly Timer _watchdog;
    private readonly TimeSpan _watchPeriod;
    private readonly Action<Exception> _onCallbackError;

    /// <summary>
    /// Told of each MOVED reply (its text), before the command's caller hears of it; false when it could not follow it
    /// (a reply without a host, say). Null outside a cluster.
    /// </summary>
    private readonly Func<string, bool>? _onMoved;

    /// <summary>WAIT, sent after every commit when replicas are waited for (<see cref="RedisStoreOptions.ReplicasToWaitFor"/>); else null.</summary>
    private readonly byte[]? _waitCommand;
    private volatile bool _broken;

    /// <summary>Broken by an answer that makes this connection useless for what comes next, with the link still good: see <see cref="StopSending"/>.</summary>
    private bool _stopped;

    /// <summary>Broken: nothing more can be sent on it (a new one is needed).</summary>
    public bool IsBroken => _broken;

    private CommitConnection(RespLink link, byte[] commitSha, byte[] readLogSha, byte[] readMetaSha, TimeSpan timeout, ReplicaWait wait, Action<Exception> onCallbackError, Func<string, bool>? onMoved)
    {
        _onCallbackError = onCallbackError;
        _onMoved = onMoved;
        if (wait.Replicas > 0)
        {
            var command = new ArrayBufferWriter<byte>();
            RespLink.ArrayHeader(command, 3);
            RespLink.Bulk(command, "WAIT"u8);
            RespLink.Bulk(command, wait.Replicas);
            RespLink.Bulk(command, wait.TimeoutMs);
            _waitCommand = command.WrittenSpan.ToArray();
        }
        _link = link;
        _commitSha = commitSha;
        _readLogSha = readLogSha;
        _readMetaSha = readMetaSha;
        _timeoutTicks = (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        _thread = new Thread(ReadLoop) { IsBackground = true, Name = "GrpcBoard Redis commits" };
        _watchPeriod = TimeSpan.FromMilliseconds(Math.Clamp(timeout.TotalMilliseconds / 4, 50, 1000));
        _watchdog = new Timer(static state => ((CommitConnection)state!).FailIfOverdue(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    /// <summary>
    /// Connects to the primary (over TLS with <paramref name="tls"/>), authenticates, selects the database and loads
    /// the commit script. Null when the configuration is one this connection does not serve (a cluster, or one
    /// endpoint that is a replica): StackExchange.Redis carries the commits then. With several endpoints (a primary and its
    /// replicas), it goes to the one StackExchange.Redis sees as the primary; after a failover this connection
    /// breaks (or is told READONLY) and the next one goes to the new primary. With Sentinel
    /// (<paramref name="followsSentinel"/>) the one endpoint is the primary Sentinel named, and if it answers as a
    /// replica, that is a failover under way, not a configuration: the caller tries again later.
    /// </summary>
    public static async Task<CommitConnection?> OpenAsync(
        ConfigurationOptions config, RedisTls? tls, ConnectionMultiplexer redis, TimeSpan timeout, ReplicaWait wait, bool followsSentinel, Action<Exception> onCallbackError)
    {
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
            // Bounded: StackExchange.Redis 1.2.6 does not time its asynchronous calls out (RedisStore.Bounded).
            await redis.ConfigureAsync().WaitAsync(timeout).ConfigureAwait(false);
            server = servers.FirstOrDefault(s => s.IsConnected && !s.IsSlave);
        }

        // Not connected yet, or a failover under way: what to connect to cannot be known now, and the caller tries
        // again later (at most once a second).
        if (server is null)
        {
            throw new InvalidOperationException($"No Redis primary is connected among {string.Join(", ", config.EndPoints)}.");
        }

        return await OpenToAsync(server.EndPoint, config, tls, timeout, wait, onCallbackError).ConfigureAwait(false);
    }

    /// <summary>
    /// Connects to <paramref name="endpoint"/> (a standalone primary, or the cluster node that owns the slots it will be
    /// sent for), authenticates, selects the database and loads the scripts it sends. <paramref name="onMoved"/> is told of
    /// each MOVED reply, which names the slot's new master, before the command's caller hears of it; when it answers false
    /// (not followed), the connection takes no more commands, as after NOSCRIPT.
    /// </summary>
    public static async Task<CommitConnection> OpenToAsync(
        System.Net.EndPoint endpoint, ConfigurationOptions config, RedisTls? tls, TimeSpan timeout, ReplicaWait wait, Action<Exception> onCallbackError, Func<string, bool>? onMoved = null)
    {
        var link = await RespLink.OpenAsync(endpoint, tls, timeout, default).ConfigureAwait(false);
        try
        {
            // The handshake is read before the reader thread starts, with the link's timeout as its deadline.
            if (!string.IsNullOrEmpty(config.Password))
            {
                link.Call("AUTH", config.Password);
            }

            if (config.DefaultDatabase is { } db and not 0)
            {
                link.Call("SELECT", db.ToString(System.Globalization.CultureInfo.InvariantCulture));
            }

            var commitSha = link.Call("SCRIPT", "LOAD", Scripts.Commit) as byte[] ?? throw new InvalidDataException("SCRIPT LOAD answered no SHA.");
            var readLogSha = link.Call("SCRIPT", "LOAD", Scripts.ReadLog) as byte[] ?? throw new InvalidDataException("SCRIPT LOAD answered no SHA.");
            var readMetaSha = link.Call("SCRIPT", "LOAD", Scripts.ReadMeta) as byte[] ?? throw new InvalidDataException("SCRIPT LOAD answered no SHA.");
            var connection = new CommitConnection(link, commitSha, readLogSha, readMetaSha, timeout, wait, onCallbackError, onMoved);
            link.WaitWithoutTimeout();
            connection._thread.Start();
            connection._watchdog.Change(connection._watchPeriod, connection._watchPeriod);
            return connection;
        }
        catch
        {
            link.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Sends one commit (EVALSHA) for the workflow whose script keys are <paramref name="keys"/> (meta key first). False when the
    /// connection is broken (nothing was sent). <paramref name="onReply"/> runs on the reader thread, in send order,
    /// with the reply or the failure. When replicas are waited for, a WAIT follows the script in the same write, so
    /// it covers this commit, and the reply carries how many replicas acknowledged it.
    /// </summary>
    public bool TrySend(RedisKey[] keys, RedisValue[] args, Action<CommitReply, Exception?> onReply) =>
        TrySend(_commitSha, keys, args, (value, replicas, error) =>
        {
            if (error is not null)
            {
                onReply(default, error);
                return;
            }

            CommitReply reply;
            try
            {
                reply = CommitReply.From(value);
            }
            catch (Exception ex)
            {
                onReply(default, ex);
                return;
            }

            onReply(replicas is { } acknowledged ? reply with { Replicas = acknowledged } : reply, null);
        });

    /// <summary>A commit whose caller waits for it (<see cref="TrySend(RedisKey[], RedisValue[], Action{CommitReply, Exception?})"/>); UNAVAILABLE when the connection is broken.</summary>
    public Task<CommitReply> CommitAsync(RedisKey[] keys, RedisValue[] args)
    {
        var done = new TaskCompletionSource<CommitReply>(TaskCreationOptions.RunContinuationsAsynchronously);
        return TrySend(keys, args, (reply, error) => Complete(done, reply, error)) ? done.Task : Task.FromException<CommitReply>(Broken());
    }

    /// <summary>
    /// Sends a read script (<see cref="Scripts.ReadLog"/> or <see cref="Scripts.ReadMeta"/>, loaded when the connection
    /// opened), followed by WAIT when replicas are waited for; returns the script's reply as read (see
    /// <see cref="RespReader"/>) and WAIT's count. UNAVAILABLE when the connection is broken.
    /// </summary>
    public Task<(object? Value, long? Replicas)> ReadAsync(string script, RedisKey[] keys, RedisValue[] args)
    {
        // The scripts are constants, so each is one interned string: comparing references picks its SHA without comparing text.
        var sha = ReferenceEquals(script, Scripts.ReadLog) ? _readLogSha
            : ReferenceEquals(script, Scripts.ReadMeta) ? _readMetaSha
            : throw new ArgumentException("Not a read script this connection loaded.", nameof(script));
        var done = new TaskCompletionSource<(object?, long?)>(TaskCreationOptions.RunContinuationsAsynchronously);
        return TrySend(sha, keys, args, (value, replicas, error) => Complete(done, (value, replicas), error)) ? done.Task : Task.FromException<(object?, long?)>(Broken());
    }

    private static void Complete<T>(TaskCompletionSource<T> done, T result, Exception? error)
    {
        if (error is null)
        {
            done.TrySetResult(result);
        }
        else
        {
            done.TrySetException(error);
        }
    }

    private static BoardException Broken() => NotSentException.Unavailable("the direct connection broke.");

    private bool TrySend(byte[] sha, RedisKey[] keys, RedisValue[] args, Action<object?, long?, Exception?> onReply)
    {
        lock (_writeLock)
        {
            if (_broken)
            {
                return false;
            }

            _out.ResetWrittenCount();
            RespLink.ArrayHeader(_out, 3 + keys.Length + args.Length);
            RespLink.Bulk(_out, "EVALSHA"u8);
            RespLink.Bulk(_out, sha);
            RespLink.Bulk(_out, keys.Length);
            foreach (var key in keys)
            {
                RespLink.Bulk(_out, (byte[])key!);
            }

            foreach (var arg in args)
            {
                RespLink.Bulk(_out, (byte[])arg!);
            }

            if (_waitCommand is not null)
            {
                _out.Write(_waitCommand);
            }

            try
            {
                _link.Stream.Write(_out.WrittenSpan);
            }
            catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
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

    /// <summary>WAIT's error reply on a replica.</summary>
    internal const string WaitOnReplica = "ERR WAIT cannot be used with replica instances";

    private void ReadLoop()
    {
        while (true)
        {
            object? value, replicas = null;
            try
            {
                value = _link.Reader.ReadValue();
                // Read before the command leaves the queue, so a WAIT that never ends still times out.
                if (_waitCommand is not null)
                {
                    replicas = _link.Reader.ReadValue();
                }
            }
            catch (Exception ex)
            {
                // After the watchdog's Fail (the read failed because it closed the socket), this fails nothing more.
                Fail(new BoardException(BoardError.StoreUnavailable, "Redis is unavailable: " + ex.Message, inner: ex));
                _watchdog.Dispose();
                _link.Dispose();
                return;
            }

            Action<object?, long?, Exception?> onReply;
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
                    // The script cache was flushed, or this server is a replica now (a failover): nothing more is sent
                    // here, and a new connection loads the scripts again, on the primary then. The commands already
                    // sent are answered one by one (each refused the same way, or run), so they are read, not failed
                    // unanswered: an unanswered commit counts as lost, and its replica is loaded again.
                    StopSending();
                }
                else if (error.Message.StartsWith("MOVED", StringComparison.Ordinal) && !Notify(error.Message))
                {
                    // Not followed: the slot's next commits go through StackExchange.Redis, which follows MOVED itself,
                    // until a new connection is open where its view says.
                    StopSending();
                }

                Deliver(onReply, null, null, ErrorReply(error.Message));
            }
            else if (replicas is RespError waitError)
            {
                if (waitError.Message.StartsWith(WaitOnReplica, StringComparison.Ordinal))
                {
                    // This server is a replica now, as READONLY says for a write. Without this, a connection opened on a
                    // primary that Redis's own FAILOVER then turned into a replica was kept for as long as only reads were
                    // sent (a replica loading its workflow, again and again): each refused, UNAVAILABLE, for a minute, in a
                    // run of the switchover test in .ci/run.
                    StopSending();
                }

                Deliver(onReply, null, null, new RedisErrorReplyException(waitError.Message, toWait: true));
            }
            else if (replicas is not (null or long))
            {
                Deliver(onReply, null, null, new InvalidDataException("WAIT answered something other than a number: " + replicas));
            }
            else
            {
                Deliver(onReply, value, replicas as long?, null);
            }

            if (AnsweredAfterStopping())
            {
                _watchdog.Dispose();
                _link.Dispose();
                return;
            }
        }
    }

    /// <summary>Takes no more commands; the reader closes the connection once what was sent is answered.</summary>
    private void StopSending()
    {
        lock (_writeLock)
        {
            _stopped = true;
            _broken = true;
        }
    }

    /// <summary>
    /// Takes no more commands and closes once what was sent is answered, at once if nothing is: the node stopped being
    /// a master (<see cref="ClusterLinks"/>), and the connection and its reader thread would otherwise stay, idle, for
    /// as long as the store runs.
    /// </summary>
    public void Retire()
    {
        lock (_writeLock)
        {
            _stopped = true;
            _broken = true;
            if (_pending.Count == 0)
            {
                // Wakes the reader, whose failed receive then fails nothing (nothing is pending) and closes the link.
                _link.Abort();
            }
        }
    }

    /// <summary>Sending has stopped and every command sent has its reply: the reader is done.</summary>
    private bool AnsweredAfterStopping()
    {
        lock (_writeLock)
        {
            return _stopped && _pending.Count == 0;
        }
    }

    private void FailIfOverdue()
    {
        bool overdue;
        lock (_writeLock)
        {
            overdue = _pending.TryPeek(out var oldest) && Stopwatch.GetTimestamp() - oldest.SentAt > _timeoutTicks;
        }

        if (overdue)
        {
            Fail(new BoardException(BoardError.StoreUnavailable, "Redis is unavailable: no reply to a commit within the command timeout."));
        }
    }

    private void BreakLocked()
    {
        _broken = true;
        // Wakes the reader (its receive fails), which then fails what is pending and disposes the link.
        _link.Abort();
    }

    /// <summary>Fails every command still waiting for a reply, in send order, and closes the connection.</summary>
    private void Fail(Exception error)
    {
        List<Action<object?, long?, Exception?>> failed;
        lock (_writeLock)
        {
            BreakLocked();
            failed = _pending.Select(p => p.OnReply).ToList();
            _pending.Clear();
        }

        foreach (var onReply in failed)
        {
            Deliver(onReply, null, null, error);
        }
    }

    /// <summary>
    /// Tells <see cref="_onMoved"/> of a MOVED reply, before the command's caller hears of it: its next call then goes to
    /// the master the reply names. The connection stays, as the node still owns its other slots, and what is pipelined
    /// behind gets its own reply; breaking it made those count as lost (their replicas loaded again), and left every
    /// workflow of the node without its connection until a new one was open. Like a reply callback, this must not end
    /// the reader thread. False when the reply was not followed, or there is nobody to tell.
    /// </summary>
    private bool Notify(string reply)
    {
        if (_onMoved is null)
        {
            return false;
        }

        try
        {
            return _onMoved(reply);
        }
        catch (Exception ex)
        {
            _onCallbackError(ex);
            return false;
        }
    }

    /// <summary>A callback that throws must not end the reader thread (and with it the process).</summary>
    private void Deliver(Action<object?, long?, Exception?> onReply, object? value, long? replicas, Exception? error)
    {
        try
        {
            onReply(value, replicas, error);
        }
        catch (Exception ex)
        {
            _onCallbackError(ex);
        }
    }

    /// <summary>An error reply; RedisStore maps it as StackExchange.Redis's (the transient ones are UNAVAILABLE).</summary>
    private static Exception ErrorReply(string message) => new RedisErrorReplyException(message);
}
