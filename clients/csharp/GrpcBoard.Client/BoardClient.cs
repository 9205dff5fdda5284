using System.Runtime.CompilerServices;
using GrpcBoard.Api;
using GrpcBoard.Api.V1;
using GrpcBoard.Wire;
using GrpcBoard.Wire.Client;
using Task = System.Threading.Tasks.Task;

namespace GrpcBoard.Client;

/// <summary>Settings of a <see cref="BoardClient"/>.</summary>
public sealed class BoardClientOptions
{
    /// <summary>Deadline of a call that sets none (default 30 s). Watch streams have no default deadline.</summary>
    public TimeSpan DefaultTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Wire settings: message size limits, compression, a custom HTTP handler (TLS).</summary>
    public GrpcChannelOptions Channel { get; set; } = new();

    /// <summary>
    /// How long <see cref="BoardClient.WatchAsync"/> waits for any message (event or progress) before it
    /// reopens the stream. Null (the default) means 3 progress intervals: 15 s with the server's default
    /// interval, or 3 times the request's <c>progress_interval</c>. <see cref="TimeSpan.Zero"/> or
    /// <see cref="Timeout.InfiniteTimeSpan"/> turns it off. Only time spent waiting on the server counts, not
    /// time the caller spends on an event.
    /// </summary>
    public TimeSpan? WatchIdleTimeout { get; set; }
}

/// <summary>
/// A typed client for grpcboard.v1.BoardService, one method per RPC, plus <see cref="WatchAsync"/> (a watch
/// that resumes by itself) and <see cref="CreateWorker"/> (a worker loop that renews its lease). Thread-safe;
/// create one per server and share it.
/// </summary>
public sealed class BoardClient : IDisposable
{
    private readonly GrpcChannel _channel;
    private readonly bool _ownsChannel;

    /// <summary>Connects to a server, for example "http://127.0.0.1:50051" (h2c) or "https://board:443" (TLS).</summary>
    /// <param name="address">The server's address.</param>
    /// <param name="options">Client settings; null for the defaults.</param>
    public BoardClient(string address, BoardClientOptions? options = null)
    {
        Options = options ?? new BoardClientOptions();
        _channel = GrpcChannel.ForAddress(address, Options.Channel);
        _ownsChannel = true;
    }

    /// <summary>Uses an existing channel (not disposed with the client).</summary>
    /// <param name="channel">The channel to call through.</param>
    /// <param name="options">Client settings; null for the defaults.</param>
    public BoardClient(GrpcChannel channel, BoardClientOptions? options = null)
    {
        Options = options ?? new BoardClientOptions();
        _channel = channel;
    }

    /// <summary>The settings this client was created with.</summary>
    public BoardClientOptions Options { get; }

    /// <summary>The channel calls go through.</summary>
    public GrpcChannel Channel => _channel;

    /// <summary>Creates a workflow; the same id with the same goal returns the existing one.</summary>
    /// <param name="request">The request message.</param>
    /// <param name="options">Deadline, headers and cancellation; the default deadline is <see cref="BoardClientOptions.DefaultTimeout"/>.</param>
    /// <exception cref="BoardRpcException">The call failed; <see cref="BoardRpcException.Reason"/> says why.</exception>
    public Task<CreateWorkflowResponse> CreateWorkflowAsync(CreateWorkflowRequest request, CallOptions options = default) =>
        UnaryAsync(BoardMethods.CreateWorkflow, request, options);

    /// <summary>Reads a workflow with its task counts and head revision.</summary>
    /// <param name="request">The request message.</param>
    /// <param name="options">Deadline, headers and cancellation; the default deadline is <see cref="BoardClientOptions.DefaultTimeout"/>.</param>
    /// <exception cref="BoardRpcException">The call failed; <see cref="BoardRpcException.Reason"/> says why.</exception>
    public Task<GetWorkflowResponse> GetWorkflowAsync(GetWorkflowRequest request, CallOptions options = default) =>
        UnaryAsync(BoardMethods.GetWorkflow, request, options);

