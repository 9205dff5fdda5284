using System.Globalization;
using GrpcBoard.Core;
using GrpcBoard.Core.Events;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Watch;
using GrpcBoard.Testing;
using Xunit;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>
/// Waiting for replicas (<see cref="RedisStoreOptions.ReplicasToWaitFor"/>), with a primary and a real replica
/// (<c>--replicaof</c>), and a failover: the replica is cut off and promoted (REPLICAOF NO ONE), the store claims
/// once more on the old primary, the old primary dies, and a new store opens on the promoted replica. Asserted on
/// what that new store serves, and on the head revision each Redis holds (read with redis-cli).
/// </summary>
public sealed class ReplicaWaitTests
{
    private const string Prefix = "rw";
    private readonly ManualTimeProvider _time = new();

    private Task<(RedisStore Store, Coordinator Board)> OpenAsync(RedisProcess redis, int replicas, bool directCommits = true) =>
        OpenAsync(redis.Endpoint, replicas, directCommits);

    /// <summary>
    /// A store on <paramref name="configuration"/> (one endpoint, or a primary and its replicas) and a board on it. With a
    /// list, the listed nodes' roles are checked at start, and after that every <paramref name="nodeListCheck"/>, by
    /// default not within a test: most of these tests make two primaries on purpose (REPLICAOF NO ONE with the old primary
    /// running) to test what comes after, which the refusal while two nodes answer as the primary, tested on its own
    /// (<c>GivenANodeList_WhileTwoNodesAnswerAsThePrimary_…</c>), would hide or cut short at a random moment.
    /// </summary>
    private async Task<(RedisStore Store, Coordinator Board)> OpenAsync(string configuration, int replicas, bool directCommits = true, TimeSpan? nodeListCheck = null)
    {
        var hub = new EventHub();
        var store = await RedisStore.ConnectAsync(new RedisStoreOptions
        {
            Configuration = configuration,
            KeyPrefix = Prefix,
            DirectCommits = directCommits,
            ReplicasToWaitFor = replicas,
            ReplicaWaitTimeout = TimeSpan.FromMilliseconds(300),
            NodeListCheckInterval = nodeListCheck ?? TimeSpan.FromHours(1),
        }, hub);
        return (store, new Coordinator(store, hub, _time, new BoardLimits()));
    }

    private static Task<ClaimResult> ClaimAsync(Coordinator board, string wf, string worker = "w") =>
        board.ClaimAsync(new ClaimCommand { WorkflowId = wf, WorkerId = worker }, default);

    /// <summary>The workflow's head revision as this Redis holds it.</summary>
    private static Task<long> HeadAsync(RedisProcess redis, string wf) => SplitBrain.HeadAsync(redis, Prefix, wf);

