using System.Net;
using System.Net.Http.Headers;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using GrpcBoard.Api;
using GrpcBoard.Api.V1;
using GrpcBoard.Client;
using GrpcBoard.Core.Events;
using GrpcBoard.Server.Hosting;
using GrpcBoard.Server.Protocol.Health;
using GrpcBoard.Store.Embedded;
using GrpcBoard.Testing;
using GrpcBoard.Wire;
using GrpcBoard.Wire.Client;
using Xunit;
using Task = System.Threading.Tasks.Task;

namespace GrpcBoard.Server.Tests;

/// <summary>Bad input gets a clear status and loses nothing; the server keeps serving after each.</summary>
public sealed class BadInputTests : IAsyncLifetime
{
    private ServerHarness _harness = null!;

    private BoardClient Client => _harness.Client;

    public async Task InitializeAsync()
    {
        _harness = await ServerHarness.StartAsync(new ServerSettings { Port = 0, Store = "memory", MaxMessageBytes = 2 * 1024 * 1024 });
        await Client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "ok" });
    }

    public async Task DisposeAsync()
    {
        // After every kind of bad input, the server still answers a normal call.
        Assert.Equal("ok", (await Client.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "ok" }).Within()).Workflow.Id);
        await _harness.DisposeAsync();
    }

    private static async Task<BoardRpcException> Refused(Func<Task> call, StatusCode code, ErrorReason? reason = null)
    {
        var ex = await Assert.ThrowsAsync<BoardRpcException>(() => call().Within());
        Assert.Equal(code, ex.StatusCode);
        if (reason is { } r)
        {
            Assert.Equal(r, ex.Reason);
            Assert.False(string.IsNullOrWhiteSpace(ex.Message));
        }

        return ex;
    }

    [Fact]
    public async Task UnknownWorkflow_IsNotFound_WithTheId()
    {
        var ex = await Refused(() => Client.PostTasksAsync(new PostTasksRequest { WorkflowId = "nope", Tasks = { new TaskSpec { Id = "a" } } }), StatusCode.NotFound, ErrorReason.WorkflowNotFound);
        Assert.Equal("nope", ex.Metadata["workflow_id"]);
        await Refused(() => Client.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "nope", WorkerId = "w" }), StatusCode.NotFound, ErrorReason.WorkflowNotFound);
        await Refused(() => Client.GetTaskAsync(new GetTaskRequest { WorkflowId = "ok", TaskId = "missing" }), StatusCode.NotFound, ErrorReason.TaskNotFound);
    }

    [Fact]
    public async Task EmptyOrMalformedIds_AreInvalidArgument_NamingTheField()
    {
        var ex = await Refused(() => Client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "" }), StatusCode.InvalidArgument, ErrorReason.InvalidArgument);
        Assert.Equal("workflow_id", ex.Metadata["field"]);
        ex = await Refused(() => Client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "has space" }), StatusCode.InvalidArgument, ErrorReason.InvalidArgument);
        Assert.Equal("workflow_id", ex.Metadata["field"]);
        ex = await Refused(() => Client.PostTasksAsync(new PostTasksRequest { WorkflowId = "ok", Tasks = { new TaskSpec { Id = "" } } }), StatusCode.InvalidArgument, ErrorReason.InvalidArgument);
        Assert.Equal("tasks.id", ex.Metadata["field"]);
        ex = await Refused(() => Client.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "ok" }), StatusCode.InvalidArgument, ErrorReason.InvalidArgument);
        Assert.Equal("worker_id", ex.Metadata["field"]);
        await Refused(() => Client.PostTasksAsync(new PostTasksRequest { WorkflowId = "ok" }), StatusCode.InvalidArgument, ErrorReason.InvalidArgument);
        await Refused(() => Client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = new string('x', 129) }), StatusCode.InvalidArgument, ErrorReason.InvalidArgument);
    }

    [Fact]
    public async Task OutOfRangeValues_AreInvalidArgument()
    {
        await Refused(() => Client.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "ok", WorkerId = "w", LeaseDuration = Duration.FromTimeSpan(TimeSpan.FromDays(2)) }), StatusCode.InvalidArgument, ErrorReason.InvalidArgument);
        await Refused(() => Client.ClaimTaskAsync(new ClaimTaskRequest { WorkflowId = "ok", WorkerId = "w", LeaseDuration = new Duration { Seconds = -5 } }), StatusCode.InvalidArgument, ErrorReason.InvalidArgument);
        await Refused(() => Client.ListTasksAsync(new ListTasksRequest { WorkflowId = "ok", PageSize = 5000 }), StatusCode.InvalidArgument, ErrorReason.InvalidArgument);
        await Refused(() => Client.ListTasksAsync(new ListTasksRequest { WorkflowId = "ok", PageToken = "garbage!" }), StatusCode.InvalidArgument, ErrorReason.InvalidPageToken);
        await Refused(() => Client.ListTasksAsync(new ListTasksRequest { WorkflowId = "ok", State = (TaskState)42 }), StatusCode.InvalidArgument, ErrorReason.InvalidArgument);
        await Refused(() => Client.PostTasksAsync(new PostTasksRequest { WorkflowId = "ok", Tasks = { new TaskSpec { Id = "r", RetryPolicy = new RetryPolicy { BackoffCoefficient = 50 } } } }), StatusCode.InvalidArgument, ErrorReason.InvalidArgument);
        var tooMany = new PostTasksRequest { WorkflowId = "ok" };
        tooMany.Tasks.Add(Enumerable.Range(0, 1001).Select(i => new TaskSpec { Id = $"t{i}" }));
        await Refused(() => Client.PostTasksAsync(tooMany), StatusCode.ResourceExhausted, ErrorReason.LimitExceeded);
        await Refused(() => Client.WatchAsync(new WatchRequest { WorkflowId = "ok", StartRevision = -1 }).GetAsyncEnumerator().MoveNextAsync().AsTask(), StatusCode.InvalidArgument, ErrorReason.InvalidArgument);
    }

    [Fact]
    public async Task OversizePayloads_AreRefused_ByTheBoardLimit_OrTheMessageLimit()
    {
        var ex = await Refused(() => Client.PostTasksAsync(new PostTasksRequest { WorkflowId = "ok", Tasks = { new TaskSpec { Id = "big", Payload = ByteString.CopyFrom(new byte[1024 * 1024 + 1]) } } }),
            StatusCode.InvalidArgument, ErrorReason.ValueTooLarge);
        Assert.Equal("tasks.payload", ex.Metadata["field"]);
        Assert.Equal("1048576", ex.Metadata["limit"]);

        // Past the server's 2 MiB message limit the wire layer refuses before parsing anything.
        await Refused(() => Client.PutNoteAsync(new PutNoteRequest { WorkflowId = "ok", Key = "huge", Value = ByteString.CopyFrom(new byte[3 * 1024 * 1024]) }), StatusCode.ResourceExhausted);
        await Refused(() => Client.GetNoteAsync(new GetNoteRequest { WorkflowId = "ok", Key = "huge" }), StatusCode.NotFound, ErrorReason.NoteNotFound);
    }

    [Fact]
    public async Task AnExpiredDeadline_IsDeadlineExceeded_AndAWatchIsCutAtItsDeadline()
    {
        await Refused(() => Client.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "ok" }, new CallOptions(Deadline: DateTimeOffset.UtcNow.AddSeconds(-1))), StatusCode.DeadlineExceeded);
        await using var call = Client.Watch(new WatchRequest { WorkflowId = "ok" }, new CallOptions(Deadline: DateTimeOffset.UtcNow.AddMilliseconds(300)));
        var ex = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            await foreach (var _ in call.ReadAllAsync())
            {
            }
        }).Within();
        Assert.Equal(StatusCode.DeadlineExceeded, ex.StatusCode);
    }

    [Fact]
    public async Task RawHttp2_MalformedFramesAndWrongContentType_GetProtocolStatuses()
    {
        using var http = new HttpClient(new SocketsHttpHandler { UseProxy = false });
        async Task<(HttpStatusCode Http, string? Grpc)> Send(byte[] body, string contentType = "application/grpc")
        {
            var request = new HttpRequestMessage(HttpMethod.Post, _harness.Address + "grpcboard.v1.BoardService/GetWorkflow")
            {
                Version = HttpVersion.Version20,
                VersionPolicy = HttpVersionPolicy.RequestVersionExact,
                Content = new ByteArrayContent(body),
            };
            request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
            request.Headers.TryAddWithoutValidation("te", "trailers");
            using var response = await http.SendAsync(request).Within();
            await response.Content.ReadAsByteArrayAsync().Within();
            var status = response.Headers.TryGetValues("grpc-status", out var h) ? h.First()
                : response.TrailingHeaders.TryGetValues("grpc-status", out var t) ? t.First() : null;
            return (response.StatusCode, status);
        }

        var valid = new GetWorkflowRequest { WorkflowId = "ok" }.ToByteArray();
        byte[] Framed(byte[] m) => [0, 0, 0, 0, (byte)m.Length, .. m];
        Assert.Equal((HttpStatusCode.OK, "0"), await Send(Framed(valid)));
        Assert.Equal((HttpStatusCode.OK, "13"), await Send([0, 0, 0]));
        Assert.Equal((HttpStatusCode.OK, "13"), await Send([0, 0, 0, 0, 10, 1, 2, 3, 4]));
        Assert.Equal((HttpStatusCode.OK, "13"), await Send([.. Framed(valid), .. Framed(valid)]));
        Assert.Equal((HttpStatusCode.OK, "13"), await Send(Framed([0xFF, 0xFF, 0xFF])));
        Assert.Equal((HttpStatusCode.OK, "13"), await Send([1, 0, 0, 0, 2, 1, 2]));
        Assert.Equal((HttpStatusCode.UnsupportedMediaType, "13"), await Send(Framed(valid), "application/json"));
    }

    [Fact]
    public async Task UnknownMethod_IsUnimplemented()
    {
        var method = new Method<GetWorkflowRequest, GetWorkflowResponse>(MethodType.Unary, "grpcboard.v1.BoardService", "NoSuchMethod",
            ProtobufMarshaller.For(GetWorkflowRequest.Parser), ProtobufMarshaller.For(GetWorkflowResponse.Parser));
        var ex = await Assert.ThrowsAsync<RpcException>(() => Client.Channel.UnaryAsync(method, new GetWorkflowRequest(), default).Within());
        Assert.Equal(StatusCode.Unimplemented, ex.StatusCode);
    }
}