    /// <summary>Lists workflows ordered by id, one page at a time.</summary>
    /// <param name="request">The request message.</param>
    /// <param name="options">Deadline, headers and cancellation; the default deadline is <see cref="BoardClientOptions.DefaultTimeout"/>.</param>
    /// <exception cref="BoardRpcException">The call failed; <see cref="BoardRpcException.Reason"/> says why.</exception>
    public Task<ListWorkflowsResponse> ListWorkflowsAsync(ListWorkflowsRequest request, CallOptions options = default) =>
        UnaryAsync(BoardMethods.ListWorkflows, request, options);

    /// <summary>Changes goal, labels or status, optionally only at an expected mod_revision.</summary>
    /// <param name="request">The request message.</param>
    /// <param name="options">Deadline, headers and cancellation; the default deadline is <see cref="BoardClientOptions.DefaultTimeout"/>.</param>
    /// <exception cref="BoardRpcException">The call failed; <see cref="BoardRpcException.Reason"/> says why.</exception>
    public Task<UpdateWorkflowResponse> UpdateWorkflowAsync(UpdateWorkflowRequest request, CallOptions options = default) =>
        UnaryAsync(BoardMethods.UpdateWorkflow, request, options);

    /// <summary>Deletes a workflow with everything in it.</summary>
    /// <param name="request">The request message.</param>
    /// <param name="options">Deadline, headers and cancellation; the default deadline is <see cref="BoardClientOptions.DefaultTimeout"/>.</param>
    /// <exception cref="BoardRpcException">The call failed; <see cref="BoardRpcException.Reason"/> says why.</exception>
    public Task<DeleteWorkflowResponse> DeleteWorkflowAsync(DeleteWorkflowRequest request, CallOptions options = default) =>
        UnaryAsync(BoardMethods.DeleteWorkflow, request, options);

    /// <summary>Posts a batch of tasks atomically; idempotent per task id.</summary>
    /// <param name="request">The request message.</param>
    /// <param name="options">Deadline, headers and cancellation; the default deadline is <see cref="BoardClientOptions.DefaultTimeout"/>.</param>
    /// <exception cref="BoardRpcException">The call failed; <see cref="BoardRpcException.Reason"/> says why.</exception>
    public Task<PostTasksResponse> PostTasksAsync(PostTasksRequest request, CallOptions options = default) =>
        UnaryAsync(BoardMethods.PostTasks, request, options);

    /// <summary>Reads one task with its payload, checkpoint and result.</summary>
    /// <param name="request">The request message.</param>
    /// <param name="options">Deadline, headers and cancellation; the default deadline is <see cref="BoardClientOptions.DefaultTimeout"/>.</param>
    /// <exception cref="BoardRpcException">The call failed; <see cref="BoardRpcException.Reason"/> says why.</exception>
    public Task<GetTaskResponse> GetTaskAsync(GetTaskRequest request, CallOptions options = default) =>
        UnaryAsync(BoardMethods.GetTask, request, options);

    /// <summary>Lists tasks ordered by id, optionally in one state.</summary>
    /// <param name="request">The request message.</param>
    /// <param name="options">Deadline, headers and cancellation; the default deadline is <see cref="BoardClientOptions.DefaultTimeout"/>.</param>
    /// <exception cref="BoardRpcException">The call failed; <see cref="BoardRpcException.Reason"/> says why.</exception>
    public Task<ListTasksResponse> ListTasksAsync(ListTasksRequest request, CallOptions options = default) =>
        UnaryAsync(BoardMethods.ListTasks, request, options);

    /// <summary>Cancels an unfinished task and its pending dependents.</summary>
    /// <param name="request">The request message.</param>
    /// <param name="options">Deadline, headers and cancellation; the default deadline is <see cref="BoardClientOptions.DefaultTimeout"/>.</param>
    /// <exception cref="BoardRpcException">The call failed; <see cref="BoardRpcException.Reason"/> says why.</exception>
    public Task<CancelTaskResponse> CancelTaskAsync(CancelTaskRequest request, CallOptions options = default) =>
        UnaryAsync(BoardMethods.CancelTask, request, options);

