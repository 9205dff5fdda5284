using GrpcBoard.Core.Model;

namespace GrpcBoard.Core.Storage;

/// <summary>
/// A transaction whose committed reads come from a <see cref="WorkflowState"/> in memory. Every read
/// completes synchronously, so a body run under the state's lock never waits on I/O while holding it.
/// </summary>
public sealed class StateTransaction(WorkflowState state) : WorkflowTransactionBase(state.Id)
{
    public override long HeadRevision => state.Head;

    /// <summary>Where the state the transaction runs on indexes its timers: for a store that keeps an index per workflow (a Redis replica).</summary>
    public TimerIndex? Timers => state.Timers;

    public override TaskCounts Counts => state.Counts;

    protected override WorkflowRecord? CommittedWorkflow => state.Record;

    /// <summary>
    /// Runs <paramref name="body"/> against <paramref name="transaction"/>. A body that awaited something other
    /// than this transaction's reads would hold the state's lock across I/O, so it is refused as a bug.
    /// </summary>
    public static T RunSynchronously<T>(StateTransaction transaction, Func<IWorkflowTransaction, ValueTask<T>> body)
    {
        var pending = body(transaction);
        if (!pending.IsCompleted)
        {
            throw new InvalidOperationException("A transaction body over in-memory state must complete synchronously.");
        }

        return pending.GetAwaiter().GetResult();
    }

    protected override ValueTask<TaskRecord?> ReadTaskAsync(string taskId) =>
        new(state.Tasks.GetValueOrDefault(taskId));

    protected override ValueTask<IReadOnlyList<TaskRecord>> ReadReadyTasksAsync(IReadOnlyCollection<string> workerSkills, int limit, IReadOnlyDictionary<string, TaskRecord>? skip) =>
        new(state.ReadyFor(workerSkills, limit, skip));

    protected override ValueTask<IReadOnlyList<string>> ReadDependentsAsync(string taskId) =>
        new(state.Dependents(taskId));

    protected override ValueTask<IReadOnlyList<TaskRecord>> ReadTasksAsync(TaskState? taskState, string? afterId, int limit) =>
        new(state.ListTasks(taskState, afterId, limit));

    protected override ValueTask<NoteRecord?> ReadNoteAsync(string key) =>
        new(state.Notes.GetValueOrDefault(key));

    protected override ValueTask<IReadOnlyList<NoteRecord>> ReadNotesAsync(string prefix, string? afterKey, int limit) =>
        new(state.ListNotes(prefix, afterKey, limit));
}
