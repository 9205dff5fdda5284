using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using GrpcBoard.Core;
using GrpcBoard.Core.Events;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Storage;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using StackExchange.Redis;

namespace GrpcBoard.Store.Redis;

/// <summary>
/// The store for many server instances on many hosts: everything in Redis (or Redis Cluster), nothing
/// authoritative in the instance. A transaction reads what it needs, runs the body (the C# rules), and
/// commits with one Lua script that checks every record it read is unchanged (by mod revision), assigns
/// revisions, writes records and index entries, appends the events to the workflow's stream (entry id =
/// revision) and publishes them. A lost race re-runs the body on fresh reads (optimistic concurrency),
/// so two instances can never both claim a task: the second commit fails its check and, re-run, sees the
/// claim.
///
/// Guarding against a Redis that lost data (restarted without persistence, or a failed-over node behind
/// on writes): an epoch key written once and checked every second, a per-instance watermark of the head
/// revision seen per workflow, and a registry of every workflow id ever created. If any of them shows
/// state going backwards, the store refuses every call with DATA_LOSS instead of reusing revisions and
/// fencing tokens.
/// </summary>
public sealed class RedisStore : IBoardStore
{
    /// <summary>How long a reservation of a ready task lasts if its claimer vanishes before committing.</summary>
    private static readonly TimeSpan ReservationExpiry = TimeSpan.FromSeconds(10);

    private readonly RedisStoreOptions _options;
    private readonly EventHub _hub;
    private readonly ILogger _logger;
    private readonly ConnectionMultiplexer _redis;
    private readonly IDatabase _db;
    private readonly RedisKeys _keys;
    private readonly ConcurrentDictionary<string, long> _headWatermarks = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stopping = new();
    private readonly Task _background;
    private string? _epoch;
    private volatile string? _dataLoss;

    private RedisStore(RedisStoreOptions options, EventHub hub, ConnectionMultiplexer redis, ILogger logger)
    {
        _options = options;
        _hub = hub;
        _logger = logger;
        _redis = redis;
        _db = redis.GetDatabase();
        _keys = new RedisKeys(options.KeyPrefix);
        _background = Task.Run(() => BackgroundAsync(_stopping.Token));
    }

    /// <summary>Connects, subscribes to change notifications and establishes the store epoch.</summary>
    public static async Task<RedisStore> ConnectAsync(RedisStoreOptions options, EventHub hub, ILogger? logger = null)
    {
        options.Validate();
        var config = ConfigurationOptions.Parse(options.Configuration);
        config.AbortOnConnectFail = false;
        config.SyncTimeout = options.CommandTimeoutMilliseconds;
        config.ConnectTimeout = Math.Max(config.ConnectTimeout, 5000);
        config.ConnectRetry = Math.Max(config.ConnectRetry, 3);
        var redis = await ConnectionMultiplexer.ConnectAsync(config);
        var store = new RedisStore(options, hub, redis, logger ?? NullLogger.Instance);
        await store.SubscribeAsync();
        await store.CheckEpochAsync();
        store.CheckEpochFile();
        return store;
    }

    /// <summary>Why the store refuses calls with DATA_LOSS, or null.</summary>
    public string? DataLoss => _dataLoss;

    public Task<TxnResult<T>> ExecuteAsync<T>(string workflowId, Func<IWorkflowTransaction, ValueTask<T>> body, CancellationToken cancellationToken) =>
        ExecuteAsync(workflowId, NoReadAhead, body, cancellationToken);

    private static readonly ReadAhead NoReadAhead = new();

