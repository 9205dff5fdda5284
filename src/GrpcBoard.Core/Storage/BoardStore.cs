using GrpcBoard.Core.Model;

namespace GrpcBoard.Core.Storage;

/// <summary>
/// The narrow contract both stores implement. A store keeps records, indexes and the event log, and
/// runs transactions atomically per workflow; it holds no coordination rules. Every write is a
/// <see cref="EventRecord"/> appended to a transaction: one change, one revision, one event, so no
/// state change can happen without its event.
/// </summary>
public interface IBoardStore : IAsyncDisposable
{
    /// <summary>
    /// Runs <paramref name="body"/> against a consistent view of one workflow and commits the changes it
    /// appended, all or none. Returns only once the commit is durable (and, for a body that changes
    /// nothing, once everything it observed is durable). A store may run the body more than once
    /// (optimistic concurrency), so the body must have no effect other than through the transaction.
    /// Throws <see cref="BoardException"/> with StoreUnavailable when the store cannot commit.
    /// </summary>
    Task<TxnResult<T>> ExecuteAsync<T>(string workflowId, Func<IWorkflowTransaction, ValueTask<T>> body, CancellationToken cancellationToken);

    /// <summary>Workflows ordered by id, after <paramref name="afterId"/>, optionally in one status.</summary>
    ValueTask<IReadOnlyList<WorkflowSummary>> ListWorkflowsAsync(WorkflowStatus? status, string? afterId, int limit, CancellationToken cancellationToken);

    /// <summary>
    /// Durable events of a workflow from <paramref name="fromRevision"/> (inclusive), oldest first, at most
    /// <paramref name="limit"/>. Never returns an event that is not yet durable.
    /// </summary>
    ValueTask<EventPage> ReadEventsAsync(string workflowId, long fromRevision, int limit, CancellationToken cancellationToken);

    /// <summary>Timers due at <paramref name="now"/>, earliest first, across all workflows.</summary>
    ValueTask<IReadOnlyList<DueTimer>> GetDueTimersAsync(DateTimeOffset now, int limit, CancellationToken cancellationToken);

    /// <summary>True when the store can take commits now (for health checks).</summary>
    ValueTask<bool> CheckHealthAsync(CancellationToken cancellationToken);
}

/// <summary>
/// A store shared by several server instances in which each workflow is best served by one instance at a time
/// (the Redis store: the holder of the workflow's turn). The server sends a call on such a workflow to that
/// instance instead of serving it; which instance serves a call never changes its outcome, only its speed.
/// </summary>
public interface IWorkflowRouting
{
    /// <summary>The address of the server instance that should serve calls on this workflow now; null: this one.</summary>
    string? PreferredServer(string workflowId);

    /// <summary>A call sent to this address could not connect: the calls are served here for a while.</summary>
    void ReportUnreachable(string address);
}

/// <summary>The view and the write buffer of one transaction.</summary>
public interface IWorkflowTransaction
{
    string WorkflowId { get; }

    /// <summary>The workflow, including changes appended so far; null if it does not exist.</summary>
    WorkflowRecord? Workflow { get; }

    /// <summary>The head revision before this transaction: 0 for an id never used; kept across delete.</summary>
    long HeadRevision { get; }

    /// <summary>Committed task counts (not including this transaction's changes).</summary>
    TaskCounts Counts { get; }

    ValueTask<TaskRecord?> GetTaskAsync(string taskId);

    /// <summary>
    /// READY tasks a worker with these skills may take, best first (see <c>TaskIndexing.CompareReady</c>).
    /// A store may return equally ranked tasks in another order to spread concurrent claimers.
    /// </summary>
    ValueTask<IReadOnlyList<TaskRecord>> GetReadyTasksAsync(IReadOnlyCollection<string> workerSkills, int limit);

    /// <summary>Ids of the tasks whose depends_on names <paramref name="taskId"/>.</summary>
    ValueTask<IReadOnlyList<string>> GetDependentsAsync(string taskId);

    /// <summary>Tasks ordered by id after <paramref name="afterId"/>, optionally in one state.</summary>
    ValueTask<IReadOnlyList<TaskRecord>> ListTasksAsync(TaskState? state, string? afterId, int limit);

