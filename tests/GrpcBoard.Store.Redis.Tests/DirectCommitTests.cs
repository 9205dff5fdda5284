using GrpcBoard.Core;
using GrpcBoard.Core.Events;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Storage;
using GrpcBoard.Testing;
using Xunit;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>
/// The direct commit connection (<see cref="CommitConnection"/>) fails the way StackExchange.Redis does: a commit
/// whose reply is lost or refused fails with UNAVAILABLE, the replica is reloaded, nothing acknowledged is lost and
/// no task is taken twice; and commits go back to the direct connection once Redis is there again. Each test has a
/// redis-server of its own, since it restarts, pauses or flushes it.
/// </summary>
public sealed class DirectCommitTests
{
    private readonly ManualTimeProvider _time = new();

    private async Task<(RedisStore Store, Coordinator Board)> OpenAsync(RedisProcess redis, int timeoutMs = 5000, string prefix = "d", bool directCommits = true)
    {
        var hub = new EventHub();
        var store = await RedisStore.ConnectAsync(new RedisStoreOptions { Configuration = redis.Endpoint, KeyPrefix = prefix, CommandTimeoutMilliseconds = timeoutMs, DirectCommits = directCommits }, hub);
        return (store, new Coordinator(store, hub, _time, new BoardLimits()));
    }

    /// <summary>A redis-server of the test's own, a store on it, and a workflow with <paramref name="tasks"/> ready tasks.</summary>
    private async Task<Setup> StartAsync(int tasks, int timeoutMs = 5000, bool directCommits = true)
    {
        var redis = await RedisProcess.StartAsync();
        var (store, board) = await OpenAsync(redis, timeoutMs, directCommits: directCommits);
        return new Setup(redis, store, board, await WorkflowWithTasksAsync(board, tasks));
    }

    private sealed record Setup(RedisProcess Redis, RedisStore Store, Coordinator Board, string Workflow) : IAsyncDisposable
    {
        public Task<ClaimResult> ClaimAsync() => ClaimOnAsync(Board, Workflow);

        /// <summary>The next claim fails with UNAVAILABLE.</summary>
        public async Task ClaimIsUnavailableAsync(TimeSpan? within = null)
        {
            var error = await Assert.ThrowsAsync<BoardException>(ClaimAsync).Within(within);
            Assert.Equal(BoardError.StoreUnavailable, error.Error);
        }

        /// <summary>Claims until a claim is not refused with UNAVAILABLE (Redis is back); returns that claim.</summary>
        public Task<ClaimResult> ClaimOnceBackAsync(string what) => UntilAvailable.CallAsync(ClaimAsync, what);

        public async ValueTask DisposeAsync()
        {
            await Store.DisposeAsync();
            await Redis.DisposeAsync();
        }
    }

    private static async Task<string> WorkflowWithTasksAsync(Coordinator board, int tasks)
    {
        var wf = "direct-" + Guid.NewGuid().ToString("N")[..8];
        await board.CreateWorkflowAsync(wf, "direct commits", null, default).Within();
        await board.PostTasksAsync(wf, Enumerable.Range(0, tasks).Select(i => new TaskSpec { Id = $"t{i:D2}" }).ToArray(), default).Within();
        return wf;
    }

    private static Task<ClaimResult> ClaimOnAsync(Coordinator board, string wf) =>
        board.ClaimAsync(new ClaimCommand { WorkflowId = wf, WorkerId = "w" }, default);

    [RedisFact]
    public async Task OnAStandaloneRedis_CommitsGoOverTheDirectConnection_AndNotWhenItIsTurnedOff()
    {
        await using var setup = await StartAsync(tasks: 3);
        Assert.NotNull((await setup.ClaimAsync().Within()).Task);
        Assert.True(setup.Store.DirectCommitCount >= 3, $"expected the commits on the direct connection, saw {setup.Store.DirectCommitCount}");

        var (viaLibrary, other) = await OpenAsync(setup.Redis, prefix: "d2", directCommits: false);
        await using var _ = viaLibrary;
        var wf2 = await WorkflowWithTasksAsync(other, 3);
        Assert.NotNull((await ClaimOnAsync(other, wf2).Within()).Task);
        Assert.Equal(0, viaLibrary.DirectCommitCount);
    }

