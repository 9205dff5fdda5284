using GrpcBoard.Core.Storage;
using Microsoft.Extensions.Logging;

namespace GrpcBoard.Core;

/// <summary>
/// Makes the server act on time by itself: expired leases are requeued or dead-lettered, backoffs end,
/// notes expire, whether or not any client calls in. Every instance of a multi-instance deployment runs
/// one; <see cref="Coordinator.FireTimerAsync"/> re-checks each timer inside a transaction, so a timer
/// fired by two instances takes effect once.
/// </summary>
public sealed partial class TimerLoop(IBoardStore store, Coordinator coordinator, TimeProvider time, ILogger<TimerLoop> logger)
{
    /// <summary>How often due timers are looked for. Lease checks on every call do not depend on it.</summary>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromMilliseconds(100);

    public int BatchSize { get; set; } = 1000;

    /// <summary>While passes keep failing, how often the failure is logged again (it is retried at every poll).</summary>
    public TimeSpan FailureLogInterval { get; set; } = TimeSpan.FromMinutes(1);

    public async Task RunAsync(CancellationToken ct)
    {
        DateTimeOffset? failingSince = null;
        var lastLogged = DateTimeOffset.MinValue;
        var failures = 0;
        while (!ct.IsCancellationRequested)
        {
            try
            {
                while (await RunOnceAsync(ct).ConfigureAwait(false) is var (seen, acted) && seen >= BatchSize && acted > 0)
                {
                    // A full batch that made progress: more may be due right now.
                }

                if (failingSince is { } since)
                {
                    LogRecovered(logger, failures, time.GetUtcNow() - since);
                    failingSince = null;
                    failures = 0;
                }
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                // The store may be down; keep trying, the timers stay due. Logged once, then once a minute:
                // a store that refuses for an hour would otherwise write ten warnings a second.
                var now = time.GetUtcNow();
                failingSince ??= now;
                failures++;
                if (now - lastLogged >= FailureLogInterval)
                {
                    LogPassFailed(logger, failures, ex);
                    lastLogged = now;
                }
            }

            try
            {
                await Task.Delay(PollInterval, time, ct).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    /// <summary>Fires every timer due now; returns how many were looked at and how many changed something.</summary>
    public async Task<(int Seen, int Acted)> RunOnceAsync(CancellationToken ct)
    {
        var due = await store.GetDueTimersAsync(time.GetUtcNow(), BatchSize, ct).ConfigureAwait(false);
        var acted = 0;
        foreach (var timer in due)
        {
            try
            {
                if ((await coordinator.FireTimerAsync(timer, ct).ConfigureAwait(false)).Change is not null)
                {
                    acted++;
                }
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                LogTimerFailed(logger, timer.Kind, timer.WorkflowId, timer.Id, ex);
            }
        }

        return (due.Count, acted);
    }

    [LoggerMessage(EventId = 100, Level = LogLevel.Warning, Message = "Timer passes are failing ({Failures} so far); retrying at every poll.")]
    private static partial void LogPassFailed(ILogger logger, int failures, Exception exception);

    [LoggerMessage(EventId = 102, Level = LogLevel.Information, Message = "Timer passes work again after {Failures} failures over {Duration}.")]
    private static partial void LogRecovered(ILogger logger, int failures, TimeSpan duration);

    [LoggerMessage(EventId = 101, Level = LogLevel.Warning, Message = "Firing {Kind} timer of {WorkflowId}/{Id} failed.")]
    private static partial void LogTimerFailed(ILogger logger, TimerKind kind, string workflowId, string id, Exception exception);
}
