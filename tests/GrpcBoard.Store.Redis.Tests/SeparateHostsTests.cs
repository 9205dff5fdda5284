using System.Collections.Concurrent;
using System.Globalization;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using GrpcBoard.Api.V1;
using GrpcBoard.Client;
using GrpcBoard.Testing;
using Xunit;
using Xunit.Abstractions;
using Task = System.Threading.Tasks.Task;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>
/// Two GrpcBoard servers on hosts of their own (<see cref="NetworkHosts"/>: network namespaces with an address each
/// on a bridge) and a Redis on this machine, reached as a remote one. The multi-instance tests run every server on
/// 127.0.0.1; here each instance listens on its host's address, advertises where the other reaches it, and reaches
/// Redis over the bridge, so a wrong address (a server that advertised 127.0.0.1, or 0.0.0.0) would fail here where on
/// loopback it works by chance. And a host's link can be cut, which drops packets without closing a connection.
/// </summary>
public sealed class SeparateHostsTests(ITestOutputHelper output) : IDisposable
{
    private const int Port = 50051;

    private readonly TempDirectory _data = new();

    public void Dispose() => _data.Dispose();

    private sealed record Ack(string Task, long Token, string Worker);

    /// <summary>A Redis on this machine, listening on the bridge too, and a server in each host on it.</summary>
    private sealed class Deployment : IAsyncDisposable
    {
        private readonly List<ServerProcess> _servers = [];

        /// <summary>The server in host <paramref name="host"/>.</summary>
        public ServerProcess Server(int host) => _servers[host];

        public required NetworkHosts Hosts { get; init; }

        public required RedisProcess Redis { get; init; }

        public required string Prefix { get; init; }

        public string Url(int host) => $"http://{Hosts.AddressOf(host)}:{Port}";

        public BoardClient Client(int host, TimeSpan? timeout = null) =>
            new(Url(host), new BoardClientOptions { DefaultTimeout = timeout ?? TestTimeouts.Default });

        public static async Task<Deployment> StartAsync(string data)
        {
            var hosts = await NetworkHosts.CreateAsync(2);
            RedisProcess? redis = null;
            Deployment? deployment = null;
            try
            {
                redis = await RedisProcess.StartAsync(persistent: true, "--bind", "127.0.0.1", hosts.RouterAddress);
                deployment = new Deployment { Hosts = hosts, Redis = redis, Prefix = "h" + Guid.NewGuid().ToString("N")[..10] };
                string[] common = ["--port", Port.ToString(CultureInfo.InvariantCulture), "--store", "redis", "--redis", $"{hosts.RouterAddress}:{redis.Port}", "--redis-prefix", deployment.Prefix];
                // Host 0 listens on every address and says where it is reached; host 1 listens on its address only,
                // which it then advertises itself. The servers share the port: each host has its own.
                deployment._servers.Add(await hosts.StartServerAsync(0, [.. common, "--host", "0.0.0.0", "--advertise-url", deployment.Url(0), "--data", Path.Combine(data, "a")]));
                deployment._servers.Add(await hosts.StartServerAsync(1, [.. common, "--host", hosts.AddressOf(1), "--data", Path.Combine(data, "b")]));
                return deployment;
            }
            catch
            {
                if (deployment is not null)
                {
                    await deployment.DisposeAsync();
                }
                else
                {
                    if (redis is not null)
                    {
                        await redis.DisposeAsync();
                    }

                    await hosts.DisposeAsync();
                }

                throw;
            }
        }

        /// <summary>The advertised address of the instance that holds the workflow's turn (its meta's <c>w</c>), as Redis has it.</summary>
        public async Task<string> TurnHolderAsync(string workflowId)
        {
            var keys = new RedisKeys(Prefix);
            var instance = (await Redis.CliAsync("HGET", keys.Meta(workflowId), "w")).Trim();
            return (await Redis.CliAsync("GET", keys.Instance(instance))).Trim().TrimEnd('/');
        }

        public async ValueTask DisposeAsync()
        {
            foreach (var server in _servers)
            {
                await server.DisposeAsync();
            }

            await Redis.DisposeAsync();
            await Hosts.DisposeAsync();
        }
    }

