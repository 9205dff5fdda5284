using System.Globalization;
using System.Runtime.CompilerServices;
using GrpcBoard.Core.Events;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Storage;

namespace GrpcBoard.Core.Watch;

/// <summary>Which events a watcher wants. Filtered-out events still advance the watcher's position.</summary>
public sealed record WatchFilter(IReadOnlySet<EventKind>? Kinds = null, IReadOnlySet<string>? TaskIds = null, string? NoteKeyPrefix = null)
{
    public static readonly WatchFilter All = new();

    public bool Matches(EventRecord e)
    {
        if (Kinds is { Count: > 0 } && !Kinds.Contains(e.Kind))
        {
            return false;
        }

        if (TaskIds is { Count: > 0 } && (e.Task is null || !TaskIds.Contains(e.Task.Id)))
        {
            return false;
        }

        if (!string.IsNullOrEmpty(NoteKeyPrefix) && (e.Note is null || !e.Note.Key.StartsWith(NoteKeyPrefix, StringComparison.Ordinal)))
        {
            return false;
        }

        return true;
    }
}

/// <summary>What a watch stream carries: an event, or a progress mark up to which everything was delivered.</summary>
public abstract record WatchItem
{
    private WatchItem()
    {
    }

    public sealed record Change(EventRecord Event) : WatchItem;

    /// <summary>Every matching event up to and including <paramref name="Revision"/> has been delivered.</summary>
    public sealed record Progress(long Revision, bool CaughtUp) : WatchItem;
}

public sealed class WatchOptions
{
    /// <summary>Live events buffered per watcher before it is sent back to catch up from the store.</summary>
    public int LiveBufferSize { get; set; } = 1024;

    /// <summary>Events read from the store per catch-up round.</summary>
    public int CatchUpBatchSize { get; set; } = 512;

    public TimeSpan DefaultProgressInterval { get; set; } = TimeSpan.FromSeconds(5);
}

