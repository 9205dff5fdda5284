using System.Reflection;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using GrpcBoard.Api;
using GrpcBoard.Api.V1;
using GrpcBoard.Client;
using GrpcBoard.Server.Services;
using GrpcBoard.Testing;
using GrpcBoard.Wire;
using GrpcBoard.Wire.Client;
using Xunit;
using Task = System.Threading.Tasks.Task;

namespace GrpcBoard.Server.Tests;

/// <summary>The API end to end over real HTTP/2: the C# client against a Kestrel server.</summary>
public sealed class BoardFunctionalTests : IAsyncLifetime
{
    private ServerHarness _harness = null!;

    private BoardClient Client => _harness.Client;

    public async Task InitializeAsync() => _harness = await ServerHarness.StartAsync();

    public async Task DisposeAsync() => await _harness.DisposeAsync();

    [Fact]
    public void EveryRpcInTheProto_HasAMethodEntry_AServerHandler_AndAClientMethod()
    {
        var service = BoardServiceReflection.Descriptor.Services.Single();
        Assert.Equal(BoardMethods.ServiceName, service.FullName);
        var entries = typeof(BoardMethods).GetFields(BindingFlags.Public | BindingFlags.Static)
            .Where(f => f.FieldType.IsGenericType && f.FieldType.GetGenericTypeDefinition() == typeof(Method<,>))
            .ToDictionary(f => f.Name);
        var registry = new Wire.Server.GrpcServiceRegistry();
        new BoardServiceHandlers(null!, TimeProvider.System, default).Register(registry);

        foreach (var rpc in service.Methods)
        {
            Assert.True(entries.TryGetValue(rpc.Name, out var field), $"BoardMethods lacks {rpc.Name}");
            var method = field!.GetValue(null)!;
            var args = field.FieldType.GetGenericArguments();
            Assert.Equal(rpc.InputType.ClrType, args[0]);
            Assert.Equal(rpc.OutputType.ClrType, args[1]);
            var type = (MethodType)method.GetType().GetProperty("Type")!.GetValue(method)!;
            Assert.Equal(rpc.IsServerStreaming ? MethodType.ServerStreaming : MethodType.Unary, type);
            Assert.False(rpc.IsClientStreaming);
            Assert.Contains($"/{service.FullName}/{rpc.Name}", registry.MethodPaths);
            var clientMethod = rpc.IsServerStreaming ? rpc.Name : rpc.Name + "Async";
            Assert.True(typeof(BoardClient).GetMethods().Any(m => m.Name == clientMethod && m.GetParameters().FirstOrDefault()?.ParameterType == rpc.InputType.ClrType),
                $"BoardClient lacks {clientMethod}({rpc.InputType.ClrType.Name})");
        }

        Assert.Equal(service.Methods.Count, entries.Count);
        Assert.Equal(service.Methods.Count, registry.MethodPaths.Count);
    }

    [Fact]
    public void DomainEnums_MirrorTheProtoEnums_NumberForName()
    {
        static void Same<TDomain>(Google.Protobuf.Reflection.EnumDescriptor proto, string prefix)
            where TDomain : struct, System.Enum
        {
            foreach (var value in System.Enum.GetValues<TDomain>())
            {
                var number = Convert.ToInt32(value, System.Globalization.CultureInfo.InvariantCulture);
                var protoName = proto.FindValueByNumber(number)?.Name;
                var expected = prefix + string.Concat(value.ToString().Select((c, i) => i > 0 && char.IsUpper(c) ? "_" + c : char.ToUpperInvariant(c).ToString()));
                Assert.Equal(expected, protoName);
            }

            Assert.Equal(proto.Values.Count - 1, System.Enum.GetValues<TDomain>().Length);
        }

        Same<Core.Model.TaskState>(TaskReflection.Descriptor.EnumTypes.Single(e => e.Name == "TaskState"), "TASK_STATE_");
        Same<Core.Model.WorkflowStatus>(WorkflowReflection.Descriptor.EnumTypes.Single(e => e.Name == "WorkflowStatus"), "WORKFLOW_STATUS_");
        Same<Core.Model.EventKind>(EventReflection.Descriptor.EnumTypes.Single(e => e.Name == "EventKind"), "EVENT_KIND_");
        Same<Core.BoardError>(ErrorReflection.Descriptor.EnumTypes.Single(e => e.Name == "ErrorReason"), "ERROR_REASON_");
    }

