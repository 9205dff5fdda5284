using GrpcBoard.Core.Events;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Watch;
using GrpcBoard.Store.Embedded;
using GrpcBoard.Testing;
using Xunit;

namespace GrpcBoard.Core.Tests;

public sealed class WatchEngineTests
{
    [Fact]
    public async Task ASlowWatcher_WhoseBufferOverflows_CatchesUpFromTheStore_WithoutGapsOrDuplicates()
    {
        var hub = new EventHub();
        var time = new ManualTimeProvider();
        await using var store = new EmbeddedStore(new EmbeddedStoreOptions(), hub);
        var board = new Coordinator(store, hub, time, new BoardLimits(), new WatchOptions { LiveBufferSize = 4, CatchUpBatchSize = 3 });
        await board.CreateWorkflowAsync("wf", "", null, default).Within();
        using var cts = new CancellationTokenSource(TestTimeouts.Default);
        await using var stream = board.WatchAsync("wf", 0, WatchFilter.All, null, cts.Token).GetAsyncEnumerator(cts.Token);
        Assert.True(await stream.MoveNextAsync().AsTask().Within());
        Assert.IsType<WatchItem.Progress>(stream.Current);

        // 100 changes while the watcher reads nothing: its 4-event buffer overflows.
        for (var i = 0; i < 100; i++)
        {
            await board.PutNoteAsync(new NotePutCommand { WorkflowId = "wf", Key = "k", Value = BitConverter.GetBytes(i) }, default).Within();
        }

        var revisions = new List<long>();
        while (revisions.Count < 100 && await stream.MoveNextAsync().AsTask().Within())
        {
            if (stream.Current is WatchItem.Change change)
            {
                revisions.Add(change.Event.Revision);
            }
        }

        Assert.Equal(Enumerable.Range(2, 100).Select(i => (long)i), revisions);
        Assert.Equal(1, hub.SubscriptionCount);
    }

    [Fact]
    public async Task AnIdleWatcher_GetsProgressCarryingTheHead()
    {
        var hub = new EventHub();
        var time = new ManualTimeProvider();
        await using var store = new EmbeddedStore(new EmbeddedStoreOptions(), hub);
        var board = new Coordinator(store, hub, time, new BoardLimits());
        await board.CreateWorkflowAsync("wf", "", null, default).Within();
        await board.PostTasksAsync("wf", [new TaskSpec { Id = "a" }], default).Within();
        using var cts = new CancellationTokenSource(TestTimeouts.Default);
        await using var stream = board.WatchAsync("wf", 1, WatchFilter.All, TimeSpan.FromSeconds(2), cts.Token).GetAsyncEnumerator(cts.Token);
        for (var i = 0; i < 3; i++)
        {
            Assert.True(await stream.MoveNextAsync().AsTask().Within());
        }

        Assert.Equal(new WatchItem.Progress(2, true), stream.Current);
        var next = stream.MoveNextAsync().AsTask();
        await TestTimeouts.Eventually(() =>
        {
            time.Advance(TimeSpan.FromMilliseconds(500));
            return Task.FromResult(next.IsCompleted);
        }, "a progress message after the idle interval");
        Assert.True(await next.Within());
        Assert.Equal(new WatchItem.Progress(2, false), stream.Current);
    }
}

public sealed class WatchProgressUnderAFilterTests
{
    /// <summary>
    /// A filtered watch on a busy workflow: changes keep coming, none passes the filter. Progress is due an
    /// interval after the watcher was last sent something, not after the last live event, so the watcher
    /// still hears that it is current (clients take a silent stream for a dead connection).
    /// </summary>
    [Fact]
    public async Task AWatchWhoseFilterPassesNothing_OnABusyWorkflow_StillGetsProgressEveryInterval()
    {
        var hub = new EventHub();
        var time = new ManualTimeProvider();
        await using var store = new EmbeddedStore(new EmbeddedStoreOptions(), hub);
        var board = new Coordinator(store, hub, time, new BoardLimits());
        await board.CreateWorkflowAsync("wf", "", null, default).Within();
        using var cts = new CancellationTokenSource(TestTimeouts.Default);
        await using var stream = board.WatchAsync("wf", 0, new WatchFilter(NoteKeyPrefix: "wanted/"), TimeSpan.FromSeconds(2), cts.Token).GetAsyncEnumerator(cts.Token);
        Assert.True(await stream.MoveNextAsync().AsTask().Within());
        Assert.Equal(new WatchItem.Progress(1, true), stream.Current);

        // A change the filter drops every half interval, so the live stream is never idle for an interval.
        var moved = stream.MoveNextAsync().AsTask();
        long lastRevision = 1;
        for (var i = 0; i < 12 && !moved.IsCompleted; i++)
        {
            lastRevision = (await board.PutNoteAsync(new NotePutCommand { WorkflowId = "wf", Key = "other", Value = BitConverter.GetBytes(i) }, default).Within()).Revision;
            time.Advance(TimeSpan.FromSeconds(1));
        }

        Assert.True(await moved.Within(), "no progress message while filtered-out changes kept coming");
        var progress = Assert.IsType<WatchItem.Progress>(stream.Current);
        Assert.False(progress.CaughtUp);
        Assert.InRange(progress.Revision, 2, lastRevision);
    }
}

