using System.Collections.Concurrent;
using Google.Protobuf;
using GrpcBoard.Api;
using GrpcBoard.Api.V1;
using GrpcBoard.Bench.LoadGen;
using GrpcBoard.Client;
using GrpcBoard.Wire;
using Xunit;
using Task = System.Threading.Tasks.Task;

namespace GrpcBoard.Server.Tests;

/// <summary>
/// The bench's lean HTTP/2 load generator against the real server. The benchmark figures measured with it
/// are worth something only if its calls are real gRPC calls: each answered once, with the right status.
/// </summary>
public sealed class LeanLoadGeneratorTests
{
    // Fails the lean connection (and so every call waiting on it) if a test hangs; a new one per test.
    private readonly CancellationToken _timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60)).Token;

    [Fact]
    public async Task ConcurrentClaims_EveryTaskClaimedOnceAndEachAnswerIsItsOwn()
    {
        await using var harness = await ServerHarness.StartAsync();
        await harness.Client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "lean", Goal = "lean client" });
        const int tasks = 3000;
        for (var batch = 0; batch < tasks / 1000; batch++)
        {
            var post = new PostTasksRequest { WorkflowId = "lean" };
            post.Tasks.AddRange(Enumerable.Range(batch * 1000, 1000).Select(i => new TaskSpec { Id = $"t{i}" }));
            await harness.Client.PostTasksAsync(post);
        }

        await using var connection = await LeanH2Connection.ConnectAsync(harness.Server.Address, _timeout);
        var calls = new LeanClaimCalls(connection);
        var claims = new ConcurrentBag<(string Task, long Token)>();
        await Task.WhenAll(Enumerable.Range(0, 64).Select(w => Task.Run(async () =>
        {
            var request = new ClaimTaskRequest { WorkflowId = "lean", WorkerId = $"w{w}" };
            while (true)
            {
                var claimed = await calls.ClaimTaskAsync(request, _timeout);
                if (claimed.Task is null)
                {
                    return;
                }

                Assert.True(claimed.FencingToken > 0);
                claims.Add((claimed.Task.Id, claimed.FencingToken));
                // An answer delivered to the wrong call would name another worker as the owner.
                Assert.Equal(request.WorkerId, claimed.Task.Owner);
            }
        })));

        Assert.Equal(tasks, claims.Count);
        Assert.Equal(tasks, claims.Select(c => c.Task).Distinct().Count());
        var workflow = await harness.Client.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "lean" });
        Assert.Equal(tasks, workflow.Workflow.TaskCounts.Claimed);
    }

    [Fact]
    public async Task RefusedCall_ReportsTheStatusAndReasonTheServerSent()
    {
        await using var harness = await ServerHarness.StartAsync();
        await using var connection = await LeanH2Connection.ConnectAsync(harness.Server.Address, _timeout);
        var calls = new LeanClaimCalls(connection);

        var refused = await Assert.ThrowsAsync<BoardRpcException>(() => calls.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "missing", WorkerId = "w" }, _timeout));

        Assert.Equal(StatusCode.NotFound, refused.StatusCode);
        Assert.Equal(ErrorReason.WorkflowNotFound, refused.Reason);
        Assert.Contains("missing", refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task MessagesLargerThanAFrame_CrossInSeveralFramesBothWays()
    {
        await using var harness = await ServerHarness.StartAsync();
        await harness.Client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "big", Goal = "large messages" });
        await using var connection = await LeanH2Connection.ConnectAsync(harness.Server.Address, _timeout);
        var post = connection.RequestHeaders(BoardMethods.PostTasks.FullName);
        var get = connection.RequestHeaders(BoardMethods.GetTask.FullName);

        // 60 KB requests: four DATA frames each, and together many times the peer's first 64 KiB
        // connection window, so they go only as the server's WINDOW_UPDATEs allow.
        for (var i = 0; i < 20; i++)
        {
            var payload = ByteString.CopyFrom(Enumerable.Range(0, 60_000).Select(b => (byte)(b * 7 + i)).ToArray());
            var request = new PostTasksRequest { WorkflowId = "big", Tasks = { new TaskSpec { Id = $"t{i}", Payload = payload } } };
            await connection.CallAsync(post, request.ToByteArray());

            var read = GetTaskResponse.Parser.ParseFrom(await connection.CallAsync(get, new GetTaskRequest { WorkflowId = "big", TaskId = $"t{i}" }.ToByteArray()));
            Assert.Equal(payload, read.Task.Payload);
        }
    }
}