/// <summary>The store failing under the server: calls fail UNAVAILABLE (retryable), health says so, recovery is automatic.</summary>
public sealed class StoreDownTests
{
    [Fact]
    public async Task WhenTheDiskFails_CallsAreUnavailable_HealthIsNotServing_AndServiceResumes()
    {
        using var data = new TempDirectory();
        var failing = false;
        await using var harness = await ServerHarness.StartAsync(new ServerSettings { Port = 0 }, new BoardServerOverrides
        {
            StoreFactory = hub => new EmbeddedStore(new EmbeddedStoreOptions
            {
                DataDirectory = data.Path,
                BeforeCommit = () =>
                {
                    if (Volatile.Read(ref failing))
                    {
                        throw new IOException("injected: I/O error");
                    }
                },
            }, hub),
        });
        var client = harness.Client;
        var health = new Method<HealthCheckRequest, HealthCheckResponse>(MethodType.Unary, "grpc.health.v1.Health", "Check",
            ProtobufMarshaller.For(HealthCheckRequest.Parser), ProtobufMarshaller.For(HealthCheckResponse.Parser));
        await client.CreateWorkflowAsync(new CreateWorkflowRequest { WorkflowId = "wf" }).Within();
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, (await client.Channel.UnaryAsync(health, new HealthCheckRequest())).Status);

