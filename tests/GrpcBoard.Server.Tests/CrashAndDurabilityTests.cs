using System.Collections.Concurrent;
using System.Globalization;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using GrpcBoard.Api.V1;
using GrpcBoard.Client;
using GrpcBoard.Server.Hosting;
using GrpcBoard.Testing;
using GrpcBoard.Wire;
using Xunit;
using Task = System.Threading.Tasks.Task;

namespace GrpcBoard.Server.Tests;

public sealed class CrashAndDurabilityTests
{
    /// <summary>
    /// A worker stops renewing (its process is gone); the server expires the lease by itself; another worker
    /// claims the task, reads the first one's checkpoint and completes it; the first worker's late completion
    /// with its old token is refused.
    /// </summary>
    [Fact]
    public async Task ACrashedWorkersTask_IsFinishedByAnother_AndItsLateCompletionIsRefused()
    {
        await using var harness = await ServerHarness.StartAsync(new ServerSettings { Port = 0, Store = "memory", TimerPollMilliseconds = 20 });
        var client = harness.Client;
        await client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "crash" }).Within();
        await client.PostTasksAsync(new PostTasksRequest
        {
            WorkflowId = "crash",
            Tasks = { new TaskSpec { Id = "long-job", RetryPolicy = new RetryPolicy { InitialBackoff = new Duration() } } },
        }).Within();

        // Worker A: a real BoardWorker whose connection dies mid-task (it can no longer renew). Its lease is
        // 3 s: with 1 s, a stall of the loaded CI machine between claim and checkpoint (the other suites run
        // at the same time) let the lease lapse before the checkpoint, and the task never started (once in CI).
        var crashing = harness.NewClient();
        var aStarted = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        var aLostLease = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var workerA = crashing.CreateWorker(new BoardWorkerOptions { WorkflowId = "crash", WorkerId = "agent-a", LeaseDuration = TimeSpan.FromSeconds(3), ClaimWait = TimeSpan.FromSeconds(5) });
        var runA = workerA.RunOnceAsync(async ctx =>
        {
            await ctx.CheckpointAsync("3 of 10 pages"u8.ToArray());
            aStarted.SetResult(ctx.FencingToken);
            try
            {
                await Task.Delay(Timeout.Infinite, ctx.CancellationToken);
            }
            catch (OperationCanceledException)
            {
                aLostLease.SetResult();
            }

            return TaskOutcome.Text("from a");
        }, CancellationToken.None);
        var tokenA = await aStarted.Task.Within();
        crashing.Dispose();

        // The server requeues the task when the lease runs out, with nobody calling in.
        await TestTimeouts.Eventually(async () =>
            (await client.GetTaskAsync(new GetTaskRequest { WorkflowId = "crash", TaskId = "long-job" })).Task.State == TaskState.Ready, "the lease to expire");
        await aLostLease.Task.Within();
        Assert.True(await runA.Within());

        var resumedFrom = "";
        var workerB = client.CreateWorker(new BoardWorkerOptions { WorkflowId = "crash", WorkerId = "agent-b", ClaimWait = TimeSpan.FromSeconds(5) });
        Assert.True(await workerB.RunOnceAsync(ctx =>
        {
            resumedFrom = ctx.LastCheckpoint.Length == 0 ? "" : System.Text.Encoding.UTF8.GetString(ctx.LastCheckpoint.Span);
            return Task.FromResult(TaskOutcome.Text("from b"));
        }, CancellationToken.None).Within());
        Assert.Equal("3 of 10 pages", resumedFrom);
        Assert.Equal(1, workerB.Completed);

        var late = await Assert.ThrowsAsync<BoardRpcException>(() => client.CompleteTaskAsync(new CompleteTaskRequest
        {
            WorkflowId = "crash",
            TaskId = "long-job",
            FencingToken = tokenA,
            Result = ByteString.CopyFromUtf8("from a"),
        }).Within());
        Assert.Equal(StatusCode.FailedPrecondition, late.StatusCode);
        Assert.Equal(ErrorReason.FencingTokenStale, late.Reason);

        var final = (await client.GetTaskAsync(new GetTaskRequest { WorkflowId = "crash", TaskId = "long-job" })).Task;
        Assert.Equal(TaskState.Completed, final.State);
        Assert.Equal("from b", final.Result.ToStringUtf8());
        Assert.Equal("agent-b", final.Owner);
        Assert.True(final.FencingToken > tokenA);
        Assert.True(final.LastError.LeaseExpired);
    }

    /// <summary>
    /// kill -9 of the server process in the middle of a concurrent load; a new process on the same data
    /// directory must show every acknowledged write, and keep revisions and fencing tokens going up.
    /// </summary>
    [Fact]
    public async Task KillMinus9_MidLoad_LosesNoAcknowledgedWrite_AndCountersContinue()
    {
        using var data = new TempDirectory();
        var posted = new ConcurrentDictionary<string, bool>();
        var completed = new ConcurrentDictionary<string, (long Token, string Result)>();
        var claimed = new ConcurrentDictionary<string, long>();
        var notes = new ConcurrentDictionary<string, long>();
        long maxRevision = 0;
        void SeenRevision(long r)
        {
            long current;
            while ((current = Interlocked.Read(ref maxRevision)) < r && Interlocked.CompareExchange(ref maxRevision, r, current) != current)
            {
            }
        }

        var first = await ServerProcess.StartAsync("--port", "0", "--data", data.Path);
        using (var client = new BoardClient(first.Address, new BoardClientOptions { DefaultTimeout = TimeSpan.FromSeconds(5) }))
        {
            await client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "load" }).Within();
            using var stop = new CancellationTokenSource();
            var load = Enumerable.Range(0, 16).Select(w => Task.Run(async () =>
            {
                for (var i = 0; !stop.IsCancellationRequested; i++)
                {
                    try
                    {
                        var id = $"w{w}-t{i}";
                        var post = await client.PostTasksAsync(new PostTasksRequest { WorkflowId = "load", Tasks = { new TaskSpec { Id = id } } });
                        posted[id] = true;
                        SeenRevision(post.Header.Revision);
                        var claim = await client.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "load", TaskId = id, WorkerId = $"w{w}" });
                        claimed[id] = claim.FencingToken;
                        SeenRevision(claim.Header.Revision);
                        if (i % 2 == 0)
                        {
                            var result = $"result {id}";
                            var done = await client.CompleteTaskAsync(new CompleteTaskRequest { WorkflowId = "load", TaskId = id, FencingToken = claim.FencingToken, Result = ByteString.CopyFromUtf8(result) });
                            completed[id] = (claim.FencingToken, result);
                            SeenRevision(done.Header.Revision);
                        }

                        var note = await client.PutNoteAsync(new PutNoteRequest { WorkflowId = "load", Key = $"progress/w{w}", Value = ByteString.CopyFromUtf8(id) });
                        notes.AddOrUpdate($"progress/w{w}", note.Note.Version, (_, v) => Math.Max(v, note.Note.Version));
                        SeenRevision(note.Header.Revision);
                    }
                    catch (BoardRpcException)
                    {
                        // The kill cuts calls off; an unacknowledged write may or may not have happened.
                        return;
                    }
                }
            })).ToArray();

            await TestTimeouts.Eventually(() => Task.FromResult(completed.Count >= 150), "some load before the kill", TimeSpan.FromSeconds(60));
            await first.KillAsync();
            await stop.CancelAsync();
            await Task.WhenAll(load).Within();
        }

        await using var second = await ServerProcess.StartAsync("--port", "0", "--data", data.Path);
        using var after = new BoardClient(second.Address);
        foreach (var id in posted.Keys)
        {
            var task = (await after.GetTaskAsync(new GetTaskRequest { WorkflowId = "load", TaskId = id }).Within()).Task;
            if (completed.TryGetValue(id, out var done))
            {
                Assert.Equal(TaskState.Completed, task.State);
                Assert.Equal(done.Result, task.Result.ToStringUtf8());
                Assert.Equal(done.Token, task.FencingToken);
            }
            else if (claimed.TryGetValue(id, out var token))
            {
                Assert.True(task.FencingToken >= token, $"{id}: token {task.FencingToken} went below acknowledged {token}");
            }
        }

        foreach (var (key, version) in notes)
        {
            Assert.True((await after.GetNoteAsync(new GetNoteRequest { WorkflowId = "load", Key = key }).Within()).Note.Version >= version);
        }

        var workflow = await after.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "load" }).Within();
        Assert.True(workflow.Header.Revision >= maxRevision);
        Assert.True(workflow.Workflow.TaskCounts.Completed >= completed.Count);

        // The history is whole, and new claims get tokens above every token ever acknowledged.
        var revisions = new List<long>();
        await foreach (var e in after.WatchAsync(new WatchRequest { WorkflowId = "load", StartRevision = 1 }).Within(workflow.Header.Revision))
        {
            revisions.Add(e.Revision);
        }

        Assert.Equal(Enumerable.Range(1, (int)workflow.Header.Revision).Select(i => (long)i), revisions);
        await after.PostTasksAsync(new PostTasksRequest { WorkflowId = "load", Tasks = { new TaskSpec { Id = "after-restart" } } }).Within();
        var fresh = await after.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "load", TaskId = "after-restart", WorkerId = "w" }).Within();
        Assert.True(fresh.FencingToken > claimed.Values.Max());
        Assert.True(fresh.Header.Revision > maxRevision);
    }

    /// <summary>A watcher across a server restart on the same data and port: it resumes where it was.</summary>
    [Fact]
    public async Task Watch_ResumesAcrossAServerRestart()
    {
        using var data = new TempDirectory();
        var port = Ports.Free();
        var settings = new ServerSettings { Port = port, Store = "embedded", DataDirectory = data.Path };
        var server = await ServerHarness.StartAsync(settings);
        var client = new BoardClient($"http://127.0.0.1:{port}");
        await client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "restart" }).Within();
        using var cts = new CancellationTokenSource(TestTimeouts.Default);
        var seen = new List<long>();
        var fifth = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var watching = Task.Run(async () =>
        {
            await foreach (var e in client.WatchAsync(new WatchRequest { WorkflowId = "restart", StartRevision = 1 }, cts.Token))
            {
                seen.Add(e.Revision);
                if (e.Revision == 5)
                {
                    fifth.TrySetResult();
                }

                if (e.Revision == 10)
                {
                    return;
                }
            }
        });
        for (var i = 0; i < 4; i++)
        {
            await client.PutNoteAsync(new PutNoteRequest { WorkflowId = "restart", Key = "k" }).Within();
        }

        await fifth.Task.Within();
        await server.DisposeAsync();
        server = await ServerHarness.StartAsync(settings);
        try
        {
            // The first call after a restart may meet the old server's closing connection: UNAVAILABLE,
            // which clients retry (seen once under parallel load: GOAWAY with NO_ERROR).
            await TestTimeouts.Eventually(async () =>
            {
                try
                {
                    await client.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "restart" });
                    return true;
                }
                catch (BoardRpcException ex) when (ex.StatusCode == StatusCode.Unavailable)
                {
                    return false;
                }
            }, "the restarted server to answer");
            for (var i = 0; i < 5; i++)
            {
                await client.PutNoteAsync(new PutNoteRequest { WorkflowId = "restart", Key = "k" }).Within();
            }

            await watching.Within();
            Assert.Equal(Enumerable.Range(1, 10).Select(i => (long)i), seen);
        }
        finally
        {
            client.Dispose();
            await server.DisposeAsync();
        }
    }
}