    public async Task<TxnResult<T>> ExecuteAsync<T>(string workflowId, ReadAhead readAhead, Func<IWorkflowTransaction, ValueTask<T>> body, CancellationToken cancellationToken)
    {
        for (var attempt = 0; attempt <= _options.MaxConflictRetries; attempt++)
        {
            ThrowIfDataLoss();
            cancellationToken.ThrowIfCancellationRequested();
            var txn = await BeginAsync(workflowId, readAhead);
            try
            {
                var value = await body(txn);
                if (txn.Changes.Count == 0)
                {
                    // A read of several records is checked like a commit, so it is a consistent snapshot.
                    if (txn.ReadSetSize <= 1 || await CommitAsync(txn, workflowId) is not null)
                    {
                        return new TxnResult<T>(value, txn.HeadRevision, []);
                    }
                }
                else if (await CommitAsync(txn, workflowId) is { } committed)
                {
                    return new TxnResult<T>(value, committed.Head, committed.Events);
                }
            }
            finally
            {
                // Reserved ready tasks this transaction did not claim go back to their queue at once
                // (a committed claim removed its own reservation). Fire and forget: they expire anyway.
                foreach (var entry in txn.UnusedReservations())
                {
                    Unreserve(workflowId, entry);
                }
            }

            // Lost a race: another transaction changed something this one read. Spread retries a little.
            if (attempt > 2)
            {
                await Task.Delay(Random.Shared.Next(0, Math.Min(1 << Math.Min(attempt, 6), 25)), cancellationToken);
            }
        }

        throw new BoardException(BoardError.Conflict, $"The change to workflow '{workflowId}' lost {_options.MaxConflictRetries} races in a row; retry it.");
    }

    public async ValueTask<IReadOnlyList<WorkflowSummary>> ListWorkflowsAsync(WorkflowStatus? status, string? afterId, int limit, CancellationToken cancellationToken)
    {
        ThrowIfDataLoss();
        var result = new List<WorkflowSummary>();
        var after = afterId;
        while (result.Count < limit)
        {
            var ids = await Call(() => _db.SortedSetRangeByValueAsync(_keys.Registry, after is null ? default : (RedisValue)after, default, after is null ? Exclude.None : Exclude.Start, 0, 256));
            if (ids.Length == 0)
            {
                break;
            }

            foreach (var id in ids.Select(v => (string)v!))
            {
                var meta = await LoadMetaAsync(id);
                if (meta.Workflow is { } workflow && (status is null || workflow.Status == status))
                {
                    result.Add(new WorkflowSummary(workflow, meta.Counts, meta.Head));
                    if (result.Count >= limit)
                    {
                        break;
                    }
                }
            }

            after = ids[^1];
        }

        return result;
    }

    public async ValueTask<EventPage> ReadEventsAsync(string workflowId, long fromRevision, int limit, CancellationToken cancellationToken)
    {
        ThrowIfDataLoss();
        var floor = Watermark(workflowId);
        var r = (RedisResult[])(await Script(Scripts.ReadEvents, workflowId, fromRevision, limit))!;
        var exists = (long)r[0] == 1;
        var head = (long)r[1];
        var oldest = (long)r[2];
        ObserveHead(workflowId, head, floor);
        var events = new List<EventRecord>((r.Length - 3) / 2);
        for (var i = 3; i < r.Length; i += 2)
        {
            events.Add(Stamp(RecordCodec.DecodeEvent((byte[])r[i + 1]!), long.Parse((string)r[i]!, CultureInfo.InvariantCulture)));
        }

        return new EventPage(exists, head, exists ? oldest : head + 1, events);
    }

