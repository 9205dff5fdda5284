using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using GrpcBoard.Core;
using StackExchange.Redis;

namespace GrpcBoard.Store.Redis;

/// <summary>
/// With a Redis Cluster: a direct connection (<see cref="CommitConnection"/>) to each master that owns a workflow's
/// slot, opened on first use, and again after it broke (at most once a second per node).
///
/// Why: WAIT counts the replicas of the node it is sent to, so it must follow its script to the slot's owner, and
/// StackExchange.Redis 1.2.6 sends a command without a key to any node. The commits get the direct connection's
/// shorter path too. Which node owns a slot is StackExchange.Redis's view; after a failover or a resharding a node
/// answers MOVED, and StackExchange.Redis is asked to read the cluster's slots again (the connection stays, for the
/// node's other slots: <see cref="CommitConnection"/>). Until its
/// view agrees, the slot goes to the master the MOVED reply named: StackExchange.Redis reads the slots again at most once
/// a second, and a store that reaches a slot only through these connections (replicas waited for) failed every call on
/// it until then (66 ms and 1,766 ms in two runs of the resharding test).
/// </summary>
/// <param name="open">Opens a connection to a master; the callback it is given is to be told of each MOVED reply there, and answers whether it followed it.</param>
internal sealed class ClusterLinks(Func<ConnectionMultiplexer> redis, Func<EndPoint, Func<string, bool>, Task<CommitConnection>> open, TimeSpan timeout) : IDisposable
{
    private readonly ConcurrentDictionary<EndPoint, Entry> _links = new();

    /// <summary>Slots a MOVED reply gave to another master, with that master: kept until StackExchange.Redis's view agrees, or its connection fails.</summary>
    private readonly ConcurrentDictionary<int, EndPoint> _moved = new();
    private long _refreshedAtMs = long.MinValue / 2;
    private long _sweptAtMs = long.MinValue / 2;
    private volatile bool _disposed;

    private sealed class Entry
    {
        public Entry(Task<CommitConnection> opening, long startedAtMs)
        {
            Opening = opening;
            StartedAtMs = startedAtMs;
            // A failed opening is reported to whoever waits on it, and tried again later: never an unobserved exception.
            opening.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
        }

        public Task<CommitConnection> Opening { get; }

        public long StartedAtMs { get; }
    }

    /// <summary>The open connection to the owner of <paramref name="key"/>'s slot, or null: it is being opened, or the owner is unknown.</summary>
    public CommitConnection? TryGet(RedisKey key)
    {
        var entry = EntryFor(key);
        return entry is { Opening.IsCompletedSuccessfully: true } && entry.Opening.Result is { IsBroken: false } link ? link : null;
    }

    /// <summary>The connection to the owner of <paramref name="key"/>'s slot, once open; UNAVAILABLE when there is none.</summary>
    public async Task<CommitConnection> GetAsync(RedisKey key)
    {
        // Each failure here comes before anything is sent (NotSentException): the batch did not run, so it is undone and
        // its replica kept, where a lost reply would have the workflow loaded again.
        var entry = EntryFor(key) ?? throw NotSentException.Unavailable("no master of the cluster is known to own the slot (a failover under way?).");
        CommitConnection link;
        try
        {
            link = await entry.Opening.WaitAsync(timeout).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not BoardException)
        {
            throw NotSentException.Unavailable("no connection to the slot's node: " + ex.Message);
        }

        return link.IsBroken ? throw NotSentException.Unavailable("the connection to the slot's node broke.") : link;
    }

    /// <summary>The nodes this has a direct connection to, or is opening one to (for tests).</summary>
    internal IReadOnlyCollection<EndPoint> Linked => [.. _links.Keys];

