using System.Globalization;
using GrpcBoard.Core;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Rules;
using GrpcBoard.Core.Storage;
using StackExchange.Redis;

namespace GrpcBoard.Store.Redis;

/// <summary>One transaction waiting for the batch that carries it.</summary>
internal sealed class PendingTxn(AppliedChanges? applied, long observedHead, BoardException? refusal = null)
{
    /// <summary>What the body threw, to be thrown to the caller once the state it read is confirmed.</summary>
    public BoardException? Refusal { get; } = refusal;

    // Continuations run on the completing thread, which completes transactions after leaving the
    // replica's lock: the caller's response is written at once instead of after a thread-pool hop.
    private readonly TaskCompletionSource<bool> _outcome = new();
    private Exception? _error;
    private bool _committed;

    /// <summary>What the transaction changed (null: it only read).</summary>
    public AppliedChanges? Applied { get; } = applied;

    /// <summary>The head the body saw.</summary>
    public long ObservedHead { get; } = observedHead;

    /// <summary>True once committed; false when it must run again (its batch lost a race); faults when it failed.</summary>
    public Task<bool> Outcome => _outcome.Task;

    /// <summary>Decides the outcome (under the replica's lock); <see cref="Complete"/> reports it (outside it).</summary>
    public void Decide(bool committed, Exception? error = null)
    {
        _committed = committed;
        _error = error;
    }

    public void Complete()
    {
        if (_error is { } error)
        {
            _outcome.TrySetException(error);
        }
        else
        {
            _outcome.TrySetResult(_committed);
        }
    }
}

/// <summary>
/// Transactions of one workflow committed together by one call of <see cref="Scripts.Commit"/>: their
/// changes are already applied to the replica (speculatively), and are written here as Redis operations,
/// each record once with its last version. Records are stored as the event that last wrote them, so a
/// change is encoded once, for its record, its log entry and the notification alike.
/// </summary>
internal sealed class CommitBatch
{
    /// <summary>Largest number of arguments one Lua <c>unpack</c> call is given.</summary>
    private const int MaxItemsPerOp = 1000;

    private readonly Dictionary<string, byte[]> _tasks = new(StringComparer.Ordinal);
    private readonly Dictionary<string, byte[]?> _notes = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long?> _timers = new(StringComparer.Ordinal);
    private readonly List<(long Revision, byte[] Blob)> _events = [];
    private byte[]? _workflow;
    private bool _deletes;
    private long? _oldest;

    public List<PendingTxn> Txns { get; } = [];

    /// <summary>What each writing transaction applied, in order (for undo and for publishing).</summary>
    public List<AppliedChanges> Applied { get; } = [];

    public bool HasWrites => Applied.Count > 0;

    /// <summary>Set when the batch is sent: the batch it was built on, its own id, the head it leaves.</summary>
    public string PreviousId { get; set; } = "";

    public string Id { get; set; } = "";

    public long Head { get; set; }

    /// <summary>The script's reply, or the failure to get one; set when it arrives (replies are handled in send order).</summary>
    public Task<RedisResult>? Reply { get; set; }

    public void Add(PendingTxn txn)
    {
        Txns.Add(txn);
        if (txn.Applied is not { } applied)
        {
            return;
        }

        Applied.Add(applied);
        if (applied.DeletedContents)
        {
            // The deletion wipes whatever earlier transactions of this batch wrote.
            _tasks.Clear();
            _notes.Clear();
            _timers.Clear();
            _events.Clear();
            _workflow = null;
            _deletes = true;
        }

        for (var i = 0; i < applied.Events.Count; i++)
        {
            var e = applied.Events[i];
            if (e.Kind == EventKind.WorkflowDeleted)
            {
                continue;
            }

            var blob = RecordCodec.Encode(e);
            _events.Add((e.Revision, blob));
            switch (e.Kind)
            {
                case EventKind.WorkflowCreated or EventKind.WorkflowUpdated:
                    _workflow = blob;
                    break;
                case EventKind.NotePut:
                    _notes[e.Note!.Key] = blob;
                    MoveTimer(TimerKind.NoteExpiry, e.Note.Key, (applied.Previous[i] as NoteRecord)?.ExpireTime, e.Note.ExpireTime);
                    break;
                case EventKind.NoteDeleted or EventKind.NoteExpired:
                    _notes[e.Note!.Key] = null;
                    MoveTimer(TimerKind.NoteExpiry, e.Note.Key, (applied.Previous[i] as NoteRecord)?.ExpireTime, null);
                    break;
                default:
                    var task = e.Task!;
                    _tasks[task.Id] = blob;
                    var before = applied.Previous[i] is TaskRecord previous ? TaskIndexing.TimerOf(previous) : null;
                    var after = TaskIndexing.TimerOf(task);
                    if (before != after)
                    {
                        if (before is { } b && b.Kind != after?.Kind)
                        {
                            MoveTimer(b.Kind, task.Id, b.Due, null);
                        }

                        if (after is { } a)
                        {
                            MoveTimer(a.Kind, task.Id, null, a.Due);
                        }
                    }

                    break;
            }
        }

        if (applied.Oldest != applied.OldestBefore || applied.DeletedContents)
        {
            _oldest = applied.Oldest;
        }
    }