    /// <summary>Claims a given task or the next ready one (optionally waiting); returns the lease and fencing token.</summary>
    /// <param name="request">The request message.</param>
    /// <param name="options">Deadline, headers and cancellation; the default deadline is <see cref="BoardClientOptions.DefaultTimeout"/>.</param>
    /// <exception cref="BoardRpcException">The call failed; <see cref="BoardRpcException.Reason"/> says why.</exception>
    public Task<ClaimTaskResponse> ClaimTaskAsync(ClaimTaskRequest request, CallOptions options = default) =>
        UnaryAsync(BoardMethods.ClaimTask, request, options);

    /// <summary>Extends the lease of a claim.</summary>
    /// <param name="request">The request message.</param>
    /// <param name="options">Deadline, headers and cancellation; the default deadline is <see cref="BoardClientOptions.DefaultTimeout"/>.</param>
    /// <exception cref="BoardRpcException">The call failed; <see cref="BoardRpcException.Reason"/> says why.</exception>
    public Task<RenewLeaseResponse> RenewLeaseAsync(RenewLeaseRequest request, CallOptions options = default) =>
        UnaryAsync(BoardMethods.RenewLease, request, options);

    /// <summary>Gives a claimed task back without counting the attempt.</summary>
    /// <param name="request">The request message.</param>
    /// <param name="options">Deadline, headers and cancellation; the default deadline is <see cref="BoardClientOptions.DefaultTimeout"/>.</param>
    /// <exception cref="BoardRpcException">The call failed; <see cref="BoardRpcException.Reason"/> says why.</exception>
    public Task<ReleaseTaskResponse> ReleaseTaskAsync(ReleaseTaskRequest request, CallOptions options = default) =>
        UnaryAsync(BoardMethods.ReleaseTask, request, options);

    /// <summary>Saves progress bytes on a claimed task.</summary>
    /// <param name="request">The request message.</param>
    /// <param name="options">Deadline, headers and cancellation; the default deadline is <see cref="BoardClientOptions.DefaultTimeout"/>.</param>
    /// <exception cref="BoardRpcException">The call failed; <see cref="BoardRpcException.Reason"/> says why.</exception>
    public Task<CheckpointResponse> CheckpointAsync(CheckpointRequest request, CallOptions options = default) =>
        UnaryAsync(BoardMethods.Checkpoint, request, options);

    /// <summary>Completes a claimed task with its result; repeating the same completion succeeds.</summary>
    /// <param name="request">The request message.</param>
    /// <param name="options">Deadline, headers and cancellation; the default deadline is <see cref="BoardClientOptions.DefaultTimeout"/>.</param>
    /// <exception cref="BoardRpcException">The call failed; <see cref="BoardRpcException.Reason"/> says why.</exception>
    public Task<CompleteTaskResponse> CompleteTaskAsync(CompleteTaskRequest request, CallOptions options = default) =>
        UnaryAsync(BoardMethods.CompleteTask, request, options);

    /// <summary>Reports a failed attempt; the task is retried after backoff or dead-lettered.</summary>
    /// <param name="request">The request message.</param>
    /// <param name="options">Deadline, headers and cancellation; the default deadline is <see cref="BoardClientOptions.DefaultTimeout"/>.</param>
    /// <exception cref="BoardRpcException">The call failed; <see cref="BoardRpcException.Reason"/> says why.</exception>
    public Task<FailTaskResponse> FailTaskAsync(FailTaskRequest request, CallOptions options = default) =>
        UnaryAsync(BoardMethods.FailTask, request, options);

    /// <summary>Writes a note, optionally with compare-and-set and a time to live.</summary>
    /// <param name="request">The request message.</param>
    /// <param name="options">Deadline, headers and cancellation; the default deadline is <see cref="BoardClientOptions.DefaultTimeout"/>.</param>
    /// <exception cref="BoardRpcException">The call failed; <see cref="BoardRpcException.Reason"/> says why.</exception>
    public Task<PutNoteResponse> PutNoteAsync(PutNoteRequest request, CallOptions options = default) =>
        UnaryAsync(BoardMethods.PutNote, request, options);

