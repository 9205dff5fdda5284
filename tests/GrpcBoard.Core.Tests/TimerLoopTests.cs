using GrpcBoard.Core.Events;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Storage;
using GrpcBoard.Store.Embedded;
using GrpcBoard.Testing;
using Microsoft.Extensions.Logging;
using Xunit;

namespace GrpcBoard.Core.Tests;

public sealed class TimerLoopTests
{
    /// <summary>
    /// A store that refuses every timer pass (Redis down, or refusing after a data loss) is retried at every
    /// poll, ten times a second; the warning is logged once and then once a minute, and recovery once.
    /// </summary>
    [Fact]
    public async Task AStoreThatKeepsFailing_IsLoggedOnceAMinute_NotAtEveryPoll_AndItsRecoveryOnce()
    {
        var time = new ManualTimeProvider();
        var hub = new EventHub();
        await using var inner = new EmbeddedStore(new EmbeddedStoreOptions(), hub);
        var store = new FailingTimers(inner);
        var logger = new CountingLogger();
        var loop = new TimerLoop(store, new Coordinator(store, hub, time, new BoardLimits()), time, logger);
        using var cts = new CancellationTokenSource();
        var running = loop.RunAsync(cts.Token);

        for (var step = 0; step < 10 * 60 * 3; step++)
        {
            // Three minutes of polls, each awaited: the pass fails, then the loop waits for the next poll.
            await TestTimeouts.Eventually(() => Task.FromResult(store.Passes > step), "the next timer pass");
            time.Advance(loop.PollInterval);
        }

        Assert.InRange(logger.Count(LogLevel.Warning), 3, 4);
        store.Failing = false;
        await TestTimeouts.Eventually(() =>
        {
            time.Advance(loop.PollInterval);
            return Task.FromResult(logger.Count(LogLevel.Information) == 1);
        }, "the recovery to be logged");
        await cts.CancelAsync();
        await running.Within();
        Assert.InRange(logger.Count(LogLevel.Warning), 3, 4);
    }

    private sealed class FailingTimers(IBoardStore inner) : IBoardStore
    {
        private int _passes;

        public volatile bool Failing = true;

        public int Passes => Volatile.Read(ref _passes);

        public ValueTask<IReadOnlyList<DueTimer>> GetDueTimersAsync(DateTimeOffset now, int limit, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _passes);
            return Failing
                ? throw new BoardException(BoardError.StoreUnavailable, "injected: the store is down")
                : inner.GetDueTimersAsync(now, limit, cancellationToken);
        }

        public Task<TxnResult<T>> ExecuteAsync<T>(string workflowId, Func<IWorkflowTransaction, ValueTask<T>> body, CancellationToken cancellationToken) =>
            inner.ExecuteAsync(workflowId, body, cancellationToken);

        public ValueTask<IReadOnlyList<WorkflowSummary>> ListWorkflowsAsync(WorkflowStatus? status, string? afterId, int limit, CancellationToken cancellationToken) =>
            inner.ListWorkflowsAsync(status, afterId, limit, cancellationToken);

        public ValueTask<EventPage> ReadEventsAsync(string workflowId, long fromRevision, int limit, CancellationToken cancellationToken) =>
            inner.ReadEventsAsync(workflowId, fromRevision, limit, cancellationToken);

        public ValueTask<bool> CheckHealthAsync(CancellationToken cancellationToken) => inner.CheckHealthAsync(cancellationToken);

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }

    private sealed class CountingLogger : ILogger<TimerLoop>
    {
        private readonly Dictionary<LogLevel, int> _counts = [];

        public int Count(LogLevel level)
        {
            lock (_counts)
            {
                return _counts.GetValueOrDefault(level);
            }
        }

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            lock (_counts)
            {
                _counts[logLevel] = _counts.GetValueOrDefault(logLevel) + 1;
            }
        }
    }
}
