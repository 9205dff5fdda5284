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

    /// <summary>
    /// Store options for this server, for the contract tests: TLS, trusting the test CA alone, with the store's client
    /// certificate, and the store's default command timeout (<see cref="TlsTests.StoreOptions"/>).
    /// </summary>
    public RedisStoreOptions Options(string prefix) => TlsTests.StoreOptions(Tls, $"{Redis!.Endpoint},ssl=true", prefix, commandTimeoutMilliseconds: null);

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
/// over TLS, with the certificates checked as for a single Redis, and commits go over direct connections to the masters.
/// </summary>
public sealed class RedisTlsClusterContractTests(RedisTlsClusterFixture cluster) : DurableStoreContractTests, IClassFixture<RedisTlsClusterFixture>
{
    private readonly string _prefix = "tc" + Guid.NewGuid().ToString("N")[..10];

    protected override async Task<IBoardStore> CreateStoreAsync(EventHub hub, int maxEventsPerWorkflow)
    {
        var options = TlsTests.StoreOptions(cluster.Tls!, cluster.Configuration + ",ssl=true", _prefix, commandTimeoutMilliseconds: null);
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

    /// <summary>
    /// Options for a store over TLS. The tests of this class keep the 2 s command timeout they were written with. The
    /// contract classes, which open a store for every test while other suites load the machine, keep the store's
    /// default (<paramref name="commandTimeoutMilliseconds"/> null): under heavy load a store's SUBSCRIBE at start,
    /// which the command timeout bounds, once took longer than 2 s.
    /// </summary>
    internal static RedisStoreOptions StoreOptions(TestTls tls, string configuration, string prefix, int? commandTimeoutMilliseconds = 2000)
    {
        var options = new RedisStoreOptions
        {
            Configuration = configuration,
            KeyPrefix = prefix,
            TlsCaFile = tls.CaFile,
            TlsCertificateFile = tls.ClientCertificateFile,
            TlsKeyFile = tls.ClientKeyFile,
        };
        if (commandTimeoutMilliseconds is { } timeout)
        {
            options.CommandTimeoutMilliseconds = timeout;
        }

        return options;
    }

    private static string NewPrefix() => "tl" + Guid.NewGuid().ToString("N")[..10];

    /// <summary>Options for the class's Redis whose client certificate and key are files in <paramref name="dir"/>, for the test to write.</summary>
    private RedisStoreOptions WithClientFilesIn(TempDirectory dir)
    {
        var options = StoreOptions(redis.Tls, $"{redis.Redis!.Endpoint},ssl=true", NewPrefix());
        options.TlsCertificateFile = Path.Combine(dir.Path, "client.crt");
        options.TlsKeyFile = Path.Combine(dir.Path, "client.key");
        return options;
    }

    /// <summary>A store and a board on it, with workflow <paramref name="wf"/> created and tasks t0..t(tasks-1) posted.</summary>
    private async Task<(RedisStore Store, Coordinator Board)> OpenWithTasksAsync(RedisStoreOptions options, string wf, int tasks)
    {
        var hub = new EventHub();
        var store = await RedisStore.ConnectAsync(options, hub);
        var board = new Coordinator(store, hub, _time, new BoardLimits());
        await board.CreateWorkflowAsync(wf, wf, null, default).Within();
        await board.PostTasksAsync(wf, Enumerable.Range(0, tasks).Select(i => new TaskSpec { Id = $"t{i}" }).ToArray(), default).Within();
        return (store, board);
    }

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
    /// A client key encrypted with a password (PKCS#8): without the password, or with a wrong one, it is a configuration
    /// error at start that names the key file; with it, the store commits over TLS, on the direct connection too.
    /// </summary>
    [RedisFact]
    public async Task AnEncryptedClientKey_WorksWithItsPassword_AndWithoutIt_IsAConfigurationError()
    {
        using var dir = new TempDirectory();
        var options = WithClientFilesIn(dir);
        redis.Tls.IssueClient(options.TlsCertificateFile!, options.TlsKeyFile!, DateTimeOffset.UtcNow.AddDays(1), keyPassword: "correct horse");
        await AssertTheKeyTakesOnlyItsPasswordAsync(options, "k");
    }

    /// <summary>
    /// The encrypted key of <paramref name="options"/> (password "correct horse"): a configuration error at start that names
    /// the key file without a password and with a wrong one; with it, a claim commits over TLS, on the direct connection too.
    /// </summary>
    private async Task AssertTheKeyTakesOnlyItsPasswordAsync(RedisStoreOptions options, string wf)
    {
        options.TlsKeyPassword = null;
        var error = await Assert.ThrowsAsync<ArgumentException>(() => RedisStore.ConnectAsync(options, new EventHub())).Within();
        Assert.Contains($"'{options.TlsKeyFile}' is encrypted: give its password", error.Message, StringComparison.Ordinal);
        options.TlsKeyPassword = "wrong";
        error = await Assert.ThrowsAsync<ArgumentException>(() => RedisStore.ConnectAsync(options, new EventHub())).Within();
        Assert.Contains("could not be read with the password given", error.Message, StringComparison.Ordinal);

        options.TlsKeyPassword = "correct horse";
        var (store, board) = await OpenWithTasksAsync(options, wf, 1);
        await using var _ = store;
        Assert.NotNull((await board.ClaimAsync(new ClaimCommand { WorkflowId = wf, WorkerId = "x" }, default).Within()).Task);
        Assert.True(store.DirectCommitCount > 0, "commits should go over the direct connection, with the decrypted key");
    }

    /// <summary>
    /// A client key in OpenSSL's older encrypted form ("Proc-Type: 4,ENCRYPTED"), as <c>openssl ec</c> writes it with a
    /// cipher: without its password, with a wrong one, or with another certificate's key, a configuration error at start
    /// that names the key file; with it, the store commits over TLS, on the direct connection too. Before, .NET's PEM
    /// reader refused the file whatever the password.
    /// </summary>
    [RedisTheory]
    [InlineData("-aes256")]
    [InlineData("-aes128")]
    [InlineData("-des3")]
    public async Task AClientKeyInOpenSslsOlderEncryptedForm_WorksWithItsPassword(string cipher)
    {
        using var dir = new TempDirectory();
        var options = WithClientFilesIn(dir);
        redis.Tls.IssueClient(options.TlsCertificateFile!, options.TlsKeyFile!, DateTimeOffset.UtcNow.AddDays(1));
        var plain = Path.Combine(dir.Path, "plain.key");
        File.Move(options.TlsKeyFile!, plain);
        await TestTls.OpenSslAsync("ec", "-in", plain, "-out", options.TlsKeyFile!, cipher, "-passout", "pass:correct horse");
        Assert.Contains("Proc-Type: 4,ENCRYPTED", await File.ReadAllTextAsync(options.TlsKeyFile!), StringComparison.Ordinal);

        // Another certificate's key, in the same form and with the same password.
        using (var other = new TempDirectory())
        {
            var otherOptions = WithClientFilesIn(other);
            redis.Tls.IssueClient(otherOptions.TlsCertificateFile!, otherOptions.TlsKeyFile!, DateTimeOffset.UtcNow.AddDays(1));
            var mismatched = WithClientFilesIn(dir);
            mismatched.TlsCertificateFile = otherOptions.TlsCertificateFile;
            mismatched.TlsKeyPassword = "correct horse";
            var error = await Assert.ThrowsAsync<ArgumentException>(() => RedisStore.ConnectAsync(mismatched, new EventHub())).Within();
            Assert.Contains($"does not belong to '{otherOptions.TlsCertificateFile}'", error.Message, StringComparison.Ordinal);
        }

        await AssertTheKeyTakesOnlyItsPasswordAsync(options, "legacy");
    }

    /// <summary>
    /// A client certificate renewed on disk is shown from the next connection on, without a restart. The files are laid
    /// out as a Kubernetes secret volume does (<c>client.crt</c> a link to <c>..data/client.crt</c>, <c>..data</c> a link
    /// to a directory of the current files), and renewed as it does: the new files in a new directory, then <c>..data</c>
    /// pointed at it. The store's certificate expires, and once Redis has dropped the store's connections the store
    /// connects again with the renewed one (Redis refuses the expired one). With the files read at start only, or their
    /// changes looked for on the links themselves (both changed by hand), no claim succeeded again within the 30 s given.
    /// </summary>
    [RedisFact]
    public async Task ARenewedClientCertificate_IsShownOnTheNextConnection()
    {
        using var dir = new TempDirectory();
        var options = WithClientFilesIn(dir);
        var expires = DateTimeOffset.UtcNow.AddSeconds(4);
        var data = Path.Combine(dir.Path, "..data");
        Directory.CreateDirectory(Path.Combine(dir.Path, "v1"));
        redis.Tls.IssueClient(Path.Combine(dir.Path, "v1", "client.crt"), Path.Combine(dir.Path, "v1", "client.key"), expires);
        File.CreateSymbolicLink(data, "v1");
        File.CreateSymbolicLink(options.TlsCertificateFile!, "..data/client.crt");
        File.CreateSymbolicLink(options.TlsKeyFile!, "..data/client.key");
        var (store, board) = await OpenWithTasksAsync(options, "r", 10);
        await using var _ = store;
        var before = await board.ClaimAsync(new ClaimCommand { WorkflowId = "r", WorkerId = "x" }, default).Within();

        Directory.CreateDirectory(Path.Combine(dir.Path, "v2"));
        redis.Tls.IssueClient(Path.Combine(dir.Path, "v2", "client.crt"), Path.Combine(dir.Path, "v2", "client.key"), DateTimeOffset.UtcNow.AddDays(1));
        File.Delete(data); // the link, not v1 (the kubelet renames a new link over it, atomically)
        File.CreateSymbolicLink(data, "v2");
        // Until the first certificate has expired by the clock Redis checks it with, the same one.
        await TestTimeouts.Eventually(() => Task.FromResult(DateTimeOffset.UtcNow > expires.AddSeconds(1)), "the first certificate to expire");
        await KillClientsAsync(redis.Redis!);

        var after = await UntilAvailable.CallAsync(() => board.ClaimAsync(new ClaimCommand { WorkflowId = "r", WorkerId = "x" }, default), "a claim on new connections");
        Assert.True(after.Task!.FencingToken > before.Task!.FencingToken);
    }

    /// <summary>
    /// A CA file changed on disk is trusted from the next connection on. First a half-written one (no certificate in
    /// it): the store goes on with what it read before and reconnects. Then Redis is given a certificate from another
    /// CA: the store, trusting the first CA only, cannot reconnect (UNAVAILABLE); once both CAs are in its file, it does
    /// (with the files read at start only, changed by hand, it did not within the 30 s given).
    /// </summary>
    [RedisFact]
    public async Task AChangedCaFile_IsReadOnTheNextConnection_AndAHalfWrittenOneIsIgnored()
    {
        using var first = TestTls.Create();
        using var second = TestTls.Create();
        await using var server = await RedisProcess.StartTlsAsync(first, requireClientCertificates: false);
        using var dir = new TempDirectory();
        var options = StoreOptions(first, $"{server.Endpoint},ssl=true", NewPrefix());
        options.TlsCertificateFile = options.TlsKeyFile = null;
        options.TlsCaFile = Path.Combine(dir.Path, "ca.crt");
        File.Copy(first.CaFile, options.TlsCaFile);
        var (store, board) = await OpenWithTasksAsync(options, "c", 10);
        await using var _ = store;
        var claim = new ClaimCommand { WorkflowId = "c", WorkerId = "x" };
        await board.ClaimAsync(claim, default).Within();

        await File.WriteAllTextAsync(options.TlsCaFile, "-----BEGIN CERTIFICATE-----\nMIIB");
        await KillClientsAsync(server);
        await UntilAvailable.CallAsync(() => board.ClaimAsync(claim, default), "a claim on new connections, with the CA read before");

        // Redis (and redis-cli, which reads the same CA file) trusts both CAs, and shows a certificate from the second.
        var both = await File.ReadAllTextAsync(first.CaFile) + "\n" + await File.ReadAllTextAsync(second.CaFile) + "\n";
        await File.WriteAllTextAsync(first.CaFile, both);
        Assert.Equal("OK", (await server.CliAsync("CONFIG", "SET", "tls-cert-file", second.NodeCertificateFile, "tls-key-file", second.NodeKeyFile)).Trim());
        await KillClientsAsync(server);
        await TestTimeouts.Eventually(async () =>
        {
            try
            {
                await board.ClaimAsync(claim, default);
                return false;
            }
            catch (BoardException ex) when (ex.Error == BoardError.StoreUnavailable)
            {
                return true;
            }
        }, "a claim refused: the store does not trust the second CA yet");

        await File.WriteAllTextAsync(options.TlsCaFile, both);
        await UntilAvailable.CallAsync(() => board.ClaimAsync(claim, default), "a claim once the store trusts the second CA");
    }

    /// <summary>Redis drops every connection but redis-cli's own, as on a restart: the store has to open new ones.</summary>
    private static async Task KillClientsAsync(RedisProcess server)
    {
        await server.CliAsync("CLIENT", "KILL", "TYPE", "normal");
        await server.CliAsync("CLIENT", "KILL", "TYPE", "pubsub");
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

    /// <summary>The server started as a user would, with the TLS options on its command line (an encrypted key), serves the C# client.</summary>
    [RedisFact]
    public async Task AServerStartedWithTheTlsOptions_ServesClaims()
    {
        using var data = new TempDirectory();
        var (certificate, key) = (Path.Combine(data.Path, "client.crt"), Path.Combine(data.Path, "client.key"));
        redis.Tls.IssueClient(certificate, key, DateTimeOffset.UtcNow.AddDays(1), keyPassword: "board key");
        await using var server = await ServerProcess.StartAsync(
            "--port", RedisProcess.FreePort().ToString(CultureInfo.InvariantCulture), "--store", "redis", "--data", data.Path,
            "--redis", $"{redis.Redis!.Endpoint},ssl=true", "--redis-prefix", NewPrefix(),
            "--redis-tls-ca", redis.Tls.CaFile, "--redis-tls-cert", certificate, "--redis-tls-key", key, "--redis-tls-key-password", "board key");
        using var client = new BoardClient(server.Address);
        await client.CreateWorkflowAsync(new V1.CreateWorkflowRequest { WorkflowId = "srv" }).Within();
        await client.PostTasksAsync(new V1.PostTasksRequest { WorkflowId = "srv", Tasks = { new V1.TaskSpec { Id = "only" } } }).Within();

        var claim = await client.ClaimTaskAsync(new V1.ClaimTaskRequest { WorkflowId = "srv", WorkerId = "w" }).Within();

        Assert.Equal("only", claim.Task.Id);
        Assert.True(claim.FencingToken > 0);
    }
}