    /// <summary>
    /// Claims three tasks with the replica attached, promotes the replica, claims once more on the old primary,
    /// kills the old primary and opens a store on the promoted replica.
    /// </summary>
    private async Task<Failover> ClaimAcrossAFailoverAsync(int replicas, bool directCommits)
    {
        await using var primary = await RedisProcess.StartAsync(persistent: false);
        var replica = await primary.StartReplicaAsync();
        try
        {
            var wf = "wait-" + Guid.NewGuid().ToString("N")[..8];
            var before = new List<ClaimResult>();
            ClaimResult? after = null;
            BoardException? refusal = null;
            var readsAfter = new List<long?>();
            var (store, board) = await OpenAsync(primary, replicas, directCommits);
            await using (store)
            {
                await board.CreateWorkflowAsync(wf, "replica wait", null, default).Within();
                await board.PostTasksAsync(wf, Enumerable.Range(0, 6).Select(i => new TaskSpec { Id = $"t{i}" }).ToArray(), default).Within();
                for (var i = 0; i < 3; i++)
                {
                    var claim = await ClaimAsync(board, wf).Within();
                    before.Add(claim);
                    if (replicas > 0)
                    {
                        // Acknowledged only once the replica had it: it is there now, without waiting any further.
                        Assert.True(await HeadAsync(replica, wf) >= claim.Revision, $"the replica lacks revision {claim.Revision}, acknowledged");
                    }
                }

                Assert.Equal(directCommits, store.DirectCommitCount > 0);

                // Without waiting, replication may still be behind: the cut comes once the replica has these claims,
                // so that the claim after it is the only write the replica lacks.
                await TestTimeouts.Eventually(async () => await HeadAsync(replica, wf) >= before[^1].Revision, "the replica to have the first claims");
                Assert.Equal("OK", (await replica.CliAsync("REPLICAOF", "NO", "ONE")).Trim());
                try
                {
                    after = await ClaimAsync(board, wf).Within();
                }
                catch (BoardException ex)
                {
                    refusal = ex;
                }

                // What the primary holds now is read through this store and through another one on the primary.
                var (other, otherBoard) = await OpenAsync(primary, replicas, directCommits);
                await using (other)
                {
                    foreach (var reader in new[] { board, otherBoard })
                    {
                        try
                        {
                            readsAfter.Add((await reader.GetWorkflowAsync(wf, default).Within()).Counts[TaskState.Claimed]);
                        }
                        catch (BoardException ex) when (ex.Error == BoardError.StoreUnavailable)
                        {
                            readsAfter.Add(null);
                        }
                    }
                }
            }

            var primaryHead = await HeadAsync(primary, wf);
            await primary.KillAsync();
            var (promoted, promotedBoard) = await OpenAsync(replica, replicas: 0);
            return new Failover(before, after, refusal, readsAfter, primaryHead, await HeadAsync(replica, wf), replica, promoted, promotedBoard, wf);
        }
        catch
        {
            await replica.DisposeAsync();
            throw;
        }
    }

    private sealed record Failover(
        List<ClaimResult> Before, ClaimResult? After, BoardException? Refusal, List<long?> ReadsAfter, long OldPrimaryHead, long PromotedHead,
        RedisProcess Promoted, RedisStore Store, Coordinator Board, string Workflow) : IAsyncDisposable
    {
        public async Task<TaskRecord> TaskAsync(string id) => (await Board.GetTaskAsync(Workflow, id, default).Within()).Task;

        public async Task<TaskRecord> ClaimNextAsync() => (await ClaimAsync(Board, Workflow).Within()).Task!;

        public async ValueTask DisposeAsync()
        {
            await Store.DisposeAsync();
            await Promoted.DisposeAsync();
        }
    }

