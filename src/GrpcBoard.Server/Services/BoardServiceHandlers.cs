using GrpcBoard.Api;
using GrpcBoard.Api.V1;
using Task = System.Threading.Tasks.Task;
using GrpcBoard.Core;
using GrpcBoard.Core.Watch;
using GrpcBoard.Server.Mapping;
using GrpcBoard.Wire;
using GrpcBoard.Wire.Server;
using static GrpcBoard.Server.Mapping.ProtoMapper;

namespace GrpcBoard.Server.Services;

/// <summary>
/// grpcboard.v1.BoardService. Every handler does the same three things: map the request to a domain
/// call, make the call, map the result (errors go through <see cref="ErrorTable"/> in the wire layer).
/// No rule lives here.
/// </summary>
public sealed class BoardServiceHandlers(Coordinator board, TimeProvider time, CancellationToken stopping, CallForwarder? forwarder = null)
{
    /// <summary>
    /// How much earlier than the caller's deadline a waiting claim gives up, so that "no task" reaches the
    /// caller before its deadline even on a busy machine: a fifth of the time left, at least 100 ms, at most
    /// 1 s.
    /// </summary>
    private static TimeSpan DeadlineMargin(TimeSpan left) =>
        TimeSpan.FromTicks(Math.Clamp(left.Ticks / 5, TimeSpan.TicksPerMillisecond * 100, TimeSpan.TicksPerSecond));

    /// <summary>
    /// Every unary call names its workflow, so that with a <see cref="CallForwarder"/> it can be served by the
    /// instance that serves that workflow best. Watch stays here: this instance's watchers get every change
    /// through the store whichever instance made it.
    /// </summary>
    public GrpcServiceRegistry Register(GrpcServiceRegistry registry)
    {
        Unary(registry, BoardMethods.CreateWorkflow, r => r.WorkflowId, CreateWorkflow);
        registry.AddUnary(BoardMethods.ListWorkflows, ListWorkflows);
        Unary(registry, BoardMethods.GetWorkflow, r => r.WorkflowId, GetWorkflow);
        Unary(registry, BoardMethods.UpdateWorkflow, r => r.WorkflowId, UpdateWorkflow);
        Unary(registry, BoardMethods.DeleteWorkflow, r => r.WorkflowId, DeleteWorkflow);
        Unary(registry, BoardMethods.PostTasks, r => r.WorkflowId, PostTasks);
        Unary(registry, BoardMethods.GetTask, r => r.WorkflowId, GetTask);
        Unary(registry, BoardMethods.ListTasks, r => r.WorkflowId, ListTasks);
        Unary(registry, BoardMethods.CancelTask, r => r.WorkflowId, CancelTask);
        Unary(registry, BoardMethods.ClaimTask, r => r.WorkflowId, ClaimTask);
        Unary(registry, BoardMethods.RenewLease, r => r.WorkflowId, RenewLease);
        Unary(registry, BoardMethods.ReleaseTask, r => r.WorkflowId, ReleaseTask);
        Unary(registry, BoardMethods.Checkpoint, r => r.WorkflowId, Checkpoint);
        Unary(registry, BoardMethods.CompleteTask, r => r.WorkflowId, CompleteTask);
        Unary(registry, BoardMethods.FailTask, r => r.WorkflowId, FailTask);
        Unary(registry, BoardMethods.PutNote, r => r.WorkflowId, PutNote);
        Unary(registry, BoardMethods.GetNote, r => r.WorkflowId, GetNote);
        Unary(registry, BoardMethods.ListNotes, r => r.WorkflowId, ListNotes);
        Unary(registry, BoardMethods.DeleteNote, r => r.WorkflowId, DeleteNote);
        Unary(registry, BoardMethods.ExportWorkflow, r => r.WorkflowId, ExportWorkflow);
        registry.AddServerStreaming(BoardMethods.Watch, Watch);
        return registry;
    }

    /// <summary>A unary method on one workflow: with a <see cref="CallForwarder"/>, wrapped so it can be served elsewhere.</summary>
    private void Unary<TRequest, TResponse>(
        GrpcServiceRegistry registry, Method<TRequest, TResponse> method, Func<TRequest, string> workflowOf, UnaryServerMethod<TRequest, TResponse> handler) =>
        registry.AddUnary(method, forwarder is null ? handler : forwarder.Wrap(method, workflowOf, handler));

