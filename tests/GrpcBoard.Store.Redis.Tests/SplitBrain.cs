using System.Globalization;
using GrpcBoard.Core;
using GrpcBoard.Core.Events;
using GrpcBoard.Core.Model;
using GrpcBoard.Testing;
using Xunit;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>
/// A split brain made by hand, as Sentinel can leave one behind: two primaries for a moment, each taking writes, so the
/// same revision holds different changes on each. Then a store that acknowledged one of them must not go on with the
/// other (see WorkflowReplica's history check).
/// </summary>
public static class SplitBrain
{
    /// <summary>
    /// On a new workflow <paramref name="wf"/>: <paramref name="board"/> claims a task, and once <paramref name="replica"/>
    /// has it, the replica is cut off and promoted (REPLICAOF NO ONE). The board then claims again (acknowledged on the
    /// primary only), and a store opened on the replica claims the same task for another worker at the same revision,
    /// with the same fencing token. Returns the board's acknowledged claim.
    /// </summary>
    public static async Task<ClaimResult> MakeAsync(Coordinator board, string wf, RedisProcess replica, string prefix, TimeProvider time)
    {
        await board.CreateWorkflowAsync(wf, "split brain", null, default).Within();
        await board.PostTasksAsync(wf, Enumerable.Range(0, 6).Select(i => new TaskSpec { Id = $"t{i}" }).ToArray(), default).Within();
        var first = await ClaimAsync(board, wf, "a").Within();
        await TestTimeouts.Eventually(async () => await HeadAsync(replica, prefix, wf) >= first.Revision, "the replica to have the first claim");
        Assert.Equal("OK", (await replica.CliAsync("REPLICAOF", "NO", "ONE")).Trim());
        var acknowledged = await ClaimAsync(board, wf, "a").Within();

        var hub = new EventHub();
        var other = await RedisStore.ConnectAsync(new RedisStoreOptions { Configuration = replica.Endpoint, KeyPrefix = prefix }, hub);
        await using (other)
        {
            var theirs = await ClaimAsync(new Coordinator(other, hub, time, new BoardLimits()), wf, "b").Within();
            Assert.Equal((acknowledged.Task!.Id, acknowledged.Task.FencingToken, acknowledged.Revision), (theirs.Task!.Id, theirs.Task.FencingToken, theirs.Revision));
        }

        return acknowledged;
    }

    /// <summary>The board's next claim, once Redis answers, is refused with DATA_LOSS naming the acknowledged revision.</summary>
    public static async Task ExpectDataLossAsync(Coordinator board, RedisStore store, string wf, ClaimResult acknowledged, string what)
    {
        var refused = await Assert.ThrowsAsync<BoardException>(() =>
            UntilAvailable.CallAsync(() => ClaimAsync(board, wf, "a"), what, within: TimeSpan.FromSeconds(60)));
        Assert.Equal(BoardError.StoreDataLoss, refused.Error);
        Assert.Contains($"another change at revision {acknowledged.Revision}", store.DataLoss, StringComparison.Ordinal);
    }

    public static Task<ClaimResult> ClaimAsync(Coordinator board, string wf, string worker) =>
        board.ClaimAsync(new ClaimCommand { WorkflowId = wf, WorkerId = worker }, default);

    /// <summary>The workflow's head revision as this Redis holds it (read with redis-cli).</summary>
    public static async Task<long> HeadAsync(RedisProcess redis, string prefix, string wf) =>
        (await redis.CliAsync("HGET", $"{prefix}:{{{wf}}}:meta", "head")).Trim() is { Length: > 0 } head ? long.Parse(head, CultureInfo.InvariantCulture) : 0;
}
