using System.Globalization;
using GrpcBoard.Client;
using V1 = GrpcBoard.Api.V1;
using GrpcBoard.Core;
using GrpcBoard.Core.Events;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Storage;
using GrpcBoard.Testing;
using Xunit;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>A redis-server that speaks TLS only and asks clients for a certificate (Redis's default), with AOF always.</summary>
public sealed class RedisTlsFixture : IAsyncLifetime
{
    public TestTls Tls { get; } = TestTls.Create();

    public RedisProcess? Redis { get; private set; }

    /// <summary>Store options for this server: TLS, trusting the test CA alone, with the store's client certificate.</summary>
    public RedisStoreOptions Options(string prefix) => TlsTests.StoreOptions(Tls, $"{Redis!.Endpoint},ssl=true", prefix);

    public async Task InitializeAsync()
    {
        if (RedisProcess.Available)
        {
            Redis = await RedisProcess.StartTlsAsync(Tls, persistent: true);
        }
    }

    public async Task DisposeAsync()
    {
        if (Redis is not null)
        {
            await Redis.DisposeAsync();
        }

        Tls.Dispose();
    }
}

/// <summary>The whole store contract over TLS: StackExchange.Redis's connections and the direct commit connection both.</summary>
public sealed class RedisTlsContractTests(RedisTlsFixture redis) : DurableStoreContractTests, IClassFixture<RedisTlsFixture>
{
    private readonly string _prefix = "tls" + Guid.NewGuid().ToString("N")[..10];

    protected override async Task<IBoardStore> CreateStoreAsync(EventHub hub, int maxEventsPerWorkflow)
    {
        var options = redis.Options(_prefix);
        options.MaxEventsPerWorkflow = maxEventsPerWorkflow;
        return await RedisStore.ConnectAsync(options, hub);
    }
}

/// <summary>
/// The store contract on a 3-master Redis Cluster over TLS: StackExchange.Redis routes every script to its slot's node,
/// over TLS, with the certificates checked as for a single Redis (a cluster has no direct commit connection).
/// </summary>
public sealed class RedisTlsClusterContractTests(RedisTlsClusterFixture cluster) : DurableStoreContractTests, IClassFixture<RedisTlsClusterFixture>
{
    private readonly string _prefix = "tc" + Guid.NewGuid().ToString("N")[..10];

    protected override async Task<IBoardStore> CreateStoreAsync(EventHub hub, int maxEventsPerWorkflow)
    {
        var options = TlsTests.StoreOptions(cluster.Tls!, cluster.Configuration + ",ssl=true", _prefix);
        options.MaxEventsPerWorkflow = maxEventsPerWorkflow;
        return await RedisStore.ConnectAsync(options, hub);
    }
}

/// <summary>
/// Redis over TLS (<c>ssl=true</c>, <c>--redis-tls-ca/-cert/-key</c>), against redis-server with <c>--tls-port</c> and no
/// plain port: who is trusted, what is refused and how it is said, Sentinel over TLS, and a server started as a user would.
/// </summary>
public sealed class TlsTests(RedisTlsFixture redis) : IClassFixture<RedisTlsFixture>
{
    private readonly ManualTimeProvider _time = new();

    internal static RedisStoreOptions StoreOptions(TestTls tls, string configuration, string prefix) => new()
    {
        Configuration = configuration,
        KeyPrefix = prefix,
        TlsCaFile = tls.CaFile,
        TlsCertificateFile = tls.ClientCertificateFile,
        TlsKeyFile = tls.ClientKeyFile,
        CommandTimeoutMilliseconds = 2000,
    };

    private static string NewPrefix() => "tl" + Guid.NewGuid().ToString("N")[..10];

    [RedisFact]
    public async Task OverTls_CommitsGoOnTheDirectConnection()
    {
        var hub = new EventHub();
        await using var store = await RedisStore.ConnectAsync(redis.Options(NewPrefix()), hub);
        var board = new Coordinator(store, hub, _time, new BoardLimits());
        await board.CreateWorkflowAsync("w", "over TLS", null, default).Within();
        await board.PostTasksAsync("w", [new TaskSpec { Id = "a" }, new TaskSpec { Id = "b" }], default).Within();

        var claim = await board.ClaimAsync(new ClaimCommand { WorkflowId = "w", WorkerId = "x" }, default).Within();

        Assert.NotNull(claim.Task);
        Assert.True(store.DirectCommitCount > 0, "commits should go over the direct connection, over TLS");
    }

    /// <summary>
    /// A Redis whose certificate another CA signed, and a store without the client certificate Redis asks for, are
    /// both refused at start with UNAVAILABLE that says TLS failed and where: nothing is sent over a connection that
    /// is not the one configured.
    /// </summary>
    [RedisFact]
    public async Task AnUntrustedRedis_OrNoClientCertificate_IsRefusedAtStart_SayingTlsFailed()
    {
        using var other = TestTls.Create();
        var untrusted = StoreOptions(redis.Tls, $"{redis.Redis!.Endpoint},ssl=true", NewPrefix());
        untrusted.TlsCaFile = other.CaFile;
        var error = await Assert.ThrowsAsync<BoardException>(() => RedisStore.ConnectAsync(untrusted, new EventHub())).Within();
        Assert.Equal(BoardError.StoreUnavailable, error.Error);
        Assert.Contains($"TLS with {redis.Redis.Endpoint} failed", error.Message, StringComparison.Ordinal);
        Assert.Contains("certificate was rejected", error.Message, StringComparison.Ordinal);

        var anonymous = StoreOptions(redis.Tls, $"{redis.Redis.Endpoint},ssl=true", NewPrefix());
        anonymous.TlsCertificateFile = anonymous.TlsKeyFile = null;
        error = await Assert.ThrowsAsync<BoardException>(() => RedisStore.ConnectAsync(anonymous, new EventHub())).Within();
        Assert.Equal(BoardError.StoreUnavailable, error.Error);
        Assert.Contains("TLS", error.Message, StringComparison.Ordinal);
        Assert.Contains("client certificate", error.Message, StringComparison.Ordinal);
    }

    /// <summary>Settings that cannot work are configuration errors at start, before anything is sent.</summary>
    [RedisFact]
    public async Task InconsistentTlsSettings_AreConfigurationErrors()
    {
        var noSsl = StoreOptions(redis.Tls, redis.Redis!.Endpoint, NewPrefix());
        var error = await Assert.ThrowsAsync<ArgumentException>(() => RedisStore.ConnectAsync(noSsl, new EventHub())).Within();
        Assert.Contains("add ssl=true", error.Message, StringComparison.Ordinal);

        var noKey = StoreOptions(redis.Tls, $"{redis.Redis.Endpoint},ssl=true", NewPrefix());
        noKey.TlsKeyFile = null;
        error = await Assert.ThrowsAsync<ArgumentException>(() => RedisStore.ConnectAsync(noKey, new EventHub())).Within();
        Assert.Contains("both its certificate file and its key file", error.Message, StringComparison.Ordinal);

        using var dir = new TempDirectory();
        var notPem = Path.Combine(dir.Path, "ca.txt");
        await File.WriteAllTextAsync(notPem, "not a certificate");
        var badCa = StoreOptions(redis.Tls, $"{redis.Redis.Endpoint},ssl=true", NewPrefix());
        badCa.TlsCaFile = notPem;
        error = await Assert.ThrowsAsync<ArgumentException>(() => RedisStore.ConnectAsync(badCa, new EventHub())).Within();
        Assert.Contains("holds no PEM certificate", error.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// Sentinel over TLS: the sentinel, the nodes and replication all speak TLS only. The store asks the sentinel over
    /// TLS, commits on a direct TLS connection, and after the primary is killed follows the sentinel to the promoted
    /// replica, where it commits directly again with a higher fencing token.
    /// </summary>
    [RedisFact]
    public async Task ThroughASentinelOverTls_TheStoreFollowsAFailover()
    {
        await using var group = await SentinelGroup.StartAsync(replicas: 1, tls: redis.Tls);
        var replica = group.Replicas[0];
        var hub = new EventHub();
        var prefix = NewPrefix();
        await using var store = await RedisStore.ConnectAsync(
            StoreOptions(redis.Tls, $"{group.Sentinel.Endpoint},serviceName={SentinelGroup.Service},ssl=true", prefix), hub);
        var board = new Coordinator(store, hub, _time, new BoardLimits());
        await board.CreateWorkflowAsync("s", "sentinel over TLS", null, default).Within();
        await board.PostTasksAsync("s", Enumerable.Range(0, 10).Select(i => new TaskSpec { Id = $"t{i}" }).ToArray(), default).Within();
        var before = await board.ClaimAsync(new ClaimCommand { WorkflowId = "s", WorkerId = "x" }, default).Within();
        Assert.True(store.DirectCommitCount > 0, "commits should go over the direct connection, over TLS");
        await TestTimeouts.Eventually(async () => await SplitBrain.HeadAsync(replica, prefix, "s") >= before.Revision, "the replica to have the claim");

        Assert.Same(replica, await group.FailOverAsync());
        var directBefore = store.DirectCommitCount;
        var after = await UntilAvailable.CallAsync(
            () => board.ClaimAsync(new ClaimCommand { WorkflowId = "s", WorkerId = "x" }, default), "a claim on the promoted replica", within: TimeSpan.FromSeconds(60));
        await UntilAvailable.CallAsync(
            () => board.ClaimAsync(new ClaimCommand { WorkflowId = "s", WorkerId = "y" }, default), "a claim on the direct connection to the promoted replica",
            until: _ => store.DirectCommitCount > directBefore, within: TimeSpan.FromSeconds(30));

        Assert.Equal(replica.Port, ((System.Net.IPEndPoint)store.SentinelPrimary!).Port);
        Assert.True(after.Task!.FencingToken > before.Task!.FencingToken);
    }

    /// <summary>The server started as a user would, with the TLS options on its command line, serves the C# client.</summary>
    [RedisFact]
    public async Task AServerStartedWithTheTlsOptions_ServesClaims()
    {
        using var data = new TempDirectory();
        await using var server = await ServerProcess.StartAsync(
            "--port", RedisProcess.FreePort().ToString(CultureInfo.InvariantCulture), "--store", "redis", "--data", data.Path,
            "--redis", $"{redis.Redis!.Endpoint},ssl=true", "--redis-prefix", NewPrefix(),
            "--redis-tls-ca", redis.Tls.CaFile, "--redis-tls-cert", redis.Tls.ClientCertificateFile, "--redis-tls-key", redis.Tls.ClientKeyFile);
        using var client = new BoardClient(server.Address);
        await client.CreateWorkflowAsync(new V1.CreateWorkflowRequest { WorkflowId = "srv" }).Within();
        await client.PostTasksAsync(new V1.PostTasksRequest { WorkflowId = "srv", Tasks = { new V1.TaskSpec { Id = "only" } } }).Within();

        var claim = await client.ClaimTaskAsync(new V1.ClaimTaskRequest { WorkflowId = "srv", WorkerId = "w" }).Within();

        Assert.Equal("only", claim.Task.Id);
        Assert.True(claim.FencingToken > 0);
    }
}
