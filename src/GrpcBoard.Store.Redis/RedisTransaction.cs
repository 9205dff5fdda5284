using System.Globalization;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Rules;
using GrpcBoard.Core.Storage;

namespace GrpcBoard.Store.Redis;

/// <summary>
/// One optimistic transaction: reads go to Redis and are remembered with the mod revision they had; the
/// commit checks all of them. Reads of the same record within one transaction return what was first read,
/// so the body sees one consistent version of each record.
/// </summary>
internal sealed class RedisTransaction(RedisStore store, string workflowId, RedisStore.Meta meta) : WorkflowTransactionBase(workflowId)
{
    private readonly Dictionary<string, (TaskRecord? Task, long Revision)> _tasks = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (NoteRecord? Note, long Revision)> _notes = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _dependents = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _reservations = new(StringComparer.Ordinal);
    private readonly Dictionary<string, IReadOnlyList<string>> _dependentIds = new(StringComparer.Ordinal);

    /// <summary>What <see cref="RedisStore"/> reserved ahead for these skills (Reserved null: nothing was ready), until the body asks.</summary>
    private (IReadOnlyCollection<string> Skills, (string Entry, TaskRecord Task, long Revision)? Reserved)? _readAhead;

    public override long HeadRevision => meta.Head;

    public override TaskCounts Counts => meta.Counts;

    protected override WorkflowRecord? CommittedWorkflow => meta.Workflow;

    public RedisStore.Meta Meta => meta;

    public IReadOnlyDictionary<string, (TaskRecord? Task, long Revision)> TaskReads => _tasks;

    public IReadOnlyDictionary<string, (NoteRecord? Note, long Revision)> NoteReads => _notes;

    public IReadOnlyDictionary<string, long> DependentReads => _dependents;

    /// <summary>True when a listing was read: the commit then also checks the head did not move.</summary>
    public bool ReadListings { get; private set; }

    public int ReadSetSize => _tasks.Count + _notes.Count + _dependents.Count + (ReadListings ? 2 : 0);

    protected override async ValueTask<TaskRecord?> ReadTaskAsync(string taskId)
    {
        if (!_tasks.TryGetValue(taskId, out var read))
        {
            await PrefetchCommittedTasksAsync([taskId]);
            read = _tasks[taskId];
        }

        return read.Task;
    }

    protected override async ValueTask PrefetchCommittedTasksAsync(IReadOnlyCollection<string> taskIds)
    {
        var missing = taskIds.Where(id => !_tasks.ContainsKey(id)).ToArray();
        if (missing.Length > 0)
        {
            foreach (var (id, task, revision) in await store.ReadTasksAsync(WorkflowId, missing))
            {
                _tasks[id] = (task, revision);
            }
        }
    }

    internal void AddTaskReads(IEnumerable<(string Id, TaskRecord? Task, long Revision)> reads)
    {
        foreach (var (id, task, revision) in reads)
        {
            _tasks.TryAdd(id, (task, revision));
        }
    }

    internal void AddDependentsRead(string taskId, long version, IReadOnlyList<string> ids)
    {
        _dependents.TryAdd(taskId, version);
        _dependentIds.TryAdd(taskId, ids);
    }

    internal void AddReadAheadReservation(IReadOnlyCollection<string> skills, (string Entry, TaskRecord Task, long Revision)? reserved)
    {
        if (reserved is { } r)
        {
            // Registered at once, so that it is given back if the body never asks for it (a paused workflow).
            _reservations[r.Task.Id] = r.Entry;
        }

        _readAhead = (skills, reserved);
    }

    /// <summary>Reservation entries of tasks reserved by this transaction, by task id.</summary>
    public IReadOnlyDictionary<string, string> Reservations => _reservations;

    /// <summary>Reservations whose task this transaction did not claim (all of them if it did not commit).</summary>
    public IEnumerable<string> UnusedReservations() =>
        _reservations.Where(r => !Committed || !Changes.Any(c => c.Task?.Id == r.Key)).Select(r => r.Value);

    /// <summary>Set once the commit script has applied this transaction.</summary>
    public bool Committed { get; set; }

    /// <summary>
    /// The best ready task, reserved for this transaction: the reserve script takes it off its ready queue
    /// atomically, so concurrent claimers (on this or any instance) each get a different task instead of
    /// all reading the same head of the queue and all but one losing the race. The claim itself is still
    /// decided here, by the state machine, and committed with the usual check of the task's revision.
    /// </summary>
    protected override async ValueTask<IReadOnlyList<TaskRecord>> ReadReadyTasksAsync(IReadOnlyCollection<string> workerSkills, int limit)
    {
        (string Entry, TaskRecord Task, long Revision)? next;
        if (_readAhead is { } ahead && SameSkills(ahead.Skills, workerSkills))
        {
            _readAhead = null;
            next = ahead.Reserved;
        }
        else
        {
            next = await store.ReserveAsync(WorkflowId, workerSkills);
        }

        if (next is not { } reserved)
        {
            return [];
        }

        _reservations[reserved.Task.Id] = reserved.Entry;
        if (_tasks.TryGetValue(reserved.Task.Id, out var earlier))
        {
            return earlier.Task is { } known ? [known] : [];
        }

        _tasks[reserved.Task.Id] = (reserved.Task, reserved.Revision);
        return [reserved.Task];
    }