    [Fact]
    public async Task EveryRpc_WorksOverTheWire()
    {
        var created = await Client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "tour", Goal = "write a report", Labels = { ["team"] = "docs" } }).Within();
        Assert.True(created.Created);
        Assert.Equal(1, created.Header.Revision);
        Assert.Equal(WorkflowStatus.Active, created.Workflow.Status);

        var posted = await Client.PostTasksAsync(new PostTasksRequest
        {
            WorkflowId = "tour",
            Tasks =
            {
                new TaskSpec { Id = "research", Payload = ByteString.CopyFromUtf8("{\"topic\":\"x\"}"), ContentType = "application/json", Priority = 5 },
                new TaskSpec { Id = "draft", DependsOn = { "research" }, RetryPolicy = new RetryPolicy { InitialBackoff = Duration.FromTimeSpan(TimeSpan.Zero) } },
            },
        }).Within();
        Assert.Equal([TaskState.Ready, TaskState.Pending], posted.Tasks.Select(t => t.State));

        var listed = await Client.ListTasksAsync(new ListTasksRequest { WorkflowId = "tour", State = TaskState.Pending }).Within();
        Assert.Equal(["draft"], listed.Tasks.Select(t => t.Id));

        var claim = await Client.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "tour", WorkerId = "agent-1", LeaseDuration = Duration.FromTimeSpan(TimeSpan.FromSeconds(60)) }).Within();
        Assert.Equal("research", claim.Task.Id);
        Assert.Equal(claim.Task.FencingToken, claim.FencingToken);
        Assert.Equal("{\"topic\":\"x\"}", claim.Task.Payload.ToStringUtf8());

        var renewed = await Client.RenewLeaseAsync(new RenewLeaseRequest { WorkflowId = "tour", TaskId = "research", FencingToken = claim.FencingToken }).Within();
        Assert.True(renewed.LeaseExpireTime.ToDateTimeOffset() > DateTimeOffset.UtcNow.AddSeconds(50));
        var checkpoint = await Client.CheckpointAsync(new CheckpointRequest { WorkflowId = "tour", TaskId = "research", FencingToken = claim.FencingToken, Checkpoint = ByteString.CopyFromUtf8("step 1") }).Within();
        Assert.NotNull(checkpoint.CheckpointTime);
        var completed = await Client.CompleteTaskAsync(new CompleteTaskRequest { WorkflowId = "tour", TaskId = "research", FencingToken = claim.FencingToken, Result = ByteString.CopyFromUtf8("found it"), ResultContentType = "text/plain" }).Within();
        Assert.Equal(["draft"], completed.ReadyDependents);

        var draft = await Client.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "tour", TaskId = "draft", WorkerId = "agent-2" }).Within();
        var released = await Client.ReleaseTaskAsync(new ReleaseTaskRequest { WorkflowId = "tour", TaskId = "draft", FencingToken = draft.FencingToken }).Within();
        Assert.Equal(TaskState.Ready, released.Task.State);
        draft = await Client.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "tour", WorkerId = "agent-2" }).Within();
        var failed = await Client.FailTaskAsync(new FailTaskRequest { WorkflowId = "tour", TaskId = "draft", FencingToken = draft.FencingToken, ErrorMessage = "timeout", ErrorDetails = ByteString.CopyFromUtf8("{}") }).Within();
        Assert.True(failed.WillRetry);
        Assert.Equal(TaskState.Ready, failed.Task.State);
        Assert.Equal("timeout", failed.Task.LastError.Message);

        var got = await Client.GetTaskAsync(new GetTaskRequest { WorkflowId = "tour", TaskId = "research" }).Within();
        Assert.Equal("found it", got.Task.Result.ToStringUtf8());
        Assert.Equal("step 1", got.Task.Checkpoint.ToStringUtf8());

        var note = await Client.PutNoteAsync(new PutNoteRequest { WorkflowId = "tour", Key = "outline", Value = ByteString.CopyFromUtf8("1. intro"), ExpectedVersion = 0, Writer = "planner", Ttl = Duration.FromTimeSpan(TimeSpan.FromHours(1)) }).Within();
        Assert.Equal(1, note.Note.Version);
        Assert.NotNull(note.Note.ExpireTime);
        Assert.Equal("1. intro", (await Client.GetNoteAsync(new GetNoteRequest { WorkflowId = "tour", Key = "outline" }).Within()).Note.Value.ToStringUtf8());
        Assert.Single((await Client.ListNotesAsync(new ListNotesRequest { WorkflowId = "tour", KeyPrefix = "out" }).Within()).Notes);
        await Client.DeleteNoteAsync(new DeleteNoteRequest { WorkflowId = "tour", Key = "outline", ExpectedVersion = 1 }).Within();

        var cancelled = await Client.CancelTaskAsync(new CancelTaskRequest { WorkflowId = "tour", TaskId = "draft", Reason = "scope cut" }).Within();
        Assert.Equal("scope cut", cancelled.Task.EndReason);

        var updated = await Client.UpdateWorkflowAsync(new UpdateWorkflowRequest { WorkflowId = "tour", Status = WorkflowStatus.Completed, ExpectedModRevision = created.Workflow.ModRevision, SetLabels = { ["done"] = "yes" } }).Within();
        Assert.Equal(WorkflowStatus.Completed, updated.Workflow.Status);
        var workflow = await Client.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "tour" }).Within();
        Assert.Equal(1, workflow.Workflow.TaskCounts.Completed);
        Assert.Equal(1, workflow.Workflow.TaskCounts.Cancelled);
        Assert.Equal(workflow.Header.Revision, workflow.Workflow.Revision);
        Assert.Contains((await Client.ListWorkflowsAsync(new ListWorkflowsRequest { Status = WorkflowStatus.Completed }).Within()).Workflows, w => w.Id == "tour");

        var events = new List<Event>();
        await foreach (var e in Client.WatchAsync(new WatchRequest { WorkflowId = "tour", StartRevision = 1 }).Within(workflow.Header.Revision))
        {
            events.Add(e);
        }

        Assert.Equal(Enumerable.Range(1, (int)workflow.Header.Revision).Select(i => (long)i), events.Select(e => e.Revision));

        var markdown = await Client.ExportWorkflowAsync(new ExportWorkflowRequest { WorkflowId = "tour" }).Within();
        Assert.Equal("text/markdown", markdown.ContentType);
        Assert.Contains("# Workflow `tour`", markdown.Content, StringComparison.Ordinal);
        Assert.Contains("found it", markdown.Content, StringComparison.Ordinal);
        var json = await Client.ExportWorkflowAsync(new ExportWorkflowRequest { WorkflowId = "tour", Format = ExportFormat.Json }).Within();
        var exported = JsonParser.Default.Parse<ExportedWorkflow>(json.Content);
        Assert.Equal(["draft", "research"], exported.Tasks.Select(t => t.Id));
        Assert.Equal(workflow.Header.Revision, exported.Events.Count);

        await Client.DeleteWorkflowAsync(new DeleteWorkflowRequest { WorkflowId = "tour" }).Within();
        var gone = await Assert.ThrowsAsync<BoardRpcException>(() => Client.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "tour" }).Within());
        Assert.Equal(StatusCode.NotFound, gone.StatusCode);
    }

    [Fact]
    public async Task ClaimRace_FiftyClientsOnTheirOwnConnections_ExactlyOneWins_LosersGetAClearStatus()
    {
        await Client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "race" }).Within();
        await Client.PostTasksAsync(new PostTasksRequest { WorkflowId = "race", Tasks = { new TaskSpec { Id = "prize" } } }).Within();
        var clients = Enumerable.Range(0, 50).Select(_ => _harness.NewClient()).ToArray();
        try
        {
            using var start = new SemaphoreSlim(0);
            var attempts = clients.Select(async (c, i) =>
            {
                await start.WaitAsync();
                try
                {
                    var won = await c.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "race", TaskId = "prize", WorkerId = $"agent-{i}" });
                    return (Winner: won.Task.Owner, Token: won.FencingToken, Error: (BoardRpcException?)null);
                }
                catch (BoardRpcException ex)
                {
                    return (Winner: (string?)null, Token: 0L, Error: ex);
                }
            }).ToArray();
            start.Release(50);
            var outcomes = await Task.WhenAll(attempts).Within();

            var winner = Assert.Single(outcomes, o => o.Winner is not null);
            Assert.All(outcomes.Where(o => o.Winner is null), o =>
            {
                Assert.Equal(StatusCode.FailedPrecondition, o.Error!.StatusCode);
                Assert.Equal(ErrorReason.TaskAlreadyClaimed, o.Error.Reason);
                Assert.Equal(winner.Winner, o.Error.Metadata["owner"]);
            });
            var task = await Client.GetTaskAsync(new GetTaskRequest { WorkflowId = "race", TaskId = "prize" }).Within();
            Assert.Equal(winner.Winner, task.Task.Owner);
            Assert.Equal(winner.Token, task.Task.FencingToken);
        }
        finally
        {
            foreach (var c in clients)
            {
                c.Dispose();
            }
        }
    }

    [Fact]
    public async Task Watch_ResumesWithoutGapsOrDuplicates_WhenTheStreamIsCutRepeatedly()
    {
        await Client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "cuts" }).Within();
        var writes = Task.Run(async () =>
        {
            for (var i = 0; i < 60; i++)
            {
                await Client.PutNoteAsync(new PutNoteRequest { WorkflowId = "cuts", Key = $"n{i % 7}", Value = ByteString.CopyFromUtf8(i.ToString(System.Globalization.CultureInfo.InvariantCulture)) });
            }
        });

        // Each stream gets a short deadline, so the resume path runs many times while writes go on.
        var resume = new WatchResume(1);
        var delivered = new List<long>();
        var cuts = 0;
        using var giveUp = new CancellationTokenSource(TestTimeouts.Default);
        while (delivered.Count < 61)
        {
            // A writer that failed never brings the 61st revision: stop with its error, not a hang.
            if (writes.IsFaulted)
            {
                await writes;
            }

            giveUp.Token.ThrowIfCancellationRequested();
            await using var call = Client.Watch(new WatchRequest { WorkflowId = "cuts", StartRevision = resume.NextStart }, new CallOptions(Deadline: DateTimeOffset.UtcNow.AddMilliseconds(150)));
            try
            {
                await foreach (var message in call.ReadAllAsync())
                {
                    if (resume.Accept(message) is { } e)
                    {
                        delivered.Add(e.Revision);
                    }
                }
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.DeadlineExceeded)
            {
                cuts++;
            }
        }

        await writes.Within();
        Assert.Equal(Enumerable.Range(1, 61).Select(i => (long)i), delivered);
        Assert.True(cuts > 0);
    }

    [Fact]
    public async Task CompleteTask_WithClaimNext_ReturnsTheNextClaim_AndRefusesABadLeaseWithoutCompleting()
    {
        await Client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "chain" }).Within();
        await Client.PostTasksAsync(new PostTasksRequest { WorkflowId = "chain", Tasks = { new TaskSpec { Id = "a", Priority = 2 }, new TaskSpec { Id = "b", Priority = 1 } } }).Within();
        var a = await Client.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "chain", WorkerId = "agent" }).Within();
        Assert.Equal("a", a.Task.Id);

        var bad = await Assert.ThrowsAsync<BoardRpcException>(() => Client.CompleteTaskAsync(new CompleteTaskRequest
        {
            WorkflowId = "chain", TaskId = "a", FencingToken = a.FencingToken,
            ClaimNext = new ClaimNext { LeaseDuration = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(500)) },
        }).Within());
        Assert.Equal(StatusCode.InvalidArgument, bad.StatusCode);
        Assert.Equal(TaskState.Claimed, (await Client.GetTaskAsync(new GetTaskRequest { WorkflowId = "chain", TaskId = "a" }).Within()).Task.State);

        var done = await Client.CompleteTaskAsync(new CompleteTaskRequest
        {
            WorkflowId = "chain", TaskId = "a", FencingToken = a.FencingToken,
            ClaimNext = new ClaimNext { LeaseDuration = Duration.FromTimeSpan(TimeSpan.FromSeconds(45)) },
        }).Within();
        Assert.Equal(TaskState.Completed, done.Task.State);
        Assert.Equal(("b", TaskState.Claimed, "agent"), (done.NextTask.Id, done.NextTask.State, done.NextTask.Owner));
        Assert.Equal(done.NextTask.FencingToken, done.NextFencingToken);
        var b = (await Client.GetTaskAsync(new GetTaskRequest { WorkflowId = "chain", TaskId = "b" }).Within()).Task;
        Assert.Equal((TaskState.Claimed, done.NextFencingToken), (b.State, b.FencingToken));

        var last = await Client.CompleteTaskAsync(new CompleteTaskRequest { WorkflowId = "chain", TaskId = "b", FencingToken = done.NextFencingToken, ClaimNext = new ClaimNext() }).Within();
        Assert.Null(last.NextTask);
        Assert.Equal(0, last.NextFencingToken);
    }

    /// <summary>
    /// A BoardWorker loop finishes every task, each completion claiming the next one in the same transaction:
    /// the claim's event carries the completion's timestamp (one transaction, one clock reading).
    /// </summary>
    [Fact]
    public async Task Worker_CompletesEveryTask_EachCompletionClaimingTheNext()
    {
        await Client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "loop" }).Within();
        var post = new PostTasksRequest { WorkflowId = "loop" };
        post.Tasks.Add(Enumerable.Range(0, 10).Select(i => new TaskSpec { Id = $"t{i}", Priority = 10 - i }));
        await Client.PostTasksAsync(post).Within();

        using var stop = new CancellationTokenSource();
        var worker = Client.CreateWorker(new BoardWorkerOptions { WorkflowId = "loop", WorkerId = "looper", ClaimWait = TimeSpan.FromSeconds(1) });
        var seen = new List<string>();
        var running = worker.RunAsync(ctx =>
        {
            seen.Add(ctx.Task.Id);
            return Task.FromResult(TaskOutcome.Text("done " + ctx.Task.Id));
        }, stop.Token);
        await TestTimeouts.Eventually(async () =>
            (await Client.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "loop" })).Workflow.TaskCounts.Completed == 10, "every task to be completed");
        await stop.CancelAsync();
        await running.Within();

        Assert.Equal(Enumerable.Range(0, 10).Select(i => $"t{i}"), seen);
        var events = await Client.WatchAsync(new WatchRequest { WorkflowId = "loop", StartRevision = 1 }).Within(1 + 10 + 10 + 10).ToListAsync();
        var tasks = events.Where(e => e.Kind is EventKind.TaskCompleted or EventKind.TaskClaimed).ToList();
        for (var i = 1; i < tasks.Count - 1; i += 2)
        {
            // Completed t(k), then claimed t(k+1) at the next revision with the same timestamp.
            Assert.Equal((EventKind.TaskCompleted, EventKind.TaskClaimed), (tasks[i].Kind, tasks[i + 1].Kind));
            Assert.Equal(tasks[i].Revision + 1, tasks[i + 1].Revision);
            Assert.Equal(tasks[i].Time, tasks[i + 1].Time);
        }
    }

    [Fact]
    public async Task ClaimWithWait_ReturnsEmptyJustBeforeTheCallersDeadline_RatherThanFailing()
    {
        await Client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "idle" }).Within();
        // The client's clock stands still, so its own deadline timer never fires: what is checked is that the
        // server, from grpc-timeout alone, answers "no task" with OK rather than letting DEADLINE_EXCEEDED happen.
        var frozen = new ManualTimeProvider(DateTimeOffset.UtcNow);
        using var client = _harness.NewClient(new BoardClientOptions { Channel = new GrpcChannelOptions { TimeProvider = frozen } });
        var started = DateTimeOffset.UtcNow;
        var response = await client.ClaimTaskAsync(
            new ClaimTaskRequest { WorkflowId = "idle", WorkerId = "w", Wait = Duration.FromTimeSpan(TimeSpan.FromSeconds(30)) },
            new CallOptions(Deadline: frozen.GetUtcNow().AddSeconds(5))).Within();
        Assert.Null(response.Task);
        // It waited until a fifth of the 5 s was left (1 s), not less: the wait is cut short only by that margin.
        Assert.True(DateTimeOffset.UtcNow - started >= TimeSpan.FromSeconds(3.5), $"answered after {DateTimeOffset.UtcNow - started}");
    }
}

internal static class AsyncEnumerableTestExtensions
{
    /// <summary>The first <paramref name="count"/> items, failing if they do not arrive in time.</summary>
    public static async IAsyncEnumerable<T> Within<T>(this IAsyncEnumerable<T> source, long count)
    {
        using var cts = new CancellationTokenSource(TestTimeouts.Default);
        var n = 0L;
        await foreach (var item in source.WithCancellation(cts.Token))
        {
            yield return item;
            if (++n >= count)
            {
                yield break;
            }
        }
    }
}
