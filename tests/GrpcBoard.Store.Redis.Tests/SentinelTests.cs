using System.Globalization;
using System.Net;
using GrpcBoard.Core;
using GrpcBoard.Core.Events;
using GrpcBoard.Core.Model;
using GrpcBoard.Testing;
using Xunit;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>
/// A store configured with Redis Sentinel (<c>sentinel:port,serviceName=NAME</c>): a primary, two replicas and a real
/// sentinel (<c>redis-server --sentinel</c>), which does the failover itself when the primary is killed. Asserted on
/// accepted effects: which claims were acknowledged, with which fencing tokens, and what the promoted primary holds.
/// </summary>
public sealed class SentinelTests
{
    private const string Prefix = "st";
    private const string Service = SentinelGroup.Service;
    private readonly ManualTimeProvider _time = new();

    private Task<(RedisStore Store, Coordinator Board)> OpenAsync(SentinelGroup group, int replicas, string? password = null, TimeSpan? poll = null) =>
        OpenAsync(group.Sentinel.Endpoint, replicas, password, poll);

    /// <summary>A store through the sentinels at <paramref name="sentinels"/> (host:port, comma-separated) and a board on it.</summary>
    private async Task<(RedisStore Store, Coordinator Board)> OpenAsync(string sentinels, int replicas, string? password = null, TimeSpan? poll = null, TimeSpan? majorityWindow = null)
    {
        var hub = new EventHub();
        var store = await RedisStore.ConnectAsync(new RedisStoreOptions
        {
            Configuration = $"{sentinels},serviceName={Service}" + (password is null ? "" : $",password={password}"),
            KeyPrefix = Prefix,
            ReplicasToWaitFor = replicas,
            ReplicaWaitTimeout = TimeSpan.FromMilliseconds(500),
            SentinelPollInterval = poll ?? TimeSpan.FromSeconds(1),
            SentinelMajority = majorityWindow is not null,
            SentinelConfirmWindow = majorityWindow ?? TimeSpan.FromSeconds(3),
        }, hub);
        return (store, new Coordinator(store, hub, _time, new BoardLimits()));
    }

    private static Task<ClaimResult> ClaimAsync(Coordinator board, string wf, string worker = "w") =>
        board.ClaimAsync(new ClaimCommand { WorkflowId = wf, WorkerId = worker }, default);

    private static Task PostAsync(Coordinator board, string wf, int count) => ClaimingWorkers.PostAsync(board, wf, count);

    private static Task<long> HeadAsync(RedisProcess redis, string wf) => SplitBrain.HeadAsync(redis, Prefix, wf);

    private static int PortOf(EndPoint? endpoint) => Assert.IsType<IPEndPoint>(endpoint).Port;

    /// <summary>Makes <paramref name="sentinel"/> name <paramref name="node"/> as the primary from now on (SENTINEL REMOVE, then MONITOR it).</summary>
    private static async Task NameAsync(RedisProcess sentinel, RedisProcess node)
    {
        Assert.Equal("OK", (await sentinel.CliAsync("SENTINEL", "REMOVE", Service)).Trim());
        Assert.Equal("OK", (await sentinel.CliAsync("SENTINEL", "MONITOR", Service, "127.0.0.1", node.Port.ToString(CultureInfo.InvariantCulture), "1")).Trim());
    }

