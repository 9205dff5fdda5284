using System.Collections.Concurrent;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using GrpcBoard.Api.V1;
using GrpcBoard.Client;
using GrpcBoard.Server.Hosting;
using GrpcBoard.Testing;
using GrpcBoard.Wire;
using Microsoft.Extensions.Logging;
using Xunit;
using Task = System.Threading.Tasks.Task;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>Several GrpcBoard servers on one Redis, and Redis failing under them.</summary>
public sealed class MultiInstanceTests : IDisposable
{
    /// <summary>Where the servers of a test record the Redis store epoch (<c>--data</c>).</summary>
    private readonly TempDirectory _data = new();

    public void Dispose() => _data.Dispose();

    private Task<BoardServer> StartServerAsync(string redis, string prefix, int port = 0, string? data = null, Action<ServerSettings>? configure = null) =>
        StartRedisServerAsync(redis, prefix, data ?? _data.Path, port, configure);

    /// <summary>A Redis-store server in this process, quiet; also used by the cluster tests.</summary>
    internal static Task<BoardServer> StartRedisServerAsync(string redis, string prefix, string data, int port = 0, Action<ServerSettings>? configure = null)
    {
        var settings = new ServerSettings { Port = port, Store = "redis", Redis = redis, RedisPrefix = prefix, TimerPollMilliseconds = 50, DataDirectory = data };
        configure?.Invoke(settings);
        return BoardServer.StartAsync(settings, new BoardServerOverrides { Logging = l => l.SetMinimumLevel(LogLevel.Critical) });
    }

