using GrpcBoard.Core.Model;
using GrpcBoard.Core.Rules;

namespace GrpcBoard.Core.Storage;

/// <summary>
/// One workflow's records, indexes and recent events in memory: the whole state of the embedded store,
/// and each Redis store instance's replica of a workflow. Indexes are derived from records through
/// <see cref="TaskIndexing"/>. Not thread-safe: callers hold <see cref="Gate"/>.
/// A deleted workflow keeps its state object (with no record) so that its head revision survives.
/// </summary>
/// <param name="timers">Where this workflow's timers are indexed: the embedded store's one index of every workflow, or a
/// Redis replica's own (null: not indexed).</param>
public sealed class WorkflowState(string id, int recentEvents, TimerIndex? timers)
{
    private static readonly Comparer<TaskRecord> ReadyOrder = Comparer<TaskRecord>.Create(TaskIndexing.CompareReady);

    public readonly object Gate = new();

    public string Id { get; } = id;

    /// <summary>The index this state keeps its timers in (see the constructor).</summary>
    public TimerIndex? Timers => timers;

    public WorkflowRecord? Record { get; set; }

    public long Head { get; set; }

    /// <summary>The oldest revision retained (Head + 1 when nothing is retained yet).</summary>
    public long Oldest { get; set; } = 1;

    /// <summary>Highest revision known durable; readers never see beyond it. Written by the journal thread.</summary>
    public long DurableHead
    {
        get => Volatile.Read(ref _durableHead);
        set => Volatile.Write(ref _durableHead, value);
    }

    private long _durableHead;

    public Dictionary<string, TaskRecord> Tasks { get; } = new(StringComparer.Ordinal);

    public SortedDictionary<string, NoteRecord> Notes { get; } = new(StringComparer.Ordinal);

    public TaskCounts Counts { get; private set; } = new();

    public EventLog Recent { get; } = new(recentEvents);

    /// <summary>Completes when the store's last queued write of this workflow is durable: a reader waits on it to see only durable state.</summary>
    public Task? LastWrite { get; set; }

    private readonly Dictionary<string, ReadyQueue> _ready = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<string>> _dependents = new(StringComparer.Ordinal);
    private string[]? _sortedIds;

    public IReadOnlyList<string> Dependents(string taskId) =>
        _dependents.TryGetValue(taskId, out var list) ? list : [];

    /// <summary>
    /// The best <paramref name="limit"/> ready tasks these skills allow, leaving out <paramref name="skip"/> (what the
    /// asking transaction changed: its own versions of those come from its overlay). Each covered queue gives its first
    /// <paramref name="limit"/> tasks not skipped, so the best of all queues are among them.
    /// </summary>
    public List<TaskRecord> ReadyFor(IReadOnlyCollection<string> workerSkills, int limit, IReadOnlyDictionary<string, TaskRecord>? skip = null)
    {
        var result = new List<TaskRecord>();
        foreach (var queue in _ready.Values)
        {
            if (queue.Tasks.Min is not { } first || !TaskIndexing.Covers(workerSkills, queue.Skills))
            {
                continue;
            }

            // A claim wants one task (a claim_next too, after its complete): the queue's Min walks one path of the tree,
            // where enumerating allocates a stack as deep as the tree (about 300 B a claim with up to 300,000 tasks
            // ready, by the bench's --allocations).
            if (limit == 1 && skip?.ContainsKey(first.Id) != true)
            {
                result.Add(first);
                continue;
            }

            var taken = 0;
            foreach (var task in queue.Tasks)
            {
                if (skip?.ContainsKey(task.Id) == true)
                {
                    continue;
                }

                result.Add(task);
                if (++taken >= limit)
                {
                    break;
                }
            }
        }

        result.Sort(ReadyOrder);
        if (result.Count > limit)
        {
            result.RemoveRange(limit, result.Count - limit);
        }

        return result;
    }

    public List<TaskRecord> ListTasks(TaskState? state, string? afterId, int limit)
    {
        _sortedIds ??= Tasks.Keys.Order(StringComparer.Ordinal).ToArray();
        var start = 0;
        if (afterId is not null)
        {
            start = Array.BinarySearch(_sortedIds, afterId, StringComparer.Ordinal);
            start = start >= 0 ? start + 1 : ~start;
        }

        var result = new List<TaskRecord>(Math.Min(limit, 256));
        for (var i = start; i < _sortedIds.Length && result.Count < limit; i++)
        {
            var task = Tasks[_sortedIds[i]];
            if (state is null || task.State == state)
            {
                result.Add(task);
            }
        }

        return result;
    }