public sealed class WatchWithoutLiveEventsTests
{
    /// <summary>
    /// The store publishes to a hub the watcher does not listen to: every live event is lost, as a pub/sub
    /// message from another instance can be. The watcher still gets every change, in order, by the next
    /// progress interval, and never reports progress past a change it has not delivered.
    /// </summary>
    [Fact]
    public async Task AWatcherWhoseLiveEventsAreLost_GetsEveryChangeAtItsNextProgressInterval()
    {
        var storeHub = new EventHub();
        var watcherHub = new EventHub();
        var time = new ManualTimeProvider();
        await using var store = new EmbeddedStore(new EmbeddedStoreOptions(), storeHub);
        var board = new Coordinator(store, storeHub, time, new BoardLimits());
        await board.CreateWorkflowAsync("wf", "", null, default).Within();
        var engine = new WatchEngine(store, watcherHub, time, new WatchOptions());
        using var cts = new CancellationTokenSource(TestTimeouts.Default);
        await using var stream = engine.WatchAsync("wf", 0, WatchFilter.All, TimeSpan.FromSeconds(2), cts.Token).GetAsyncEnumerator(cts.Token);
        Assert.True(await stream.MoveNextAsync().AsTask().Within());
        Assert.Equal(new WatchItem.Progress(1, true), stream.Current);

        var delivered = new List<long>();
        for (var round = 0; round < 3; round++)
        {
            var put = await board.PutNoteAsync(new NotePutCommand { WorkflowId = "wf", Key = "k", Value = BitConverter.GetBytes(round) }, default).Within();
            while (true)
            {
                var moved = stream.MoveNextAsync().AsTask();
                await TestTimeouts.Eventually(() =>
                {
                    time.Advance(TimeSpan.FromMilliseconds(500));
                    return Task.FromResult(moved.IsCompleted);
                }, "the watcher to move");
                Assert.True(await moved.Within());
                if (stream.Current is WatchItem.Change change)
                {
                    delivered.Add(change.Event.Revision);
                    continue;
                }

                var progress = Assert.IsType<WatchItem.Progress>(stream.Current);
                Assert.True(progress.Revision <= (delivered.Count > 0 ? delivered[^1] : 1), "progress past an undelivered change");
                if (delivered.Count > 0 && delivered[^1] == put.Revision)
                {
                    break;
                }
            }
        }

        Assert.Equal([2L, 3L, 4L], delivered);
    }
}

public sealed class EventHubTests
{
    [Fact]
    public void SubscribersThatComeAndGo_AllReceiveWhatIsPublishedWhileTheyAreSubscribed()
    {
        // Many threads subscribe and unsubscribe the same workflow while events are published; every
        // subscription alive at a publish must get it (the race: an emptied list being dropped just as
        // another subscriber joins it). A stress test: against the code before the fix it failed in
        // about one run of three, losing tens of thousands of deliveries.
        var hub = new EventHub();
        var missed = 0;
        Parallel.For(0, 400_000, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
        {
            using var subscription = hub.Subscribe("wf", 4);
            hub.Publish("wf", [new EventRecord { Revision = i + 1, Kind = EventKind.NotePut, Time = DateTimeOffset.UnixEpoch, WorkflowId = "wf" }]);
            var got = false;
            while (subscription.Reader.TryRead(out var e))
            {
                got |= e.Revision == i + 1;
            }

            if (!got && !subscription.Overflowed)
            {
                Interlocked.Increment(ref missed);
            }
        });
        Assert.Equal(0, missed);
        Assert.Equal(0, hub.SubscriptionCount);
    }
}