    [RedisFact]
    public async Task RedisKilledAndStartedAgain_CallsFailWithUnavailable_ThenSucceed_OverANewDirectConnection()
    {
        await using var setup = await StartAsync(tasks: 20);
        var (store, board, wf) = (setup.Store, setup.Board, setup.Workflow);
        var claimed = new List<TaskRecord> { (await setup.ClaimAsync().Within()).Task! };

        await setup.Redis.KillAsync();
        await setup.ClaimIsUnavailableAsync();

        await setup.Redis.StartAgainAsync();
        claimed.Add((await setup.ClaimOnceBackAsync("a claim to succeed once Redis is back")).Task!);

        // Back on the direct connection: it is opened again in the background. Reads commit too (a batch of
        // reads only), so waiting for it takes no tasks.
        var before = store.DirectCommitCount;
        await TestTimeouts.Eventually(async () =>
        {
            await board.GetWorkflowAsync(wf, default);
            return store.DirectCommitCount > before;
        }, "commits to go over a new direct connection", TimeSpan.FromSeconds(30));
        claimed.Add((await setup.ClaimAsync().Within()).Task!);

        // AOF with appendfsync always: the acknowledged claims survived the kill, and none was handed out twice.
        Assert.Equal(claimed.Count, claimed.Select(t => t.Id).Distinct().Count());
        var view = await board.GetWorkflowAsync(wf, default).Within();
        Assert.True(view.Counts[TaskState.Claimed] >= claimed.Count);
        foreach (var task in claimed)
        {
            Assert.Equal(TaskState.Claimed, (await board.GetTaskAsync(wf, task.Id, default).Within()).Task.State);
        }
    }

    /// <summary>
    /// SCRIPT FLUSH empties Redis's script cache: the direct connection's next EVALSHA is answered NOSCRIPT, so that
    /// commit did not run. The caller hears UNAVAILABLE (retryable) and the task it asked for stays ready.
    /// </summary>
    [RedisFact]
    public async Task AFlushedScriptCache_FailsOneCommitWithUnavailable_AndLosesNothing()
    {
        await using var setup = await StartAsync(tasks: 5);
        var first = (await setup.ClaimAsync().Within()).Task!;

        Assert.Equal("OK", (await setup.Redis.CliAsync("SCRIPT", "FLUSH")).Trim());
        await setup.ClaimIsUnavailableAsync();

        var rest = new List<string>();
        while ((await setup.ClaimAsync().Within()).Task is { } task)
        {
            rest.Add(task.Id);
        }

        Assert.Equal(4, rest.Count);
        Assert.DoesNotContain(first.Id, rest);
        Assert.Equal(5, (await setup.Board.GetWorkflowAsync(setup.Workflow, default).Within()).Counts[TaskState.Claimed]);
    }