    public async Task<CreateWorkflowResponse> CreateWorkflow(CreateWorkflowRequest request, ServerCallContext context)
    {
        var (view, created) = await board.CreateWorkflowAsync(request.WorkflowId, request.Goal, request.Labels, context.CancellationToken);
        return new CreateWorkflowResponse { Header = Header(view.Revision), Workflow = ToProto(view), Created = created };
    }

    public async Task<GetWorkflowResponse> GetWorkflow(GetWorkflowRequest request, ServerCallContext context)
    {
        var view = await board.GetWorkflowAsync(request.WorkflowId, context.CancellationToken);
        return new GetWorkflowResponse { Header = Header(view.Revision), Workflow = ToProto(view) };
    }

    public async Task<ListWorkflowsResponse> ListWorkflows(ListWorkflowsRequest request, ServerCallContext context)
    {
        var page = await board.ListWorkflowsAsync(FromProto(request.Status, "status"), request.PageToken, request.PageSize, context.CancellationToken);
        var response = new ListWorkflowsResponse { NextPageToken = page.NextPageToken };
        response.Workflows.Add(page.Items.Select(ToProto));
        return response;
    }

    public async Task<UpdateWorkflowResponse> UpdateWorkflow(UpdateWorkflowRequest request, ServerCallContext context)
    {
        var view = await board.UpdateWorkflowAsync(new Core.Model.WorkflowUpdate
        {
            WorkflowId = request.WorkflowId,
            Goal = request.HasGoal ? request.Goal : null,
            Status = FromProto(request.Status, "status"),
            SetLabels = request.SetLabels,
            RemoveLabels = request.RemoveLabels,
            ExpectedModRevision = request.ExpectedModRevision,
        }, context.CancellationToken);
        return new UpdateWorkflowResponse { Header = Header(view.Revision), Workflow = ToProto(view) };
    }

    public async Task<DeleteWorkflowResponse> DeleteWorkflow(DeleteWorkflowRequest request, ServerCallContext context)
    {
        var revision = await board.DeleteWorkflowAsync(request.WorkflowId, context.CancellationToken);
        return new DeleteWorkflowResponse { Header = Header(revision) };
    }

    public async Task<PostTasksResponse> PostTasks(PostTasksRequest request, ServerCallContext context)
    {
        var result = await board.PostTasksAsync(request.WorkflowId, request.Tasks.Select(FromProto).ToArray(), context.CancellationToken);
        var response = new PostTasksResponse { Header = Header(result.Revision) };
        response.Tasks.Add(result.Tasks.Select(t => ToProto(request.WorkflowId, t)));
        response.ExistingTaskIds.Add(result.ExistingIds);
        return response;
    }

    public async Task<GetTaskResponse> GetTask(GetTaskRequest request, ServerCallContext context)
    {
        var result = await board.GetTaskAsync(request.WorkflowId, request.TaskId, context.CancellationToken);
        return new GetTaskResponse { Header = Header(result.Revision), Task = ToProto(request.WorkflowId, result.Task) };
    }

    public async Task<ListTasksResponse> ListTasks(ListTasksRequest request, ServerCallContext context)
    {
        var page = await board.ListTasksAsync(request.WorkflowId, FromProto(request.State, "state"), request.PageToken, request.PageSize, context.CancellationToken);
        var response = new ListTasksResponse { Header = Header(page.Revision), NextPageToken = page.NextPageToken };
        response.Tasks.Add(page.Items.Select(t => ToProto(request.WorkflowId, t, request.OmitBodies)));
        return response;
    }

    public async Task<CancelTaskResponse> CancelTask(CancelTaskRequest request, ServerCallContext context)
    {
        var result = await board.CancelTaskAsync(request.WorkflowId, request.TaskId, request.Reason, context.CancellationToken);
        var response = new CancelTaskResponse { Header = Header(result.Revision), Task = ToProto(request.WorkflowId, result.Task) };
        response.CancelledDependents.Add(result.CancelledDependents);
        return response;
    }