    /// <summary>
    /// A sentinel that monitors no such group is a configuration mistake, said at start; no sentinel answering is
    /// UNAVAILABLE (nothing tells where the primary is), and so is TLS to a sentinel without it. All at start.
    /// </summary>
    [RedisFact]
    public async Task AMisconfiguredOrUnreachableSentinel_IsAClearErrorAtStart()
    {
        await using var group = await SentinelGroup.StartAsync(replicas: 0);
        var sentinel = group.Sentinel;
        var unknown = await Assert.ThrowsAsync<ArgumentException>(() => RedisStore.ConnectAsync(
            new RedisStoreOptions { Configuration = $"{sentinel.Endpoint},serviceName=other", KeyPrefix = Prefix }, new EventHub())).Within();
        Assert.Contains("monitors no group named 'other'", unknown.Message, StringComparison.Ordinal);

        var nobody = $"127.0.0.1:{RedisProcess.FreePort()}";
        var unreachable = await Assert.ThrowsAsync<BoardException>(() => RedisStore.ConnectAsync(
            new RedisStoreOptions { Configuration = $"{nobody},serviceName={Service}", KeyPrefix = Prefix, CommandTimeoutMilliseconds = 1000 }, new EventHub())).Within();
        Assert.Equal(BoardError.StoreUnavailable, unreachable.Error);
        Assert.Contains($"no sentinel named the primary of '{Service}'", unreachable.Message, StringComparison.Ordinal);
        Assert.Contains(nobody, unreachable.Message, StringComparison.Ordinal);

        // Asked over TLS, a sentinel that speaks none is one that does not answer, and says so (TlsTests: one that does).
        var tls = await Assert.ThrowsAsync<BoardException>(() => RedisStore.ConnectAsync(
            new RedisStoreOptions { Configuration = $"{sentinel.Endpoint},serviceName={Service},ssl=true", KeyPrefix = Prefix, CommandTimeoutMilliseconds = 1000 }, new EventHub())).Within();
        Assert.Equal(BoardError.StoreUnavailable, tls.Error);
        Assert.Contains($"TLS with {sentinel.Endpoint} failed: no handshake", tls.Message, StringComparison.Ordinal);

        // The sentinel listed second answers when the first does not.
        var (store, board) = await OpenAsync($"{nobody},{sentinel.Endpoint}", replicas: 0);
        await using (store)
        {
            Assert.Equal(group.Primary.Port, PortOf(store.SentinelPrimary));
            await board.CreateWorkflowAsync("ok", "through the second sentinel", null, default).Within();
        }
    }