public sealed class ShutdownTests
{
    /// <summary>SIGTERM: a waiting claim and a watch are answered with a status before the process exits.</summary>
    [Fact]
    public async Task Sigterm_AnswersWaitingClaimsAndWatches_WithUnavailable()
    {
        using var data = new TempDirectory();
        await using var server = await ServerProcess.StartAsync("--port", "0", "--data", data.Path);
        using var client = new BoardClient(server.Address);
        await client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "bye" }).Within();
        var claim = client.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "bye", WorkerId = "w", Wait = Duration.FromTimeSpan(TimeSpan.FromSeconds(60)) });
        await using var watch = client.Watch(new WatchRequest { WorkflowId = "bye" });
        var watchIsLive = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var watching = Task.Run(async () =>
        {
            await foreach (var _ in watch.ReadAllAsync())
            {
                // The first message (caught up) shows the stream is open on the server.
                watchIsLive.TrySetResult();
            }
        });
        // The claim was sent first on the same connection. Had it not reached the server yet, the shutdown
        // would refuse it with UNAVAILABLE too, so the assertions hold either way.
        await watchIsLive.Task.Within();
        var started = DateTimeOffset.UtcNow;
        server.Terminate();

        var claimError = await Assert.ThrowsAsync<BoardRpcException>(() => claim.Within());
        Assert.Equal(StatusCode.Unavailable, claimError.StatusCode);
        var watchError = await Assert.ThrowsAsync<RpcException>(() => watching.Within());
        Assert.Equal(StatusCode.Unavailable, watchError.StatusCode);
        Assert.True(DateTimeOffset.UtcNow - started < TimeSpan.FromSeconds(4), "answered before the host's shutdown timeout");
    }
}
