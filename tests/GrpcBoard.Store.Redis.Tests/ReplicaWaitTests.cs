using System.Globalization;
using GrpcBoard.Core;
using GrpcBoard.Core.Events;
using GrpcBoard.Core.Model;
using GrpcBoard.Testing;
using Xunit;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>
/// Waiting for replicas (<see cref="RedisStoreOptions.ReplicasToWaitFor"/>), with a primary and a real replica
/// (<c>--replicaof</c>). The replica is then cut off (REPLICAOF NO ONE: what a failover does to the replica it
/// promotes) and the store claims once more on the old primary. Asserted on what the replica holds, the state a
/// failover to it would serve: the workflow's head revision there, read with redis-cli.
/// </summary>
public sealed class ReplicaWaitTests
{
    private const string Prefix = "rw";
    private readonly ManualTimeProvider _time = new();

    private async Task<(RedisStore Store, Coordinator Board)> OpenAsync(RedisProcess redis, int replicas, bool directCommits)
    {
        var hub = new EventHub();
        var store = await RedisStore.ConnectAsync(new RedisStoreOptions
        {
            Configuration = redis.Endpoint,
            KeyPrefix = Prefix,
            DirectCommits = directCommits,
            ReplicasToWaitFor = replicas,
            ReplicaWaitTimeout = TimeSpan.FromMilliseconds(300),
        }, hub);
        return (store, new Coordinator(store, hub, _time, new BoardLimits()));
    }

    private static Task<ClaimResult> ClaimAsync(Coordinator board, string wf) =>
        board.ClaimAsync(new ClaimCommand { WorkflowId = wf, WorkerId = "w" }, default);

    /// <summary>The workflow's head revision as this Redis holds it.</summary>
    private static async Task<long> HeadAsync(RedisProcess redis, string wf) =>
        long.Parse((await redis.CliAsync("HGET", $"{Prefix}:{{{wf}}}:meta", "head")).Trim(), CultureInfo.InvariantCulture);

    /// <summary>
    /// Claims three tasks with the replica attached, cuts the replica off, claims once more. Returns the
    /// revisions of the claims acknowledged before the cut, the claim after it (or its refusal), and the head
    /// revision the primary and the replica hold at the end.
    /// </summary>
    private async Task<Outcome> ClaimAcrossACutAsync(int replicas, bool directCommits)
    {
        await using var primary = await RedisProcess.StartAsync(persistent: false);
        await using var replica = await RedisProcess.StartAsync(false, "--replicaof", "127.0.0.1", primary.Port.ToString(CultureInfo.InvariantCulture));
        await TestTimeouts.Eventually(async () => (await replica.CliAsync("INFO", "replication")).Contains("master_link_status:up", StringComparison.Ordinal),
            "the replica to be in sync with its primary");
        var (store, board) = await OpenAsync(primary, replicas, directCommits);
        await using var _ = store;
        var wf = "wait-" + Guid.NewGuid().ToString("N")[..8];
        await board.CreateWorkflowAsync(wf, "replica wait", null, default).Within();
        await board.PostTasksAsync(wf, Enumerable.Range(0, 6).Select(i => new TaskSpec { Id = $"t{i}" }).ToArray(), default).Within();
        var before = new List<long>();
        for (var i = 0; i < 3; i++)
        {
            var claim = await ClaimAsync(board, wf).Within();
            before.Add(claim.Revision);
            if (replicas > 0)
            {
                // Acknowledged only once the replica had it: it is there now, without waiting any further.
                Assert.True(await HeadAsync(replica, wf) >= claim.Revision, $"the replica lacks revision {claim.Revision}, acknowledged");
            }
        }

        Assert.Equal(directCommits, store.DirectCommitCount > 0);
        Assert.Equal("OK", (await replica.CliAsync("REPLICAOF", "NO", "ONE")).Trim());
        ClaimResult? after = null;
        BoardException? refusal = null;
        try
        {
            after = await ClaimAsync(board, wf).Within();
        }
        catch (BoardException ex)
        {
            refusal = ex;
        }

        return new Outcome(before, after, refusal, await HeadAsync(primary, wf), await HeadAsync(replica, wf));
    }

    private sealed record Outcome(List<long> Before, ClaimResult? After, BoardException? Refusal, long PrimaryHead, long ReplicaHead);

    [RedisTheory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task WaitingForAReplica_AClaimItDidNotGet_IsUnavailable_AndEveryAcknowledgedClaimIsOnIt(bool directCommits)
    {
        var outcome = await ClaimAcrossACutAsync(replicas: 1, directCommits);

        Assert.Null(outcome.After);
        Assert.Equal(BoardError.StoreUnavailable, outcome.Refusal!.Error);
        Assert.Contains("reached 0 of 1 replicas", outcome.Refusal.Message, StringComparison.Ordinal);

        // The refused claim is on the old primary only; every acknowledged one is on the replica, so a failover to it
        // loses none, and revisions (and with them fencing tokens) go on from there.
        Assert.True(outcome.PrimaryHead > outcome.ReplicaHead, $"primary at {outcome.PrimaryHead}, replica at {outcome.ReplicaHead}");
        Assert.True(outcome.ReplicaHead >= outcome.Before.Max(), $"replica at {outcome.ReplicaHead}, acknowledged up to {outcome.Before.Max()}");
    }

    /// <summary>
    /// The same cut without waiting: the claim after it is acknowledged although the replica never got it, so a
    /// failover to that replica would hand the task out again with the same fencing token. This is what waiting
    /// prevents, and it shows that the test above can see a write the replica lacks.
    /// </summary>
    [RedisFact]
    public async Task WithoutWaiting_AClaimTheReplicaDidNotGet_IsAcknowledged()
    {
        var outcome = await ClaimAcrossACutAsync(replicas: 0, directCommits: true);

        Assert.Null(outcome.Refusal);
        Assert.True(outcome.After!.Revision > outcome.ReplicaHead, $"claim at {outcome.After.Revision}, replica at {outcome.ReplicaHead}");
        Assert.Equal(outcome.After.Revision, outcome.PrimaryHead);
    }
}