    [RedisTheory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task WaitingForAReplica_AClaimItDidNotGet_IsUnavailable_AndTheFailoverLosesNothingAcknowledged(bool directCommits)
    {
        await using var failover = await ClaimAcrossAFailoverAsync(replicas: 1, directCommits);

        Assert.Null(failover.After);
        Assert.Equal(BoardError.StoreUnavailable, failover.Refusal!.Error);
        Assert.Contains("reached 0 of 1 replicas", failover.Refusal.Message, StringComparison.Ordinal);
        Assert.True(failover.OldPrimaryHead > failover.PromotedHead, $"old primary at {failover.OldPrimaryHead}, promoted replica at {failover.PromotedHead}");

        // Nor is it shown to readers, through this store or another: reads are waited for too, so nobody sees a
        // claim that the failover then takes back.
        Assert.Equal(new long?[] { null, null }, failover.ReadsAfter);

        // Every claim the callers were told about survived the failover, with its fencing token.
        foreach (var claim in failover.Before)
        {
            var task = await failover.TaskAsync(claim.Task!.Id);
            Assert.Equal(TaskState.Claimed, task.State);
            Assert.Equal(claim.Task.FencingToken, task.FencingToken);
        }

        // The next claim on the promoted replica takes another task, with a token above every acknowledged one.
        var next = await failover.ClaimNextAsync();
        Assert.DoesNotContain(next.Id, failover.Before.Select(c => c.Task!.Id));
        Assert.True(next.FencingToken > failover.Before.Max(c => c.Task!.FencingToken));
    }

    /// <summary>
    /// The same failover without waiting: the claim after the cut is acknowledged although the replica never got
    /// it, and the promoted replica hands the same task out again with the same fencing token. This is what
    /// waiting prevents, and it shows that the test above would see a lost claim.
    /// </summary>
    [RedisFact]
    public async Task WithoutWaiting_TheFailoverLosesAnAcknowledgedClaim_AndItsTokenIsHandedOutAgain()
    {
        await using var failover = await ClaimAcrossAFailoverAsync(replicas: 0, directCommits: true);

        Assert.Null(failover.Refusal);
        Assert.Equal(new long?[] { 4, 4 }, failover.ReadsAfter);
        var lost = failover.After!.Task!;
        Assert.Equal(failover.After.Revision, failover.OldPrimaryHead);
        Assert.True(failover.After.Revision > failover.PromotedHead);
        Assert.Equal(TaskState.Ready, (await failover.TaskAsync(lost.Id)).State);
        var again = await failover.ClaimNextAsync();
        Assert.Equal(lost.Id, again.Id);
        Assert.Equal(lost.FencingToken, again.FencingToken);
    }

    /// <summary>
    /// A store given the primary and its replica (<c>--redis primary,replica</c>) follows a failover without a
    /// restart: the primary dies, the replica is promoted and gets a replica of its own, and the same store goes on,
    /// over a direct commit connection to the new primary, with every acknowledged claim and no token reused.
    /// </summary>
    [RedisFact]
    public async Task GivenThePrimaryAndItsReplica_AStoreFollowsAFailoverWithoutARestart_AndLosesNothingAcknowledged()
    {
        await using var primary = await RedisProcess.StartAsync(persistent: false);
        await using var replica = await primary.StartReplicaAsync();
        var (store, board) = await OpenAsync(primary.Endpoint + "," + replica.Endpoint, replicas: 1);
        await using var _ = store;
        const string wf = "follow";
        await board.CreateWorkflowAsync(wf, "failover", null, default).Within();
        await board.PostTasksAsync(wf, Enumerable.Range(0, 10).Select(i => new TaskSpec { Id = $"t{i}" }).ToArray(), default).Within();
        var before = new List<TaskRecord>();
        for (var i = 0; i < 3; i++)
        {
            before.Add((await ClaimAsync(board, wf).Within()).Task!);
        }

        Assert.True(store.DirectCommitCount > 0, "with two endpoints, commits should go over the direct connection to the primary");

        await primary.KillAsync();
        Assert.Equal("OK", (await replica.CliAsync("REPLICAOF", "NO", "ONE")).Trim());
        await using var second = await replica.StartReplicaAsync();

        // Calls fail with UNAVAILABLE while the store finds the new primary, then succeed.
        var next = await UntilAvailable.CallAsync(() => ClaimAsync(board, wf), "a claim to succeed on the new primary", within: TimeSpan.FromSeconds(60));

        Assert.DoesNotContain(next.Task!.Id, before.Select(t => t.Id));
        Assert.True(next.Task.FencingToken > before.Max(t => t.FencingToken));
        Assert.True(await HeadAsync(second, wf) >= next.Revision, "acknowledged before the new primary's replica had it");
        foreach (var claimed in before)
        {
            var task = (await board.GetTaskAsync(wf, claimed.Id, default).Within()).Task;
            Assert.Equal(TaskState.Claimed, task.State);
            Assert.Equal(claimed.FencingToken, task.FencingToken);
        }

        // Commits go back to a direct connection, now to the new primary.
        var direct = store.DirectCommitCount;
        await TestTimeouts.Eventually(async () =>
        {
            await board.GetWorkflowAsync(wf, default);
            return store.DirectCommitCount > direct;
        }, "commits to go over a direct connection to the new primary", TimeSpan.FromSeconds(30));
        Assert.NotNull((await ClaimAsync(board, wf).Within()).Task);
    }

    /// <summary>
    /// A list of nodes, and a replica promoted by hand while the old primary runs on (as when it comes back after a
    /// failover): both answer as the primary, and nobody turns the old one into a replica. A store on it would go on
    /// handing out tasks there while another, opened now, could pick the promoted one: the same task and token twice.
    /// Calls are refused instead, by the store already running and by one opened meanwhile, and go on, on the promoted
    /// node, once the old one is its replica. Without the check, the running store went on claiming on the old primary.
    /// </summary>
    [RedisTheory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task GivenANodeList_WhileTwoNodesAnswerAsThePrimary_CallsAreRefused_AndGoOnOnceOneIsAReplicaAgain(bool directCommits)
    {
        await using var primary = await RedisProcess.StartAsync(persistent: false);
        await using var replica = await primary.StartReplicaAsync();
        var list = primary.Endpoint + "," + replica.Endpoint;
        var check = TimeSpan.FromMilliseconds(100);
        var (store, board) = await OpenAsync(list, replicas: 0, directCommits, check);
        await using var _ = store;
        const string wf = "two-primaries";
        await board.CreateWorkflowAsync(wf, "two primaries", null, default).Within();
        await board.PostTasksAsync(wf, Enumerable.Range(0, 40).Select(i => new TaskSpec { Id = $"t{i}" }).ToArray(), default).Within();
        var before = (await ClaimAsync(board, wf).Within()).Task!;
        await TestTimeouts.Eventually(async () => await HeadAsync(replica, wf) >= before.ModRevision, "the replica to have the first claim");

        Assert.Equal("OK", (await replica.CliAsync("REPLICAOF", "NO", "ONE")).Trim());
        BoardException? refusal = null;
        await TestTimeouts.Eventually(async () =>
        {
            // Reads only until the check has seen it: a write acknowledged before then, on the old primary, is lost
            // when it becomes a replica, and this store would rightly refuse with DATA_LOSS (its head watermark).
            try
            {
                await board.GetWorkflowAsync(wf, default);
                return false;
            }
            catch (BoardException ex) when (ex.Error == BoardError.StoreUnavailable)
            {
                refusal = ex;
                return true;
            }
        }, "the running store to refuse while two nodes answer as the primary");
        Assert.Contains("more than one listed node answers as the primary", refusal!.Message);
        Assert.Contains(primary.Endpoint, refusal.Message);
        Assert.Contains(replica.Endpoint, refusal.Message);

        // Refused for as long as it lasts (several checks), and by a store opened meanwhile, from its first call.
        var checks = store.NodeListChecks;
        await TestTimeouts.Eventually(() => Task.FromResult(store.NodeListChecks >= checks + 3), "three more checks of the roles");
        Assert.Equal(BoardError.StoreUnavailable, (await Assert.ThrowsAsync<BoardException>(() => ClaimAsync(board, wf))).Error);
        Assert.Equal(BoardError.StoreUnavailable, (await Assert.ThrowsAsync<BoardException>(() => board.ListWorkflowsAsync(null, null, 10, default))).Error);
        Assert.False(await store.CheckHealthAsync(default));
        var (late, lateBoard) = await OpenAsync(list, replicas: 0, directCommits, check);
        await using (late)
        {
            Assert.Equal(BoardError.StoreUnavailable, (await Assert.ThrowsAsync<BoardException>(() => ClaimAsync(lateBoard, wf))).Error);
        }

        // The operator turns the old primary into the promoted one's replica: calls go on, on the promoted node.
        Assert.Equal("OK", (await primary.CliAsync("REPLICAOF", "127.0.0.1", replica.Port.ToString(CultureInfo.InvariantCulture))).Trim());
        var next = await UntilAvailable.CallAsync(() => ClaimAsync(board, wf), "a claim on the promoted node", within: TimeSpan.FromSeconds(60));
        Assert.NotNull(next.Task);
        Assert.True(next.Task.FencingToken > 0);
        Assert.True(await HeadAsync(replica, wf) >= next.Revision, "the claim after the conflict is not on the promoted node");
        Assert.True(await store.CheckHealthAsync(default));
        Assert.Equal(TaskState.Claimed, (await board.GetTaskAsync(wf, before.Id, default).Within()).Task.State);
    }

    /// <summary>
    /// The same switchover with nothing but reads after it: a caller asks for a task that does not exist, which is a
    /// read, confirmed by a batch that writes nothing and then WAIT. On the old primary, a replica now, that WAIT fails,
    /// and nothing ever answers READONLY. The commit connection must leave that node all the same: before, it stayed, and
    /// every read (the workflow's loads among them) was refused with UNAVAILABLE for as long as no write came along.
    /// </summary>
    [RedisFact]
    public async Task GivenANodeList_AfterRedisOwnFailover_ReadsAloneFindTheNewPrimary()
    {
        await using var primary = await RedisProcess.StartAsync(persistent: false);
        await using var replica = await primary.StartReplicaAsync();
        var (store, board) = await OpenAsync(primary.Endpoint + "," + replica.Endpoint, replicas: 1, nodeListCheck: TimeSpan.FromMilliseconds(100));
        await using var _ = store;
        const string wf = "reads-after-switchover";
        await board.CreateWorkflowAsync(wf, "reads only after a switchover", null, default).Within();
        await board.PostTasksAsync(wf, [new TaskSpec { Id = "t" }], default).Within();

        Assert.Equal("OK", (await primary.CliAsync("FAILOVER")).Trim());
        await TestTimeouts.Eventually(async () => (await replica.CliAsync("INFO", "replication")).Contains("role:master", StringComparison.Ordinal),
            "the replica to take over", TimeSpan.FromSeconds(30));
        await TestTimeouts.Eventually(async () => (await primary.CliAsync("INFO", "replication")).Contains("master_link_status:up", StringComparison.Ordinal),
            "the old primary to follow it", TimeSpan.FromSeconds(30));

        var missing = await UntilAvailable.CallAsync(async () =>
        {
            try
            {
                await board.GetTaskAsync(wf, "absent", default);
                return (BoardError?)null;
            }
            catch (BoardException ex) when (ex.Error != BoardError.StoreUnavailable)
            {
                return ex.Error;
            }
        }, "a read answered after the switchover", within: TimeSpan.FromSeconds(20));
        Assert.Equal(BoardError.TaskNotFound, missing);
        Assert.Equal(TaskState.Ready, (await board.GetTaskAsync(wf, "t", default).Within()).Task.State);
        Assert.Null(store.DataLoss);
    }

    /// <summary>
    /// Redis's own switchover of a primary and its replica (<c>FAILOVER</c>, Redis 6.2+: the primary pauses writes until the
    /// replica has caught up, then the two swap roles), as for a rolling upgrade without Sentinel. A store given both
    /// nodes follows it under load: every acknowledged claim is on the new primary with its owner and token, none was
    /// given twice, and claims go on there. With and without waiting for the replica.
    /// </summary>
    [RedisTheory]
    [InlineData(0)]
    [InlineData(1)]
    public async Task GivenANodeList_UnderLoad_RedisOwnFailover_KeepsEveryAcknowledgedClaim(int replicas)
    {
        await using var primary = await RedisProcess.StartAsync(persistent: false);
        await using var replica = await primary.StartReplicaAsync();
        var (store, board) = await OpenAsync(primary.Endpoint + "," + replica.Endpoint, replicas, nodeListCheck: TimeSpan.FromMilliseconds(100));
        await using var _ = store;
        const string wf = "switchover";
        await board.CreateWorkflowAsync(wf, "a switchover", null, default).Within();
        var workers = await ClaimingWorkers.StartAsync(board, wf, "the switchover");

        Assert.Equal("OK", (await primary.CliAsync("FAILOVER")).Trim());
        await TestTimeouts.Eventually(async () => (await replica.CliAsync("INFO", "replication")).Contains("role:master", StringComparison.Ordinal),
            "the replica to take over", TimeSpan.FromSeconds(30));
        await TestTimeouts.Eventually(async () => (await primary.CliAsync("INFO", "replication")).Contains("master_link_status:up", StringComparison.Ordinal),
            "the old primary to follow it", TimeSpan.FromSeconds(30));
        var beforeSwitch = workers.Acknowledged;
        await workers.UntilAsync(beforeSwitch + 50, "50 claims after the switchover", TimeSpan.FromSeconds(60));
        var claims = await workers.StopAsync();

        var (reader, readerBoard) = await OpenAsync(replica, replicas: 0);
        await using (reader)
        {
            await workers.AssertHeldAsync(readerBoard, wf, claims);
        }

        Assert.Null(store.DataLoss);
    }

    /// <summary>
    /// Store B commits a claim that the primary takes but no replica confirms (the replica is cut off), so B's caller
    /// hears UNAVAILABLE. Store A's reads meanwhile: a listing is refused (it is waited for, and would show that claim's
    /// head and counts), and a load of the workflow, which starts now, reads the workflow's record with a plain read that
    /// sees that commit's head before its last, waited read is refused. The primary dies and the replica, without the
    /// claim, becomes the primary. Nothing acknowledged was lost, so A must go on serving. It refused with DATA_LOSS
    /// instead when a plain read raised its head watermark (seen in .ci/run as a Sentinel failover test's DATA_LOSS,
    /// where loading a workflow read its head that way; this test's plain read was then the listing's).
    /// </summary>
    [RedisFact]
    public async Task ACommitNoReplicaConfirmed_IsNotListed_AndIsNotDataLoss_WhenAFailoverTakesItBack()
    {
        await using var primary = await RedisProcess.StartAsync(persistent: false);
        await using var replica = await primary.StartReplicaAsync();
        var configuration = primary.Endpoint + "," + replica.Endpoint;
        var (a, boardA) = await OpenAsync(configuration, replicas: 1);
        await using var _ = a;
        var (b, boardB) = await OpenAsync(configuration, replicas: 1);
        await using var __ = b;
        const string wf = "unconfirmed";
        await boardB.CreateWorkflowAsync(wf, "unconfirmed", null, default).Within();
        await boardB.PostTasksAsync(wf, [new TaskSpec { Id = "t0" }, new TaskSpec { Id = "t1" }], default).Within();
        Assert.Single((await boardA.ListWorkflowsAsync(null, null, 10, default).Within()).Items, w => w.Workflow.Id == wf);

        // The replica is cut off and made a primary now, so that it certainly never gets B's claim: as A's load scans.
        var cut = false;
        a.BeforeScanStepForTests = async () =>
        {
            if (cut)
            {
                return;
            }

            cut = true;
            Assert.Equal("OK", (await replica.CliAsync("REPLICAOF", "NO", "ONE")).Trim());
            var unconfirmed = await Assert.ThrowsAsync<BoardException>(() => SplitBrain.ClaimAsync(boardB, wf, "b")).Within();
            Assert.Equal(BoardError.StoreUnavailable, unconfirmed.Error);
        };
        var load = await Assert.ThrowsAsync<BoardException>(() => boardA.GetTaskAsync(wf, "t0", default)).Within();
        Assert.True(cut, "A's load did not scan");
        Assert.Equal(BoardError.StoreUnavailable, load.Error);
        var listing = await Assert.ThrowsAsync<BoardException>(() => boardA.ListWorkflowsAsync(null, null, 10, default)).Within();
        Assert.Equal(BoardError.StoreUnavailable, listing.Error);
        Assert.Contains("reached 0 of 1 replicas", listing.Message, StringComparison.Ordinal);

        await primary.KillAsync();
        await using var newReplica = await replica.StartReplicaAsync(); // for A's commits to wait for

        var claim = await UntilAvailable.CallAsync(() => SplitBrain.ClaimAsync(boardA, wf, "a"), "A to serve from the promoted replica", within: TimeSpan.FromSeconds(60));
        Assert.Equal("t0", claim.Task!.Id);
        Assert.Null(a.DataLoss);
    }

    /// <summary>
    /// A failover in the middle of a load. Store B starts loading the workflow from the primary; before its scan, the
    /// replica is cut off and promoted, and store A claims t0 on the primary, which no replica confirms (A's caller hears
    /// UNAVAILABLE); B's scan sees that claim. Then the primary dies, and B's last read of the load goes to the promoted
    /// replica, which never had the claim. B must serve the promoted replica's board, with t0 ready to claim, not keep the
    /// scanned claim under the new primary's log (it did, before the load checked that all its reads ran on one node).
    /// </summary>
    [RedisFact]
    public async Task ALoadThatAFailoverInterrupts_StartsOverOnTheNewPrimary_AndKeepsNoClaimTheFailoverTookBack()
    {
        await using var primary = await RedisProcess.StartAsync(persistent: false);
        await using var replica = await primary.StartReplicaAsync();
        var configuration = primary.Endpoint + "," + replica.Endpoint;
        var (a, boardA) = await OpenAsync(configuration, replicas: 1);
        await using var _ = a;
        const string wf = "interrupted";
        const string probe = "probe";
        await boardA.CreateWorkflowAsync(wf, "interrupted load", null, default).Within();
        await boardA.PostTasksAsync(wf, [new TaskSpec { Id = "t0" }, new TaskSpec { Id = "t1" }], default).Within();
        await boardA.CreateWorkflowAsync(probe, "read by B until it reaches the new primary", null, default).Within();

        var (b, boardB) = await OpenAsync(configuration, replicas: 1);
        await using var __ = b;
        RedisProcess? newReplica = null;
        var stage = 0; // 0: before B's first scan step; 1: before the next log read of B, the load's last; 2: done
        b.BeforeScanStepForTests = async () =>
        {
            if (stage != 0)
            {
                return;
            }

            stage = 1;
            Assert.Equal("OK", (await replica.CliAsync("REPLICAOF", "NO", "ONE")).Trim());
            var unconfirmed = await Assert.ThrowsAsync<BoardException>(() => SplitBrain.ClaimAsync(boardA, wf, "a")).Within();
            Assert.Equal(BoardError.StoreUnavailable, unconfirmed.Error);
        };
        b.BeforeLogReadForTests = async () =>
        {
            if (stage != 1)
            {
                return;
            }

            stage = 2;
            await primary.KillAsync();
            newReplica = await replica.StartReplicaAsync(); // for B's WAITs on the new primary
            await UntilAvailable.CallAsync(() => boardB.GetWorkflowAsync(probe, default), "B to read from the promoted replica", within: TimeSpan.FromSeconds(60));
        };

        try
        {
            var t0 = (await boardB.GetTaskAsync(wf, "t0", default).Within(TimeSpan.FromSeconds(120))).Task;
            Assert.Equal(2, stage);
            Assert.Equal(TaskState.Ready, t0.State);
            var claim = await SplitBrain.ClaimAsync(boardB, wf, "b").Within();
            Assert.Equal("t0", claim.Task!.Id);
            Assert.Null(b.DataLoss);
        }
        finally
        {
            if (newReplica is not null)
            {
                await newReplica.DisposeAsync();
            }
        }
    }

    /// <summary>
    /// A split brain, made by hand: the replica is cut off and promoted while the primary goes on, store A claims t1 on the
    /// primary (acknowledged, not waited for), and store B claims on the promoted replica, where the same task goes to
    /// another worker at the same revision, with the same fencing token. The primary dies and A follows the failover
    /// there. Redis's head is as high as A's, so the head watermark sees nothing; A checks that the last change it
    /// knows is still in the log, finds B's instead, and refuses with DATA_LOSS, rather than go on as if its
    /// acknowledged claim held. Both ways A can learn of it are covered: catching up after a refused commit, and loading
    /// again after a lost reply (<paramref name="inFlightAtKill"/>: a claim is in flight when the primary dies).
    /// </summary>
    [RedisTheory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AStoreThatFollowsAFailoverToAnotherHistory_RefusesWithDataLoss(bool inFlightAtKill)
    {
        await using var primary = await RedisProcess.StartAsync(persistent: false);
        await using var replica = await primary.StartReplicaAsync();
        var (a, boardA) = await OpenAsync(primary.Endpoint + "," + replica.Endpoint, replicas: 0);
        await using var _ = a;
        const string wf = "diverge";
        var acknowledged = await SplitBrain.MakeAsync(boardA, wf, replica, Prefix, _time);

        Task<ClaimResult>? inFlight = null;
        if (inFlightAtKill)
        {
            await primary.PauseAsync();
            inFlight = ClaimAsync(boardA, wf, "a");
        }

        await primary.KillAsync();
        if (inFlight is not null)
        {
            Assert.Equal(BoardError.StoreUnavailable, (await Assert.ThrowsAsync<BoardException>(() => inFlight).Within(TimeSpan.FromSeconds(30))).Error);
        }

        await SplitBrain.ExpectDataLossAsync(boardA, a, wf, acknowledged, "A to reach the promoted replica");
    }

    /// <summary>
    /// Reads are waited for too, also reads of another instance's writes. With the replica connected but paused
    /// (SIGSTOP: it takes in nothing and acknowledges nothing), a claim through A is refused, and B, a new instance
    /// that reads the workflow from the primary where that claim is, answers UNAVAILABLE instead of showing it, to
    /// a read, a listing and a watcher.
    /// Once the replica resumes, B shows it. (WAIT is documented to cover what its own connection wrote, and B
    /// has written nothing, so a batch of reads first writes a notice nobody listens to. Redis 7.0 here makes a
    /// connection that wrote nothing wait too, so this test passes without that notice as well.) Both ways a read goes:
    /// over the direct connection, which keeps the WAIT off StackExchange.Redis's one shared connection, and through
    /// StackExchange.Redis when there is none.
    /// </summary>
    [RedisTheory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task AReadOfAnotherInstancesWrite_IsNotShownBeforeTheReplicaHasIt(bool directCommits)
    {
        await using var primary = await RedisProcess.StartAsync(persistent: false);
        await using var replica = await primary.StartReplicaAsync();
        var (a, boardA) = await OpenAsync(primary, replicas: 1, directCommits);
        await using var _ = a;
        const string wf = "reads";
        await boardA.CreateWorkflowAsync(wf, "reads wait", null, default).Within();
        await boardA.PostTasksAsync(wf, Enumerable.Range(0, 4).Select(i => new TaskSpec { Id = $"t{i}" }).ToArray(), default).Within();
        await ClaimAsync(boardA, wf).Within();

        RedisStore? b = null;
        Coordinator? boardB = null;
        await replica.PauseAsync();
        try
        {
            var refused = await Assert.ThrowsAsync<BoardException>(() => ClaimAsync(boardA, wf)).Within();
            Assert.Contains("reached 0 of 1 replicas", refused.Message, StringComparison.Ordinal);
            (b, boardB) = await OpenAsync(primary, replicas: 1, directCommits);
            var read = await Assert.ThrowsAsync<BoardException>(() => boardB.GetWorkflowAsync(wf, default)).Within();
            Assert.Equal(BoardError.StoreUnavailable, read.Error);
            var listing = await Assert.ThrowsAsync<BoardException>(() => boardB.ListWorkflowsAsync(null, null, 10, default)).Within();
            Assert.Equal(BoardError.StoreUnavailable, listing.Error);

            // Nor does a watcher on B get the refused claim's event: reading the log waits for the replica too.
            var refusedRevision = await HeadAsync(primary, wf);
            var seen = new List<long>();
            var watch = await Assert.ThrowsAsync<BoardException>(async () =>
            {
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
                await foreach (var item in boardB.WatchAsync(wf, 1, WatchFilter.All, null, cts.Token))
                {
                    if (item is WatchItem.Change change)
                    {
                        seen.Add(change.Event.Revision);
                    }
                }
            });
            Assert.Equal(BoardError.StoreUnavailable, watch.Error);
            Assert.DoesNotContain(refusedRevision, seen);
        }
        finally
        {
            await replica.ResumeAsync();
        }

        await using var __ = b!;
        // The refused claim is on the primary: once the replica has it, it is shown.
        await UntilAvailable.CallAsync(() => boardB!.GetWorkflowAsync(wf, default), "B to show both claims once the replica resumed",
            until: view => view.Counts[TaskState.Claimed] == 2);
        var listed = await UntilAvailable.CallAsync(() => boardB!.ListWorkflowsAsync(null, null, 10, default), "B to list the workflow");
        Assert.Equal(2, listed.Items.Single(w => w.Workflow.Id == wf).Counts[TaskState.Claimed]);
        Assert.Equal(directCommits, b!.DirectLogReads > 0);
    }
}
