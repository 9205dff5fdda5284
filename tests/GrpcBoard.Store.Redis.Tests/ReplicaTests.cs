using System.Collections.Concurrent;
using GrpcBoard.Core;
using GrpcBoard.Core.Events;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Storage;
using GrpcBoard.Core.Watch;
using GrpcBoard.Testing;
using Xunit;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>
/// Two store instances (as two servers would have) on one Redis and one workflow, each with its replica:
/// their commits race or wait for each other's turn, and a refused batch is undone, caught up and re-run
/// (<see cref="TwoInstanceRace"/> says what must hold). Also: how turns pass and lapse, how a change through
/// one instance reaches the other's readers, watchers and waiting claims, and the log as read from Redis.
/// </summary>
public sealed class ReplicaTests(RedisFixture redis) : IClassFixture<RedisFixture>
{
    private readonly string _prefix = "x" + Guid.NewGuid().ToString("N")[..10];
    private readonly ManualTimeProvider _time = new();

    private async Task<(RedisStore Store, EventHub Hub, Coordinator Board)> OpenAsync(int? batchesInFlight = null, bool directCommits = true, TimeSpan? turnLease = null)
    {
        var hub = new EventHub();
        var options = new RedisStoreOptions { Configuration = redis.Endpoint, KeyPrefix = _prefix, MaxBatchesInFlight = batchesInFlight, DirectCommits = directCommits };
        if (turnLease is { } lease)
        {
            options.TurnLease = lease;
        }

        var store = await RedisStore.ConnectAsync(options, hub);
        return (store, hub, new Coordinator(store, hub, _time, new BoardLimits()));
    }

    /// <summary>Two instances, and a workflow created through the first (which then holds its turn).</summary>
    private async Task<Instances> TwoInstancesAsync(string name, TimeSpan? turnLease = null)
    {
        var (storeA, _, a) = await OpenAsync(turnLease: turnLease);
        var (storeB, hubB, b) = await OpenAsync(turnLease: turnLease);
        var workflow = name + "-" + Guid.NewGuid().ToString("N")[..8];
        await a.CreateWorkflowAsync(workflow, name, null, default).Within();
        return new Instances(storeA, a, storeB, hubB, b, workflow);
    }