    private static bool SameSkills(IReadOnlyCollection<string> a, IReadOnlyCollection<string> b) =>
        ReferenceEquals(a, b) || (a.Count == b.Count && a.All(b.Contains));

    protected override async ValueTask<IReadOnlyList<string>> ReadDependentsAsync(string taskId)
    {
        if (_dependentIds.TryGetValue(taskId, out var readAhead))
        {
            return readAhead;
        }

        var (version, ids) = await store.DependentsAsync(WorkflowId, taskId);
        _dependents.TryAdd(taskId, version);
        return ids;
    }

    protected override async ValueTask<IReadOnlyList<TaskRecord>> ReadTasksAsync(TaskState? state, string? afterId, int limit)
    {
        ReadListings = true;
        var result = new List<TaskRecord>();
        var after = afterId;
        while (result.Count < limit)
        {
            var page = await store.ListTasksAsync(WorkflowId, after, Math.Max(limit, 256));
            foreach (var (task, _) in page)
            {
                if (state is null || task.State == state)
                {
                    result.Add(task);
                    if (result.Count == limit)
                    {
                        break;
                    }
                }
            }

            if (page.Count < Math.Max(limit, 256))
            {
                break;
            }

            after = page[^1].Task.Id;
        }

        return result;
    }

    protected override async ValueTask<NoteRecord?> ReadNoteAsync(string key)
    {
        if (!_notes.TryGetValue(key, out var read))
        {
            read = await store.ReadNoteAsync(WorkflowId, key);
            _notes[key] = read;
        }

        return read.Note;
    }

    protected override async ValueTask<IReadOnlyList<NoteRecord>> ReadNotesAsync(string prefix, string? afterKey, int limit)
    {
        ReadListings = true;
        return (await store.ListNotesAsync(WorkflowId, prefix, afterKey, limit)).Select(n => n.Note).ToArray();
    }
}

/// <summary>
/// The arguments of the commit script: what to check, what to write, and which index entries change.
/// Index entries are derived from each record's previous and next version with <see cref="TaskIndexing"/>,
/// the same rules the embedded store follows.
/// </summary>
internal sealed class CommitPlan
{
    private readonly List<object> _checks = [];
    private readonly List<object> _changes = [];
    private readonly List<object> _ops = [];
    private int _checkCount;
    private int _changeCount;
    private int _opCount;

    public bool CreatesWorkflow { get; private set; }

    public List<object> Arguments { get; } = [];

    public static CommitPlan Build(RedisTransaction txn, RedisKeys keys, RedisStoreOptions options)
    {
        var plan = new CommitPlan();
        plan.Check("w", "", txn.Meta.WorkflowRevision);
        foreach (var (id, read) in txn.TaskReads)
        {
            plan.Check("t", id, read.Revision);
        }

        foreach (var (key, read) in txn.NoteReads)
        {
            plan.Check("n", key, read.Revision);
        }

        foreach (var (id, version) in txn.DependentReads)
        {
            plan.Check("d", id, version);
        }

        if (txn.ReadListings)
        {
            plan.Check("h", "", txn.HeadRevision);
        }

        var tasks = txn.TaskReads.ToDictionary(kv => kv.Key, kv => kv.Value.Task, StringComparer.Ordinal);
        var notes = txn.NoteReads.ToDictionary(kv => kv.Key, kv => kv.Value.Note, StringComparer.Ordinal);
        foreach (var change in txn.Changes)
        {
            var blob = RecordCodec.Encode(change);
            switch (change.Kind)
            {
                case EventKind.WorkflowCreated or EventKind.WorkflowUpdated:
                    plan.CreatesWorkflow |= change.Kind == EventKind.WorkflowCreated;
                    plan.Change("W", "", RecordCodec.Encode(change.Workflow! with { ModRevision = 0 }), blob);
                    break;
                case EventKind.WorkflowDeleted:
                    // Everything indexed so far in this transaction is wiped with the workflow.
                    plan._ops.Clear();
                    plan._opCount = 0;
                    tasks.Clear();
                    notes.Clear();
                    plan.Change("D", "", [], blob);
                    break;
                case EventKind.NotePut:
                    plan.Change("N", change.Note!.Key, RecordCodec.Encode(change.Note with { ModRevision = 0 }), blob);
                    plan.NoteTimer(notes.GetValueOrDefault(change.Note.Key), change.Note);
                    notes[change.Note.Key] = change.Note;
                    break;
                case EventKind.NoteDeleted or EventKind.NoteExpired:
                    plan.Change("X", change.Note!.Key, [], blob);
                    plan.NoteTimer(notes.GetValueOrDefault(change.Note.Key), null);
                    notes[change.Note.Key] = null;
                    break;
                default:
                    var task = change.Task!;
                    if (!tasks.TryGetValue(task.Id, out var previous))
                    {
                        throw new InvalidOperationException($"Task '{task.Id}' was written without being read in the same transaction.");
                    }

                    plan.Change("T", task.Id, RecordCodec.Encode(task with { ModRevision = 0 }), blob);
                    plan.TaskIndexes(previous, task);
                    if (txn.Reservations.TryGetValue(task.Id, out var reservation))
                    {
                        plan.Op("zr", "reserved", reservation, "");
                    }
                    tasks[task.Id] = task;
                    break;
            }
        }

        plan.Arguments.Add(plan._checkCount);
        plan.Arguments.AddRange(plan._checks);
        plan.Arguments.Add(plan._changeCount);
        plan.Arguments.AddRange(plan._changes);
        plan.Arguments.Add(plan._opCount);
        plan.Arguments.AddRange(plan._ops);
        plan.Arguments.Add(options.MaxEventsPerWorkflow);
        plan.Arguments.Add(EventRetention.Slack(options.MaxEventsPerWorkflow, trimmingCostsIo: true));
        plan.Arguments.Add(keys.Base(txn.WorkflowId) + "ev");
        return plan;
    }