    /// <summary>
    /// With a password: the nodes require one (requirepass, masterauth), given once in the configuration (password=),
    /// and the sentinel is asked with it when it requires the same one, and without it when it requires none. The
    /// store claims over its authenticated direct connection, and follows a failover.
    /// </summary>
    [RedisTheory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task WithAPassword_TheStoreWorksAndFollowsAFailover(bool sentinelRequiresIt)
    {
        await using var group = await SentinelGroup.StartAsync(replicas: 1, password: "s3cret", sentinelRequiresPassword: sentinelRequiresIt);
        var replica = group.Replicas[0];
        var (store, board) = await OpenAsync(group, replicas: 0, password: "s3cret");
        await using var _ = store;
        const string wf = "auth";
        await board.CreateWorkflowAsync(wf, "with a password", null, default).Within();
        await PostAsync(board, wf, 10);
        var before = await ClaimAsync(board, wf).Within();
        Assert.True(store.DirectCommitCount > 0, "commits should go over the direct connection, authenticated");

        await TestTimeouts.Eventually(async () => await HeadAsync(replica, wf) >= before.Revision, "the replica to have the claim");
        Assert.Same(replica, await group.FailOverAsync());
        var after = await UntilAvailable.CallAsync(() => ClaimAsync(board, wf), "a claim on the promoted replica", within: TimeSpan.FromSeconds(60));
        Assert.Equal(replica.Port, PortOf(store.SentinelPrimary));
        Assert.True(after.Task!.FencingToken > before.Task!.FencingToken);
    }

    /// <summary>
    /// A switch the sentinel announces (<c>+switch-master</c>) is followed at once: with the sentinels asked only once an
    /// hour, the store still moves to the promoted replica and claims there with a higher fencing token. (Without the
    /// subscription, it stays with the dead primary until the poll: checked by hand.)
    /// </summary>
    [RedisFact]
    public async Task ASwitchTheSentinelAnnounces_IsFollowedWithoutWaitingForThePoll()
    {
        await using var group = await SentinelGroup.StartAsync(replicas: 1);
        var replica = group.Replicas[0];
        var (store, board) = await OpenAsync(group, replicas: 0, poll: TimeSpan.FromHours(1));
        await using var _ = store;
        const string wf = "announced";
        await board.CreateWorkflowAsync(wf, "switch announced", null, default).Within();
        await PostAsync(board, wf, 10);
        var before = await ClaimAsync(board, wf).Within();
        await TestTimeouts.Eventually(async () => await HeadAsync(replica, wf) >= before.Revision, "the replica to have the claim");

        Assert.Same(replica, await group.FailOverAsync());
        await TestTimeouts.Eventually(() => Task.FromResult(PortOf(store.SentinelPrimary) == replica.Port), "the store to follow the announced switch");
        var after = await UntilAvailable.CallAsync(() => ClaimAsync(board, wf), "a claim on the promoted replica");
        Assert.True(after.Task!.FencingToken > before.Task!.FencingToken);
    }

    /// <summary>
    /// After a switch, the direct commit connection to the new primary fails to open (injected): claims go on through
    /// StackExchange.Redis meanwhile, none on the direct connection, and once it opens, commits go back to it. Every
    /// claim takes another task with a higher fencing token throughout.
    /// </summary>
    [RedisFact]
    public async Task WhenTheDirectConnectionToTheNewPrimaryFailsToOpen_CommitsGoThroughStackExchangeRedisUntilItOpens()
    {
        await using var group = await SentinelGroup.StartAsync(replicas: 1);
        var replica = group.Replicas[0];
        var refuse = 1;
        var refused = 0;
        var hub = new EventHub();
        await using var store = await RedisStore.ConnectAsync(new RedisStoreOptions
        {
            Configuration = $"{group.Sentinel.Endpoint},serviceName={Service}",
            KeyPrefix = Prefix,
            BeforeCommitConnectionOpens = endpoint =>
            {
                if (PortOf(endpoint) == replica.Port && Volatile.Read(ref refuse) == 1)
                {
                    Interlocked.Increment(ref refused);
                    throw new System.Net.Sockets.SocketException((int)System.Net.Sockets.SocketError.ConnectionRefused);
                }
            },
        }, hub);
        var board = new Coordinator(store, hub, _time, new BoardLimits());
        const string wf = "reopen";
        await board.CreateWorkflowAsync(wf, "direct connection refused after a switch", null, default).Within();
        await PostAsync(board, wf, 100);
        var claims = new List<ClaimResult> { await ClaimAsync(board, wf).Within() };
        Assert.True(store.DirectCommitCount > 0);
        await TestTimeouts.Eventually(async () => await HeadAsync(replica, wf) >= claims[0].Revision, "the replica to have the claim");

        Assert.Same(replica, await group.FailOverAsync());
        await TestTimeouts.Eventually(() => Task.FromResult(PortOf(store.SentinelPrimary) == replica.Port), "the store to follow the switch");
        var directAtSwitch = store.DirectCommitCount;
        for (var i = 0; i < 5; i++)
        {
            claims.Add(await UntilAvailable.CallAsync(() => ClaimAsync(board, wf), "a claim through StackExchange.Redis"));
        }

        Assert.Equal(directAtSwitch, store.DirectCommitCount);
        Assert.True(Volatile.Read(ref refused) > 0, "the direct connection to the new primary was never tried");

        Volatile.Write(ref refuse, 0);
        await TestTimeouts.Eventually(async () =>
        {
            claims.Add(await UntilAvailable.CallAsync(() => ClaimAsync(board, wf), "a claim"));
            return store.DirectCommitCount > directAtSwitch;
        }, "commits to go back to the direct connection");

        Assert.Equal(claims.Count, claims.Select(c => c.Task!.Id).Distinct().Count());
        var tokens = claims.Select(c => c.Task!.FencingToken).ToList();
        Assert.Equal(tokens.Order(), tokens);
        Assert.Equal(tokens.Count, tokens.Distinct().Count());
    }

    /// <summary>
    /// Eight workers claim without pause while the primary is killed; the sentinel promotes one replica and points
    /// the other at it. The store follows without a restart, and with both replicas waited for, nothing acknowledged
    /// is lost: every acknowledged claim took a different task with a different fencing token, and the new
    /// primary holds each one with its owner and token. Both, because Sentinel promotes the replica it believes most
    /// up to date from what it last polled (up to a second old): waiting for 1 of 2, a run of the end-to-end test
    /// saw it promote the one that lacked acknowledged claims (the store then refused with DATA_LOSS). A third replica
    /// is attached to the new primary, which needs two to wait for.
    /// </summary>
    [RedisFact]
    public async Task UnderLoad_ASentinelFailover_LosesNoAcknowledgedClaim_AndNoTokenRepeats()
    {
        await using var group = await SentinelGroup.StartAsync(replicas: 2);
        var (store, board) = await OpenAsync(group, replicas: 2);
        await using var _ = store;
        Assert.Equal(group.Primary.Port, PortOf(store.SentinelPrimary));
        const string wf = "load";
        await board.CreateWorkflowAsync(wf, "sentinel failover", null, default).Within();
        var workers = await ClaimingWorkers.StartAsync(board, wf, "the failover");
        var beforeKill = workers.Acknowledged;
        var promoted = await group.FailOverAsync();
        var other = group.Replicas.Single(r => r != promoted);
        var third = await group.AddReplicaAsync(promoted);
        await workers.UntilAsync(beforeKill + 50, "50 claims after the failover", TimeSpan.FromSeconds(60));
        var claims = await workers.StopAsync();
        Assert.Equal(promoted.Port, PortOf(store.SentinelPrimary));

        // What the new primary holds, read by a store opened afresh through the sentinel.
        var (reader, readerBoard) = await OpenAsync(group, replicas: 0);
        await using (reader)
        {
            Assert.Equal(promoted.Port, PortOf(reader.SentinelPrimary));
            // Besides the acknowledged claims: those whose outcome was unknown (UNAVAILABLE when the primary died with the reply unsent) may have committed.
            await workers.AssertHeldAsync(readerBoard, wf, claims);
        }

        // Claims after the failover waited for the other replica, which the sentinel pointed at the new primary, and the third.
        foreach (var node in new[] { promoted, other, third })
        {
            Assert.True(await HeadAsync(node, wf) >= claims.Max(c => c.Revision), $"an acknowledged claim is missing on {node.Endpoint}");
        }
    }

    /// <summary>
    /// A split brain, made by hand: the replica is cut off and promoted while the primary goes on; the store claims t1 on
    /// the primary (acknowledged), and another store on the cut-off replica claims the same task for another worker at the
    /// same revision. Then the sentinel is told to monitor the replica instead (SENTINEL REMOVE and MONITOR, so it names
    /// it at once), and the store moves there with nothing in flight. Its next commit is refused (another batch is
    /// last), and its catch-up finds another change at the revision it acknowledged: DATA_LOSS, not a second owner of t1
    /// with the same fencing token. (ReplicaWaitTests covers the same found by a load after a lost reply.)
    /// </summary>
    [RedisFact]
    public async Task AStoreMovedToAnotherHistory_RefusesWithDataLoss()
    {
        await using var group = await SentinelGroup.StartAsync(replicas: 1);
        var (sentinel, replica) = (group.Sentinel, group.Replicas[0]);
        var (store, board) = await OpenAsync(group, replicas: 0);
        await using var _ = store;
        const string wf = "diverge";
        var acknowledged = await SplitBrain.MakeAsync(board, wf, replica, Prefix, _time);

        await NameAsync(sentinel, replica);
        await TestTimeouts.Eventually(() => Task.FromResult(PortOf(store.SentinelPrimary) == replica.Port), "the store to move to the node the sentinel names");

        await SplitBrain.ExpectDataLossAsync(board, store, wf, acknowledged, "a claim on the node the sentinel names");
    }

    /// <summary>
    /// Three sentinels, the one listed first made to name another node that answers as a primary: the split brain above
    /// (the replica cut off and promoted, the same task claimed on each side with the same token). A store without the
    /// majority rule follows that sentinel and shows the other history: the task owned by the other side's worker. A store
    /// with it (<see cref="RedisStoreOptions.SentinelMajority"/>) stays with the primary the other two name, keeps its
    /// acknowledged claim and claims on with higher tokens. Then with those two paused (SIGSTOP, as if cut off), it refuses
    /// calls with UNAVAILABLE once no majority has confirmed the primary within the window, and serves again once they
    /// answer.
    /// </summary>
    [RedisFact]
    public async Task WithTheMajorityRule_ASentinelNamingAnotherPrimary_IsOutvoted_AndWithoutAMajority_CallsStop()
    {
        await using var group = await SentinelGroup.StartAsync(replicas: 1);
        var (stale, replica) = (group.Sentinel, group.Replicas[0]);
        var others = new[] { await group.AddSentinelAsync(), await group.AddSentinelAsync() };
        var sentinels = string.Join(",", new[] { stale }.Concat(others).Select(s => s.Endpoint));
        var unknown = await Assert.ThrowsAsync<ArgumentException>(() => RedisStore.ConnectAsync(
            new RedisStoreOptions { Configuration = $"{sentinels},serviceName=other", KeyPrefix = Prefix, SentinelMajority = true }, new EventHub())).Within();
        Assert.Contains("monitors no group named 'other'", unknown.Message, StringComparison.Ordinal);

        var poll = TimeSpan.FromMilliseconds(200);
        var (store, board) = await OpenAsync(sentinels, replicas: 0, poll: poll, majorityWindow: TimeSpan.FromSeconds(1));
        var (plain, plainBoard) = await OpenAsync(sentinels, replicas: 0, poll: poll);
        await using var _ = store;
        await using var __ = plain;
        const string wf = "outvoted";
        var acknowledged = await SplitBrain.MakeAsync(board, wf, replica, Prefix, _time);

        // The sentinel listed first names the cut-off replica from now on (the others would turn it back into a replica
        // about 8 s after it called itself a primary, so what follows comes first).
        await NameAsync(stale, replica);
        await TestTimeouts.Eventually(() => Task.FromResult(PortOf(plain.SentinelPrimary) == replica.Port), "the store without the rule to follow the first sentinel");
        Assert.Equal("b", (await plainBoard.GetTaskAsync(wf, acknowledged.Task!.Id, default).Within()).Task.Owner);

        Assert.Equal(group.Primary.Port, PortOf(store.SentinelPrimary));
        var next = await ClaimAsync(board, wf, "a").Within();
        Assert.True(next.Task!.FencingToken > acknowledged.Task.FencingToken);
        Assert.Equal("a", (await board.GetTaskAsync(wf, acknowledged.Task.Id, default).Within()).Task.Owner);
        Assert.Equal(group.Primary.Port, PortOf(store.SentinelPrimary));
        Assert.Null(store.DataLoss);

        // Tasks for the claims that pass until the last confirmation is too old.
        await board.PostTasksAsync(wf, Enumerable.Range(0, 1000).Select(i => new TaskSpec { Id = $"more{i}" }).ToArray(), default).Within();
        foreach (var sentinel in others)
        {
            await sentinel.PauseAsync();
        }

        try
        {
            BoardException? refused = null;
            await TestTimeouts.Eventually(async () =>
            {
                try
                {
                    await ClaimAsync(board, wf, "a");
                    return false;
                }
                catch (BoardException ex) when (ex.Error == BoardError.StoreUnavailable)
                {
                    refused = ex;
                    return true;
                }
            }, "calls to be refused without a majority");
            Assert.Contains("no majority of the sentinels has confirmed the primary", refused!.Message, StringComparison.Ordinal);
        }
        finally
        {
            foreach (var sentinel in others)
            {
                await sentinel.ResumeAsync();
            }
        }

        var after = await UntilAvailable.CallAsync(() => ClaimAsync(board, wf, "a"), "a claim once the majority answers again");
        Assert.True(after.Task!.FencingToken > next.Task.FencingToken);
        Assert.Equal(group.Primary.Port, PortOf(store.SentinelPrimary));
        Assert.Null(store.DataLoss);
    }

    /// <summary>
    /// After a failover, the old primary comes back with its data (AOF) and calls itself a primary until the
    /// sentinel turns it into a replica, seconds later. Meanwhile the store, and a new store started then, go on
    /// with the primary the sentinel names: no read shows the old primary's older head (which would also make the
    /// store refuse everything with DATA_LOSS), and claims go on. Then the old primary becomes a replica of the new
    /// one and catches up.
    /// </summary>
    [RedisFact]
    public async Task AnOldPrimaryBackWithItsData_IsNotUsed_WhileItStillCallsItselfPrimary()
    {
        await using var group = await SentinelGroup.StartAsync(replicas: 2, persistent: true);
        var primary = group.Primary;
        var (store, board) = await OpenAsync(group, replicas: 1);
        await using var _ = store;
        const string wf = "stale";
        await board.CreateWorkflowAsync(wf, "old primary returns", null, default).Within();
        await PostAsync(board, wf, 2000);
        var claims = new List<ClaimResult>();
        for (var i = 0; i < 3; i++)
        {
            claims.Add(await ClaimAsync(board, wf).Within());
        }

        // Waited for one replica of two: the kill comes once both have the claims, so that whichever is promoted has them.
        foreach (var replica in group.Replicas)
        {
            await TestTimeouts.Eventually(async () => await HeadAsync(replica, wf) >= claims[^1].Revision, "both replicas to have the claims");
        }

        await group.FailOverAsync();
        for (var i = 0; i < 3; i++)
        {
            claims.Add(await UntilAvailable.CallAsync(() => ClaimAsync(board, wf), "a claim on the new primary", within: TimeSpan.FromSeconds(60)));
        }

        var oldHead = claims[2].Revision;
        await primary.StartAgainAsync();
        Assert.StartsWith("master", (await primary.CliAsync("ROLE")).Trim(), StringComparison.Ordinal);
        Assert.True(await HeadAsync(primary, wf) <= oldHead, "the old primary should hold only what it had before the failover");

        // While the old primary calls itself a primary: a new store, and the running one, serve from the new one.
        var (late, lateBoard) = await OpenAsync(group, replicas: 1);
        await using (late)
        {
            Assert.NotEqual(primary.Port, PortOf(late.SentinelPrimary));
            Assert.Equal(claims.Count, (await lateBoard.GetWorkflowAsync(wf, default).Within()).Counts[TaskState.Claimed]);
            while ((await primary.CliAsync("ROLE")).Trim().StartsWith("master", StringComparison.Ordinal))
            {
                foreach (var b in new[] { board, lateBoard })
                {
                    var claim = await UntilAvailable.CallAsync(() => ClaimAsync(b, wf, b == board ? "running" : "late"), "a claim while the old primary calls itself primary");
                    Assert.True(claim.Task!.FencingToken > claims.Max(c => c.Task!.FencingToken), "a fencing token went backwards");
                    claims.Add(claim);
                }

                Assert.Null(store.DataLoss);
                Assert.Null(late.DataLoss);
                Assert.True(claims.Count < 1900, "the sentinel never turned the old primary into a replica");
                await Task.Delay(50);
            }

            Assert.Equal(claims.Count, (await lateBoard.GetWorkflowAsync(wf, default).Within()).Counts[TaskState.Claimed]);
        }

        Assert.Equal(claims.Count, claims.Select(c => c.Task!.Id).Distinct().Count());
        foreach (var claim in claims)
        {
            var task = (await board.GetTaskAsync(wf, claim.Task!.Id, default).Within()).Task;
            Assert.Equal((claim.Task.Owner, claim.Task.FencingToken), (task.Owner, task.FencingToken));
        }

        await TestTimeouts.Eventually(async () => await HeadAsync(primary, wf) >= claims.Max(c => c.Revision), "the old primary, now a replica, to catch up");
    }
}
