using GrpcBoard.Core;
using GrpcBoard.Core.Events;
using GrpcBoard.Core.Storage;
using GrpcBoard.Testing;
using Xunit;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>
/// The store contract on a real redis-server (AOF, appendfsync always). Every test gets a key prefix of its
/// own, so tests share the server without sharing data. Reopening connects a new store to the same keys.
/// </summary>
public sealed class RedisStoreContractTests(RedisFixture redis) : DurableStoreContractTests, IClassFixture<RedisFixture>
{
    private readonly string _prefix = "t" + Guid.NewGuid().ToString("N")[..10];

    protected override async Task<IBoardStore> CreateStoreAsync(EventHub hub, int maxEventsPerWorkflow) =>
        await RedisStore.ConnectAsync(new RedisStoreOptions { Configuration = redis.Endpoint, KeyPrefix = _prefix, MaxEventsPerWorkflow = maxEventsPerWorkflow }, hub);
}

public sealed class RedisRetentionTests(RedisFixture redis) : RetentionContractTests, IClassFixture<RedisFixture>
{
    private readonly string _prefix = "r" + Guid.NewGuid().ToString("N")[..10];

    protected override async Task<IBoardStore> CreateStoreAsync(EventHub hub, int maxEventsPerWorkflow) =>
        await RedisStore.ConnectAsync(new RedisStoreOptions { Configuration = redis.Endpoint, KeyPrefix = _prefix, MaxEventsPerWorkflow = maxEventsPerWorkflow }, hub);
}

/// <summary>One 3-master Redis Cluster for the test classes that need one.</summary>
[CollectionDefinition(Name)]
public sealed class RedisClusterCollection : ICollectionFixture<RedisClusterFixture>
{
    public const string Name = "redis cluster";
}

/// <summary>The same contract on a 3-master Redis Cluster: every script must stay within one slot.</summary>
[Collection(RedisClusterCollection.Name)]
public sealed class RedisClusterContractTests(RedisClusterFixture cluster) : DurableStoreContractTests
{
    private readonly string _prefix = "c" + Guid.NewGuid().ToString("N")[..10];

    // Two commit batches in flight, as a cluster on other hosts gets by default (the single Redis above, on
    // this host, gets one), so the contract holds for both ways of committing.
    protected override async Task<IBoardStore> CreateStoreAsync(EventHub hub, int maxEventsPerWorkflow) =>
        await RedisStore.ConnectAsync(new RedisStoreOptions { Configuration = cluster.Configuration, KeyPrefix = _prefix, MaxEventsPerWorkflow = maxEventsPerWorkflow, MaxBatchesInFlight = 2 }, hub);
}

/// <summary>History retention (XTRIM and OUT_OF_RANGE) on the cluster.</summary>
[Collection(RedisClusterCollection.Name)]
public sealed class RedisClusterRetentionTests(RedisClusterFixture cluster) : RetentionContractTests
{
    private readonly string _prefix = "cr" + Guid.NewGuid().ToString("N")[..10];

    protected override async Task<IBoardStore> CreateStoreAsync(EventHub hub, int maxEventsPerWorkflow) =>
        await RedisStore.ConnectAsync(new RedisStoreOptions { Configuration = cluster.Configuration, KeyPrefix = _prefix, MaxEventsPerWorkflow = maxEventsPerWorkflow }, hub);
}

/// <summary>
/// Two instances on the cluster, racing on one workflow: commits go over each instance's direct connection to the
/// workflow's node (ClusterLinks), and change and turn notices are published on one node and heard through another.
/// </summary>
[Collection(RedisClusterCollection.Name)]
public sealed class RedisClusterInstancesTests(RedisClusterFixture cluster)
{
    /// <summary>
    /// StackExchange.Redis 1.2.6 cannot send WAIT to the node of a workflow's slot, only the direct connections can: waiting
    /// for replicas without them is refused at start, not ignored (ClusterFailoverTests: with them).
    /// </summary>
    [RedisFact]
    public async Task WaitingForReplicas_WithoutDirectCommits_IsRefused()
    {
        var error = await Assert.ThrowsAsync<ArgumentException>(() => RedisStore.ConnectAsync(
            new RedisStoreOptions { Configuration = cluster.Configuration, ReplicasToWaitFor = 1, DirectCommits = false }, new EventHub()));
        Assert.Contains("on a Redis Cluster needs direct commits", error.Message, StringComparison.Ordinal);
    }

    [RedisFact]
    public async Task ConcurrentClaimsAndCompletions_ThroughTwoInstances_TakeEachTaskOnce_AtConsecutiveRevisions()
    {
        var prefix = "ci" + Guid.NewGuid().ToString("N")[..10];
        var time = new ManualTimeProvider();
        async Task<(RedisStore, Coordinator)> OpenAsync()
        {
            var hub = new EventHub();
            var store = await RedisStore.ConnectAsync(new RedisStoreOptions { Configuration = cluster.Configuration, KeyPrefix = prefix }, hub);
            return (store, new Coordinator(store, hub, time, new BoardLimits()));
        }

        var first = await OpenAsync();
        await using var _ = first.Item1;
        var second = await OpenAsync();
        await using var __ = second.Item1;
        await TwoInstanceRace.RunAsync(first, second);

        // The first commits go through StackExchange.Redis while the connection to the slot's node opens.
        Assert.True(first.Item1.DirectCommitCount > 0 && second.Item1.DirectCommitCount > 0, "each instance should commit on its direct connection to the slot's node");
        Assert.True(first.Item1.TurnWaits + second.Item1.TurnWaits > 0, "the instances never waited for each other's turn");
    }

    /// <summary>
    /// Forwarding on the cluster: the turn holder is learned from notifications published on the workflow's
    /// node and the address from the {gb} slot. A holds the turn (its lease outlasts the test); calls through B
    /// are served by A.
    /// </summary>
    [RedisFact]
    public async Task CallsThroughTheInstanceWithoutTheTurn_AreServedByTheHolder()
    {
        var prefix = "cf" + Guid.NewGuid().ToString("N")[..10];
        using var data = new TempDirectory();
        Task<Server.Hosting.BoardServer> StartAsync() =>
            MultiInstanceTests.StartRedisServerAsync(cluster.Configuration, prefix, data.Path, configure: s => s.RedisTurnLeaseMilliseconds = 60_000);

        await using var a = await StartAsync();
        await using var b = await StartAsync();
        using var viaA = new Client.BoardClient(a.Address.ToString());
        using var viaB = new Client.BoardClient(b.Address.ToString());
        await viaA.CreateWorkflowAsync(new Api.V1.CreateWorkflowRequest { WorkflowId = "cfw" }).Within();

        await viaB.PostTasksAsync(new Api.V1.PostTasksRequest { WorkflowId = "cfw", Tasks = { new Api.V1.TaskSpec { Id = "t" } } }).Within();
        var claim = await viaB.ClaimTaskAsync(new Api.V1.ClaimTaskRequest { WorkflowId = "cfw", WorkerId = "w" }).Within();
        await viaB.CompleteTaskAsync(new Api.V1.CompleteTaskRequest { WorkflowId = "cfw", TaskId = "t", FencingToken = claim.FencingToken }).Within();

        Assert.Equal("t", claim.Task.Id);
        Assert.True(b.Forwarder!.ForwardedCalls >= 3, $"B forwarded {b.Forwarder.ForwardedCalls} calls");
        var counts = (await viaA.GetWorkflowAsync(new Api.V1.GetWorkflowRequest { WorkflowId = "cfw" }).Within()).Workflow.TaskCounts;
        Assert.Equal(1, counts.Completed);
    }
}