    private void TaskIndexes(TaskRecord? previous, TaskRecord next)
    {
        if (previous?.State == TaskState.Ready)
        {
            Op("zr", RedisKeys.ReadyQueue(TaskIndexing.SkillSetKey(previous.RequiredSkills)), RedisKeys.ReadyMember(previous), "");
        }

        if (next.State == TaskState.Ready)
        {
            var skillKey = TaskIndexing.SkillSetKey(next.RequiredSkills);
            var queue = RedisKeys.ReadyQueue(skillKey);
            Op("za", queue, RedisKeys.ReadyMember(next), 0);
            Op("ha", "readyq", skillKey, queue);
        }

        var before = previous is null ? null : TaskIndexing.TimerOf(previous);
        var after = TaskIndexing.TimerOf(next);
        if (before != after)
        {
            if (before is { } b)
            {
                Op("zr", "timers", RedisKeys.TimerMember(b.Kind, next.Id), "");
            }

            if (after is { } a)
            {
                Op("za", "timers", RedisKeys.TimerMember(a.Kind, next.Id), Millis(a.Due));
            }
        }

        if (previous?.State != next.State)
        {
            if (previous is not null)
            {
                Op("hi", "meta", "c" + (int)previous.State, -1);
            }

            Op("hi", "meta", "c" + (int)next.State, 1);
        }

        if (previous is null)
        {
            foreach (var dep in next.DependsOn)
            {
                Op("sa", "deps:" + dep, next.Id, "");
                Op("sa", "depkeys", dep, "");
                // A dependent added under a task changes what its completion must look at.
                Op("hk", "depver", dep, 1);
            }
        }
    }

    private void NoteTimer(NoteRecord? previous, NoteRecord? next)
    {
        var before = previous is null ? null : TaskIndexing.TimerOf(previous);
        var after = next is null ? null : TaskIndexing.TimerOf(next);
        if (before == after)
        {
            return;
        }

        var member = RedisKeys.TimerMember(TimerKind.NoteExpiry, (previous ?? next)!.Key);
        if (before is not null)
        {
            Op("zr", "timers", member, "");
        }

        if (after is { } due)
        {
            Op("za", "timers", member, Millis(due));
        }
    }

    /// <summary>Timer scores are milliseconds, rounded up so a timer is never due before its time.</summary>
    private static long Millis(DateTimeOffset due) => (due.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks + TimeSpan.TicksPerMillisecond - 1) / TimeSpan.TicksPerMillisecond;

    private void Check(string kind, string id, long expected)
    {
        _checks.Add(kind);
        _checks.Add(id);
        _checks.Add(expected.ToString(CultureInfo.InvariantCulture));
        _checkCount++;
    }

    private void Change(string op, string id, byte[] record, byte[] eventBlob)
    {
        _changes.Add(op);
        _changes.Add(id);
        _changes.Add(record);
        _changes.Add(eventBlob);
        _changeCount++;
    }

    public void Op(string op, string key, string member, object value)
    {
        _ops.Add(op);
        _ops.Add(key);
        _ops.Add(member);
        _ops.Add(value);
        _opCount++;
    }
}
