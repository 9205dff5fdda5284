using System.Collections.Concurrent;
using System.Globalization;
using GrpcBoard.Api.V1;
using GrpcBoard.Client;
using GrpcBoard.Testing;
using GrpcBoard.Wire;
using Xunit;
using Task = System.Threading.Tasks.Task;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>
/// Sentinel end to end: server processes started as a user would (<c>--redis sentinel:port,serviceName=NAME</c>), called
/// over gRPC by the C# client, while a real sentinel fails the primary over.
/// </summary>
public sealed class SentinelServerTests : IDisposable
{
    private const string Service = SentinelGroup.Service;
    private readonly TempDirectory _dataA = new();
    private readonly TempDirectory _dataB = new();

    public void Dispose()
    {
        _dataA.Dispose();
        _dataB.Dispose();
    }

    /// <summary>
    /// Two servers through the sentinel, waiting for both replicas (<c>--redis-replicas 2</c>: see SentinelTests for why
    /// both); four workers on each claim without pause and retry what is UNAVAILABLE, as the client's callers are told
    /// to, while the primary is killed, and a third replica is attached to the new primary. Both servers follow the
    /// failover. Every acknowledged claim took another task with another fencing token, and the new primary holds each
    /// with its owner and token. Any other failure than UNAVAILABLE fails the test.
    /// </summary>
    [RedisFact]
    public async Task TwoServers_ThroughTheSentinel_ClaimAcrossAFailover_LosingNothingAcknowledged()
    {
        await using var group = await SentinelGroup.StartAsync(replicas: 2);
        string[] Args(string data) =>
        [
            "--port", RedisProcess.FreePort().ToString(CultureInfo.InvariantCulture), "--store", "redis",
            "--redis", $"{group.Sentinel.Endpoint},serviceName={Service}", "--redis-replicas", "2", "--redis-prefix", "e2e", "--data", data,
        ];

        await using var a = await ServerProcess.StartAsync(Args(_dataA.Path));
        await using var b = await ServerProcess.StartAsync(Args(_dataB.Path));
        using var viaA = new BoardClient(a.Address);
        using var viaB = new BoardClient(b.Address);
        const string wf = "e2e";
        await viaA.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = wf }).Within();
        for (var chunk = 0; chunk < 3; chunk++)
        {
            await viaA.PostTasksAsync(new PostTasksRequest
            {
                WorkflowId = wf,
                Tasks = { Enumerable.Range(chunk * 1000, 1000).Select(i => new TaskSpec { Id = $"t{i}" }) },
            }).Within();
        }

        var acknowledged = new ConcurrentQueue<(string Worker, string Task, long Token)>();
        var unavailable = 0;
        using var stop = new CancellationTokenSource();
        var workers = Enumerable.Range(0, 8).Select(w => Task.Run(async () =>
        {
            var client = w % 2 == 0 ? viaA : viaB;
            var worker = $"w{w}";
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    var claim = await client.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = wf, WorkerId = worker });
                    Assert.NotNull(claim.Task);
                    acknowledged.Enqueue((worker, claim.Task.Id, claim.FencingToken));
                }
                catch (BoardRpcException ex) when (ex.StatusCode == StatusCode.Unavailable)
                {
                    Interlocked.Increment(ref unavailable);
                    await Task.Delay(20);
                }
            }
        })).ToArray();

        await TestTimeouts.Eventually(() => Task.FromResult(acknowledged.Count >= 40), "40 claims before the failover");
        var beforeKill = acknowledged.Count;
        await group.AddReplicaAsync(await group.FailOverAsync());
        await TestTimeouts.Eventually(() => Task.FromResult(acknowledged.Count >= beforeKill + 40), "40 claims after the failover", TimeSpan.FromSeconds(60));
        await stop.CancelAsync();
        await Task.WhenAll(workers).Within();

        // Read through both servers, retrying UNAVAILABLE as a client does: the claims after the failover may all have
        // been forwarded to the instance that moved first, and the other moves at its next look at the sentinel.
        var claims = acknowledged.ToArray();
        Assert.Equal(claims.Length, claims.Select(c => c.Task).Distinct().Count());
        Assert.Equal(claims.Length, claims.Select(c => c.Token).Distinct().Count());
        foreach (var (worker, taskId, token) in claims)
        {
            foreach (var client in new[] { viaA, viaB })
            {
                var task = (await UntilAvailable.CallAsync(() => client.GetTaskAsync(new GetTaskRequest { WorkflowId = wf, TaskId = taskId }), "a read to be served")).Task;
                Assert.Equal((TaskState.Claimed, worker, token), (task.State, task.Owner, task.FencingToken));
            }
        }

        // Claims whose outcome was unknown (UNAVAILABLE with the reply lost in the failover) may have committed too.
        var counts = (await UntilAvailable.CallAsync(() => viaA.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = wf }), "a read to be served")).Workflow.TaskCounts;
        Assert.InRange(counts.Claimed, claims.Length, claims.Length + unavailable);
    }
}