    public async Task<ClaimTaskResponse> ClaimTask(ClaimTaskRequest request, ServerCallContext context)
    {
        var wait = ToTimeSpan(request.Wait, "wait");
        if (wait is { } w && context.Deadline != DateTimeOffset.MaxValue)
        {
            // Answer "nothing ready" just before the caller's deadline rather than DEADLINE_EXCEEDED after it.
            var left = context.Deadline - time.GetUtcNow();
            var budget = left - DeadlineMargin(left);
            wait = budget < w ? (budget > TimeSpan.Zero ? budget : TimeSpan.Zero) : w;
        }

        var command = new Core.Model.ClaimCommand
        {
            WorkflowId = request.WorkflowId,
            TaskId = request.TaskId,
            WorkerId = request.WorkerId,
            Skills = request.Skills,
            Lease = ToTimeSpan(request.LeaseDuration, "lease_duration"),
            Wait = wait,
        };

        // Only a claim that waits can outlast the host's shutdown timeout, so only it is cut short by shutdown
        // (UNAVAILABLE). One that does not wait ends when its transaction does, as every other call; linking its token
        // cost each claim a linked CancellationTokenSource and two registrations, about 0.4 KiB.
        Core.Model.ClaimResult result;
        if (wait is null)
        {
            result = await board.ClaimAsync(command, context.CancellationToken);
        }
        else
        {
            using var call = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, stopping);
            result = await UntilShutdown(board.ClaimAsync(command, call.Token));
        }

        var response = new ClaimTaskResponse { Header = Header(result.Revision) };
        if (result.Task is { } task)
        {
            response.Task = ToProto(request.WorkflowId, task);
            response.FencingToken = task.FencingToken;
            response.LeaseExpireTime = response.Task.LeaseExpireTime;
        }