    private Entry? EntryFor(RedisKey key)
    {
        RetireDemoted();
        if (_disposed || OwnerOf(key, out var slot) is not { } owner)
        {
            Refresh();
            return null;
        }

        var now = Environment.TickCount64;
        var entry = _links.GetOrAdd(owner, static (endpoint, self) => new Entry(self.OpenAsync(endpoint), Environment.TickCount64), this);
        var failed = entry.Opening.IsFaulted || entry.Opening.IsCanceled || entry.Opening is { IsCompletedSuccessfully: true, Result.IsBroken: true };
        if (failed && _moved.TryGetValue(slot, out var named) && named.Equals(owner))
        {
            // The master a MOVED reply named cannot be reached (it failed over since, say): back to StackExchange.Redis's view.
            _moved.TryRemove(new KeyValuePair<int, EndPoint>(slot, named));
        }

        if (failed && now - entry.StartedAtMs >= 1000)
        {
            Refresh();
            var next = new Entry(OpenAsync(owner), now);
            if (_links.TryUpdate(owner, next, entry))
            {
                entry = next;
            }
            else
            {
                next.Opening.ContinueWith(static t => t.Result.Dispose(), CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
                entry = _links.TryGetValue(owner, out var current) ? current : entry;
            }
        }

        return entry;
    }

    private async Task<CommitConnection> OpenAsync(EndPoint endpoint)
    {
        var link = await open(endpoint, OnMoved).ConfigureAwait(false);
        if (_disposed)
        {
            link.Dispose();
            throw new ObjectDisposedException(nameof(ClusterLinks));
        }

        return link;
    }

    /// <summary>
    /// The master that owns <paramref name="key"/>'s slot: the one a MOVED reply named, until StackExchange.Redis's view
    /// of the cluster's slots agrees; else that view. Null when unknown.
    /// </summary>
    private EndPoint? OwnerOf(RedisKey key, out int slot)
    {
        var multiplexer = redis();
        slot = multiplexer.HashSlot(key);
        EndPoint? viewed = null;
        foreach (var endpoint in multiplexer.GetEndPoints())
        {
            var server = multiplexer.GetServer(endpoint);
            if (server.IsConnected && server.ClusterConfiguration?.GetBySlot(slot) is { IsSlave: false } node)
            {
                viewed = node.EndPoint;
                break;
            }
        }

        if (_moved.TryGetValue(slot, out var named))
        {
            if (!named.Equals(viewed))
            {
                return named;
            }

            _moved.TryRemove(new KeyValuePair<int, EndPoint>(slot, named));
        }

        return viewed;
    }

    /// <summary>
    /// A node answered "MOVED slot host:port": the slot is that master's now. An empty host means the node's own host,
    /// which is left to StackExchange.Redis's view; so is a reply this cannot read. False for those: not followed.
    /// </summary>
    private bool OnMoved(string reply)
    {
        Refresh();
        var parts = reply.Split(' ');
        if (parts.Length < 3 || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var slot))
        {
            return false;
        }

        var colon = parts[2].LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(parts[2].AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port))
        {
            return false;
        }

        var host = parts[2][..colon];
        _moved[slot] = IPAddress.TryParse(host, out var address) ? new IPEndPoint(address, port) : new DnsEndPoint(host, port);
        return true;
    }

    /// <summary>
    /// Closes, at most once a second, the connections to nodes that StackExchange.Redis now sees as replicas: a master
    /// demoted by a failover owns no slot, so nothing would be sent on its connection again, yet it and its reader
    /// thread would stay for as long as the store runs, one more with every failover. A node a MOVED reply named
    /// since is left alone (the view may be the stale one); commits already on the way are answered first.
    /// </summary>
    private void RetireDemoted()
    {
        var now = Environment.TickCount64;
        var last = Interlocked.Read(ref _sweptAtMs);
        if (_links.IsEmpty || now - last < 1000 || Interlocked.CompareExchange(ref _sweptAtMs, now, last) != last)
        {
            return;
        }

        var multiplexer = redis();
        foreach (var endpoint in multiplexer.GetEndPoints())
        {
            if (!_links.TryGetValue(endpoint, out var entry) || _moved.Values.Contains(endpoint))
            {
                continue;
            }

            var server = multiplexer.GetServer(endpoint);
            if (server.IsConnected && server.IsSlave && _links.TryRemove(new KeyValuePair<EndPoint, Entry>(endpoint, entry)))
            {
                entry.Opening.ContinueWith(static t => t.Result.Retire(), CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
            }
        }
    }

    /// <summary>Asks StackExchange.Redis to read the cluster's slots again, at most once a second.</summary>
    private void Refresh()
    {
        var now = Environment.TickCount64;
        var last = Interlocked.Read(ref _refreshedAtMs);
        if (now - last >= 1000 && Interlocked.CompareExchange(ref _refreshedAtMs, now, last) == last)
        {
            _ = redis().ConfigureAsync().ContinueWith(static t => _ = t.Exception, TaskScheduler.Default);
        }
    }

    public void Dispose()
    {
        _disposed = true;
        foreach (var entry in _links.Values)
        {
            entry.Opening.ContinueWith(static t => t.Result.Dispose(), CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
        }
    }
}
