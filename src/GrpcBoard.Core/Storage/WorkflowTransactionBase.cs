using GrpcBoard.Core.Model;
using GrpcBoard.Core.Rules;

namespace GrpcBoard.Core.Storage;

/// <summary>
/// The part of a transaction both stores share: appended changes are buffered, and reads see them
/// (read-your-writes) on top of the store's committed state, so a body that fails half-way leaves
/// nothing behind. A store supplies the committed reads and applies <see cref="Changes"/> at commit.
/// </summary>
public abstract class WorkflowTransactionBase(string workflowId) : IWorkflowTransaction
{
    private readonly List<EventRecord> _changes = [];
    private Dictionary<string, TaskRecord>? _tasks;
    private Dictionary<string, NoteRecord?>? _notes;
    private WorkflowRecord? _workflow;
    private bool _workflowChanged;
    private bool _deleted;

    public string WorkflowId { get; } = workflowId;

    public WorkflowRecord? Workflow => _workflowChanged ? _workflow : CommittedWorkflow;

    public abstract long HeadRevision { get; }

    public abstract TaskCounts Counts { get; }

    public IReadOnlyList<EventRecord> Changes => _changes;

    protected abstract WorkflowRecord? CommittedWorkflow { get; }

    public ValueTask<TaskRecord?> GetTaskAsync(string taskId)
    {
        if (_deleted)
        {
            return new((TaskRecord?)null);
        }

        return _tasks is not null && _tasks.TryGetValue(taskId, out var task) ? new(task) : ReadTaskAsync(taskId);
    }

    public async ValueTask<IReadOnlyList<TaskRecord>> GetReadyTasksAsync(IReadOnlyCollection<string> workerSkills, int limit)
    {
        if (_deleted)
        {
            return [];
        }

        // Committed ready tasks this transaction has not changed; the overlay adds its changed tasks that are ready.
        var committed = await ReadReadyTasksAsync(workerSkills, limit, _tasks).ConfigureAwait(false);
        return Overlay(committed, t => t.State == TaskState.Ready && TaskIndexing.Covers(workerSkills, t.RequiredSkills), TaskIndexing.CompareReady, limit);
    }

    public ValueTask<IReadOnlyList<string>> GetDependentsAsync(string taskId) =>
        _deleted ? new((IReadOnlyList<string>)[]) : ReadDependentsAsync(taskId);

    public async ValueTask<IReadOnlyList<TaskRecord>> ListTasksAsync(TaskState? state, string? afterId, int limit)
    {
        if (_deleted)
        {
            return [];
        }

        var committed = await ReadTasksAsync(state, afterId, limit).ConfigureAwait(false);
        return Overlay(committed, t => (state is null || t.State == state) && (afterId is null || string.CompareOrdinal(t.Id, afterId) > 0),
            static (a, b) => string.CompareOrdinal(a.Id, b.Id), limit);
    }

    public ValueTask<NoteRecord?> GetNoteAsync(string key)
    {
        if (_deleted)
        {
            return new((NoteRecord?)null);
        }

        return _notes is not null && _notes.TryGetValue(key, out var note) ? new(note) : ReadNoteAsync(key);
    }

    public async ValueTask<IReadOnlyList<NoteRecord>> ListNotesAsync(string prefix, string? afterKey, int limit)
    {
        if (_deleted)
        {
            return [];
        }

        var committed = await ReadNotesAsync(prefix, afterKey, limit).ConfigureAwait(false);
        if (_notes is null)
        {
            return committed;
        }

        var result = new List<NoteRecord>(committed.Count);
        foreach (var note in committed)
        {
            if (!_notes.TryGetValue(note.Key, out var changed))
            {
                result.Add(note);
            }
            else if (changed is not null)
            {
                result.Add(changed);
            }
        }

        return result;
    }

    public void Append(EventRecord change)
    {
        ArgumentNullException.ThrowIfNull(change);
        if (change.WorkflowId != WorkflowId)
        {
            throw new ArgumentException($"Change for workflow '{change.WorkflowId}' appended to a transaction of '{WorkflowId}'.", nameof(change));
        }

        _changes.Add(change);
        switch (change.Kind)
        {
            case EventKind.WorkflowCreated or EventKind.WorkflowUpdated:
                _workflow = change.Workflow ?? throw new ArgumentException("A workflow change needs the workflow.", nameof(change));
                _workflowChanged = true;
                _deleted = false;
                break;
            case EventKind.WorkflowDeleted:
                _workflow = null;
                _workflowChanged = true;
                _deleted = true;
                _tasks = null;
                _notes = null;
                break;
            case EventKind.NotePut:
                (_notes ??= new(StringComparer.Ordinal))[Require(change.Note).Key] = change.Note;
                break;
            case EventKind.NoteDeleted or EventKind.NoteExpired:
                (_notes ??= new(StringComparer.Ordinal))[Require(change.Note).Key] = null;
                break;
            default:
                var task = change.Task ?? throw new ArgumentException($"A {change.Kind} change needs the task.", nameof(change));
                (_tasks ??= new(StringComparer.Ordinal))[task.Id] = task;
                break;
        }
    }

    protected abstract ValueTask<TaskRecord?> ReadTaskAsync(string taskId);

    /// <summary>The best <paramref name="limit"/> committed ready tasks these skills allow, none of them in <paramref name="skip"/>.</summary>
    protected abstract ValueTask<IReadOnlyList<TaskRecord>> ReadReadyTasksAsync(IReadOnlyCollection<string> workerSkills, int limit, IReadOnlyDictionary<string, TaskRecord>? skip);

    protected abstract ValueTask<IReadOnlyList<string>> ReadDependentsAsync(string taskId);

    protected abstract ValueTask<IReadOnlyList<TaskRecord>> ReadTasksAsync(TaskState? state, string? afterId, int limit);

    protected abstract ValueTask<NoteRecord?> ReadNoteAsync(string key);

    protected abstract ValueTask<IReadOnlyList<NoteRecord>> ReadNotesAsync(string prefix, string? afterKey, int limit);

    /// <summary>
    /// The first <paramref name="limit"/> tasks in <paramref name="order"/> that <paramref name="keep"/> accepts, as
    /// this transaction left them: committed ones it changed are replaced (or dropped), and ones it changed into
    /// a match (posted, made READY) are added even though the committed read could not return them.
    /// </summary>
    private IReadOnlyList<TaskRecord> Overlay(IReadOnlyList<TaskRecord> committed, Func<TaskRecord, bool> keep, Comparison<TaskRecord> order, int limit)
    {
        if (_tasks is null)
        {
            return committed.Count <= limit ? committed : committed.Take(limit).ToArray();
        }

        var result = new List<TaskRecord>(committed.Count);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var task in committed)
        {
            seen.Add(task.Id);
            var current = _tasks.TryGetValue(task.Id, out var changed) ? changed : task;
            if (keep(current))
            {
                result.Add(current);
            }
        }

        foreach (var changed in _tasks.Values)
        {
            if (!seen.Contains(changed.Id) && keep(changed))
            {
                result.Add(changed);
            }
        }

        result.Sort(order);
        return result.Count <= limit ? result : result.GetRange(0, limit);
    }

    private static NoteRecord Require(NoteRecord? note) =>
        note ?? throw new ArgumentException("A note change needs the note.", nameof(note));
}
