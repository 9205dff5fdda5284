using GrpcBoard.Core.Events;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Storage;
using GrpcBoard.Store.Embedded;

namespace GrpcBoard.Server.Tests;

/// <summary>The in-memory store, counting the transactions each workflow runs (a claim's look for a ready task is one).</summary>
public sealed class CountingStore(IBoardStore inner) : IBoardStore
{
    private readonly object _lock = new();
    private readonly Dictionary<string, int> _transactions = new(StringComparer.Ordinal);
    private readonly List<(string WorkflowId, int Count, TaskCompletionSource Reached)> _waiters = [];

    /// <summary>Creates the server's store, and lets the test reach it.</summary>
    public sealed class Factory
    {
        public CountingStore? Store { get; private set; }

        public IBoardStore Create(EventHub hub) => Store = new CountingStore(new EmbeddedStore(new EmbeddedStoreOptions(), hub));

        public Task WaitForTransactionsAsync(string workflowId, int count) => Store!.WaitForTransactionsAsync(workflowId, count);
    }

    /// <summary>Completes once <paramref name="count"/> transactions on the workflow have started.</summary>
    public Task WaitForTransactionsAsync(string workflowId, int count)
    {
        lock (_lock)
        {
            if (_transactions.GetValueOrDefault(workflowId) >= count)
            {
                return Task.CompletedTask;
            }

            var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Add((workflowId, count, reached));
            return reached.Task;
        }
    }

    public Task<TxnResult<T>> ExecuteAsync<T>(string workflowId, Func<IWorkflowTransaction, ValueTask<T>> body, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            var count = _transactions[workflowId] = _transactions.GetValueOrDefault(workflowId) + 1;
            foreach (var waiter in _waiters.Where(w => w.WorkflowId == workflowId && w.Count <= count).ToList())
            {
                _waiters.Remove(waiter);
                waiter.Reached.TrySetResult();
            }
        }

        return inner.ExecuteAsync(workflowId, body, cancellationToken);
    }

    public ValueTask<IReadOnlyList<WorkflowSummary>> ListWorkflowsAsync(WorkflowStatus? status, string? afterId, int limit, CancellationToken cancellationToken) =>
        inner.ListWorkflowsAsync(status, afterId, limit, cancellationToken);

    public ValueTask<EventPage> ReadEventsAsync(string workflowId, long fromRevision, int limit, CancellationToken cancellationToken) =>
        inner.ReadEventsAsync(workflowId, fromRevision, limit, cancellationToken);

    public ValueTask<IReadOnlyList<DueTimer>> GetDueTimersAsync(DateTimeOffset now, int limit, CancellationToken cancellationToken) =>
        inner.GetDueTimersAsync(now, limit, cancellationToken);

    public ValueTask<bool> CheckHealthAsync(CancellationToken cancellationToken) => inner.CheckHealthAsync(cancellationToken);

    public ValueTask DisposeAsync() => inner.DisposeAsync();
}