    /// <summary>The arguments of <see cref="Scripts.Commit"/>.</summary>
    public RedisValue[] Arguments(string channel, string origin, TaskCounts counts)
    {
        var args = new List<RedisValue>(16 + (4 * _events.Count) + (2 * _tasks.Count) + (2 * _timers.Count))
        {
            PreviousId,
            Id,
            Head,
            channel,
            HasWrites ? Notification(origin) : RedisValue.EmptyString,
            0,
        };
        var ops = 0;
        if (_deletes)
        {
            args.Add("D");
            args.Add(0);
            ops++;
        }

        if (_workflow is not null)
        {
            args.Add("W");
            args.Add(1);
            args.Add(_workflow);
            ops++;
        }

        ops += AddPairs(args, "T", _tasks.Select(t => ((RedisValue)t.Key, (RedisValue)t.Value)));
        ops += AddPairs(args, "N", _notes.Where(n => n.Value is not null).Select(n => ((RedisValue)n.Key, (RedisValue)n.Value)));
        ops += AddItems(args, "X", _notes.Where(n => n.Value is null).Select(n => (RedisValue)n.Key));
        ops += AddPairs(args, "E", _events.Select(e => ((RedisValue)e.Revision, (RedisValue)e.Blob)));
        ops += AddPairs(args, "Z", _timers.Where(t => t.Value is not null).Select(t => ((RedisValue)t.Value!.Value, (RedisValue)t.Key)));
        ops += AddItems(args, "R", _timers.Where(t => t.Value is null).Select(t => (RedisValue)t.Key));
        if (_oldest is { } oldest)
        {
            args.Add("O");
            args.Add(1);
            args.Add(oldest);
            ops++;
        }

        if (HasWrites)
        {
            ops += AddPairs(args, "C", Enum.GetValues<TaskState>().Select(s => ((RedisValue)("c" + (int)s), (RedisValue)counts[s])));
        }

        args[5] = ops;
        return [.. args];
    }

    /// <summary>
    /// "origin|previous batch|batch|first revision|last revision": tells other instances that their replicas
    /// and watchers are behind. It carries no events (they are in the log): a notification goes to every
    /// instance and into the AOF, and with one instance it would only be read back by its sender.
    /// </summary>
    private string Notification(string origin) =>
        string.Create(CultureInfo.InvariantCulture, $"{origin}|{PreviousId}|{Id}|{Applied[0].HeadBefore + 1}|{Head}");

    private void MoveTimer(TimerKind kind, string id, DateTimeOffset? before, DateTimeOffset? after)
    {
        if (before == after)
        {
            return;
        }

        _timers[RedisKeys.TimerMember(kind, id)] = after is { } due ? Millis(due) : null;
    }

    /// <summary>Timer scores are milliseconds, rounded up so a timer is never due before its time.</summary>
    public static long Millis(DateTimeOffset due) => (due.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks + TimeSpan.TicksPerMillisecond - 1) / TimeSpan.TicksPerMillisecond;

    private static int AddPairs(List<RedisValue> args, string op, IEnumerable<(RedisValue, RedisValue)> pairs)
    {
        var ops = 0;
        foreach (var chunk in pairs.Chunk(MaxItemsPerOp / 2))
        {
            args.Add(op);
            args.Add(chunk.Length);
            foreach (var (a, b) in chunk)
            {
                args.Add(a);
                args.Add(b);
            }

            ops++;
        }

        return ops;
    }

    private static int AddItems(List<RedisValue> args, string op, IEnumerable<RedisValue> items)
    {
        var ops = 0;
        foreach (var chunk in items.Chunk(MaxItemsPerOp))
        {
            args.Add(op);
            args.Add(chunk.Length);
            args.AddRange(chunk);
            ops++;
        }

        return ops;
    }
}