    public List<NoteRecord> ListNotes(string prefix, string? afterKey, int limit)
    {
        var result = new List<NoteRecord>();
        foreach (var (key, note) in Notes)
        {
            if (afterKey is not null && string.CompareOrdinal(key, afterKey) <= 0)
            {
                continue;
            }

            if (!key.StartsWith(prefix, StringComparison.Ordinal))
            {
                if (string.CompareOrdinal(key, prefix) > 0 && prefix.Length > 0)
                {
                    break;
                }

                continue;
            }

            result.Add(note);
            if (result.Count >= limit)
            {
                break;
            }
        }

        return result;
    }

    /// <summary>
    /// Applies a transaction's changes: assigns each the next revision, stores its snapshot (with that
    /// ModRevision), moves it between indexes, appends it to the recent events and trims history by
    /// <see cref="EventRetention"/>. Returns what was committed, with what each change replaced, so that a
    /// store can write it and, for a speculative apply, <see cref="Undo"/> it.
    /// </summary>
    public AppliedChanges Apply(IReadOnlyList<EventRecord> changes, int maxEvents, int trimSlack)
    {
        var applied = new AppliedChanges(Head, Oldest, Record);
        foreach (var change in changes)
        {
            var revision = ++Head;
            EventRecord e;
            object? previous;
            switch (change.Kind)
            {
                case EventKind.WorkflowCreated or EventKind.WorkflowUpdated:
                    var workflow = change.Workflow! with { ModRevision = revision };
                    if (Record is null)
                    {
                        // A new log (first creation, or re-creation after a delete) starts at this revision.
                        Oldest = revision;
                    }

                    previous = Record;
                    Record = workflow;
                    e = change with { Revision = revision, Workflow = workflow };
                    break;
                case EventKind.WorkflowDeleted:
                    Clear();
                    Oldest = revision + 1;
                    // The deletion is announced but not kept: the log it would belong to is gone.
                    applied.AddDeletion(change with { Revision = revision });
                    continue;
                case EventKind.NotePut:
                    var note = change.Note! with { ModRevision = revision };
                    previous = PutNote(note);
                    e = change with { Revision = revision, Note = note };
                    break;
                case EventKind.NoteDeleted or EventKind.NoteExpired:
                    var gone = change.Note! with { ModRevision = revision };
                    previous = RemoveNote(gone.Key);
                    e = change with { Revision = revision, Note = gone };
                    break;
                default:
                    var task = change.Task! with { ModRevision = revision };
                    previous = PutTask(task);
                    e = change with { Revision = revision, Task = task };
                    break;
            }

            applied.Add(e, previous);
            Recent.Add(e);
        }

        if (EventRetention.TrimTo(Head, Oldest, maxEvents, trimSlack) is { } keepFrom)
        {
            Oldest = keepFrom;
            Recent.TrimBelow(keepFrom);
            applied.TrimBelow = keepFrom;
        }

        applied.Head = Head;
        applied.Oldest = Oldest;
        return applied;
    }

    /// <summary>
    /// Reverts the last <see cref="Apply"/> not yet undone (undo them newest first). False when that is
    /// impossible (the changes deleted the workflow): the caller must rebuild the state from its source.
    /// Trimmed recent events stay trimmed; <see cref="Recent"/> is a cache.
    /// </summary>
    public bool Undo(AppliedChanges applied)
    {
        if (applied.DeletedContents)
        {
            return false;
        }

        for (var i = applied.Events.Count - 1; i >= 0; i--)
        {
            var e = applied.Events[i];
            switch (e.Kind)
            {
                case EventKind.WorkflowCreated or EventKind.WorkflowUpdated:
                    break;
                case EventKind.NotePut or EventKind.NoteDeleted or EventKind.NoteExpired:
                    if (applied.Previous[i] is NoteRecord note)
                    {
                        PutNote(note);
                    }
                    else
                    {
                        RemoveNote(e.Note!.Key);
                    }

                    break;
                default:
                    if (applied.Previous[i] is TaskRecord task)
                    {
                        PutTask(task);
                    }
                    else
                    {
                        RemoveTask(e.Task!.Id);
                    }

                    break;
            }
        }

        Record = applied.RecordBefore;
        Head = applied.HeadBefore;
        Oldest = applied.OldestBefore;
        Recent.TruncateAfter(applied.HeadBefore);
        return true;
    }

    /// <summary>Stores a task record and moves it between indexes. Returns the record it replaced.</summary>
    public TaskRecord? PutTask(TaskRecord task)
    {
        Tasks.TryGetValue(task.Id, out var old);
        if (old is null)
        {
            _sortedIds = null;
            foreach (var dep in task.DependsOn)
            {
                if (!_dependents.TryGetValue(dep, out var list))
                {
                    _dependents[dep] = list = [];
                }

                list.Add(task.Id);
            }
        }
        else if (old.State == TaskState.Ready)
        {
            _ready[TaskIndexing.SkillSetKey(old.RequiredSkills)].Tasks.Remove(old);
        }

        if (task.State == TaskState.Ready)
        {
            var key = TaskIndexing.SkillSetKey(task.RequiredSkills);
            if (!_ready.TryGetValue(key, out var queue))
            {
                _ready[key] = queue = new ReadyQueue(TaskIndexing.SkillsOfKey(key), new SortedSet<TaskRecord>(ReadyOrder));
            }

            queue.Tasks.Add(task);
        }

        Tasks[task.Id] = task;
        Counts.Move(old?.State, task.State);
        MoveTimer(task.Id, old is null ? null : TaskIndexing.TimerOf(old), TaskIndexing.TimerOf(task));
        return old;
    }