    public async ValueTask<IReadOnlyList<DueTimer>> GetDueTimersAsync(DateTimeOffset now, int limit, CancellationToken cancellationToken)
    {
        ThrowIfDataLoss();
        var nowMs = now.ToUnixTimeMilliseconds();
        var hinted = await Call(() => _db.SortedSetRangeByScoreAsync(_keys.TimerHints, double.NegativeInfinity, nowMs, Exclude.None, Order.Ascending, 0, limit));
        var due = new List<DueTimer>();
        foreach (var workflowId in hinted.Select(v => (string)v!))
        {
            var r = (RedisResult[])(await Script(Scripts.DueTimers, workflowId, nowMs, limit - due.Count))!;
            for (var i = 0; i + 1 < r.Length - 1; i += 2)
            {
                var member = (string)r[i]!;
                var bar = member.IndexOf('|', StringComparison.Ordinal);
                due.Add(new DueTimer(workflowId, (TimerKind)int.Parse(member.AsSpan(0, bar), CultureInfo.InvariantCulture), member[(bar + 1)..],
                    DateTimeOffset.FromUnixTimeMilliseconds((long)double.Parse((string)r[i + 1]!, CultureInfo.InvariantCulture))));
            }

            if (r.Length == 1)
            {
                // Nothing due after all (the hint was early or stale): set it to the real earliest timer.
                var earliest = double.Parse((string)r[0]!, CultureInfo.InvariantCulture);
                await SetHintAsync(workflowId, earliest, exact: true);
            }

            if (due.Count >= limit)
            {
                break;
            }
        }

        return due.OrderBy(t => t.Due).ToArray();
    }

