using System.Globalization;
using GrpcBoard.Core;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Rules;
using GrpcBoard.Core.Storage;
using StackExchange.Redis;

namespace GrpcBoard.Store.Redis;

/// <summary>
/// What the commit script answered (<see cref="Scripts.Commit"/>). <see cref="TurnLapsesIn"/>: for
/// <see cref="NotOurTurn"/>, the milliseconds until the other instance's turn lapses unless renewed.
/// </summary>
internal readonly record struct CommitReply(long Code, long Head, double TimerBefore, long TurnLapsesIn = 0, string? TurnHolder = null)
{
    /// <summary>When replicas are waited for: how many acknowledged what the batch wrote or read (WAIT's answer).</summary>
    public long? Replicas { get; init; }

    /// <summary>Another instance holds the workflow's turn: the batch was not looked at.</summary>
    public const long NotOurTurn = -2;

    public static CommitReply From(RedisResult result)
    {
        var r = (RedisResult[])result!;
        var code = (long)r[0];
        return code switch
        {
            > 0 => new CommitReply(code, (long)r[1], (double)r[2]),
            NotOurTurn => new CommitReply(code, (long)r[1], -1, (long)r[3], r.Length > 4 ? (string?)r[4] : null),
            _ => new CommitReply(code, (long)r[1], -1),
        };
    }

    public static CommitReply From(object? value)
    {
        if (value is not object?[] { Length: >= 2 } r || r[0] is not long code || r[1] is not long head)
        {
            throw new InvalidDataException("The commit script answered something other than {code, head, ...}.");
        }

        return code switch
        {
            > 0 when r.Length >= 3 && r[2] is long before => new CommitReply(code, head, before),
            NotOurTurn when r.Length >= 4 && r[3] is long lapses => new CommitReply(code, head, -1, lapses, r.Length > 4 ? Text(r[4]) : null),
            NotOurTurn => throw new InvalidDataException("The commit script refused a turn without saying when it lapses."),
            _ => new CommitReply(code, head, -1),
        };
    }

    private static string? Text(object? value) => value switch
    {
        string s => s,
        byte[] bytes => System.Text.Encoding.UTF8.GetString(bytes),
        _ => null,
    };
}

/// <summary>One transaction waiting for the batch that carries it.</summary>
internal sealed class PendingTxn(AppliedChanges? applied, long observedHead, BoardException? refusal = null)
{
    /// <summary>The call may be served by the turn holder instead of waiting for the turn (<see cref="CallRouting"/>).</summary>
    public bool MayServeElsewhere { get; } = CallRouting.MayServeElsewhere;

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

    /// <summary>Its batch was refused because another instance held the workflow's turn: waiting, not a lost race.</summary>
    public bool WaitedForTurn { get; private set; }

    /// <summary>Decides the outcome (under the replica's lock); <see cref="Complete"/> reports it (outside it).</summary>
    public void Decide(bool committed, Exception? error = null, bool waitedForTurn = false)
    {
        _committed = committed;
        _error = error;
        WaitedForTurn = waitedForTurn;
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

    /// <summary>Records by id: the index (1-based, as Lua counts) of the event that last wrote each.</summary>
    private readonly Dictionary<string, int> _tasks = new(StringComparer.Ordinal);

    /// <summary>Null: the note was deleted.</summary>
    private readonly Dictionary<string, int?> _notes = new(StringComparer.Ordinal);
    private readonly List<(long Revision, byte[] Blob)> _events = [];
    private int? _workflow;
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

    /// <summary>
    /// The instance's head watermark when the batch was sent (<see cref="RedisStore.ObserveHead"/>): a batch that commits
    /// leaves Redis at <see cref="Head"/>, which must be at least every head seen before it was sent.
    /// </summary>
    public long Floor { get; set; }

    /// <summary>Set when the batch is sent: the workflow's earliest timer (ms, -1: none) once the batch commits, its meta's nt.</summary>
    public long NextTimer { get; private set; } = -1;

    /// <summary>True once the script's reply, or the failure to get one, arrived (replies are handled in send order).</summary>
    public bool Answered { get; private set; }

    public CommitReply ReplyValue { get; private set; }

    public Exception? Error { get; private set; }

    public void Answer(CommitReply reply, Exception? error)
    {
        ReplyValue = reply;
        Error = error;
        Answered = true;
    }

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

            _events.Add((e.Revision, RecordCodec.Encode(e)));
            var index = _events.Count;
            switch (e.Kind)
            {
                case EventKind.WorkflowCreated or EventKind.WorkflowUpdated:
                    _workflow = index;
                    break;
                case EventKind.NotePut:
                    _notes[e.Note!.Key] = index;
                    break;
                case EventKind.NoteDeleted or EventKind.NoteExpired:
                    _notes[e.Note!.Key] = null;
                    break;
                default:
                    _tasks[e.Task!.Id] = index;
                    break;
            }
        }

