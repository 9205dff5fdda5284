using System.Collections.Concurrent;
using GrpcBoard.Core.Model;

namespace GrpcBoard.Core.Events;

/// <summary>
/// Wakes claims that wait for a ready task. A waiter takes the signal before it looks for a task, so a
/// task made ready between its look and its wait still wakes it (no lost wake-up). Fed from the event
/// hub, so changes committed through other server instances wake waiters here too.
/// </summary>
public sealed class ReadySignals
{
    private readonly ConcurrentDictionary<string, TaskCompletionSource> _signals = new(StringComparer.Ordinal);

    public ReadySignals(EventHub hub) => hub.AddListener(OnEvents);

    /// <summary>A task that completes at the next change that may let a waiting claim succeed in the workflow.</summary>
    public Task NextAsync(string workflowId) =>
        _signals.GetOrAdd(workflowId, static _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;

    private void OnEvents(string workflowId, IReadOnlyList<EventRecord> events)
    {
        foreach (var e in events)
        {
            var wakes = e.Task?.State == TaskState.Ready
                || e.Kind is EventKind.WorkflowUpdated or EventKind.WorkflowDeleted;
            if (wakes && _signals.TryRemove(workflowId, out var signal))
            {
                signal.TrySetResult();
                return;
            }
        }
    }
}