    private sealed record Instances(RedisStore StoreA, Coordinator A, RedisStore StoreB, EventHub HubB, Coordinator B, string Workflow) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            await StoreA.DisposeAsync();
            await StoreB.DisposeAsync();
        }
    }

    // What a Redis on this host gets by default (auto: 1).
    [RedisFact]
    public Task ConcurrentClaimsAndCompletions_ThroughTwoInstances_TakeEachTaskOnce_AtConsecutiveRevisions() => RaceAsync(null);

    // What a Redis on another host gets by default: a refused batch must also fail the one sent after it.
    [RedisFact]
    public Task ConcurrentClaimsAndCompletions_WithTwoBatchesInFlight_TakeEachTaskOnce_AtConsecutiveRevisions() => RaceAsync(2);

    // Commits through StackExchange.Redis, as on a cluster or after the direct connection broke.
    [RedisFact]
    public Task ConcurrentClaimsAndCompletions_WithoutTheDirectCommitConnection_TakeEachTaskOnce_AtConsecutiveRevisions() => RaceAsync(null, directCommits: false);

    // Turns that never lapse while their holder writes: instances then wait for each other instead of racing.
    [RedisFact]
    public Task ConcurrentClaimsAndCompletions_WithTurnsThatDoNotLapse_WaitForTheirTurn_AndLoseNoRace() => RaceAsync(null, turnLease: TimeSpan.FromSeconds(2));

    private async Task RaceAsync(int? batchesInFlight, bool directCommits = true, TimeSpan? turnLease = null)
    {
        var (storeA, _, a) = await OpenAsync(batchesInFlight, directCommits, turnLease);
        var (storeB, _, b) = await OpenAsync(batchesInFlight, directCommits, turnLease);
        await using var _ = storeA;
        await using var __ = storeB;
        await TwoInstanceRace.RunAsync((storeA, a), (storeB, b));

        Assert.True(storeA.RefusedBatches + storeB.RefusedBatches > 0, "the instances never raced: this test did not exercise refusals");
        if (turnLease is not null)
        {
            // Every refusal was a wait for the other instance's turn; no batch was built on a state another
            // instance had changed, so no transaction ran twice.
            Assert.True(storeA.TurnWaits + storeB.TurnWaits > 0, "the instances never waited for each other's turn");
            Assert.Equal(storeA.TurnWaits, storeA.RefusedBatches);
            Assert.Equal(storeB.TurnWaits, storeB.RefusedBatches);
        }

        Assert.Equal(directCommits, storeA.DirectCommitCount > 0 && storeB.DirectCommitCount > 0);
    }

    [RedisFact]
    public async Task AWriteThroughOneInstance_IsSeenByTheNextReadThroughTheOther_AndByItsWatchers()
    {
        await using var two = await TwoInstancesAsync("rw");
        var (storeB, hubB, a, b, wf) = (two.StoreB, two.HubB, two.A, two.B, two.Workflow);
        await b.GetWorkflowAsync(wf, default).Within();

        var watch = new WatchEngine(storeB, hubB, _time, new WatchOptions()).WatchAsync(wf, 1, WatchFilter.All, TimeSpan.FromSeconds(30), default);
        var seen = new List<long>();
        var watching = Task.Run(async () =>
        {
            await foreach (var item in watch)
            {
                if (item is WatchItem.Change change)
                {
                    seen.Add(change.Event.Revision);
                    if (seen.Count == 21)
                    {
                        return;
                    }
                }
            }
        });

        for (var i = 0; i < 20; i++)
        {
            // B's replica is behind A's commit until it hears of it; its read must still see the write.
            var put = await a.PutNoteAsync(new NotePutCommand { WorkflowId = wf, Key = "k", Value = System.Text.Encoding.UTF8.GetBytes("v" + i), Writer = "a" }, default).Within();
            var read = await b.GetNoteAsync(wf, "k", default).Within();
            Assert.Equal("v" + i, System.Text.Encoding.UTF8.GetString(read.Note.Value.Span));
            Assert.True(read.Revision >= put.Revision);
        }

        await watching.Within();
        Assert.Equal(Enumerable.Range(1, 21).Select(r => (long)r), seen);
    }

    /// <summary>
    /// Before turns, an instance whose batches kept losing to a busy one failed its calls with ABORTED after 64
    /// lost races. Here A writes without pause and its turn would not lapse within the test (30 s lease): B's
    /// write gets through only if A passes the turn while it keeps writing.
    /// </summary>
    [RedisFact]
    public async Task AnInstanceThatKeepsWriting_PassesTheTurn_ToOneThatWaits()
    {
        await using var two = await TwoInstancesAsync("turns", turnLease: TimeSpan.FromSeconds(30));
        var (storeB, a, b, wf) = (two.StoreB, two.A, two.B, two.Workflow);

        // A writes until B's write is done, then 5 more: those need the turn back from B, which is idle by then
        // and must pass it (a lapse would take 30 s, past the test's timeout).
        var bDone = false;
        long aWrites = 0, aWritesWhenBWasDone = -1;
        var twentyWrites = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var writer = Task.Run(async () =>
        {
            while (!Volatile.Read(ref bDone) || Interlocked.Read(ref aWrites) < Interlocked.Read(ref aWritesWhenBWasDone) + 5)
            {
                await a.PutNoteAsync(new NotePutCommand { WorkflowId = wf, Key = "a", Value = "x"u8.ToArray() }, default);
                if (Interlocked.Increment(ref aWrites) == 20)
                {
                    twentyWrites.SetResult();
                }
            }
        });
        await twentyWrites.Task.Within();

        var posted = await b.PostTasksAsync(wf, [new TaskSpec { Id = "from-b" }], default).Within(TimeSpan.FromSeconds(10));
        Interlocked.Exchange(ref aWritesWhenBWasDone, Interlocked.Read(ref aWrites));
        Volatile.Write(ref bDone, true);
        await writer.Within();

        Assert.Single(posted.Tasks);
        Assert.True(storeB.TurnWaits > 0, "B never waited for A's turn: this test did not exercise a handover");
        Assert.True(aWritesWhenBWasDone >= 20, "A had stopped writing");
        Assert.True(Interlocked.Read(ref aWrites) >= aWritesWhenBWasDone + 5, "A did not get the turn back");
        var view = await a.GetWorkflowAsync(wf, default).Within();
        Assert.Equal(1, view.Counts[TaskState.Ready]);
    }

    /// <summary>
    /// An instance whose replica is behind catches up before it runs a transaction, but the other instance's commits
    /// can land faster than a catch-up reads them: then it was behind again after every catch-up, ran nothing, and
    /// never queued for the turn, for as long as the other kept writing (seen in CI: a whole two-instance race won by
    /// one instance). After a catch-up and a second read that both end behind, it runs its transactions on the replica
    /// as it is; their batch is refused for the turn, and it queues. Here A writes through 8 callers without pause
    /// (defaults: 30 ms turn lease, 10 ms turns) until B's 20 writes are done, and B's log reads take 20 ms each.
    /// </summary>
    [RedisFact]
    public async Task AnInstanceBehindABusyOne_StillGetsItsTransactionsIn()
    {
        await using var two = await TwoInstancesAsync("busy");
        var (a, b, wf) = (two.A, two.B, two.Workflow);
        await b.GetWorkflowAsync(wf, default).Within();
        two.StoreB.BeforeLogReadForTests = () => Task.Delay(20);

        var bDone = false;
        var writers = Enumerable.Range(0, 8).Select(w => Task.Run(async () =>
        {
            while (!Volatile.Read(ref bDone))
            {
                await a.PutNoteAsync(new NotePutCommand { WorkflowId = wf, Key = "a" + w, Value = "x"u8.ToArray() }, default);
            }
        })).ToArray();

        try
        {
            for (var i = 0; i < 20; i++)
            {
                await b.PutNoteAsync(new NotePutCommand { WorkflowId = wf, Key = "b", Value = "y"u8.ToArray() }, default).Within(TimeSpan.FromSeconds(10));
            }
        }
        finally
        {
            Volatile.Write(ref bDone, true);
            await Task.WhenAll(writers).Within();
        }

        Assert.True(two.StoreB.TurnWaits > 0, "B never waited for A's turn: A was not writing while B did");
        var view = await b.GetNoteAsync(wf, "b", default).Within();
        Assert.Equal("y", System.Text.Encoding.UTF8.GetString(view.Note.Value.Span));
    }

    /// <summary>
    /// A call that may be served elsewhere (the server could forward it), refused for another instance's turn,
    /// goes to the holder's address instead of waiting: nothing of it commits here, and it does not queue for
    /// the turn, which would make the holder pass it over. The same call pinned here waits and queues instead.
    /// </summary>
    [RedisFact]
    public async Task AMovableCall_RefusedForTheOthersTurn_GoesToTheHolder_WithoutQueueingOrCommitting()
    {
        await using var two = await TwoInstancesAsync("move", turnLease: TimeSpan.FromSeconds(30));
        var (storeA, storeB, a, b, wf) = (two.StoreA, two.StoreB, two.A, two.B, two.Workflow);
        await storeA.AdvertiseAsync("http://holder.invalid:1/");

        var moved = await Assert.ThrowsAsync<ServedElsewhereException>(() => Task.Run(async () =>
        {
            CallRouting.BeginMovableCall();
            await b.PostTasksAsync(wf, [new TaskSpec { Id = "moved" }], default);
        }).Within());

        Assert.Equal("http://holder.invalid:1/", moved.Address);
        Assert.True(storeB.TurnWaits > 0, "B was not refused for A's turn");
        using (var redisClient = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(redis.Endpoint))
        {
            Assert.Equal(0, await redisClient.GetDatabase().ListLengthAsync($"{_prefix}:{{{wf}}}:wq"));
        }

        Assert.Equal(0, (await a.GetWorkflowAsync(wf, default).Within()).Counts[TaskState.Ready]);

        // Pinned (not movable), the call queues for the turn, and A, idle, passes it (a lapse would take 30 s).
        var posted = await b.PostTasksAsync(wf, [new TaskSpec { Id = "stayed" }], default).Within(TimeSpan.FromSeconds(10));
        Assert.Single(posted.Tasks);
    }

    /// <summary>Once something of a call committed, it stays where it is: moving it would repeat what committed.</summary>
    [RedisFact]
    public async Task AMovableCall_IsPinned_OnceSomethingOfItCommitted()
    {
        var (store, _, board) = await OpenAsync();
        await using var _ = store;
        var wf = "pin-" + Guid.NewGuid().ToString("N")[..8];
        await board.CreateWorkflowAsync(wf, "pin", null, default).Within();

        var (afterRead, afterWrite) = await Task.Run(async () =>
        {
            CallRouting.BeginMovableCall();
            await board.GetWorkflowAsync(wf, default);
            var read = CallRouting.MayServeElsewhere;
            await board.PostTasksAsync(wf, [new TaskSpec { Id = "t" }], default);
            return (read, CallRouting.MayServeElsewhere);
        }).Within();

        Assert.True(afterRead, "a read pinned the call");
        Assert.False(afterWrite, "a commit did not pin the call");
        Assert.False(CallRouting.MayServeElsewhere, "the flag leaked out of the call's flow");
    }

    /// <summary>A turn whose holder stopped writing (died, or went idle) lapses, and another instance takes it.</summary>
    [RedisFact]
    public async Task ATurnWhoseHolderStoppedWriting_Lapses_AndTheOtherInstanceWrites()
    {
        // B is opened first, and the turn lasts 5 s: with a 3 s turn and B opened after A's commit, B found the turn
        // already lapsed once, in the whole suite under added CPU load.
        var (storeB, _, b) = await OpenAsync(turnLease: TimeSpan.FromSeconds(5));
        await using var _ = storeB;
        var (storeA, _, a) = await OpenAsync(turnLease: TimeSpan.FromSeconds(5));
        var wf = "lapse-" + Guid.NewGuid().ToString("N")[..8];
        await a.CreateWorkflowAsync(wf, "lapse", null, default).Within();
        await storeA.DisposeAsync();

        var posted = await b.PostTasksAsync(wf, [new TaskSpec { Id = "after-a" }], default).Within();

        Assert.Single(posted.Tasks);
        Assert.True(storeB.TurnWaits > 0, "B found the turn free: this test did not exercise a lapse");
    }

    /// <summary>
    /// A claim waiting on one instance is woken by a task posted through the other, through the notification
    /// and the replica's catch-up. The clock is manual, so the coordinator's periodic re-check never runs: only
    /// the wake-up can end this wait.
    /// </summary>
    [RedisFact]
    public async Task AClaimWaitingOnOneInstance_IsWokenByATaskPostedThroughTheOther()
    {
        await using var two = await TwoInstancesAsync("wake");
        var (a, b, wf) = (two.A, two.B, two.Workflow);

        var waiting = b.ClaimAsync(new ClaimCommand { WorkflowId = wf, WorkerId = "patient", Wait = TimeSpan.FromMinutes(1) }, default);
        await TestTimeouts.Eventually(() => Task.FromResult(b.ReadySignalsForTests.WaitingCount(wf) > 0 || waiting.IsCompleted), "the claim waiting on B");
        Assert.False(waiting.IsCompleted, "the claim ended without waiting");

        await a.PostTasksAsync(wf, [new TaskSpec { Id = "posted-through-a" }], default).Within();
        var claimed = await waiting.Within();

        Assert.Equal("posted-through-a", claimed.Task?.Id);
        Assert.Equal("patient", (await a.GetTaskAsync(wf, "posted-through-a", default).Within()).Task.Owner);
    }

    /// <summary>
    /// An instance that touched a workflow once, with nothing here waiting for its events, does not read the log
    /// for each batch other instances commit; its next transaction catches up first, in one read.
    /// </summary>
    [RedisFact]
    public async Task AReplicaNothingHereWaitsOn_PutsOffItsCatchUp_ToItsNextTransaction()
    {
        await using var two = await TwoInstancesAsync("lazy");
        var (storeB, a, b, wf) = (two.StoreB, two.A, two.B, two.Workflow);
        await b.GetWorkflowAsync(wf, default).Within();
        var readsBefore = storeB.LogReads;
        var noticesBefore = storeB.ForeignNotices(wf);

        for (var i = 1; i <= 30; i++)
        {
            await a.PutNoteAsync(new NotePutCommand { WorkflowId = wf, Key = "k", Value = BitConverter.GetBytes(i) }, default).Within();
        }

        await TestTimeouts.Eventually(() => Task.FromResult(storeB.ForeignNotices(wf) >= noticesBefore + 30), "B told of A's 30 commits");

        Assert.Equal(readsBefore, storeB.LogReads);
        var note = (await b.GetNoteAsync(wf, "k", default).Within()).Note;
        Assert.Equal(30, BitConverter.ToInt32(note.Value.Span));
        // One catch-up read; the read it confirms then passes A's turn, since B's replica is current.
        Assert.Equal(readsBefore + 1, storeB.LogReads);
    }

    /// <summary>
    /// Read from Redis (through instances with no replica), the log starts a page at any revision, also one in
    /// the middle of a batch; pages follow each other without gaps; and after trimming, what is retained reads
    /// whole and what is not reads as nothing.
    /// </summary>
    [RedisFact]
    public async Task TheLogInRedis_ReadsFromAnyRevision_PageByPage_AndAfterTrimming()
    {
        var hub = new EventHub();
        await using var writer = await RedisStore.ConnectAsync(new RedisStoreOptions { Configuration = redis.Endpoint, KeyPrefix = _prefix, MaxEventsPerWorkflow = 400 }, hub);
        var board = new Coordinator(writer, hub, _time, new BoardLimits());
        var wf = "log-" + Guid.NewGuid().ToString("N")[..8];
        await board.CreateWorkflowAsync(wf, "runs", null, default).Within();
        // One call, one batch: revisions 2..301.
        await board.PostTasksAsync(wf, Enumerable.Range(0, 300).Select(i => new TaskSpec { Id = $"t{i:D3}" }).ToArray(), default).Within();

        await using var reader = await RedisStore.ConnectAsync(new RedisStoreOptions { Configuration = redis.Endpoint, KeyPrefix = _prefix }, new EventHub());
        foreach (var (from, limit) in new[] { (1L, 5), (7L, 3), (256L, 4), (257L, 1), (258L, 100), (300L, 50) })
        {
            var page = await reader.ReadEventsAsync(wf, from, limit, default);
            var expected = Enumerable.Range((int)from, (int)Math.Min(limit, 301 - from + 1)).Select(r => (long)r);
            Assert.Equal(expected, page.Events.Select(e => e.Revision));
        }

        Assert.Equal(Enumerable.Range(1, 301).Select(r => (long)r), (await StoreReads.AllEventsAsync(reader, wf)).Select(e => e.Revision));

        // 200 more events in single commits: the log is trimmed to about 400, through the middle of the post.
        for (var i = 0; i < 200; i++)
        {
            await board.PutNoteAsync(new NotePutCommand { WorkflowId = wf, Key = "k", Value = new byte[] { (byte)i }, Writer = "w" }, default).Within();
        }

        await using var fresh = await RedisStore.ConnectAsync(new RedisStoreOptions { Configuration = redis.Endpoint, KeyPrefix = _prefix }, new EventHub());
        var head = await fresh.ReadEventsAsync(wf, 501, 10, default);
        Assert.Equal(501, head.HeadRevision);
        Assert.True(head.OldestRevision > 1 && head.OldestRevision < 300, $"expected the trim inside the post, oldest is {head.OldestRevision}");
        var retained = new List<EventRecord>();
        for (var from = head.OldestRevision; (await fresh.ReadEventsAsync(wf, from, 64, default)).Events is { Count: > 0 } page; from = page[^1].Revision + 1)
        {
            retained.AddRange(page);
        }

        Assert.Empty((await fresh.ReadEventsAsync(wf, head.OldestRevision - 1, 10, default)).Events);
        Assert.Equal(Enumerable.Range((int)head.OldestRevision, (int)(501 - head.OldestRevision + 1)).Select(r => (long)r), retained.Select(e => e.Revision));
    }

    /// <summary>
    /// A commit that Redis rejects with a script error is not an outage: retrying would fail the same way,
    /// so the caller must not hear UNAVAILABLE (which clients retry), and the server reports INTERNAL.
    /// </summary>
    [RedisFact]
    public async Task ACommitThatRedisRejects_IsNotReportedAsUnavailable()
    {
        var (store, _, board) = await OpenAsync();
        await using var _ = store;
        var wf = "broken-" + Guid.NewGuid().ToString("N")[..8];
        await board.CreateWorkflowAsync(wf, "a key of the wrong type", null, default).Within();

        // The tasks hash replaced by a string: the commit script's HSET on it fails with WRONGTYPE.
        using (var raw = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(redis.Endpoint))
        {
            await raw.GetDatabase().StringSetAsync($"{_prefix}:{{{wf}}}:tasks", "not a hash");
        }

        var error = await Assert.ThrowsAnyAsync<Exception>(() => board.PostTasksAsync(wf, [new TaskSpec { Id = "t" }], default)).Within();
        Assert.IsNotType<BoardException>(error);
        Assert.Contains("WRONGTYPE", error.Message, StringComparison.Ordinal);
    }
}