    /// <summary>Forgets a task and its index entries (undoing its creation).</summary>
    public void RemoveTask(string taskId)
    {
        if (!Tasks.Remove(taskId, out var old))
        {
            return;
        }

        _sortedIds = null;
        if (old.State == TaskState.Ready)
        {
            _ready[TaskIndexing.SkillSetKey(old.RequiredSkills)].Tasks.Remove(old);
        }

        foreach (var dep in old.DependsOn)
        {
            if (_dependents.TryGetValue(dep, out var list))
            {
                list.Remove(taskId);
                if (list.Count == 0)
                {
                    _dependents.Remove(dep);
                }
            }
        }

        Counts.Move(old.State, null);
        MoveTimer(taskId, TaskIndexing.TimerOf(old), null);
    }

    /// <summary>Stores a note. Returns the note it replaced.</summary>
    public NoteRecord? PutNote(NoteRecord note)
    {
        Notes.TryGetValue(note.Key, out var old);
        if (old is not null && TaskIndexing.TimerOf(old) is { } oldDue)
        {
            timers?.Remove(Id, TimerKind.NoteExpiry, note.Key, oldDue);
        }

        Notes[note.Key] = note;
        if (TaskIndexing.TimerOf(note) is { } due)
        {
            timers?.Add(Id, TimerKind.NoteExpiry, note.Key, due);
        }

        return old;
    }

    /// <summary>Removes a note. Returns the note it removed.</summary>
    public NoteRecord? RemoveNote(string key)
    {
        if (Notes.Remove(key, out var old) && TaskIndexing.TimerOf(old) is { } due)
        {
            timers?.Remove(Id, TimerKind.NoteExpiry, key, due);
        }

        return old;
    }

    /// <summary>Forgets every task and note (a deletion); the head revision stays.</summary>
    public void Clear()
    {
        Record = null;
        Tasks.Clear();
        Notes.Clear();
        _ready.Clear();
        _dependents.Clear();
        _sortedIds = null;
        Counts = new TaskCounts();
        Recent.Clear();
        timers?.RemoveWorkflow(Id);
    }

    private void MoveTimer(string taskId, (TimerKind Kind, DateTimeOffset Due)? before, (TimerKind Kind, DateTimeOffset Due)? after)
    {
        if (timers is null || before == after)
        {
            return;
        }

        if (before is { } o)
        {
            timers.Remove(Id, o.Kind, taskId, o.Due);
        }

        if (after is { } n)
        {
            timers.Add(Id, n.Kind, taskId, n.Due);
        }
    }

    private sealed record ReadyQueue(string[] Skills, SortedSet<TaskRecord> Tasks);
}

/// <summary>What <see cref="WorkflowState.Apply"/> committed, and what it needs to be undone.</summary>
public sealed class AppliedChanges
{
    internal AppliedChanges(long headBefore, long oldestBefore, WorkflowRecord? recordBefore)
    {
        HeadBefore = headBefore;
        OldestBefore = oldestBefore;
        RecordBefore = recordBefore;
    }

    /// <summary>
    /// The committed changes in revision order, as watchers get them. After a deletion, the deletion comes
    /// first and only what followed it remains (the log before it is gone).
    /// </summary>
    public List<EventRecord> Events { get; } = [];

    /// <summary>For each of <see cref="Events"/>, the record it replaced (task, note or workflow), or null.</summary>
    public List<object?> Previous { get; } = [];

    /// <summary>The workflow was deleted: a store wipes its contents before writing what follows.</summary>
    public bool DeletedContents { get; private set; }

    /// <summary>History below this revision is trimmed (0: nothing to trim).</summary>
    public long TrimBelow { get; internal set; }

    public long Head { get; internal set; }

    public long Oldest { get; internal set; }

    public long HeadBefore { get; }

    public long OldestBefore { get; }

    public WorkflowRecord? RecordBefore { get; }

    /// <summary>The events a store keeps in its log: all but the deletion.</summary>
    public IEnumerable<EventRecord> Logged => DeletedContents ? Events.Skip(1) : Events;

    internal void Add(EventRecord e, object? previous)
    {
        Events.Add(e);
        Previous.Add(previous);
    }

    internal void AddDeletion(EventRecord e)
    {
        Events.Clear();
        Previous.Clear();
        DeletedContents = true;
        TrimBelow = 0;
        Add(e, null);
    }
}
