using GrpcBoard.Core.Model;
using GrpcBoard.Core.Storage;

namespace GrpcBoard.Testing;

/// <summary>A store that counts the transactions each workflow runs (a claim's look for a ready task is one), and passes everything on.</summary>
public sealed class CountingStore(IBoardStore inner) : IBoardStore
{
    private readonly object _lock = new();
    private readonly Dictionary<string, int> _transactions = new(StringComparer.Ordinal);
    private readonly List<(string WorkflowId, int Count, TaskCompletionSource Reached)> _waiters = [];

    /// <summary>Transactions started so far, on every workflow.</summary>
    public int Transactions
    {
        get
        {
            lock (_lock)
            {
                return _transactions.Values.Sum();
            }
        }
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