    ValueTask<NoteRecord?> GetNoteAsync(string key);

    /// <summary>Notes ordered by key (ordinal), with the prefix, after <paramref name="afterKey"/>.</summary>
    ValueTask<IReadOnlyList<NoteRecord>> ListNotesAsync(string prefix, string? afterKey, int limit);

    /// <summary>
    /// Records one change. Its snapshot (task, note or workflow) becomes the stored record: NOTE_DELETED and
    /// NOTE_EXPIRED remove the note, WORKFLOW_DELETED removes the workflow with everything in it. The
    /// store assigns the revision and sets the snapshot's ModRevision to it.
    /// </summary>
    void Append(EventRecord change);
}

/// <summary>What a committed transaction produced.</summary>
/// <param name="Value">The body's return value.</param>
/// <param name="Revision">The workflow's head revision after the commit (or as observed, if nothing changed).</param>
/// <param name="Events">The committed changes with revisions and ModRevisions assigned.</param>
public sealed record TxnResult<T>(T Value, long Revision, IReadOnlyList<EventRecord> Events)
{
    /// <summary>The task as its last change in this transaction left it, or null if it did not change.</summary>
    public TaskRecord? LastTask(string taskId)
    {
        for (var i = Events.Count - 1; i >= 0; i--)
        {
            if (Events[i].Task is { } t && t.Id == taskId)
            {
                return t;
            }
        }

        return null;
    }

    /// <summary>
    /// Every changed task as its last change left it, by id: for a caller that asks about many tasks (a posted
    /// batch of up to a thousand), where one <see cref="LastTask"/> per task would scan the events once each.
    /// </summary>
    public Dictionary<string, TaskRecord> LastTasks()
    {
        var last = new Dictionary<string, TaskRecord>(Events.Count, StringComparer.Ordinal);
        foreach (var change in Events)
        {
            if (change.Task is { } t)
            {
                last[t.Id] = t;
            }
        }

        return last;
    }
}

public sealed record WorkflowSummary(WorkflowRecord Workflow, TaskCounts Counts, long Revision);

/// <param name="WorkflowExists">False when the workflow does not exist (events is then empty).</param>
/// <param name="HeadRevision">The workflow's durable head revision.</param>
/// <param name="OldestRevision">The oldest revision a reader may ask for; everything from it to the head is retained.</param>
public sealed record EventPage(bool WorkflowExists, long HeadRevision, long OldestRevision, IReadOnlyList<EventRecord> Events);

public enum TimerKind
{
    LeaseExpiry = 1,
    BackoffEnd = 2,
    NoteExpiry = 3,
}

/// <summary>Something that waits on the clock: a lease, a backoff, a note's TTL.</summary>
public readonly record struct DueTimer(string WorkflowId, TimerKind Kind, string Id, DateTimeOffset Due);

/// <summary>
/// Whether the call running in this async flow may still be served by another server instance instead
/// (<see cref="IWorkflowRouting"/>). The server begins such a call (never one another instance forwarded to it:
/// a call moves once at most); the store pins it here once anything of it committed, so that a call made of
/// several transactions (an update, then a read of the counts) is never repeated elsewhere. The state is an
/// object shared down the async flow, so a pin made inside the store reaches the server's code too.
/// </summary>
public sealed class CallRouting
{
    private static readonly AsyncLocal<CallRouting?> Current = new();
    private volatile bool _mayMove = true;

    /// <summary>True while the call in this flow may still go to another instance.</summary>
    public static bool MayServeElsewhere => Current.Value?._mayMove == true;

    /// <summary>Starts a call that may go to another instance until it commits something here.</summary>
    public static void BeginMovableCall() => Current.Value = new CallRouting();

    /// <summary>The call stays here to its end.</summary>
    public static void Pin()
    {
        if (Current.Value is { } call)
        {
            call._mayMove = false;
        }
    }
}

/// <summary>
/// The call had no effect here and is better served by the instance at <see cref="Address"/>: thrown by a store
/// only for calls that <see cref="CallRouting.MayServeElsewhere"/>, before anything of the call committed.
/// </summary>
public sealed class ServedElsewhereException(string address)
    : Exception($"The workflow is served by the server instance at {address} now.")
{
    public string Address { get; } = address;
}