/// <summary>
/// Resumable watches, transport-neutral. The order of steps is what makes "every event exactly once, in
/// order" hold: subscribe to live events first, then read history from the store up to its durable
/// head, then switch to the live buffer and drop what history already delivered (revision &lt; next).
/// A gap in the live stream (an overflowed buffer, a lost pub/sub message from another instance) sends
/// the watcher back to history for the missing revisions, never past them; and an idle watcher asks the
/// store for its head before each progress message, so a change whose live event never came is
/// delivered at the next progress interval at the latest. Progress is due after an interval in which the
/// watcher was sent nothing, not one without live events: a filtered watch on a busy workflow, whose events
/// all fail the filter, still hears every interval that it is current (clients take silence for a dead
/// connection).
/// </summary>
public sealed class WatchEngine(IBoardStore store, EventHub hub, TimeProvider time, WatchOptions options)
{
    public async IAsyncEnumerable<WatchItem> WatchAsync(
        string workflowId,
        long startRevision,
        WatchFilter filter,
        TimeSpan progressInterval,
        [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var subscription = hub.Subscribe(workflowId, options.LiveBufferSize);
        try
        {
            var first = await store.ReadEventsAsync(workflowId, Math.Max(startRevision, 1), options.CatchUpBatchSize, cancellationToken).ConfigureAwait(false);
            if (!first.WorkflowExists)
            {
                throw BoardException.WorkflowNotFound(workflowId);
            }

            // The highest revision known to exist: progress never claims more than that, even for a watch
            // that asked to start beyond the head.
            var head = first.HeadRevision;
            long next;
            EventPage? pending = null;
            if (startRevision <= 0)
            {
                next = first.HeadRevision + 1;
            }
            else
            {
                ThrowIfCompacted(startRevision, first);
                next = startRevision;
                pending = first;
            }

            var caughtUpSent = false;
            // When the watcher was last sent anything: progress is due an interval after it.
            var lastSent = time.GetTimestamp();
            while (true)
            {
                // History: from `next` up to the store's durable head (the first page is already read).
                while (true)
                {
                    var page = pending ?? await store.ReadEventsAsync(workflowId, next, options.CatchUpBatchSize, cancellationToken).ConfigureAwait(false);
                    pending = null;
                    if (!page.WorkflowExists)
                    {
                        // Deleted while we read; the WORKFLOW_DELETED event is live-only and ends the stream below.
                        break;
                    }

                    ThrowIfCompacted(next, page);
                    head = Math.Max(head, page.HeadRevision);
                    foreach (var e in page.Events)
                    {
                        if (e.Revision < next)
                        {
                            continue;
                        }

                        next = e.Revision + 1;
                        if (filter.Matches(e))
                        {
                            lastSent = time.GetTimestamp();
                            yield return new WatchItem.Change(e);
                        }
                    }

                    if (page.Events.Count < options.CatchUpBatchSize)
                    {
                        break;
                    }
                }

                if (!caughtUpSent)
                {
                    caughtUpSent = true;
                    lastSent = time.GetTimestamp();
                    yield return new WatchItem.Progress(Math.Min(next - 1, head), CaughtUp: true);
                }

                // Live: until the buffer overflows or shows a gap.
                var resync = false;
                while (!resync)
                {
                    var quiet = progressInterval - time.GetElapsedTime(lastSent);
                    var hasEvents = await WaitAsync(subscription, quiet > TimeSpan.Zero ? quiet : TimeSpan.Zero, cancellationToken).ConfigureAwait(false);
                    if (!hasEvents)
                    {
                        if (subscription.Overflowed || subscription.Reader.Completion.IsCompleted)
                        {
                            subscription.Dispose();
                            subscription = hub.Subscribe(workflowId, options.LiveBufferSize);
                            resync = true;
                            continue;
                        }

                        // Idle: before claiming progress, ask the store. A change whose live event never came
                        // (a notification from another instance lost, or still on its way) is in the log.
                        var idle = await store.ReadEventsAsync(workflowId, next, 1, cancellationToken).ConfigureAwait(false);
                        if (!idle.WorkflowExists)
                        {
                            // Deleted, and the deletion's live event was missed: its log is gone, the stream ends.
                            yield break;
                        }

                        head = Math.Max(head, idle.HeadRevision);
                        if (idle.HeadRevision >= next)
                        {
                            resync = true;
                            continue;
                        }

                        lastSent = time.GetTimestamp();
                        yield return new WatchItem.Progress(Math.Min(next - 1, head), CaughtUp: false);
                        continue;
                    }

                    while (subscription.Reader.TryRead(out var e))
                    {
                        head = Math.Max(head, e.Revision);
                        if (e.Revision < next)
                        {
                            continue;
                        }

                        if (e.Kind == EventKind.WorkflowDeleted)
                        {
                            // Deletion ends the workflow's log; a workflow re-created later starts a new one.
                            if (filter.Matches(e))
                            {
                                yield return new WatchItem.Change(e);
                            }

                            yield break;
                        }

                        if (e.Revision > next)
                        {
                            // Missing revisions: fetch them from history; the live buffer keeps the rest.
                            resync = true;
                            break;
                        }

                        next = e.Revision + 1;
                        if (filter.Matches(e))
                        {
                            lastSent = time.GetTimestamp();
                            yield return new WatchItem.Change(e);
                        }
                    }

                    if (!resync && time.GetElapsedTime(lastSent) >= progressInterval)
                    {
                        // Live events came, and the filter let none through for an interval. Every revision
                        // below `next` was seen in order, so progress to it needs no look at the store.
                        lastSent = time.GetTimestamp();
                        yield return new WatchItem.Progress(Math.Min(next - 1, head), CaughtUp: false);
                    }
                }
            }
        }
        finally
        {
            subscription.Dispose();
        }
    }

    /// <summary>Waits for live events; false on an idle interval or when the subscription ended.</summary>
    private async ValueTask<bool> WaitAsync(EventSubscription subscription, TimeSpan idle, CancellationToken cancellationToken)
    {
        if (subscription.Reader.TryPeek(out _))
        {
            return true;
        }

        using var timeout = new CancellationTokenSource(idle, time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
        try
        {
            return await subscription.Reader.WaitToReadAsync(linked.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return false;
        }
    }

    private static void ThrowIfCompacted(long wanted, EventPage page)
    {
        if (wanted < page.OldestRevision)
        {
            throw new BoardException(BoardError.HistoryCompacted,
                $"Revision {wanted} is older than the retained history, which starts at {page.OldestRevision}.",
                new Dictionary<string, string>
                {
                    ["oldest_revision"] = page.OldestRevision.ToString(CultureInfo.InvariantCulture),
                    ["revision"] = page.HeadRevision.ToString(CultureInfo.InvariantCulture),
                });
        }
    }
}
