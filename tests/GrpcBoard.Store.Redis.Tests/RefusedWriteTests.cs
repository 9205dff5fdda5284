using GrpcBoard.Core;
using GrpcBoard.Core.Events;
using GrpcBoard.Core.Model;
using GrpcBoard.Testing;
using Xunit;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>
/// A Redis that answers but refuses writes, with real redis-servers: full (maxmemory), unable to persist (MISCONF), or
/// with too few replicas (NOREPLICAS). Each refuses a batch whole, with a status that says so, loses nothing, and the
/// board goes on once the cause is gone. And an eviction policy that may delete the board's keys is refused, and a
/// Redis that closes idle connections (its <c>timeout</c>) costs no call.
/// </summary>
public sealed class RefusedWriteTests
{
    private const string Prefix = "refused";
    private readonly ManualTimeProvider _time = new();

    private static async Task<long> ClaimedAsync(Coordinator board, string wf) => (await board.GetWorkflowAsync(wf, default).Within()).Counts[TaskState.Claimed];

    private Task<(RedisStore Store, Coordinator Board)> OpenAsync(RedisProcess redis) => RedisBoards.OpenAsync(new RedisStoreOptions
    {
        Configuration = redis.Endpoint,
        KeyPrefix = Prefix,
        EpochCheckInterval = TimeSpan.FromMilliseconds(100),
        EvictionPolicyCheckInterval = TimeSpan.FromMilliseconds(100),
    }, _time);

    /// <summary>A store on <paramref name="redis"/> with workflow <paramref name="wf"/>, four tasks posted and one claimed.</summary>
    private async Task<(RedisStore Store, Coordinator Board)> OpenWithAClaimAsync(RedisProcess redis, string wf)
    {
        var (store, board) = await OpenAsync(redis);
        try
        {
            await board.CreateWorkflowAsync(wf, wf, null, default).Within();
            await board.PostTasksAsync(wf, Enumerable.Range(0, 4).Select(i => new TaskSpec { Id = $"t{i}" }).ToArray(), default).Within();
            Assert.NotNull((await ClaimAsync(board, wf).Within()).Task);
            return (store, board);
        }
        catch
        {
            await store.DisposeAsync();
            throw;
        }
    }

    private static Task<ClaimResult> ClaimAsync(Coordinator board, string wf) =>
        board.ClaimAsync(new ClaimCommand { WorkflowId = wf, WorkerId = "w" }, default);

    /// <summary>
    /// With an <c>allkeys-*</c> policy Redis may delete any key to make room (a task, a lease, the log): acknowledged writes
    /// lost without a trace. The store does not start on such a Redis, and a running store refuses calls while the policy is
    /// set, and goes on once it is not. A <c>volatile-*</c> policy evicts only keys with an expiry (the instances' addresses).
    /// </summary>
    [RedisFact]
    public async Task AnEvictionPolicyThatMayDeleteTheBoardsKeys_IsRefused_AtStartAndWhileItIsSet()
    {
        await using var redis = await RedisProcess.StartAsync(persistent: false, "--maxmemory-policy", "allkeys-lru");
        var start = await Assert.ThrowsAsync<BoardException>(() => OpenAsync(redis));
        Assert.Equal(BoardError.StoreUnavailable, start.Error);
        Assert.Contains("maxmemory-policy allkeys-lru", start.Message);

        Assert.Equal("OK", (await redis.CliAsync("CONFIG", "SET", "maxmemory-policy", "noeviction")).Trim());
        const string wf = "policy";
        var (store, board) = await OpenWithAClaimAsync(redis, wf);
        await using var _ = store;

        Assert.Equal("OK", (await redis.CliAsync("CONFIG", "SET", "maxmemory-policy", "allkeys-lfu")).Trim());
        BoardException? refusal = null;
        await TestTimeouts.Eventually(async () =>
        {
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
        }, "calls to be refused under allkeys-lfu");
        Assert.Contains("maxmemory-policy allkeys-lfu", refusal!.Message);
        Assert.Equal(BoardError.StoreUnavailable, (await Assert.ThrowsAsync<BoardException>(() => ClaimAsync(board, wf))).Error);
        Assert.False(await store.CheckHealthAsync(default));

        Assert.Equal("OK", (await redis.CliAsync("CONFIG", "SET", "maxmemory-policy", "volatile-lru")).Trim());
        var next = await UntilAvailable.CallAsync(() => ClaimAsync(board, wf), "a claim once the policy evicts only keys with an expiry");
        Assert.NotNull(next.Task);
        Assert.True(await store.CheckHealthAsync(default));
        Assert.Equal(2, (await board.GetWorkflowAsync(wf, default).Within()).Counts[TaskState.Claimed]);
    }