    /// <summary>
    /// A Redis that stops answering (SIGSTOP) fails the commit with UNAVAILABLE after the command timeout instead of
    /// holding the caller; once it answers again (SIGCONT), so does the board, with the log still gap-free. The same
    /// through StackExchange.Redis, whose asynchronous calls (1.2.6) wait for a reply without end: there the claim
    /// waited until the test's own limit, 20 s, and its workflow's commits with it.
    /// </summary>
    [RedisTheory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ARedisThatStopsAnswering_FailsTheCommitAfterTheTimeout_AndTheBoardRecovers(bool directCommits)
    {
        await using var setup = await StartAsync(tasks: 5, timeoutMs: 1000, directCommits);
        await setup.Redis.PauseAsync();
        try
        {
            await setup.ClaimIsUnavailableAsync(within: TimeSpan.FromSeconds(20));
        }
        finally
        {
            await setup.Redis.ResumeAsync();
        }

        // The timed-out commit may have run once Redis resumed: its outcome is unknown, and the replica reloads.
        Assert.NotNull((await setup.ClaimOnceBackAsync("a claim to succeed after Redis resumed")).Task);

        var events = await StoreReads.AllEventsAsync(setup.Store, setup.Workflow);
        Assert.Equal(Enumerable.Range(1, events.Count).Select(r => (long)r), events.Select(e => e.Revision));
        Assert.Equal(events.Count(e => e.Kind == EventKind.TaskClaimed), (await setup.Board.GetWorkflowAsync(setup.Workflow, default).Within()).Counts[TaskState.Claimed]);
    }

    /// <summary>
    /// A replica loaded again reads several times (where the log stands, the records, the log since, then its anchor
    /// back), and each read answers the head of its moment. Here another instance commits just before the anchor's
    /// read, so that read answers a newer head than the log read before it. Before the fix, the load then checked the
    /// older head once more against the watermark the newer one had raised, and refused with DATA_LOSS: a board
    /// stopped for good over nothing (found by <c>SeparateHostsTests</c>, a host cut off and joined again).
    /// </summary>
    [RedisFact]
    public async Task AReloadWhoseLastReadSeesAnotherInstancesNewerCommit_IsNotTakenForDataLoss()
    {
        await using var setup = await StartAsync(tasks: 5, timeoutMs: 1000);
        Assert.NotNull((await setup.ClaimAsync().Within()).Task);
        var (other, otherBoard) = await OpenAsync(setup.Redis);
        await using var _ = other;

        // A commit whose reply does not come in time: its outcome is unknown, so the replica is dropped and loaded again.
        await setup.Redis.PauseAsync();
        try
        {
            await setup.ClaimIsUnavailableAsync(within: TimeSpan.FromSeconds(20));
        }
        finally
        {
            await setup.Redis.ResumeAsync();
        }

        var reads = 0;
        setup.Store.BeforeLogReadForTests = async () =>
        {
            // The load's third log read: the anchor's, after where the log stands and the log since.
            if (Interlocked.Increment(ref reads) == 3)
            {
                Assert.NotNull((await ClaimOnAsync(otherBoard, setup.Workflow).Within()).Task);
            }
        };

        Assert.NotNull((await setup.ClaimOnceBackAsync("a claim to succeed after Redis resumed")).Task);
        Assert.True(reads >= 3, $"the load read the log {reads} times");
        Assert.Null(setup.Store.DataLoss);
        var events = await StoreReads.AllEventsAsync(setup.Store, setup.Workflow);
        Assert.Equal(Enumerable.Range(1, events.Count).Select(r => (long)r), events.Select(e => e.Revision));
        Assert.Equal(events.Count(e => e.Kind == EventKind.TaskClaimed), (await setup.Board.GetWorkflowAsync(setup.Workflow, default).Within()).Counts[TaskState.Claimed]);
    }

    /// <summary>
    /// Redis drops every client connection of the server at once, under load (<c>CLIENT KILL TYPE normal</c>, as a proxy
    /// or an operator may): the direct commit connection, StackExchange.Redis's, and with them commits in flight. Calls
    /// fail with UNAVAILABLE at most, and go on; every acknowledged claim is held with its owner and token, none twice.
    /// </summary>
    [RedisTheory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task EveryConnectionKilledUnderLoad_CallsAreUnavailableAtMost_AndEveryAcknowledgedClaimIsHeld(bool directCommits)
    {
        await using var redis = await RedisProcess.StartAsync();
        var (store, board) = await OpenAsync(redis, directCommits: directCommits);
        await using var _ = store;
        var wf = "killed-" + Guid.NewGuid().ToString("N")[..8];
        await board.CreateWorkflowAsync(wf, "connections killed", null, default).Within();
        var workers = await ClaimingWorkers.StartAsync(board, wf, "the connections are killed");
        for (var i = 0; i < 3; i++)
        {
            if (directCommits)
            {
                // Each kill must cut the direct connection too: it opens again at most once a second.
                var direct = store.DirectCommitCount;
                await TestTimeouts.Eventually(() => Task.FromResult(store.DirectCommitCount > direct + 10), "commits on the direct connection");
            }

            var killed = int.Parse((await redis.CliAsync("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")).Trim(), System.Globalization.CultureInfo.InvariantCulture);
            Assert.True(killed >= (directCommits ? 2 : 1), $"only {killed} connections were killed");
            var before = workers.Acknowledged;
            await workers.UntilAsync(before + 50, "50 claims after the connections were killed", TimeSpan.FromSeconds(60));
        }

        var claims = await workers.StopAsync();
        var (reader, readerBoard) = await OpenAsync(redis);
        await using (reader)
        {
            await workers.AssertHeldAsync(readerBoard, wf, claims);
        }

        Assert.Null(store.DataLoss);
    }
}
