using GrpcBoard.Core;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Storage;
using GrpcBoard.Testing;
using StackExchange.Redis;
using Xunit;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>
/// Redis keeps no sorted set of every timer: each commit writes the workflow's earliest timer into its meta (nt), and
/// which timers are due is read from a replica. These tests hold that to what a sorted set gave: nt is always the
/// earliest timer Redis's records hold, a timer another instance committed is found by an instance whose replica had
/// not seen it, and a workflow written without nt still has its timers fired.
/// </summary>
public sealed class TimerTests(RedisFixture redis) : IClassFixture<RedisFixture>
{
    private readonly string _prefix = "tm" + Guid.NewGuid().ToString("N")[..10];
    private readonly ManualTimeProvider _time = new();

    private Task<(RedisStore Store, Coordinator Board)> OpenAsync() => RedisBoards.OpenAsync(new RedisStoreOptions
    {
        Configuration = redis.Endpoint,
        KeyPrefix = _prefix,
        EpochCheckInterval = TimeSpan.FromMilliseconds(50),
        TimerRescanInterval = TimeSpan.FromMilliseconds(100),
    }, _time);

    private async Task<long> NextTimerAsync(IDatabase db, string workflowId) =>
        (long)await db.HashGetAsync(new RedisKeys(_prefix).Meta(workflowId), "nt");

    private static long Ms(DateTimeOffset? due) => CommitBatch.Millis(due!.Value);

    [RedisFact]
    public async Task EveryCommit_LeavesTheEarliestTimerOfItsRecords_InTheMeta()
    {
        var (store, board) = await OpenAsync();
        await using var _ = store;
        using var raw = await ConnectionMultiplexer.ConnectAsync(redis.Endpoint);
        var db = raw.GetDatabase();
        await board.CreateWorkflowAsync("w", "", null, default).Within();
        await board.PostTasksAsync("w", [new TaskSpec { Id = "a" }, new TaskSpec { Id = "b" }], default).Within();
        Assert.Equal(-1, await NextTimerAsync(db, "w"));

        var a = (await board.ClaimAsync(new ClaimCommand { WorkflowId = "w", TaskId = "a", WorkerId = "x", Lease = TimeSpan.FromSeconds(30) }, default).Within()).Task!;
        Assert.Equal(Ms(a.LeaseExpireTime), await NextTimerAsync(db, "w"));

        // A later lease leaves the earliest where it was; a note that expires sooner lowers it.
        var b = (await board.ClaimAsync(new ClaimCommand { WorkflowId = "w", TaskId = "b", WorkerId = "y", Lease = TimeSpan.FromSeconds(60) }, default).Within()).Task!;
        Assert.Equal(Ms(a.LeaseExpireTime), await NextTimerAsync(db, "w"));
        var note = (await board.PutNoteAsync(new NotePutCommand { WorkflowId = "w", Key = "k", Writer = "x", Ttl = TimeSpan.FromSeconds(10) }, default).Within()).Note;
        Assert.Equal(Ms(note.ExpireTime), await NextTimerAsync(db, "w"));

        // Removing the earliest raises it to the next one, then to none.
        await board.DeleteNoteAsync("w", "k", null, "x", default).Within();
        Assert.Equal(Ms(a.LeaseExpireTime), await NextTimerAsync(db, "w"));
        await board.CompleteTaskAsync("w", "a", a.FencingToken, new byte[] { 1 }, "", default).Within();
        Assert.Equal(Ms(b.LeaseExpireTime), await NextTimerAsync(db, "w"));
        await board.CompleteTaskAsync("w", "b", b.FencingToken, new byte[] { 2 }, "", default).Within();
        Assert.Equal(-1, await NextTimerAsync(db, "w"));
    }

    /// <summary>
    /// Instance B loaded the workflow before A claimed a task in it, and heard nothing of the claim since (pub/sub lost
    /// the notice). When the lease's hint comes due, B must not answer from what its replica holds:
    /// it reads through a batch, which Redis refuses until B caught up, and so finds the lease and requeues it.
    /// </summary>
    [RedisFact]
    public async Task AnInstanceWhoseReplicaMissedAnotherInstancesClaim_StillFindsItsLeaseDue()
    {
        var (a, boardA) = await OpenAsync();
        await using var _ = a;
        var (b, boardB) = await OpenAsync();
        await using var __ = b;
        await boardA.CreateWorkflowAsync("w", "", null, default).Within();
        await boardA.PostTasksAsync("w", [new TaskSpec { Id = "t" }], default).Within();
        Assert.Equal(TaskState.Ready, (await boardB.GetTaskAsync("w", "t", default).Within()).Task.State);

        b.DropChangeNoticesForTests = true;
        var claimed = (await boardA.ClaimAsync(new ClaimCommand { WorkflowId = "w", TaskId = "t", WorkerId = "gone", Lease = TimeSpan.FromSeconds(5) }, default).Within()).Task!;
        _time.Advance(TimeSpan.FromSeconds(6));

        // The hint is written after A's commit, fire and forget: wait for it, not for B.
        var hint = new RedisKeys(_prefix).TimerHints;
        using (var raw = await ConnectionMultiplexer.ConnectAsync(redis.Endpoint))
        {
            await TestTimeouts.Eventually(async () => await raw.GetDatabase().SortedSetScoreAsync(hint, "w") is not null, "A's timer hint");
        }

        var timer = Assert.Single(await b.GetDueTimersAsync(_time.GetUtcNow(), 10, default).Within());
        Assert.Equal(("w", TimerKind.LeaseExpiry, "t", Ms(claimed.LeaseExpireTime)), (timer.WorkflowId, timer.Kind, timer.Id, Ms(timer.Due)));
        Assert.NotNull((await boardB.FireTimerAsync(timer, default).Within()).Change);
        var task = (await boardA.GetTaskAsync("w", "t", default).Within()).Task;
        Assert.Equal(TaskState.Backoff, task.State);
        Assert.Equal(claimed.FencingToken, task.FencingToken);
    }