        if (applied.Oldest != applied.OldestBefore || applied.DeletedContents)
        {
            _oldest = applied.Oldest;
        }
    }

    /// <summary>
    /// Whether this batch, refused for another instance's turn, queues for it: not when all its calls can go to
    /// the holder instead, as queueing would make the holder pass the turn to an instance with nothing to commit.
    /// </summary>
    public bool QueuesForTurn => !Txns.TrueForAll(t => t.MayServeElsewhere);

    /// <summary>
    /// The arguments of <see cref="Scripts.Commit"/>: the batch ids and head, the notification, the
    /// changes packed as MessagePack: [events (revision, blob, ...), ops], and the workflow's earliest timer once the
    /// batch commits (<paramref name="nextTimer"/>). Records refer to their event by index, so each blob crosses once.
    /// </summary>
    public RedisValue[] Arguments(string channel, string origin, TaskCounts counts, DateTimeOffset? nextTimer, TimeSpan turnLease, TimeSpan turnLength, bool waitsForReplicas)
    {
        RedisValue lease = (long)turnLease.TotalMilliseconds, length = (long)turnLength.TotalMilliseconds;
        RedisValue queue = QueuesForTurn ? 1 : 0;
        if (!HasWrites)
        {
            return [PreviousId, Id, Head, channel, RedisValue.EmptyString, RedisValue.EmptyString, origin, lease, length, queue, waitsForReplicas ? 1 : 0];
        }

        // With one batch in flight, the reader thread packs this between a commit's reply and sending the next
        // batch, so it is part of every commit cycle: one pass into a buffer sized first, no per-item allocation.
        int putNotes = 0, deletedNotes = 0, bytes = 256;
        foreach (var index in _notes.Values)
        {
            if (index is null)
            {
                deletedNotes++;
            }
            else
            {
                putNotes++;
            }
        }

        foreach (var (_, blob) in _events)
        {
            bytes += blob.Length + 32;
        }

        bytes += 48 * (_tasks.Count + _notes.Count);
        var ops = (_deletes ? 1 : 0) + (_workflow is null ? 0 : 1) + OpChunks.Count(_tasks.Count, 2) + OpChunks.Count(putNotes, 2)
            + OpChunks.Count(deletedNotes, 1) + 1 + (_oldest is null ? 0 : 1) + 1;
        var packed = new MessagePackWriter(bytes);
        packed.ArrayHeader(2);
        packed.ArrayHeader(2 * _events.Count);
        foreach (var (revision, blob) in _events)
        {
            packed.Decimal(revision);
            packed.Bytes(blob);
        }

        packed.ArrayHeader(ops);
        if (_deletes)
        {
            Op(packed, "D", 0);
        }

        if (_workflow is { } workflow)
        {
            Op(packed, "W", 1);
            packed.Integer(workflow);
        }

        var chunks = new OpChunks(packed, "T", _tasks.Count, 2);
        foreach (var (id, index) in _tasks)
        {
            chunks.Next();
            packed.String(id);
            packed.Integer(index);
        }

        chunks = new OpChunks(packed, "N", putNotes, 2);
        foreach (var (key, index) in _notes)
        {
            if (index is { } i)
            {
                chunks.Next();
                packed.String(key);
                packed.Integer(i);
            }
        }

        chunks = new OpChunks(packed, "X", deletedNotes, 1);
        foreach (var (key, index) in _notes)
        {
            if (index is null)
            {
                chunks.Next();
                packed.String(key);
            }
        }

        Op(packed, "E", 0);

        if (_oldest is { } oldest)
        {
            Op(packed, "O", 1);
            packed.Decimal(oldest);
        }

        Op(packed, "C", 2 * States.Length);
        for (var i = 0; i < States.Length; i++)
        {
            packed.String(CountFields[i]);
            packed.Integer(Math.Max(0, counts[States[i]]));
        }

        NextTimer = nextTimer is { } next ? Millis(next) : -1;
        return [PreviousId, Id, Head, channel, Notification(origin), packed.ToArray(), origin, lease, length, queue, 0, NextTimer];
    }

    private static readonly TaskState[] States = Enum.GetValues<TaskState>();

    /// <summary>The meta hash's count field of each state, as the op C writes it.</summary>
    private static readonly string[] CountFields = Array.ConvertAll(States, state => "c" + ((int)state).ToString(CultureInfo.InvariantCulture));

    /// <summary>Writes an op's header before each run of at most <see cref="MaxItemsPerOp"/> items (one Lua <c>unpack</c> each).</summary>
    private struct OpChunks(MessagePackWriter writer, string code, int entries, int itemsPerEntry)
    {
        private int _left = entries;
        private int _inChunk;

        /// <summary>The ops <paramref name="entries"/> entries of <paramref name="itemsPerEntry"/> items take.</summary>
        public static int Count(int entries, int itemsPerEntry) => (entries + MaxItemsPerOp / itemsPerEntry - 1) / (MaxItemsPerOp / itemsPerEntry);

        /// <summary>Call before writing each entry.</summary>
        public void Next()
        {
            if (_inChunk == 0)
            {
                _inChunk = Math.Min(_left, MaxItemsPerOp / itemsPerEntry);
                _left -= _inChunk;
                Op(writer, code, itemsPerEntry * _inChunk);
            }

            _inChunk--;
        }
    }

    /// <summary>An op is an array: its code, then its items.</summary>
    private static void Op(MessagePackWriter w, string code, int items)
    {
        w.ArrayHeader(1 + items);
        w.String(code);
    }

    /// <summary>
    /// "origin|previous batch|batch|first revision|last revision": tells other instances that their replicas
    /// and watchers are behind. It carries no events (they are in the log): a notification goes to every
    /// instance and into the AOF, and with one instance it would only be read back by its sender.
    /// </summary>
    private string Notification(string origin) =>
        string.Create(CultureInfo.InvariantCulture, $"{origin}|{PreviousId}|{Id}|{Applied[0].HeadBefore + 1}|{Head}");

    /// <summary>Timer scores are milliseconds, rounded up so a timer is never due before its time.</summary>
    public static long Millis(DateTimeOffset due) => (due.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks + TimeSpan.TicksPerMillisecond - 1) / TimeSpan.TicksPerMillisecond;
}