    /// <summary>
    /// Workers on both hosts complete every task of one workflow once, without a failed call, while a watcher on host
    /// 1 follows every change in order; and the instances called each other over the bridge, at the address each
    /// advertised (calls go to the instance that holds the workflow's turn).
    /// </summary>
    [HostsFact]
    public async Task ServersOnTwoHosts_ShareOneWorkflow_ThroughTheAddressesTheyAdvertise()
    {
        await using var deployment = await Deployment.StartAsync(_data.Path);
        using var viaA = deployment.Client(0);
        using var viaB = deployment.Client(1);
        const int tasks = 300;
        await viaA.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "hosts" }).Within();
        await viaB.PostTasksAsync(new PostTasksRequest { WorkflowId = "hosts", Tasks = { Enumerable.Range(0, tasks).Select(i => new TaskSpec { Id = $"t{i:D3}" }) } }).Within();

        using var watchStop = new CancellationTokenSource(TestTimeouts.Default * 4);
        var seen = new ConcurrentQueue<long>();
        var watching = Task.Run(async () =>
        {
            await foreach (var e in viaB.WatchAsync(new WatchRequest { WorkflowId = "hosts", StartRevision = 1 }, watchStop.Token))
            {
                seen.Enqueue(e.Revision);
            }
        });

        using var stop = new CancellationTokenSource();
        var completedBy = new ConcurrentDictionary<string, string>();
        var workers = Enumerable.Range(0, 8).Select(i => (i % 2 == 0 ? viaA : viaB).CreateWorker(new BoardWorkerOptions
        {
            WorkflowId = "hosts",
            WorkerId = $"w{i}",
            MaxConcurrency = 4,
            ClaimWait = TimeSpan.FromMilliseconds(200),
        })).ToList();
        var running = workers.Select((w, i) => w.RunAsync(context =>
        {
            Assert.True(completedBy.TryAdd(context.Task.Id, $"w{i}"), $"{context.Task.Id} ran twice");
            return Task.FromResult(TaskOutcome.Text(context.Task.Id));
        }, stop.Token)).ToList();

        await TestTimeouts.Eventually(
            async () => (await viaA.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "hosts" }).Within()).Workflow.TaskCounts.Completed == tasks,
            "every task completed", TimeSpan.FromSeconds(90));
        // The other host's connections, read while its channel to the holder is surely still open.
        var connections = new[] { await deployment.Hosts.ConnectionsInAsync(0), await deployment.Hosts.ConnectionsInAsync(1) };
        await stop.CancelAsync();
        await Task.WhenAll(running).Within();

        var head = (await viaB.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "hosts" }).Within()).Header.Revision;
        await TestTimeouts.Eventually(() => Task.FromResult(seen.Count >= head), "the watcher on host 1 to see every change");
        await watchStop.CancelAsync();
        await watching.ContinueWith(_ => { }, TaskScheduler.Default).Within();

        Assert.Equal(tasks, completedBy.Count);
        Assert.Equal((tasks, 0, 0), (workers.Sum(w => w.Completed), workers.Sum(w => w.Failed), workers.Sum(w => w.LostClaims)));
        Assert.Equal(Enumerable.Range(1, (int)head).Select(i => (long)i), seen.Take((int)head));
        var sample = await viaA.GetTaskAsync(new GetTaskRequest { WorkflowId = "hosts", TaskId = "t123" }).Within();
        Assert.Equal("t123", sample.Task.Result.ToStringUtf8());
        // What each instance told the other (its record in Redis): where the other host reaches it.
        var instances = (await deployment.Redis.CliAsync("KEYS", new RedisKeys(deployment.Prefix).Instance("*"))).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var advertised = new List<string>();
        foreach (var key in instances)
        {
            advertised.Add((await deployment.Redis.CliAsync("GET", key.Trim())).Trim().TrimEnd('/'));
        }

        Assert.Equal([deployment.Url(0), deployment.Url(1)], advertised.Order());
        var redis = $"{deployment.Hosts.RouterAddress}:{deployment.Redis.Port}";
        Assert.All(connections, c => Assert.Contains(c, x => x.Remote == redis));
        // A forwarded call: one host's connection to the other's advertised address (the port of the host's own end is
        // the ephemeral one the kernel gave it).
        Assert.True(
            Enumerable.Range(0, 2).Any(h => connections[h].Any(c => c.Local.StartsWith(deployment.Hosts.AddressOf(h) + ":", StringComparison.Ordinal) && c.Remote == $"{deployment.Hosts.AddressOf(1 - h)}:{Port}")),
            "neither instance connected to the other's advertised address; connections: " + string.Join("; ", connections.Select((c, h) => $"host {h}: " + string.Join(", ", c.Select(x => $"{x.Local}->{x.Remote}")))));
    }

    /// <summary>
    /// Workers on both hosts claim and complete under short leases; the host that holds the workflow's turn at that
    /// moment (with some leases) is cut off for 4 s, without a reset, then joined again: from the whole network
    /// (<paramref name="fromRedisOnly"/> false), or from Redis alone, while its callers and the other host still reach it
    /// and it them (as when a firewall rule or a route breaks one path). A checker's view of
    /// what was accepted: no fencing token was handed out twice for a task, no task has two accepted completions, every
    /// task ends completed with the result of a worker that held its last token, the other host went on completing
    /// tasks while the holder was cut off (its turn lapsed), and the cut host serves again afterwards, its workers
    /// complete tasks, and it shows the same board as the other.
    /// </summary>
    [HostsTheory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AHostCutOffMidLoad_LosesNothing_RepeatsNoToken_AndTheOtherGoesOn(bool fromRedisOnly)
    {
        await using var deployment = await Deployment.StartAsync(_data.Path);
        BoardClient[] via = [deployment.Client(0, TimeSpan.FromSeconds(2)), deployment.Client(1, TimeSpan.FromSeconds(2))];
        // Enough that the cut host rejoins a busy workflow: each worker takes a 20 ms pause after each task.
        const int tasks = 3000;
        using (var setup = deployment.Client(0))
        {
            await setup.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "cut" }).Within();
            foreach (var batch in Enumerable.Range(0, tasks).Chunk(1000))
            {
                await setup.PostTasksAsync(new PostTasksRequest
                {
                    WorkflowId = "cut",
                    Tasks = { batch.Select(i => new TaskSpec { Id = $"t{i:D4}", MaxAttempts = 100, RetryPolicy = new RetryPolicy { InitialBackoff = new Duration() } }) },
                }).Within();
            }
        }

        var claims = new ConcurrentQueue<Ack>();
        var completions = new ConcurrentQueue<Ack>();
        // Per host and phase (0: before the cut, 1: cut off, 2: joined again): completions, and failed calls.
        var completed = new int[2, 3];
        var failed = new int[2, 3];
        var phase = 0;
        using var stop = new CancellationTokenSource();
        async Task WorkAsync(int host, string worker)
        {
            var client = via[host];
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    var claim = await client.ClaimTaskAsync(new ClaimTaskRequest
                    {
                        WorkflowId = "cut", WorkerId = worker,
                        LeaseDuration = Duration.FromTimeSpan(TimeSpan.FromSeconds(3)), Wait = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(200)),
                    });
                    if (claim.Task is null)
                    {
                        continue;
                    }

                    claims.Enqueue(new Ack(claim.Task.Id, claim.FencingToken, worker));
                    await client.CompleteTaskAsync(new CompleteTaskRequest
                    {
                        WorkflowId = "cut", TaskId = claim.Task.Id, FencingToken = claim.FencingToken,
                        Result = ByteString.CopyFromUtf8($"{worker}:{claim.FencingToken}"),
                    });
                    completions.Enqueue(new Ack(claim.Task.Id, claim.FencingToken, worker));
                    Interlocked.Increment(ref completed[host, Volatile.Read(ref phase)]);
                    await Task.Delay(20);
                }
                catch (BoardRpcException)
                {
                    // DEADLINE_EXCEEDED or UNAVAILABLE while a host is cut off (or a lost token after it): the claim
                    // or completion may or may not have been accepted, which the checks below allow for.
                    Interlocked.Increment(ref failed[host, Volatile.Read(ref phase)]);
                    await Task.Delay(50);
                }
            }
        }

        var running = Enumerable.Range(0, 8).Select(i => Task.Run(() => WorkAsync(i % 2, $"w{i}"))).ToList();
        await TestTimeouts.Eventually(() => Task.FromResult(completions.Count >= 200), "the first completions");

        var holder = await deployment.TurnHolderAsync("cut");
        Assert.Contains(holder, new[] { deployment.Url(0), deployment.Url(1) });
        var cut = holder == deployment.Url(0) ? 0 : 1;
        var other = 1 - cut;
        await (fromRedisOnly ? deployment.Hosts.CutFromAsync(cut, deployment.Hosts.RouterAddress) : deployment.Hosts.CutAsync(cut));
        Volatile.Write(ref phase, 1);
        await Task.Delay(TimeSpan.FromSeconds(4));
        Volatile.Write(ref phase, 2);
        await (fromRedisOnly ? deployment.Hosts.RestoreToAsync(cut, deployment.Hosts.RouterAddress) : deployment.Hosts.RestoreAsync(cut));
        var restored = System.Diagnostics.Stopwatch.StartNew();

        // The cut host serves again once its connections to Redis have come back (or been opened anew).
        string? lastFailure = null;
        try
        {
            await TestTimeouts.Eventually(async () =>
            {
                try
                {
                    await via[cut].GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "cut" });
                    return true;
                }
                catch (BoardRpcException ex)
                {
                    lastFailure = $"{ex.StatusCode}: {ex.Message}";
                    return false;
                }
            }, $"host {cut} to serve again", TimeSpan.FromSeconds(90));
        }
        catch (TimeoutException)
        {
            Assert.Fail($"host {cut} did not serve again; its last answer: {lastFailure}\nits log:\n{deployment.Server(cut).Output}");
        }

        var servedAgainMs = restored.ElapsedMilliseconds;
        using var admin = deployment.Client(other);
        await TestTimeouts.Eventually(
            async () => (await admin.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "cut" }).Within()).Workflow.TaskCounts.Completed == tasks,
            "every task completed", TimeSpan.FromSeconds(90));
        await stop.CancelAsync();
        await Task.WhenAll(running).Within();
        output.WriteLine($"host {cut} (the turn's holder) cut off {(fromRedisOnly ? "from Redis" : "the network")} for 4 s: {completed[other, 1]} tasks completed through host {other} meanwhile, "
            + $"{failed[cut, 1]} calls through host {cut} failed; host {cut} served again {servedAgainMs} ms after its link came back, and its "
            + $"workers completed {completed[cut, 2]} tasks after that");

        Assert.True(failed[cut, 1] > 0, $"no call through host {cut} failed while it was cut off: was it?");
        Assert.True(completed[other, 1] > 0, $"host {other} completed no task while host {cut}, the turn's holder, was cut off");
        Assert.True(completed[cut, 2] > 0, $"host {cut}'s workers completed no task after it was joined again");
        var tokens = claims.GroupBy(c => c.Task).ToDictionary(g => g.Key, g => g.Select(c => c.Token).ToList());
        Assert.All(tokens, t => Assert.Equal(t.Value.Count, t.Value.Distinct().Count()));
        Assert.All(completions.GroupBy(c => c.Task), g => Assert.Single(g));
        using var afterCut = deployment.Client(cut);
        var viewCut = await afterCut.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "cut" }).Within();
        var viewOther = await admin.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "cut" }).Within();
        Assert.Equal((tasks, viewOther.Header.Revision), (viewCut.Workflow.TaskCounts.Completed, viewCut.Header.Revision));
        for (var i = 0; i < tasks; i++)
        {
            var task = (await admin.GetTaskAsync(new GetTaskRequest { WorkflowId = "cut", TaskId = $"t{i:D4}" }).Within()).Task;
            // The result names the worker and the token it completed with: the task's last token, one a claim answered.
            var result = task.Result.ToStringUtf8();
            Assert.Equal($"{task.FencingToken}", result[(result.IndexOf(':', StringComparison.Ordinal) + 1)..]);
            Assert.Contains(task.FencingToken, tokens.GetValueOrDefault(task.Id) ?? []);
            if (completions.FirstOrDefault(c => c.Task == task.Id) is { } accepted)
            {
                Assert.Equal($"{accepted.Worker}:{accepted.Token}", result);
            }
        }

        foreach (var client in via)
        {
            client.Dispose();
        }
    }
}