    /// <summary>
    /// A poll finds the workflow's hint early (the lease it was for was completed) and replaces it: with the next timer
    /// (<paramref name="withAnotherLease"/>: a lease due in an hour) or with nothing. Between its read and its write a
    /// claim commits a lease due in 5 s; that commit leaves the early hint as it is (it only ever lowers one). The
    /// replacement must not hide the new lease: the hint ends at it, and the lease is found due once it is.
    /// </summary>
    [RedisTheory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task AHintReplacedWhileAClaimCommits_StillLeadsToTheClaimsLease(bool withAnotherLease)
    {
        // No background rescan: it would repair a lost hint, and only the poll's own replacement is tested here.
        var (store, board) = await RedisBoards.OpenAsync(new RedisStoreOptions
        {
            Configuration = redis.Endpoint,
            KeyPrefix = _prefix,
            EpochCheckInterval = TimeSpan.FromHours(1),
            TimerRescanInterval = TimeSpan.FromHours(1),
        }, _time);
        await using var _ = store;
        using var raw = await ConnectionMultiplexer.ConnectAsync(redis.Endpoint);
        var hints = new RedisKeys(_prefix).TimerHints;
        await board.CreateWorkflowAsync("w", "", null, default).Within();
        await board.PostTasksAsync("w", [new TaskSpec { Id = "a" }, new TaskSpec { Id = "b" }, new TaskSpec { Id = "c" }], default).Within();
        if (withAnotherLease)
        {
            await board.ClaimAsync(new ClaimCommand { WorkflowId = "w", TaskId = "a", WorkerId = "x", Lease = TimeSpan.FromHours(1) }, default).Within();
        }

        var b = (await board.ClaimAsync(new ClaimCommand { WorkflowId = "w", TaskId = "b", WorkerId = "x", Lease = TimeSpan.FromSeconds(1) }, default).Within()).Task!;
        await TestTimeouts.Eventually(async () => await raw.GetDatabase().SortedSetScoreAsync(hints, "w") == Ms(b.LeaseExpireTime), "b's hint");
        await board.CompleteTaskAsync("w", "b", b.FencingToken, new byte[] { 1 }, "", default).Within();
        _time.Advance(TimeSpan.FromSeconds(2));

        TaskRecord? c = null;
        store.BeforeHintReplacedForTests = async _ =>
        {
            if (c is null)
            {
                // The commit's own hint write is sent before the claim returns, on the connection the replacement then
                // uses, so Redis has it first.
                c = (await board.ClaimAsync(new ClaimCommand { WorkflowId = "w", TaskId = "c", WorkerId = "y", Lease = TimeSpan.FromSeconds(5) }, default)).Task!;
            }
        };
        Assert.Empty(await store.GetDueTimersAsync(_time.GetUtcNow(), 10, default).Within());
        Assert.NotNull(c);
        Assert.Equal(Ms(c.LeaseExpireTime), await raw.GetDatabase().SortedSetScoreAsync(hints, "w"));

        _time.Advance(TimeSpan.FromSeconds(6));
        var timer = Assert.Single(await store.GetDueTimersAsync(_time.GetUtcNow(), 10, default).Within());
        Assert.Equal((TimerKind.LeaseExpiry, "c", Ms(c.LeaseExpireTime)), (timer.Kind, timer.Id, Ms(timer.Due)));
    }

    /// <summary>
    /// Data written before the meta had nt (or a meta that lost it) has no earliest timer to go by: the rescan takes it
    /// as due now, and the due timers are read from the replica, so the lease still expires.
    /// </summary>
    [RedisFact]
    public async Task AWorkflowWithoutNt_HasItsTimersFoundByTheRescan()
    {
        var (store, board) = await OpenAsync();
        await using var _ = store;
        await board.CreateWorkflowAsync("old", "", null, default).Within();
        await board.PostTasksAsync("old", [new TaskSpec { Id = "t" }], default).Within();
        await board.ClaimAsync(new ClaimCommand { WorkflowId = "old", TaskId = "t", WorkerId = "w", Lease = TimeSpan.FromSeconds(1) }, default).Within();
        using (var raw = await ConnectionMultiplexer.ConnectAsync(redis.Endpoint))
        {
            var db = raw.GetDatabase();
            Assert.True(await db.HashDeleteAsync(new RedisKeys(_prefix).Meta("old"), "nt"));
            Assert.True(await db.SortedSetRemoveAsync(new RedisKeys(_prefix).TimerHints, "old"));
        }

        _time.Advance(TimeSpan.FromSeconds(2));
        await TestTimeouts.Eventually(async () => (await store.GetDueTimersAsync(_time.GetUtcNow(), 10, default)).Any(t => t.WorkflowId == "old" && t.Id == "t"),
            "the rescan to hint the workflow without nt, and its replica to give the lease");
    }
}