    public async ValueTask<bool> CheckHealthAsync(CancellationToken cancellationToken)
    {
        if (_dataLoss is not null)
        {
            return false;
        }

        try
        {
            await _db.PingAsync();
            return true;
        }
        catch (Exception ex) when (ex is RedisException or TimeoutException)
        {
            return false;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync();
        try
        {
            await _background;
        }
        catch (OperationCanceledException)
        {
        }

        await _redis.CloseAsync(allowCommandsToComplete: false);
        _redis.Dispose();
        _stopping.Dispose();
    }

    // ---- Reads used by transactions -----------------------------------------------------------------

    /// <summary>
    /// Reads the workflow and, sent right behind it, what the body is about to read. Redis answers commands
    /// that arrive together in one pass of its event loop, and with <c>appendfsync always</c> every pass that
    /// wrote anything (this instance's or another's) ends with an fsync before the replies go out: a claim
    /// that read its workflow, then reserved a task, then committed waited for three fsyncs; now two.
    /// </summary>
    private async Task<RedisTransaction> BeginAsync(string workflowId, ReadAhead readAhead)
    {
        var meta = LoadMetaAsync(workflowId);
        var tasks = readAhead.TaskIds is { Count: > 0 } ids ? ReadTasksAsync(workflowId, ids) : null;
        var dependents = readAhead.DependentsOf is { Count: > 0 } of
            ? Task.WhenAll(of.Select(async id => (Id: id, Read: await DependentsAsync(workflowId, id))))
            : null;
        var reserved = readAhead.ReadyForSkills is { } skills ? ReserveAsync(workflowId, skills) : null;
        try
        {
            var txn = new RedisTransaction(this, workflowId, await meta);
            if (tasks is not null)
            {
                txn.AddTaskReads(await tasks);
            }

            if (dependents is not null)
            {
                foreach (var (id, (version, dependentIds)) in await dependents)
                {
                    txn.AddDependentsRead(id, version, dependentIds);
                }
            }

            if (reserved is not null)
            {
                txn.AddReadAheadReservation(readAhead.ReadyForSkills!, await reserved);
            }

            return txn;
        }
        catch
        {
            // The transaction never began: its reservation goes back now rather than at its expiry, and
            // the other reads' failures (the same as the one thrown) are observed.
            _ = tasks?.ContinueWith(static t => t.Exception, TaskScheduler.Default);
            _ = dependents?.ContinueWith(static t => t.Exception, TaskScheduler.Default);
            _ = reserved?.ContinueWith(t =>
            {
                if (t.IsCompletedSuccessfully && t.Result is { } r)
                {
                    Unreserve(workflowId, r.Entry);
                }

                return t.Exception;
            }, TaskScheduler.Default);
            throw;
        }
    }

    /// <summary>Gives back a reservation that was not used. Fire and forget: it expires anyway.</summary>
    private void Unreserve(string workflowId, string entry) =>
        _ = Call(() => _db.ScriptEvaluateAsync(Scripts.Unreserve, [_keys.Meta(workflowId)], [entry]));

    internal async Task<Meta> LoadMetaAsync(string workflowId)
    {
        var floor = Watermark(workflowId);
        var fields = await Call(() => _db.HashGetAllAsync(_keys.Meta(workflowId)));
        var meta = new Meta();
        foreach (var f in fields)
        {
            switch ((string)f.Name!)
            {
                case "rec": meta.Blob = f.Value; break;
                case "wmod": meta.WorkflowRevision = (long)f.Value; break;
                case "head": meta.Head = (long)f.Value; break;
                case var c when c.Length == 2 && c[0] == 'c' && char.IsAsciiDigit(c[1]): meta.Counts[(TaskState)(c[1] - '0')] = (long)f.Value; break;
            }
        }

        if (meta.Blob is { } blob)
        {
            meta.Workflow = RecordCodec.DecodeWorkflow(blob) with { ModRevision = meta.WorkflowRevision };
        }

        if (meta.Head == 0 && await Call(() => _db.SortedSetScoreAsync(_keys.Registry, workflowId)) is not null)
        {
            // The registry says this workflow existed, but its keys (and head revision) are gone.
            Lose($"workflow '{workflowId}' is in the registry but its data is missing from Redis");
        }

        ObserveHead(workflowId, meta.Head, floor);
        return meta;
    }

    internal async Task<List<(string Id, TaskRecord? Task, long Revision)>> ReadTasksAsync(string workflowId, IReadOnlyList<string> taskIds)
    {
        var result = new List<(string, TaskRecord?, long)>(taskIds.Count);
        foreach (var chunk in taskIds.Chunk(500))
        {
            var r = (RedisResult[])(await Script(Scripts.GetTasks, workflowId, [.. chunk]))!;
            for (var i = 0; i < chunk.Length; i++)
            {
                if (r[2 * i].IsNull)
                {
                    result.Add((chunk[i], null, 0));
                }
                else
                {
                    var (task, revision) = Decode(r[2 * i], r[(2 * i) + 1]);
                    result.Add((chunk[i], task, revision));
                }
            }
        }

        return result;
    }

    internal async Task<(NoteRecord? Note, long Revision)> ReadNoteAsync(string workflowId, string key)
    {
        var r = (RedisResult[])(await Script(Scripts.GetNote, workflowId, key))!;
        if (r[0].IsNull)
        {
            return (null, 0);
        }

        var rev = (long)r[1];
        return (RecordCodec.DecodeNote((byte[])r[0]!) with { ModRevision = rev }, rev);
    }

    /// <summary>Reserves the best ready task for these skills (see <see cref="Scripts.Reserve"/>); null if none is ready.</summary>
    internal async Task<(string Entry, TaskRecord Task, long Revision)?> ReserveAsync(string workflowId, IReadOnlyCollection<string> skills)
    {
        var args = new List<object> { DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(), (long)ReservationExpiry.TotalMilliseconds };
        args.AddRange(skills);
        var r = (RedisResult[])(await Script(Scripts.Reserve, workflowId, [.. args]))!;
        if (r.Length == 0)
        {
            return null;
        }

        var (task, revision) = Decode(r[1], r[2]);
        return ((string)r[0]!, task, revision);
    }

    internal async Task<List<(TaskRecord Task, long Revision)>> ListTasksAsync(string workflowId, string? afterId, int limit)
    {
        var r = (RedisResult[])(await Script(Scripts.ListTasks, workflowId, afterId ?? "", limit))!;
        var result = new List<(TaskRecord, long)>(r.Length / 3);
        for (var i = 0; i < r.Length; i += 3)
        {
            if (!r[i + 1].IsNull)
            {
                result.Add(Decode(r[i + 1], r[i + 2]));
            }
        }

        return result;
    }

    internal async Task<List<(NoteRecord Note, long Revision)>> ListNotesAsync(string workflowId, string prefix, string? afterKey, int limit)
    {
        var r = (RedisResult[])(await Script(Scripts.ListNotes, workflowId, prefix, afterKey ?? "", limit))!;
        var result = new List<(NoteRecord, long)>(r.Length / 3);
        for (var i = 0; i < r.Length; i += 3)
        {
            if (!r[i + 1].IsNull)
            {
                var rev = (long)r[i + 2];
                result.Add((RecordCodec.DecodeNote((byte[])r[i + 1]!) with { ModRevision = rev }, rev));
            }
        }

        return result;
    }

    internal async Task<(long Version, IReadOnlyList<string> Ids)> DependentsAsync(string workflowId, string taskId)
    {
        var r = (RedisResult[])(await Script(Scripts.Dependents, workflowId, taskId))!;
        return (long.Parse((string)r[0]!, CultureInfo.InvariantCulture), r.Skip(1).Select(x => (string)x!).Order(StringComparer.Ordinal).ToArray());
    }

    // ---- Commit -------------------------------------------------------------------------------------

    /// <summary>Runs the commit script; null when a check failed (the transaction lost a race).</summary>
    private async Task<(long Head, IReadOnlyList<EventRecord> Events)?> CommitAsync(RedisTransaction txn, string workflowId)
    {
        var plan = CommitPlan.Build(txn, _keys, _options);
        if (plan.CreatesWorkflow)
        {
            // Registered before the commit: a crash in between leaves an entry without data, which readers skip.
            await Call(() => _db.SortedSetAddAsync(_keys.Registry, workflowId, 0));
        }

        var floor = Watermark(workflowId);
        var r = (RedisResult[])(await Script(Scripts.Commit, workflowId, [.. plan.Arguments]))!;
        var head = (long)r[0];
        if (head < 0)
        {
            return null;
        }

        ObserveHead(workflowId, head, floor);
        txn.Committed = true;
        if (txn.Changes.Count > 0)
        {
            var earliest = (double)r[1];
            var before = (double)r[2];
            if (earliest >= 0 && (before < 0 || earliest < before))
            {
                // Only an earlier timer needs the hint lowered (a later one is found when the hint comes due).
                // Fire and forget: a lost hint only delays a timer until the next rescan.
                _ = SetHintAsync(workflowId, earliest, exact: false);
            }
        }

        var first = head - txn.Changes.Count + 1;
        var events = txn.Changes.Select((e, i) => Stamp(e, first + i)).ToArray();
        return (head, events);
    }

    // ---- Background: notifications, timers, epoch ---------------------------------------------------

    private async Task SubscribeAsync()
    {
        var subscriber = _redis.GetSubscriber();
        await subscriber.SubscribeAsync(_keys.EventPattern, (channel, message) =>
        {
            try
            {
                var workflowId = _keys.WorkflowOfChannel(channel!);
                _hub.Publish(workflowId, ParsePublished(workflowId, (byte[])message!));
            }
            catch (Exception ex)
            {
                // A malformed notification only delays watchers: their next read of the stream fills the gap.
                _logger.LogWarning(ex, "Ignoring a malformed change notification on {Channel}.", (string?)channel);
            }
        });
    }

    private async Task BackgroundAsync(CancellationToken ct)
    {
        var lastRescan = DateTimeOffset.MinValue;
        while (!ct.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(_options.EpochCheckInterval, ct);
                await CheckEpochAsync();
                if (DateTimeOffset.UtcNow - lastRescan >= _options.TimerRescanInterval)
                {
                    await RescanTimerHintsAsync();
                    lastRescan = DateTimeOffset.UtcNow;
                }
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                _logger.LogDebug(ex, "Redis background check failed; retrying.");
            }
        }
    }