    /// <summary>
    /// Redis at its maxmemory with <c>noeviction</c>: posts are refused whole with RESOURCE_EXHAUSTED (not INTERNAL, not
    /// half-written), reads go on, and once the limit is raised the board goes on from exactly what was acknowledged, as
    /// another instance that loads it from Redis sees too.
    /// </summary>
    [RedisFact]
    public async Task AFullRedis_RefusesWritesWhole_WithResourceExhausted_AndGoesOnOnceThereIsRoom()
    {
        await using var redis = await RedisProcess.StartAsync(persistent: false, "--maxmemory", "4mb", "--maxmemory-policy", "noeviction");
        var (store, board) = await OpenAsync(redis);
        await using var _ = store;
        const string wf = "full";
        await board.CreateWorkflowAsync(wf, "a full Redis", null, default).Within();
        var payload = new byte[512];
        var accepted = 0;
        BoardException? full = null;
        for (var batch = 0; batch < 400 && full is null; batch++)
        {
            var specs = Enumerable.Range(0, 50).Select(i => new TaskSpec { Id = $"t{batch}-{i}", Payload = payload }).ToArray();
            try
            {
                await board.PostTasksAsync(wf, specs, default).Within();
                accepted += specs.Length;
            }
            catch (BoardException ex)
            {
                full = ex;
            }
        }

        Assert.NotNull(full);
        Assert.True(accepted > 0, "the first batches should fit");
        Assert.Equal(BoardError.LimitExceeded, full.Error);
        Assert.Contains("out of memory", full.Message);
        Assert.Equal("redis_maxmemory", full.Metadata["limit"]);

        // Nothing of the refused batch was written: the counts and the log hold exactly the acknowledged posts.
        Assert.Equal(accepted, (await board.GetWorkflowAsync(wf, default).Within()).Counts.Total);

        Assert.Equal("OK", (await redis.CliAsync("CONFIG", "SET", "maxmemory", "0")).Trim());
        await board.PostTasksAsync(wf, [new TaskSpec { Id = "after" }], default).Within();
        var claim = (await ClaimAsync(board, wf).Within()).Task!;

        var (other, otherBoard) = await OpenAsync(redis);
        await using (other)
        {
            var seen = await otherBoard.GetWorkflowAsync(wf, default).Within();
            Assert.Equal(accepted + 1, seen.Counts.Total);
            Assert.Equal(1, seen.Counts[TaskState.Claimed]);
            var events = await other.ReadEventsAsync(wf, 1, 100_000, default);
            Assert.Equal(accepted + 1, events.Events.Count(e => e.Kind == EventKind.TaskPosted));
            Assert.Equal(seen.Revision, events.HeadRevision);
        }

        Assert.Equal(claim.FencingToken, (await board.GetTaskAsync(wf, claim.Id, default).Within()).Task.FencingToken);
    }