    /// <summary>Two servers whose turns last <paramref name="turnLeaseMs"/>, and a workflow created through A, which then holds its turn.</summary>
    private async Task<TwoServers> HolderAndOtherAsync(string workflowId, int turnLeaseMs)
    {
        var servers = await StartTwoServersAsync(s => s.RedisTurnLeaseMilliseconds = turnLeaseMs);
        await servers.ViaA.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = workflowId }).Within();
        return servers;
    }

    private static string Prefix() => "m" + Guid.NewGuid().ToString("N")[..10];

    /// <summary>A redis-server of the test's own, two servers on it, and a client of each.</summary>
    private async Task<TwoServers> StartTwoServersAsync(Action<ServerSettings>? configure = null)
    {
        var redis = await RedisProcess.StartAsync();
        BoardServer? a = null;
        try
        {
            var prefix = Prefix();
            a = await StartServerAsync(redis.Endpoint, prefix, configure: configure);
            return new TwoServers(redis, a, await StartServerAsync(redis.Endpoint, prefix, configure: configure));
        }
        catch
        {
            if (a is not null)
            {
                await a.DisposeAsync();
            }

            await redis.DisposeAsync();
            throw;
        }
    }

    private sealed class TwoServers(RedisProcess redis, BoardServer a, BoardServer b) : IAsyncDisposable
    {
        private bool _aStopped;

        public RedisProcess Redis => redis;

        public BoardServer A => a;

        public BoardServer B => b;

        public BoardClient ViaA { get; } = new(a.Address.ToString());

        public BoardClient ViaB { get; } = new(b.Address.ToString());

        public async Task StopAAsync()
        {
            _aStopped = true;
            await a.DisposeAsync();
        }

        public async ValueTask DisposeAsync()
        {
            ViaA.Dispose();
            ViaB.Dispose();
            await b.DisposeAsync();
            if (!_aStopped)
            {
                await a.DisposeAsync();
            }

            await redis.DisposeAsync();
        }
    }

    [RedisFact]
    public async Task ClaimRace_AcrossTwoInstances_HasExactlyOneWinner()
    {
        await using var servers = await StartTwoServersAsync();
        var (viaA, viaB) = (servers.ViaA, servers.ViaB);
        await viaA.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "race" }).Within();
        await viaB.PostTasksAsync(new PostTasksRequest { WorkflowId = "race", Tasks = { Enumerable.Range(0, 20).Select(i => new TaskSpec { Id = $"t{i}" }) } }).Within();

        for (var round = 0; round < 20; round++)
        {
            var task = $"t{round}";
            var attempts = Enumerable.Range(0, 16).Select(async i =>
            {
                var client = i % 2 == 0 ? viaA : viaB;
                try
                {
                    return (await client.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "race", TaskId = task, WorkerId = $"w{i}" })).FencingToken;
                }
                catch (BoardRpcException ex) when (ex.Reason == ErrorReason.TaskAlreadyClaimed)
                {
                    return 0L;
                }
            });
            var tokens = await Task.WhenAll(attempts).Within();
            Assert.Single(tokens, t => t > 0);
        }

        var counts = (await viaA.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "race" }).Within()).Workflow.TaskCounts;
        Assert.Equal(20, counts.Claimed);
    }

    /// <summary>
    /// What a team behind a load balancer does: workers on both instances take tasks of one workflow at full
    /// speed. With forwarding, calls through the instance without the turn go to the one with it; without, each
    /// instance waits for the other's turn instead of losing races (which, unbounded, failed calls with
    /// ABORTED). Either way every task is completed once, by someone on either side, and no call fails.
    /// </summary>
    [RedisTheory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task WorkersOnTwoInstances_OfOneWorkflow_CompleteEveryTaskOnce_WithoutAFailure(bool forward)
    {
        await using var servers = await StartTwoServersAsync(s => s.Forward = forward);
        var (viaA, viaB) = (servers.ViaA, servers.ViaB);
        const int tasks = 600;
        await viaA.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "busy" }).Within();
        await viaA.PostTasksAsync(new PostTasksRequest { WorkflowId = "busy", Tasks = { Enumerable.Range(0, tasks).Select(i => new TaskSpec { Id = $"t{i:D3}" }) } }).Within();

        using var stop = new CancellationTokenSource();
        var completedBy = new ConcurrentDictionary<string, string>();
        var workers = Enumerable.Range(0, 8).Select(i => (Id: $"w{i}", OnA: i % 2 == 0, Worker: (i % 2 == 0 ? viaA : viaB).CreateWorker(new BoardWorkerOptions
        {
            WorkflowId = "busy",
            WorkerId = $"w{i}",
            MaxConcurrency = 4,
            ClaimWait = TimeSpan.FromMilliseconds(200),
        }))).ToList();
        var running = workers.Select(w => w.Worker.RunAsync(context =>
        {
            // A second run of a task would be a second claim granted while the first was held.
            Assert.True(completedBy.TryAdd(context.Task.Id, w.Id), $"{context.Task.Id} ran twice");
            return Task.FromResult(TaskOutcome.Text(context.Task.Id));
        }, stop.Token)).ToList();

        await TestTimeouts.Eventually(
            async () => (await viaB.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "busy" }).Within()).Workflow.TaskCounts.Completed == tasks,
            "every task completed", TimeSpan.FromSeconds(60));

        await stop.CancelAsync();
        await Task.WhenAll(running).Within();

        var counts = (await viaA.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "busy" }).Within()).Workflow.TaskCounts;
        Assert.Equal((tasks, 0, 0, 0), (counts.Completed, counts.DeadLettered, counts.Claimed, counts.Ready));
        Assert.Equal(tasks, completedBy.Count);
        Assert.Equal(tasks, workers.Sum(w => w.Worker.Completed));
        Assert.Equal((0, 0), (workers.Sum(w => w.Worker.Failed), workers.Sum(w => w.Worker.LostClaims)));
        Assert.True(workers.Where(w => w.OnA).Sum(w => w.Worker.Completed) > 0, "no worker on instance A completed a task");
        Assert.True(workers.Where(w => !w.OnA).Sum(w => w.Worker.Completed) > 0, "no worker on instance B completed a task");
        var sample = await viaB.GetTaskAsync(new GetTaskRequest { WorkflowId = "busy", TaskId = "t123" }).Within();
        Assert.Equal("t123", sample.Task.Result.ToStringUtf8());
        if (forward)
        {
            Assert.True(servers.A.Forwarder!.ForwardedCalls + servers.B.Forwarder!.ForwardedCalls > 0, "no call was forwarded");
        }
        else
        {
            Assert.Null(servers.A.Forwarder);
        }
    }

    /// <summary>
    /// A holds the workflow's turn (its lease outlasts the test); every call through B is served by A and its
    /// answer relayed: results, and errors with their reason and details, exactly as A gave them.
    /// </summary>
    [RedisFact]
    public async Task CallsThroughTheInstanceWithoutTheTurn_AreServedByTheHolder_AndItsAnswersRelayed()
    {
        await using var servers = await HolderAndOtherAsync("fw", turnLeaseMs: 60_000);
        var (viaA, viaB) = (servers.ViaA, servers.ViaB);

        await viaB.PostTasksAsync(new PostTasksRequest { WorkflowId = "fw", Tasks = { new TaskSpec { Id = "t1" } } }).Within();
        var claim = await viaB.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "fw", WorkerId = "w" }).Within();
        var wrong = await Assert.ThrowsAsync<BoardRpcException>(() => viaB.CompleteTaskAsync(new CompleteTaskRequest
        {
            WorkflowId = "fw", TaskId = "t1", FencingToken = claim.FencingToken + 1, Result = ByteString.CopyFromUtf8("no"),
        })).Within();
        var done = await viaB.CompleteTaskAsync(new CompleteTaskRequest
        {
            WorkflowId = "fw", TaskId = "t1", FencingToken = claim.FencingToken, Result = ByteString.CopyFromUtf8("yes"),
        }).Within();

        Assert.Equal("t1", claim.Task.Id);
        Assert.Equal((StatusCode.FailedPrecondition, ErrorReason.FencingTokenInvalid), (wrong.StatusCode, wrong.Reason));
        Assert.Equal(claim.FencingToken.ToString(System.Globalization.CultureInfo.InvariantCulture), wrong.Metadata["fencing_token"]);
        Assert.Equal(TaskState.Completed, done.Task.State);
        // All four went to A: B never held the turn, which a call served by B would have had to take from A.
        Assert.True(servers.B.Forwarder!.ForwardedCalls >= 4, $"B forwarded {servers.B.Forwarder.ForwardedCalls} calls");
        Assert.Equal(0, servers.B.Forwarder.ServedHereAfterRefusal);
        var task = await viaA.GetTaskAsync(new GetTaskRequest { WorkflowId = "fw", TaskId = "t1" }).Within();
        Assert.Equal("yes", task.Task.Result.ToStringUtf8());
    }

    /// <summary>
    /// A forwarded waiting claim keeps the caller's deadline: the holder ends the wait in time (a fifth of the
    /// time left before it, here 1 s, which a busy machine needs) and answers "no task". Lost in the hop, the
    /// deadline would leave the holder waiting 60 s and the caller with DEADLINE_EXCEEDED.
    /// </summary>
    [RedisFact]
    public async Task AForwardedWaitingClaim_KeepsTheCallersDeadline()
    {
        await using var servers = await HolderAndOtherAsync("wait", turnLeaseMs: 60_000);
        var (viaA, viaB) = (servers.ViaA, servers.ViaB);
        // B hears that A holds the turn from A's commit notification, and then reads A's address, both in the
        // background; until then it serves calls itself. A claim that finds no task commits nothing, so no refusal
        // would send it on either: wait until B forwards a read (seen failing in CI under load without this).
        var forwarded = servers.B.Forwarder!.ForwardedCalls;
        for (var tries = 0; tries < 200 && servers.B.Forwarder.ForwardedCalls == forwarded; tries++)
        {
            await Task.Delay(50);
            await viaB.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "wait" }).Within();
        }

        Assert.True(servers.B.Forwarder.ForwardedCalls > forwarded, "B never forwarded a call to A, the turn's holder");
        forwarded = servers.B.Forwarder.ForwardedCalls;

        var claim = await viaB.ClaimTaskAsync(
            new ClaimTaskRequest { WorkflowId = "wait", WorkerId = "w", Wait = Duration.FromTimeSpan(TimeSpan.FromSeconds(60)) },
            new GrpcBoard.Wire.Client.CallOptions(Deadline: DateTimeOffset.UtcNow.AddSeconds(5))).Within(TimeSpan.FromSeconds(20));

        Assert.Null(claim.Task);
        Assert.True(servers.B.Forwarder.ForwardedCalls > forwarded, "the claim was not forwarded");
    }

    /// <summary>
    /// A forwarded call whose answer is lost after it was sent (here the "holder" reads the request and drops the
    /// connection) may have taken effect there: B answers UNAVAILABLE and does not serve the call itself, which
    /// could post the tasks twice. The caller retries as after any lost reply.
    /// </summary>
    [RedisFact]
    public async Task AForwardedCallWhoseAnswerIsLost_IsUnavailable_AndNotServedAgainHere()
    {
        await using var servers = await HolderAndOtherAsync("lost", turnLeaseMs: 60_000);
        var (viaA, viaB) = (servers.ViaA, servers.ViaB);

        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        var requests = 0;
        var dropper = Task.Run(async () =>
        {
            while (true)
            {
                using var socket = await listener.AcceptSocketAsync();
                await socket.SendAsync(new byte[] { 0, 0, 0, 4, 0, 0, 0, 0, 0 }); // an empty SETTINGS frame: the server's preface
                // The client preface, SETTINGS, then the call's HEADERS and DATA: read until the request's
                // message (its task id, uncompressed) is in, so the call was certainly sent.
                var buffer = new byte[64 * 1024];
                var received = 0;
                var read = 0;
                while (buffer.AsSpan(0, received).IndexOf("once"u8) < 0 && received < buffer.Length
                    && (read = await socket.ReceiveAsync(buffer.AsMemory(received))) > 0)
                {
                    received += read;
                }

                if (buffer.AsSpan(0, received).IndexOf("once"u8) >= 0)
                {
                    Interlocked.Increment(ref requests);
                }

                socket.Close(0);
            }
        });
        var store = (RedisStore)servers.A.Store;
        using (var redisClient = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(((RedisStore)servers.B.Store).Options.Configuration))
        {
            await redisClient.GetDatabase().StringSetAsync(store.Keys.Instance(store.InstanceId), $"http://127.0.0.1:{((System.Net.IPEndPoint)listener.LocalEndpoint).Port}/");
        }

        var lost = await Assert.ThrowsAsync<BoardRpcException>(() => viaB.PostTasksAsync(new PostTasksRequest
        {
            WorkflowId = "lost", Tasks = { new TaskSpec { Id = "once" } },
        })).Within();

        Assert.Equal(StatusCode.Unavailable, lost.StatusCode);
        Assert.True(Volatile.Read(ref requests) >= 1, "the call never reached the dropping holder");
        Assert.Equal(0, servers.B.Forwarder!.ServedHereAfterRefusal);
        var counts = (await viaA.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "lost" }).Within()).Workflow.TaskCounts;
        Assert.Equal(0, counts.Ready);
        listener.Stop();
        await Assert.ThrowsAnyAsync<Exception>(() => dropper);
    }

    /// <summary>
    /// The holder dies: calls through B, which were forwarded to it, are served by B once its connection is
    /// refused, after the dead holder's turn lapses (2 s here), and nothing is lost.
    /// </summary>
    [RedisFact]
    public async Task WhenTheHolderDies_CallsAreServedHere_AfterItsTurnLapses()
    {
        await using var servers = await HolderAndOtherAsync("dies", turnLeaseMs: 2_000);
        var (viaA, viaB) = (servers.ViaA, servers.ViaB);
        await viaB.PostTasksAsync(new PostTasksRequest { WorkflowId = "dies", Tasks = { new TaskSpec { Id = "before" } } }).Within();
        Assert.True(servers.B.Forwarder!.ForwardedCalls >= 1, "B served the first call itself: this test needs A to hold the turn");

        await servers.StopAAsync();
        var posted = await viaB.PostTasksAsync(new PostTasksRequest { WorkflowId = "dies", Tasks = { new TaskSpec { Id = "after" } } }).Within();

        Assert.Single(posted.Tasks);
        Assert.True(servers.B.Forwarder.ServedHereAfterRefusal >= 1, "B did not try the dead holder first");
        var counts = (await viaB.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "dies" }).Within()).Workflow.TaskCounts;
        Assert.Equal(2, counts.Ready);
    }

    [RedisFact]
    public async Task AWatcherOnOneInstance_SeesEveryChangeMadeThroughTheOther_InOrder_AndResumesAfterItsInstanceIsKilled()
    {
        await using var redis = await RedisProcess.StartAsync();
        var prefix = Prefix();
        var portB = RedisProcess.FreePort();
        string[] argsB = ["--port", portB.ToString(System.Globalization.CultureInfo.InvariantCulture), "--store", "redis", "--redis", redis.Endpoint, "--redis-prefix", prefix, "--data", _data.Path];
        await using var a = await StartServerAsync(redis.Endpoint, prefix);
        var b = await ServerProcess.StartAsync(argsB);
        using var writer = new BoardClient(a.Address.ToString());
        using var watcher = new BoardClient($"http://127.0.0.1:{portB}");
        await writer.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "fanout" }).Within();

        var seen = new ConcurrentQueue<long>();
        using var cts = new CancellationTokenSource(TestTimeouts.Default * 2);
        var watching = Task.Run(async () =>
        {
            await foreach (var e in watcher.WatchAsync(new WatchRequest { WorkflowId = "fanout", StartRevision = 1 }, cts.Token))
            {
                seen.Enqueue(e.Revision);
                if (e.Revision == 201)
                {
                    return;
                }
            }
        });

        for (var i = 0; i < 100; i++)
        {
            await writer.PutNoteAsync(new PutNoteRequest { WorkflowId = "fanout", Key = $"k{i % 5}", Value = ByteString.CopyFromUtf8(i.ToString(System.Globalization.CultureInfo.InvariantCulture)) }).Within();
        }

        await TestTimeouts.Eventually(() => Task.FromResult(seen.Count >= 101), "the watcher on B to see A's first 100 changes");

        // kill -9 instance B (the watcher's) while A keeps writing; start B again on its port.
        await b.KillAsync();
        await b.DisposeAsync();
        for (var i = 0; i < 50; i++)
        {
            await writer.PutNoteAsync(new PutNoteRequest { WorkflowId = "fanout", Key = "while-b-is-down" }).Within();
        }

        b = await ServerProcess.StartAsync(argsB);
        try
        {
            for (var i = 0; i < 50; i++)
            {
                await writer.PutNoteAsync(new PutNoteRequest { WorkflowId = "fanout", Key = "after" }).Within();
            }

            await watching.Within(TestTimeouts.Default * 2);
            Assert.Equal(Enumerable.Range(1, 201).Select(i => (long)i), seen);
        }
        finally
        {
            await b.DisposeAsync();
        }
    }

    /// <summary>
    /// Redis killed (-9) and started again from its AOF while a watcher on instance B follows changes made through A.
    /// B's subscription (its wake-up for A's commits) is cut with the rest, and notices published before it is back are
    /// lost; the watch stream must still deliver every change, in order, with no gap and no repeat, without the watcher
    /// reconnecting: the first after the restart included.
    /// </summary>
    [RedisFact]
    public async Task AWatcherOnOneInstance_SeesEveryChangeMadeThroughTheOther_AcrossARedisRestart()
    {
        var servers = await StartTwoServersAsync();
        await using var _ = servers;
        await servers.ViaA.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "restart" }).Within();
        var seen = new ConcurrentQueue<long>();
        using var cts = new CancellationTokenSource(TestTimeouts.Default * 4);
        const long last = 1 + 20 + 20;
        var watching = Task.Run(async () =>
        {
            await foreach (var e in servers.ViaB.WatchAsync(new WatchRequest { WorkflowId = "restart", StartRevision = 1 }, cts.Token))
            {
                seen.Enqueue(e.Revision);
                if (e.Revision == last)
                {
                    return;
                }
            }
        });

        for (var i = 0; i < 20; i++)
        {
            await servers.ViaA.PutNoteAsync(new PutNoteRequest { WorkflowId = "restart", Key = $"before{i}" }).Within();
        }

        await TestTimeouts.Eventually(() => Task.FromResult(seen.Count >= 21), "the watcher to see the first 21 changes");
        await servers.Redis.KillAsync();
        await servers.Redis.StartAgainAsync();
        for (var i = 0; i < 20; i++)
        {
            await UntilAvailable.CallAsync(
                async () => await servers.ViaA.PutNoteAsync(new PutNoteRequest { WorkflowId = "restart", Key = $"after{i}" }),
                "a note put after the restart");
        }

        await watching.Within(TestTimeouts.Default * 3);
        Assert.Equal(Enumerable.Range(1, (int)last).Select(i => (long)i), seen);
    }

    [RedisFact]
    public async Task ALeaseExpiresOnce_EvenWithTwoInstancesFiringTimers()
    {
        await using var servers = await StartTwoServersAsync();
        var client = servers.ViaA;
        await client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "timers" }).Within();
        await client.PostTasksAsync(new PostTasksRequest
        {
            WorkflowId = "timers",
            Tasks = { Enumerable.Range(0, 10).Select(i => new TaskSpec { Id = $"t{i}", MaxAttempts = 5, RetryPolicy = new RetryPolicy { InitialBackoff = new Duration() } }) },
        }).Within();
        for (var i = 0; i < 10; i++)
        {
            await client.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "timers", TaskId = $"t{i}", WorkerId = "gone", LeaseDuration = Duration.FromTimeSpan(TimeSpan.FromSeconds(1)) }).Within();
        }

        await TestTimeouts.Eventually(async () =>
            (await client.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "timers" })).Workflow.TaskCounts.Ready == 10, "both instances to requeue the expired leases");
        var expiries = new List<Event>();
        await foreach (var e in client.WatchAsync(new WatchRequest { WorkflowId = "timers", StartRevision = 1, Kinds = { EventKind.TaskLeaseExpired } }).TakeAsync(10))
        {
            expiries.Add(e);
        }

        Assert.Equal(10, expiries.Select(e => e.Task.Id).Distinct().Count());
        var head = (await client.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "timers" }).Within()).Header.Revision;
        Assert.Equal(1 + 10 + 10 + 10, head);
    }

    /// <summary>
    /// The instance through which tasks were claimed dies (kill -9) with their leases pending; the other
    /// instance, which never served the workflow, expires every lease, each once.
    /// </summary>
    [RedisFact]
    public async Task LeasesClaimedThroughAnInstanceThatDies_AreExpiredByTheOther_EachOnce()
    {
        await using var redis = await RedisProcess.StartAsync();
        var prefix = Prefix();
        var portA = RedisProcess.FreePort();
        string[] argsA = ["--port", portA.ToString(System.Globalization.CultureInfo.InvariantCulture), "--store", "redis", "--redis", redis.Endpoint, "--redis-prefix", prefix, "--data", _data.Path];
        var a = await ServerProcess.StartAsync(argsA);
        using (var viaA = new BoardClient($"http://127.0.0.1:{portA}"))
        {
            await viaA.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "orphans" }).Within();
            await viaA.PostTasksAsync(new PostTasksRequest
            {
                WorkflowId = "orphans",
                Tasks = { Enumerable.Range(0, 10).Select(i => new TaskSpec { Id = $"t{i}", MaxAttempts = 5, RetryPolicy = new RetryPolicy { InitialBackoff = new Duration() } }) },
            }).Within();
            for (var i = 0; i < 10; i++)
            {
                await viaA.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "orphans", TaskId = $"t{i}", WorkerId = "gone", LeaseDuration = Duration.FromTimeSpan(TimeSpan.FromSeconds(1)) }).Within();
            }
        }

        await a.KillAsync();
        await a.DisposeAsync();

        await using var b = await StartServerAsync(redis.Endpoint, prefix);
        using var viaB = new BoardClient(b.Address.ToString());
        var expiries = new List<Event>();
        await foreach (var e in viaB.WatchAsync(new WatchRequest { WorkflowId = "orphans", StartRevision = 1, Kinds = { EventKind.TaskLeaseExpired } }).TakeAsync(10))
        {
            expiries.Add(e);
        }

        Assert.Equal(10, expiries.Select(e => e.Task.Id).Distinct().Count());
        Assert.All(expiries, e => Assert.Equal(TaskState.Ready, e.Task.State));
        var view = await viaB.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "orphans" }).Within();
        Assert.Equal(10, view.Workflow.TaskCounts.Ready);
        Assert.Equal(1 + 10 + 10 + 10, view.Header.Revision);
    }

    [RedisFact]
    public async Task RedisKilledMidLoad_AndRestartedFromItsAof_LosesNoAcknowledgedResult_AndReusesNoToken()
    {
        await using var redis = await RedisProcess.StartAsync(persistent: true);
        var prefix = Prefix();
        await using var server = await StartServerAsync(redis.Endpoint, prefix);
        using var client = new BoardClient(server.Address.ToString(), new BoardClientOptions { DefaultTimeout = TimeSpan.FromSeconds(3) });
        await client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "load" }).Within();
        await client.PostTasksAsync(new PostTasksRequest { WorkflowId = "load", Tasks = { Enumerable.Range(0, 400).Select(i => new TaskSpec { Id = $"t{i:D3}", MaxAttempts = 100, RetryPolicy = new RetryPolicy { InitialBackoff = new Duration() } }) } }).Within();

        var completed = new ConcurrentDictionary<string, (long Token, string Result)>();
        var doubles = new ConcurrentBag<string>();
        var tokens = new ConcurrentBag<(string Task, long Token)>();
        var unavailable = 0;
        async Task<bool> AllDoneAsync() =>
            (await client.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "load" })).Workflow.TaskCounts.Completed == 400;
        var workers = Enumerable.Range(0, 8).Select(w => Task.Run(async () =>
        {
            while (true)
            {
                try
                {
                    var claim = await client.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "load", WorkerId = $"w{w}", LeaseDuration = Duration.FromTimeSpan(TimeSpan.FromSeconds(2)) });
                    if (claim.Task is null)
                    {
                        // A completion whose reply was lost in the kill is done on the server but unknown here:
                        // the server's count, not ours, says when everything is finished.
                        if (await AllDoneAsync())
                        {
                            return;
                        }

                        await Task.Delay(100);
                        continue;
                    }

                    tokens.Add((claim.Task.Id, claim.FencingToken));
                    var result = $"{claim.Task.Id} by w{w} with {claim.FencingToken}";
                    await client.CompleteTaskAsync(new CompleteTaskRequest { WorkflowId = "load", TaskId = claim.Task.Id, FencingToken = claim.FencingToken, Result = ByteString.CopyFromUtf8(result) });
                    if (!completed.TryAdd(claim.Task.Id, (claim.FencingToken, result)))
                    {
                        doubles.Add(claim.Task.Id);
                    }
                }
                catch (BoardRpcException ex) when (ex.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded || ex.Reason is ErrorReason.LeaseExpired or ErrorReason.FencingTokenStale)
                {
                    Interlocked.Increment(ref unavailable);
                    await Task.Delay(100);
                }
            }
        })).ToArray();

        await TestTimeouts.Eventually(() => Task.FromResult(completed.Count >= 100), "load before killing Redis", TimeSpan.FromSeconds(60));
        await redis.KillAsync();
        await Task.Delay(500); // Redis stays down for a moment: calls in this window must fail UNAVAILABLE.
        await redis.StartAgainAsync();
        await Task.WhenAll(workers).Within(TimeSpan.FromSeconds(120));

        Assert.Empty(doubles);
        Assert.True(unavailable > 0, "the kill should have failed some calls with UNAVAILABLE");
        var completions = new Dictionary<string, int>();
        await foreach (var e in client.WatchAsync(new WatchRequest { WorkflowId = "load", StartRevision = 1, Kinds = { EventKind.TaskCompleted } }).TakeAsync(400))
        {
            completions[e.Task.Id] = completions.GetValueOrDefault(e.Task.Id) + 1;
        }

        Assert.All(completions, kv => Assert.Equal(1, kv.Value));
        foreach (var (id, (token, result)) in completed)
        {
            var task = (await client.GetTaskAsync(new GetTaskRequest { WorkflowId = "load", TaskId = id }).Within()).Task;
            Assert.Equal(TaskState.Completed, task.State);
            Assert.Equal(result, task.Result.ToStringUtf8());
            Assert.Equal(token, task.FencingToken);
        }

        // Tokens of one task never repeat: each claim that was acknowledged got a token above the previous.
        foreach (var group in tokens.GroupBy(t => t.Task))
        {
            Assert.Equal(group.Count(), group.Select(t => t.Token).Distinct().Count());
        }
    }

    [RedisFact]
    public async Task RedisThatLostItsData_IsDetected_AndNoTokenIsHandedOut()
    {
        await using var redis = await RedisProcess.StartAsync(persistent: false);
        var prefix = Prefix();
        await using var server = await StartServerAsync(redis.Endpoint, prefix);
        using var client = new BoardClient(server.Address.ToString(), new BoardClientOptions { DefaultTimeout = TimeSpan.FromSeconds(3) });
        await client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "fragile" }).Within();
        await client.PostTasksAsync(new PostTasksRequest { WorkflowId = "fragile", Tasks = { new TaskSpec { Id = "t" } } }).Within();
        var claim = await client.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "fragile", TaskId = "t", WorkerId = "w" }).Within();
        Assert.True(claim.FencingToken > 0);

        // Redis without persistence comes back empty.
        await redis.KillAsync();
        await redis.StartAgainAsync();

        BoardRpcException? refusal = null;
        await TestTimeouts.Eventually(async () =>
        {
            try
            {
                await client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "fragile" });
                await client.PostTasksAsync(new PostTasksRequest { WorkflowId = "fragile", Tasks = { new TaskSpec { Id = "t" } } });
                var again = await client.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "fragile", TaskId = "t", WorkerId = "w2" });
                Assert.Fail($"a token ({again.FencingToken}) was handed out on a Redis that lost its data");
            }
            catch (BoardRpcException ex) when (ex.StatusCode == StatusCode.Unavailable)
            {
                return false;
            }
            catch (BoardRpcException ex)
            {
                refusal = ex;
            }

            return true;
        }, "the server to notice the data loss");
        Assert.Equal(StatusCode.DataLoss, refusal!.StatusCode);
        Assert.Equal(ErrorReason.StoreDataLoss, refusal.Reason);
        Assert.False(await server.Store.CheckHealthAsync(default));

        // The instance that saw the loss recorded it in Redis: a server started afterwards, with nothing of
        // its own to compare, refuses too instead of starting the board over at revision 1.
        using var elsewhere = new TempDirectory();
        await using var late = await StartServerAsync(redis.Endpoint, prefix, data: elsewhere.Path);
        using var lateClient = new BoardClient(late.Address.ToString());
        var lateRefusal = await Assert.ThrowsAsync<BoardRpcException>(() => lateClient.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "fragile" }).Within());
        Assert.Equal(StatusCode.DataLoss, lateRefusal.StatusCode);
    }

    /// <summary>
    /// Redis loses its data while no server runs (say, the machine restarted and Redis had no persistence).
    /// The server recorded the store epoch in its data directory, finds another one on restart, and refuses.
    /// </summary>
    [RedisFact]
    public async Task AServerRestartedAfterRedisLostItsData_Refuses_AndAServerOnAnIntactRedisDoesNot()
    {
        await using var redis = await RedisProcess.StartAsync(persistent: false);
        var prefix = Prefix();
        await using (var first = await StartServerAsync(redis.Endpoint, prefix))
        {
            using var client = new BoardClient(first.Address.ToString());
            await client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "w" }).Within();
            await client.PostTasksAsync(new PostTasksRequest { WorkflowId = "w", Tasks = { new TaskSpec { Id = "t" } } }).Within();
            await client.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "w", TaskId = "t", WorkerId = "w1" }).Within();
        }

        // Restarted with Redis intact: same epoch, the board goes on.
        await using (var again = await StartServerAsync(redis.Endpoint, prefix))
        {
            using var client = new BoardClient(again.Address.ToString());
            Assert.Equal(TaskState.Claimed, (await client.GetTaskAsync(new GetTaskRequest { WorkflowId = "w", TaskId = "t" }).Within()).Task.State);
        }

        await redis.KillAsync();
        await redis.StartAgainAsync();
        await using var restarted = await StartServerAsync(redis.Endpoint, prefix);
        using var after = new BoardClient(restarted.Address.ToString());
        var refusal = await Assert.ThrowsAsync<BoardRpcException>(() => after.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "w" }).Within());
        Assert.Equal(StatusCode.DataLoss, refusal.StatusCode);
        Assert.Equal(ErrorReason.StoreDataLoss, refusal.Reason);
        Assert.Contains("last worked with store epoch", refusal.Message);
        Assert.False(await restarted.Store.CheckHealthAsync(default));
    }
}

internal static class AsyncEnumerableExtensions
{
    public static async IAsyncEnumerable<T> TakeAsync<T>(this IAsyncEnumerable<T> source, int count)
    {
        using var cts = new CancellationTokenSource(TestTimeouts.Default);
        var n = 0;
        await foreach (var item in source.WithCancellation(cts.Token))
        {
            yield return item;
            if (++n == count)
            {
                yield break;
            }
        }
    }
}