    /// <summary>
    /// The epoch is written once; if it later vanishes or changes, Redis lost (some of) its data. A loss that
    /// another instance detected is read from Redis, so that instances which could not see it refuse too.
    /// </summary>
    private async Task CheckEpochAsync()
    {
        var candidate = Guid.NewGuid().ToString("N");
        await Call(() => _db.StringSetAsync(_keys.Epoch, candidate, when: When.NotExists));
        var current = (string?)await Call(() => _db.StringGetAsync(_keys.Epoch));
        if ((string?)await Call(() => _db.StringGetAsync(_keys.Lost)) is { } lost)
        {
            Refuse("another server found that " + lost);
        }
        else if (_epoch is null)
        {
            _epoch = current;
        }
        else if (current != _epoch)
        {
            Refuse($"the store epoch changed from {_epoch} to {current} (Redis restarted without its data?)");
        }
    }

    /// <summary>
    /// Compares the epoch with the one this server recorded when it last ran (<see cref="RedisStoreOptions.EpochFile"/>),
    /// then records the current one. Written to a temporary file and renamed, so a crash leaves the old or the new.
    /// </summary>
    private void CheckEpochFile()
    {
        if (_options.EpochFile is not { } path || _dataLoss is not null)
        {
            return;
        }

        var recorded = File.Exists(path) ? File.ReadAllText(path).Trim() : null;
        if (recorded is not null && recorded != _epoch)
        {
            Refuse($"this server last worked with store epoch {recorded} (recorded in {path}), but Redis now has {_epoch} " +
                "(Redis restarted without its data? If this server now deliberately uses another Redis, delete that file)");
            return;
        }

        if (recorded is null)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
            var temporary = path + ".tmp";
            using (var file = new FileStream(temporary, FileMode.Create, FileAccess.Write))
            {
                file.Write(System.Text.Encoding.ASCII.GetBytes(_epoch + "\n"));
                file.Flush(flushToDisk: true);
            }

            File.Move(temporary, path, overwrite: true);
        }
    }

    private async Task RescanTimerHintsAsync()
    {
        var ids = await Call(() => _db.SortedSetRangeByValueAsync(_keys.Registry));
        foreach (var id in ids.Select(v => (string)v!))
        {
            var r = (RedisResult[])(await Script(Scripts.DueTimers, id, -1, 0))!;
            await SetHintAsync(id, double.Parse((string)r[^1]!, CultureInfo.InvariantCulture), exact: true);
        }
    }

    private Task SetHintAsync(string workflowId, double earliest, bool exact) =>
        Call(() => _db.ScriptEvaluateAsync(Scripts.Hint, [_keys.TimerHints],
            [earliest, workflowId, earliest < 0 ? "del" : exact ? "set" : "lt"]));

    // ---- Helpers ------------------------------------------------------------------------------------

    private Task<RedisResult> Script(string script, string workflowId, params object[] args) =>
        Call(() => _db.ScriptEvaluateAsync(script, [_keys.Meta(workflowId)], args.Select(ToValue).ToArray()));

    private static RedisValue ToValue(object value) => value switch
    {
        RedisValue v => v,
        string s => s,
        byte[] b => b,
        int i => i,
        long l => l,
        double d => d,
        _ => value.ToString(),
    };

    /// <summary>Redis being down or slow is UNAVAILABLE: nothing was acknowledged, a retry may succeed.</summary>
    private static async Task<T> Call<T>(Func<Task<T>> operation)
    {
        try
        {
            return await operation();
        }
        catch (Exception ex) when (ex is RedisConnectionException or RedisTimeoutException or TimeoutException
            || (ex is RedisServerException server && (server.Message.StartsWith("LOADING", StringComparison.Ordinal) || server.Message.StartsWith("CLUSTERDOWN", StringComparison.Ordinal) || server.Message.StartsWith("TRYAGAIN", StringComparison.Ordinal))))
        {
            throw new BoardException(BoardError.StoreUnavailable, "Redis is unavailable: " + ex.Message, inner: ex);
        }
    }

    private long Watermark(string workflowId) => _headWatermarks.GetValueOrDefault(workflowId);

    /// <summary>
    /// <paramref name="floor"/> is the highest head this instance had seen before it sent the read: Redis is
    /// linearizable, so the read must return at least that. (Comparing with the watermark after the read
    /// would be wrong: concurrent reads of one instance complete in any order.)
    /// </summary>
    private void ObserveHead(string workflowId, long head, long floor)
    {
        if (head < floor)
        {
            Lose($"workflow '{workflowId}' is at revision {head}, but this instance had already seen {floor}");
        }

        _headWatermarks.AddOrUpdate(workflowId, head, (_, old) => Math.Max(old, head));
    }

    private void Lose(string why)
    {
        Refuse(why);
        ThrowIfDataLoss();
    }

    /// <summary>Enters the refusing state, and tells the other instances through Redis (best effort: each also checks by itself).</summary>
    private void Refuse(string why)
    {
        if (_dataLoss is null)
        {
            _dataLoss = why;
            _logger.LogCritical("Redis lost acknowledged data: {Why}. Refusing all calls so that no revision or fencing token is reused.", why);
            _ = Task.Run(async () =>
            {
                try
                {
                    await _db.StringSetAsync(_keys.Lost, why, when: When.NotExists);
                }
                catch (Exception ex)
                {
                    _logger.LogWarning(ex, "Could not record the data loss in Redis for the other instances.");
                }
            });
        }
    }

    private void ThrowIfDataLoss()
    {
        if (_dataLoss is { } why)
        {
            throw new BoardException(BoardError.StoreDataLoss, "Redis lost acknowledged data (" + why + "); the board refuses to continue. Restore Redis from its AOF, or start over with a new key prefix.");
        }
    }

    private static (TaskRecord, long) Decode(RedisResult blob, RedisResult rev)
    {
        var revision = (long)rev;
        return (RecordCodec.DecodeTask((byte[])blob!) with { ModRevision = revision }, revision);
    }

    /// <summary>Blobs are written before their revision is known; the revision is applied when read.</summary>
    internal static EventRecord Stamp(EventRecord e, long revision) => e with
    {
        Revision = revision,
        Task = e.Task is null ? null : e.Task with { ModRevision = revision },
        Note = e.Note is null ? null : e.Note with { ModRevision = revision },
        Workflow = e.Workflow is null || e.Kind == EventKind.WorkflowDeleted ? e.Workflow : e.Workflow with { ModRevision = revision },
    };

    /// <summary>The commit script publishes "rev:len:blob" for each event, concatenated.</summary>
    private static List<EventRecord> ParsePublished(string workflowId, byte[] message)
    {
        var events = new List<EventRecord>();
        var i = 0;
        while (i < message.Length)
        {
            var colon = Array.IndexOf(message, (byte)':', i);
            var revision = long.Parse(Encoding.ASCII.GetString(message, i, colon - i), CultureInfo.InvariantCulture);
            var colon2 = Array.IndexOf(message, (byte)':', colon + 1);
            var length = int.Parse(Encoding.ASCII.GetString(message, colon + 1, colon2 - colon - 1), CultureInfo.InvariantCulture);
            var e = Stamp(RecordCodec.DecodeEvent(new ReadOnlyMemory<byte>(message, colon2 + 1, length)), revision);
            if (e.WorkflowId != workflowId)
            {
                throw new InvalidDataException("A notification's event belongs to another workflow.");
            }

            events.Add(e);
            i = colon2 + 1 + length;
        }

        return events;
    }

    internal sealed class Meta
    {
        public byte[]? Blob { get; set; }
        public WorkflowRecord? Workflow { get; set; }
        public long WorkflowRevision { get; set; }
        public long Head { get; set; }
        public TaskCounts Counts { get; } = new();
    }
}