        return response;
    }

    public async Task<RenewLeaseResponse> RenewLease(RenewLeaseRequest request, ServerCallContext context)
    {
        var result = await board.RenewLeaseAsync(request.WorkflowId, request.TaskId, request.FencingToken, ToTimeSpan(request.LeaseDuration, "lease_duration"), context.CancellationToken);
        return new RenewLeaseResponse { Header = Header(result.Revision), LeaseExpireTime = ToProto(request.WorkflowId, result.Task, omitBodies: true).LeaseExpireTime };
    }

    public async Task<ReleaseTaskResponse> ReleaseTask(ReleaseTaskRequest request, ServerCallContext context)
    {
        var result = await board.ReleaseTaskAsync(request.WorkflowId, request.TaskId, request.FencingToken, context.CancellationToken);
        return new ReleaseTaskResponse { Header = Header(result.Revision), Task = ToProto(request.WorkflowId, result.Task) };
    }

    public async Task<CheckpointResponse> Checkpoint(CheckpointRequest request, ServerCallContext context)
    {
        var result = await board.CheckpointAsync(request.WorkflowId, request.TaskId, request.FencingToken, request.Checkpoint.Memory, context.CancellationToken);
        return new CheckpointResponse { Header = Header(result.Revision), CheckpointTime = ToProto(request.WorkflowId, result.Task, omitBodies: true).CheckpointTime };
    }

    public async Task<CompleteTaskResponse> CompleteTask(CompleteTaskRequest request, ServerCallContext context)
    {
        var next = request.ClaimNext is { } claimNext
            ? new Core.Model.NextClaim(claimNext.Skills, ToTimeSpan(claimNext.LeaseDuration, "claim_next.lease_duration"))
            : null;
        var result = await board.CompleteTaskAsync(request.WorkflowId, request.TaskId, request.FencingToken, request.Result.Memory, request.ResultContentType, next, context.CancellationToken);
        var response = new CompleteTaskResponse
        {
            Header = Header(result.Revision),
            Task = ToProto(request.WorkflowId, result.Task),
            AlreadyCompleted = result.AlreadyCompleted,
        };
        response.ReadyDependents.Add(result.ReadyDependents);
        if (result.Next is { } nextTask)
        {
            response.NextTask = ToProto(request.WorkflowId, nextTask);
            response.NextFencingToken = nextTask.FencingToken;
        }

        return response;
    }

    public async Task<FailTaskResponse> FailTask(FailTaskRequest request, ServerCallContext context)
    {
        var result = await board.FailTaskAsync(request.WorkflowId, request.TaskId, request.FencingToken, request.ErrorMessage, request.ErrorDetails.Memory, request.NonRetryable, context.CancellationToken);
        var response = new FailTaskResponse { Header = Header(result.Revision), Task = ToProto(request.WorkflowId, result.Task), WillRetry = result.WillRetry };
        response.CancelledDependents.Add(result.CancelledDependents);
        return response;
    }

    public async Task<PutNoteResponse> PutNote(PutNoteRequest request, ServerCallContext context)
    {
        var result = await board.PutNoteAsync(new Core.Model.NotePutCommand
        {
            WorkflowId = request.WorkflowId,
            Key = request.Key,
            Value = request.Value.Memory,
            ContentType = request.ContentType,
            ExpectedVersion = request.HasExpectedVersion ? request.ExpectedVersion : null,
            Ttl = ToTimeSpan(request.Ttl, "ttl"),
            Writer = request.Writer,
        }, context.CancellationToken);
        return new PutNoteResponse { Header = Header(result.Revision), Note = ToProto(request.WorkflowId, result.Note) };
    }

    public async Task<GetNoteResponse> GetNote(GetNoteRequest request, ServerCallContext context)
    {
        var result = await board.GetNoteAsync(request.WorkflowId, request.Key, context.CancellationToken);
        return new GetNoteResponse { Header = Header(result.Revision), Note = ToProto(request.WorkflowId, result.Note) };
    }

    public async Task<ListNotesResponse> ListNotes(ListNotesRequest request, ServerCallContext context)
    {
        var page = await board.ListNotesAsync(request.WorkflowId, request.KeyPrefix, request.PageToken, request.PageSize, request.KeysOnly, context.CancellationToken);
        var response = new ListNotesResponse { Header = Header(page.Revision), NextPageToken = page.NextPageToken };
        response.Notes.Add(page.Items.Select(n => ToProto(request.WorkflowId, n)));
        return response;
    }

    public async Task<DeleteNoteResponse> DeleteNote(DeleteNoteRequest request, ServerCallContext context)
    {
        var revision = await board.DeleteNoteAsync(request.WorkflowId, request.Key, request.HasExpectedVersion ? request.ExpectedVersion : null, request.Writer, context.CancellationToken);
        return new DeleteNoteResponse { Header = Header(revision) };
    }

    public async Task Watch(WatchRequest request, IServerStreamWriter<WatchResponse> responses, ServerCallContext context)
    {
        var filter = new WatchFilter(
            request.Kinds.Count == 0 ? null : request.Kinds.Where(k => k != EventKind.Unspecified).Select(FromProto).ToHashSet(),
            request.TaskIds.Count == 0 ? null : request.TaskIds.ToHashSet(StringComparer.Ordinal),
            request.NoteKeyPrefix);
        using var call = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, stopping);
        var stream = board.WatchAsync(request.WorkflowId, request.StartRevision, filter, ToTimeSpan(request.ProgressInterval, "progress_interval"), call.Token);
        try
        {
            await foreach (var item in stream.WithCancellation(call.Token))
            {
                var message = item switch
                {
                    WatchItem.Change change => new WatchResponse { Event = ToProto(change.Event) },
                    WatchItem.Progress progress => new WatchResponse { Progress = new WatchProgress { Revision = progress.Revision, CaughtUp = progress.CaughtUp } },
                    _ => throw new InvalidOperationException("Unknown watch item."),
                };
                await responses.WriteAsync(message, call.Token);
            }
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
            throw ShuttingDown();
        }
    }

    /// <summary>A call cut short by shutdown ends UNAVAILABLE: retry (or resume the watch) on another instance.</summary>
    private async Task<T> UntilShutdown<T>(Task<T> call)
    {
        try
        {
            return await call;
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
            throw ShuttingDown();
        }
    }

    private static RpcException ShuttingDown() =>
        new(StatusCode.Unavailable, "The server is shutting down.");

    public async Task<ExportWorkflowResponse> ExportWorkflow(ExportWorkflowRequest request, ServerCallContext context)
    {
        var snapshot = await board.ExportAsync(request.WorkflowId, request.HistoryLimit, context.CancellationToken);
        var (content, contentType) = request.Format == ExportFormat.Json
            ? (WorkflowExport.ToJson(snapshot, time.GetUtcNow()), "application/json")
            : (WorkflowExport.ToMarkdown(snapshot, time.GetUtcNow()), "text/markdown");
        return new ExportWorkflowResponse { Header = Header(snapshot.Workflow.Revision), Content = content, ContentType = contentType };
    }

    private static ResponseHeader Header(long revision) => new() { Revision = revision };
}
