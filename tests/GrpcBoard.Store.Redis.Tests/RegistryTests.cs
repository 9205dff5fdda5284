using GrpcBoard.Core.Model;
using GrpcBoard.Core;
using GrpcBoard.Testing;
using StackExchange.Redis;
using Xunit;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>
/// The registry lists workflows across Redis Cluster slots and lets a new instance tell a workflow whose
/// keys Redis lost from one that never existed. A creation abandoned between its registration and its
/// commit (a crash, a cancelled call, a failed commit) must be neither listed nor taken for a data loss,
/// which would make every instance refuse every call from then on.
/// </summary>
public sealed class RegistryTests(RedisFixture redis) : IClassFixture<RedisFixture>
{
    private readonly string _prefix = "r" + Guid.NewGuid().ToString("N")[..10];
    private readonly ManualTimeProvider _time = new();

    private Task<(RedisStore Store, Coordinator Board)> OpenAsync(Action<string>? afterRegister = null, int rescanBatch = 256) => RedisBoards.OpenAsync(new RedisStoreOptions
    {
        Configuration = redis.Endpoint,
        KeyPrefix = _prefix,
        AfterRegister = afterRegister,
        EpochCheckInterval = TimeSpan.FromMilliseconds(50),
        TimerRescanInterval = TimeSpan.FromMilliseconds(100),
        TimerRescanBatch = rescanBatch,
    }, _time);

    /// <summary>
    /// A timer hint lost in a crash (it is written after the commit) is restored by the registry rescan, which
    /// goes through the registry a few workflows per tick: the lease of a claimed task comes due again.
    /// </summary>
    [RedisFact]
    public async Task ALostTimerHint_IsRestoredByTheRescan_WhichPagesThroughTheRegistry()
    {
        var (store, board) = await OpenAsync(rescanBatch: 2);
        await using var _ = store;
        foreach (var id in new[] { "a", "b", "c", "d", "e" })
        {
            await board.CreateWorkflowAsync(id, "", null, default).Within();
        }

        await board.PostTasksAsync("d", [new TaskSpec { Id = "t" }], default).Within();
        await board.ClaimAsync(new ClaimCommand { WorkflowId = "d", TaskId = "t", WorkerId = "w", Lease = TimeSpan.FromSeconds(1) }, default).Within();
        using (var raw = await ConnectionMultiplexer.ConnectAsync(redis.Endpoint))
        {
            Assert.True(await raw.GetDatabase().SortedSetRemoveAsync($"{_prefix}:{{gb}}:timerhints", "d"));
        }

        _time.Advance(TimeSpan.FromSeconds(2));
        await TestTimeouts.Eventually(async () => (await store.GetDueTimersAsync(_time.GetUtcNow(), 10, default)).Any(t => t.WorkflowId == "d" && t.Id == "t"),
            "the rescan to restore the lease timer's hint");
    }

    [RedisFact]
    public async Task ACreationAbandonedAfterItsRegistration_IsNotADataLoss_AndTheIdCanBeCreatedLater()
    {
        var (abandoning, a) = await OpenAsync(afterRegister: id => throw new OperationCanceledException($"abandoned after registering {id}"));
        await using (abandoning)
        {
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => a.CreateWorkflowAsync("orphan", "never committed", null, default)).Within();
        }

        // A new instance, with nothing of its own to compare, lists and reads without refusing.
        var (fresh, b) = await OpenAsync();
        await using var _ = fresh;
        Assert.Empty((await b.ListWorkflowsAsync(null, null, 100, default).Within()).Items);
        var missing = await Assert.ThrowsAsync<BoardException>(() => b.GetWorkflowAsync("orphan", default)).Within();
        Assert.Equal(BoardError.WorkflowNotFound, missing.Error);
        Assert.True(await fresh.CheckHealthAsync(default));

        await b.CreateWorkflowAsync("orphan", "committed at last", null, default).Within();
        Assert.Equal("committed at last", (await b.GetWorkflowAsync("orphan", default).Within()).Workflow.Goal);
        Assert.Single((await b.ListWorkflowsAsync(null, null, 100, default).Within()).Items);
    }

    [RedisFact]
    public async Task AWorkflowThatCommitted_AndWhoseKeysVanished_IsADataLoss()
    {
        var (first, a) = await OpenAsync();
        await using (first)
        {
            await a.CreateWorkflowAsync("kept", "goal", null, default).Within();
        }

        // As if the cluster node holding this workflow's slot came back empty.
        using (var raw = await ConnectionMultiplexer.ConnectAsync(redis.Endpoint))
        {
            await raw.GetDatabase().KeyDeleteAsync($"{_prefix}:{{kept}}:meta");
        }

        var (fresh, b) = await OpenAsync();
        await using var _ = fresh;
        // Above all, no creation over it: revisions and fencing tokens would start again at 1.
        var loss = await Assert.ThrowsAsync<BoardException>(() => b.CreateWorkflowAsync("kept", "goal", null, default)).Within();
        Assert.Equal(BoardError.StoreDataLoss, loss.Error);
        Assert.False(await fresh.CheckHealthAsync(default));
        Assert.Equal(BoardError.StoreDataLoss, (await Assert.ThrowsAsync<BoardException>(() => b.GetWorkflowAsync("kept", default)).Within()).Error);
    }
}