    /// <summary>Reads a note.</summary>
    /// <param name="request">The request message.</param>
    /// <param name="options">Deadline, headers and cancellation; the default deadline is <see cref="BoardClientOptions.DefaultTimeout"/>.</param>
    /// <exception cref="BoardRpcException">The call failed; <see cref="BoardRpcException.Reason"/> says why.</exception>
    public Task<GetNoteResponse> GetNoteAsync(GetNoteRequest request, CallOptions options = default) =>
        UnaryAsync(BoardMethods.GetNote, request, options);

    /// <summary>Lists notes ordered by key, optionally under a prefix.</summary>
    /// <param name="request">The request message.</param>
    /// <param name="options">Deadline, headers and cancellation; the default deadline is <see cref="BoardClientOptions.DefaultTimeout"/>.</param>
    /// <exception cref="BoardRpcException">The call failed; <see cref="BoardRpcException.Reason"/> says why.</exception>
    public Task<ListNotesResponse> ListNotesAsync(ListNotesRequest request, CallOptions options = default) =>
        UnaryAsync(BoardMethods.ListNotes, request, options);

    /// <summary>Deletes a note, optionally only at an expected version.</summary>
    /// <param name="request">The request message.</param>
    /// <param name="options">Deadline, headers and cancellation; the default deadline is <see cref="BoardClientOptions.DefaultTimeout"/>.</param>
    /// <exception cref="BoardRpcException">The call failed; <see cref="BoardRpcException.Reason"/> says why.</exception>
    public Task<DeleteNoteResponse> DeleteNoteAsync(DeleteNoteRequest request, CallOptions options = default) =>
        UnaryAsync(BoardMethods.DeleteNote, request, options);

    /// <summary>Exports a workflow as JSON or Markdown.</summary>
    /// <param name="request">The request message.</param>
    /// <param name="options">Deadline, headers and cancellation; the default deadline is <see cref="BoardClientOptions.DefaultTimeout"/>.</param>
    /// <exception cref="BoardRpcException">The call failed; <see cref="BoardRpcException.Reason"/> says why.</exception>
    public Task<ExportWorkflowResponse> ExportWorkflowAsync(ExportWorkflowRequest request, CallOptions options = default) =>
        UnaryAsync(BoardMethods.ExportWorkflow, request, options);

    /// <summary>
    /// Opens one Watch stream as the server sends it (events and progress messages), without resuming.
    /// Most callers want <see cref="WatchAsync"/> instead.
    /// </summary>
    /// <param name="request">What to watch and from which revision.</param>
    /// <param name="options">Headers, cancellation and an optional deadline (none by default).</param>
    /// <returns>The call; dispose it to cancel the stream.</returns>
    public StreamingCall<WatchRequest, WatchResponse> Watch(WatchRequest request, CallOptions options = default) =>
        _channel.ServerStreaming(BoardMethods.Watch, request, options);

