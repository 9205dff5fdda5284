using GrpcBoard.Core.Model;
using GrpcBoard.Core.Rules;
using GrpcBoard.Core.Storage;

namespace GrpcBoard.Store.Embedded;

/// <summary>
/// Everything the embedded store knows about one workflow id, in memory, guarded by <see cref="Gate"/>.
/// Indexes are derived from records through <see cref="TaskIndexing"/>, the same rules the Redis store uses.
/// A deleted workflow keeps its state object (with no record) so that its head revision survives.
/// </summary>
internal sealed class WorkflowState(string id, int recentEvents)
{
    private static readonly Comparer<TaskRecord> ReadyOrder = Comparer<TaskRecord>.Create(TaskIndexing.CompareReady);

    public readonly object Gate = new();

    public string Id { get; } = id;

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

    /// <summary>The last journal entry that wrote this workflow: what a reader waits on to see only durable state.</summary>
    public JournalEntry? LastEntry { get; set; }

    private readonly Dictionary<string, ReadyQueue> _ready = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<string>> _dependents = new(StringComparer.Ordinal);
    private string[]? _sortedIds;

    public IReadOnlyList<string> Dependents(string taskId) =>
        _dependents.TryGetValue(taskId, out var list) ? list : [];

    public List<TaskRecord> ReadyFor(IReadOnlyCollection<string> workerSkills, int limit)
    {
        var result = new List<TaskRecord>();
        foreach (var queue in _ready.Values)
        {
            if (queue.Tasks.Count == 0 || !TaskIndexing.Covers(workerSkills, queue.Skills))
            {
                continue;
            }

            foreach (var task in queue.Tasks)
            {
                result.Add(task);
                if (result.Count >= limit * 2)
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

    /// <summary>Stores a task record and moves it between indexes. Returns the record it replaced.</summary>
    public TaskRecord? PutTask(TaskRecord task, TimerIndex timers)
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
        var oldTimer = old is null ? null : TaskIndexing.TimerOf(old);
        var newTimer = TaskIndexing.TimerOf(task);
        if (oldTimer != newTimer)
        {
            if (oldTimer is { } o)
            {
                timers.Remove(Id, o.Kind, task.Id, o.Due);
            }

            if (newTimer is { } n)
            {
                timers.Add(Id, n.Kind, task.Id, n.Due);
            }
        }

        return old;
    }

    public void PutNote(NoteRecord note, TimerIndex timers)
    {
        if (Notes.TryGetValue(note.Key, out var old) && TaskIndexing.TimerOf(old) is { } oldDue)
        {
            timers.Remove(Id, TimerKind.NoteExpiry, note.Key, oldDue);
        }

        Notes[note.Key] = note;
        if (TaskIndexing.TimerOf(note) is { } due)
        {
            timers.Add(Id, TimerKind.NoteExpiry, note.Key, due);
        }
    }

    public void RemoveNote(string key, TimerIndex timers)
    {
        if (Notes.Remove(key, out var old) && TaskIndexing.TimerOf(old) is { } due)
        {
            timers.Remove(Id, TimerKind.NoteExpiry, key, due);
        }
    }

    /// <summary>Forgets every task and note (a deletion); the head revision stays.</summary>
    public void Clear(TimerIndex timers)
    {
        Record = null;
        Tasks.Clear();
        Notes.Clear();
        _ready.Clear();
        _dependents.Clear();
        _sortedIds = null;
        Counts = new TaskCounts();
        Recent.Clear();
        timers.RemoveWorkflow(Id);
    }

    private sealed record ReadyQueue(string[] Skills, SortedSet<TaskRecord> Tasks);
}