        Volatile.Write(ref failing, true);
        var ex = await Assert.ThrowsAsync<BoardRpcException>(() => client.PostTasksAsync(new PostTasksRequest { WorkflowId = "wf", Tasks = { new TaskSpec { Id = "lost" } } }).Within());
        Assert.Equal(StatusCode.Unavailable, ex.StatusCode);
        Assert.Equal(ErrorReason.StoreUnavailable, ex.Reason);
        Assert.True(ex.IsTransient);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.NotServing, (await client.Channel.UnaryAsync(health, new HealthCheckRequest())).Status);

        Volatile.Write(ref failing, false);
        await TestTimeouts.Eventually(async () => (await client.Channel.UnaryAsync(health, new HealthCheckRequest())).Status == HealthCheckResponse.Types.ServingStatus.Serving, "recovery");
        await client.PostTasksAsync(new PostTasksRequest { WorkflowId = "wf", Tasks = { new TaskSpec { Id = "kept" } } }).Within();
        var tasks = await client.ListTasksAsync(new ListTasksRequest { WorkflowId = "wf" }).Within();
        Assert.Equal(["kept"], tasks.Tasks.Select(t => t.Id));
        var unknown = await Assert.ThrowsAsync<RpcException>(() => client.Channel.UnaryAsync(health, new HealthCheckRequest { Service = "nope" }).Within());
        Assert.Equal(StatusCode.NotFound, unknown.StatusCode);
    }
}