    /// <summary>
    /// Every event of a workflow from <paramref name="request"/>'s start revision on, each exactly once and in
    /// order, across disconnects and server restarts: the stream is reopened from the last delivered revision
    /// plus one, also when it stays silent for longer than <see cref="BoardClientOptions.WatchIdleTimeout"/>.
    /// Fails with <see cref="BoardRpcException"/> when resuming is impossible (OUT_OF_RANGE with reason
    /// HISTORY_COMPACTED, an unknown workflow) or not transient.
    /// </summary>
    /// <param name="request">What to watch; StartRevision 0 means "from now".</param>
    /// <param name="cancellationToken">Ends the watch.</param>
    /// <returns>The events, in revision order.</returns>
    public async IAsyncEnumerable<Event> WatchAsync(WatchRequest request, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var resume = new WatchResume(request.StartRevision);
        var idleTimeout = IdleTimeoutOf(request);
        var failures = 0;
        while (true)
        {
            var attempt = request.Clone();
            attempt.StartRevision = resume.NextStart;
            // Cancelled when the stream stays silent too long. A progress message comes every interval even
            // when nothing changes, so silence means a stuck stream or a dead connection; a new request makes
            // a dead connection show itself, and the watch resumes on another.
            using var idle = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            await using var call = Watch(attempt, new CallOptions(CancellationToken: idle.Token));
            await using var stream = call.ReadAllAsync(idle.Token).GetAsyncEnumerator(idle.Token);
            while (true)
            {
                WatchResponse message;
                try
                {
                    idle.CancelAfter(idleTimeout);
                    if (!await stream.MoveNextAsync())
                    {
                        // The server ended the stream with OK: the workflow was deleted.
                        yield break;
                    }

                    // The caller's time with an event is not silence from the server.
                    idle.CancelAfter(Timeout.InfiniteTimeSpan);
                    message = stream.Current;
                    failures = 0;
                }
                catch (Exception ex) when (ex is RpcException or OperationCanceledException && idle.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
                {
                    // Silent for the whole idle timeout: reopen at once (a second silence in a row backs off).
                    if (failures++ > 0)
                    {
                        await Task.Delay(ReopenBackoff(failures), cancellationToken).ConfigureAwait(false);
                    }

                    break;
                }
                catch (RpcException ex) when (!cancellationToken.IsCancellationRequested && new BoardRpcException(ex) is { IsTransient: true })
                {
                    // Back off a little more after each consecutive failure, then reopen from where we were.
                    failures++;
                    await Task.Delay(ReopenBackoff(failures), cancellationToken).ConfigureAwait(false);
                    break;
                }
                catch (RpcException) when (cancellationToken.IsCancellationRequested)
                {
                    throw new OperationCanceledException(cancellationToken);
                }
                catch (RpcException ex)
                {
                    throw new BoardRpcException(ex);
                }

                if (resume.Accept(message) is { } e)
                {
                    yield return e;
                }
            }
        }
    }

    /// <summary>The wait before reopening a watch after its nth failure in a row: 200 ms doubling up to 5 s.</summary>
    private static TimeSpan ReopenBackoff(int failures) => TimeSpan.FromMilliseconds(Math.Min(5000, 100 * (1 << Math.Min(failures, 6))));

    /// <summary>The idle timeout of a watch: the option, or 3 progress intervals (the server's default interval is 5 s).</summary>
    private TimeSpan IdleTimeoutOf(WatchRequest request)
    {
        if (Options.WatchIdleTimeout is { } set)
        {
            return set <= TimeSpan.Zero ? Timeout.InfiniteTimeSpan : set;
        }

        var interval = request.ProgressInterval is { } asked && asked.ToTimeSpan() > TimeSpan.Zero
            ? TimeSpan.FromTicks(Math.Max(asked.ToTimeSpan().Ticks, TimeSpan.FromMilliseconds(100).Ticks)) // the server's minimum
            : TimeSpan.FromSeconds(5);
        return 3 * interval;
    }

    /// <summary>Creates a worker that claims tasks of one workflow and runs them with a renewed lease.</summary>
    /// <param name="options">Which workflow, who the worker is, what it can do.</param>
    /// <returns>The worker; call <see cref="BoardWorker.RunAsync"/> to start it.</returns>
    public BoardWorker CreateWorker(BoardWorkerOptions options) => new(this, options);

    /// <summary>Disposes the channel if this client created it.</summary>
    public void Dispose()
    {
        if (_ownsChannel)
        {
            _channel.Dispose();
        }
    }

    internal CallOptions WithDefaults(CallOptions options, TimeSpan extra = default) =>
        options.Deadline is null
            ? options with { Deadline = Options.Channel.TimeProvider.GetUtcNow() + Options.DefaultTimeout + extra }
            : options;

    private async Task<TResponse> UnaryAsync<TRequest, TResponse>(Method<TRequest, TResponse> method, TRequest request, CallOptions options)
    {
        // A claim that waits for a task needs the wait on top of the usual time.
        var extra = request is ClaimTaskRequest { Wait: { } wait } ? wait.ToTimeSpan() : TimeSpan.Zero;
        try
        {
            return await _channel.UnaryAsync(method, request, WithDefaults(options, extra)).ConfigureAwait(false);
        }
        catch (RpcException ex)
        {
            throw new BoardRpcException(ex);
        }
    }
}