    /// <summary>
    /// <c>min-replicas-to-write</c> with too few replicas: Redis answers writes NOREPLICAS. Claims fail with UNAVAILABLE
    /// (before, INTERNAL), nothing of them is written, reads go on, and claims succeed again once the setting is met.
    /// </summary>
    [RedisFact]
    public async Task TooFewReplicasForMinReplicasToWrite_IsUnavailable_AndWritesNothing()
    {
        await using var redis = await RedisProcess.StartAsync(persistent: false);
        const string wf = "noreplicas";
        var (store, board) = await OpenWithAClaimAsync(redis, wf);
        await using var _ = store;

        Assert.Equal("OK", (await redis.CliAsync("CONFIG", "SET", "min-replicas-to-write", "1")).Trim());
        var refusal = await Assert.ThrowsAsync<BoardException>(() => ClaimAsync(board, wf));
        Assert.Equal(BoardError.StoreUnavailable, refusal.Error);
        Assert.Contains("NOREPLICAS", refusal.Message);
        Assert.Equal(1, await ClaimedAsync(board, wf));

        Assert.Equal("OK", (await redis.CliAsync("CONFIG", "SET", "min-replicas-to-write", "0")).Trim());
        var next = (await ClaimAsync(board, wf).Within()).Task!;
        Assert.Equal(2, await ClaimedAsync(board, wf));
        var (other, otherBoard) = await OpenAsync(redis);
        await using (other)
        {
            Assert.Equal(2, await ClaimedAsync(otherBoard, wf));
            Assert.Equal(next.FencingToken, (await otherBoard.GetTaskAsync(wf, next.Id, default).Within()).Task.FencingToken);
        }
    }

    /// <summary>
    /// A Redis that cannot persist (here an RDB save that failed, with <c>stop-writes-on-bgsave-error</c>; a full disk does
    /// the same) answers writes MISCONF. Claims fail with UNAVAILABLE (before, INTERNAL), nothing of them is written, and
    /// they succeed again once a save succeeds.
    /// </summary>
    [RedisFact]
    public async Task ARedisThatCannotPersist_IsUnavailable_AndWritesNothing()
    {
        // Redis stops writes after a failed save only when it has save points.
        await using var redis = await RedisProcess.StartAsync(persistent: false, "--save", "3600 1", "--enable-protected-configs", "yes", "--stop-writes-on-bgsave-error", "yes");
        const string wf = "misconf";
        var (store, board) = await OpenWithAClaimAsync(redis, wf);
        await using var _ = store;

        // A directory no file can be created in, even by root: the save's child fails.
        Assert.Equal("OK", (await redis.CliAsync("CONFIG", "SET", "dir", "/proc")).Trim());
        await redis.CliAsync("BGSAVE");
        await TestTimeouts.Eventually(async () => (await redis.CliAsync("INFO", "persistence")).Contains("rdb_last_bgsave_status:err"), "the save to fail");
        var refusal = await Assert.ThrowsAsync<BoardException>(() => ClaimAsync(board, wf));
        Assert.Equal(BoardError.StoreUnavailable, refusal.Error);
        Assert.Contains("MISCONF", refusal.Message);
        Assert.Equal(1, await ClaimedAsync(board, wf));

        Assert.Equal("OK", (await redis.CliAsync("CONFIG", "SET", "dir", redis.Directory)).Trim());
        await redis.CliAsync("BGSAVE");
        await TestTimeouts.Eventually(async () => (await redis.CliAsync("INFO", "persistence")).Contains("rdb_last_bgsave_status:ok"), "a save to succeed");
        Assert.NotNull((await ClaimAsync(board, wf).Within()).Task);
        Assert.Equal(2, await ClaimedAsync(board, wf));
    }

    /// <summary>
    /// Redis's <c>timeout</c> (here 1 s) closes a connection idle that long, as many deployments set it: the direct commit
    /// connection is among them whenever the board is quiet. The first claim after Redis closed it must still succeed,
    /// not fail with UNAVAILABLE (it goes through StackExchange.Redis while the direct connection opens again). Three
    /// times, each once the direct connection is open again and Redis has closed it.
    /// </summary>
    [RedisFact]
    public async Task ARedisThatClosesIdleConnections_ServesTheFirstCallAfterAQuietSpell()
    {
        await using var redis = await RedisProcess.StartAsync(persistent: false, "--timeout", "1");
        const string wf = "idle";
        var (store, board) = await OpenWithAClaimAsync(redis, wf);
        await using var _ = store;
        for (var i = 0; i < 3; i++)
        {
            await TestTimeouts.Eventually(() => Task.FromResult(store.HasOpenDirectConnection), "the direct connection to be open");
            await TestTimeouts.Eventually(() => Task.FromResult(!store.HasOpenDirectConnection), "Redis to close the idle direct connection");
            Assert.NotNull((await ClaimAsync(board, wf).Within()).Task);
        }

        Assert.Equal(4, await ClaimedAsync(board, wf));
    }
}
