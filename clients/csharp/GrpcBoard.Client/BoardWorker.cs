using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using GrpcBoard.Api.V1;
using GrpcBoard.Wire;
using GrpcBoard.Wire.Client;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Task = System.Threading.Tasks.Task;

namespace GrpcBoard.Client;

/// <summary>Settings of a <see cref="BoardWorker"/>.</summary>
public sealed class BoardWorkerOptions
{
    /// <summary>The workflow to take tasks from.</summary>
    public required string WorkflowId { get; init; }

    /// <summary>Who this worker is; recorded as the owner of its claims.</summary>
    public required string WorkerId { get; init; }

    /// <summary>What this worker can do; it is offered only tasks whose required skills are all here.</summary>
    public IReadOnlyList<string> Skills { get; init; } = [];

    /// <summary>Lease length asked for on every claim and renewal (default 30 s).</summary>
    public TimeSpan LeaseDuration { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>How often the lease is renewed while a task runs (default a third of the lease).</summary>
    public TimeSpan? RenewInterval { get; init; }

    /// <summary>How long one claim call waits on the server for a ready task (default 20 s); no busy polling.</summary>
    public TimeSpan ClaimWait { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>Tasks run at once by this worker (default 1).</summary>
    public int MaxConcurrency { get; init; } = 1;

    /// <summary>
    /// Whether each completion also claims the next ready task (CompleteTaskRequest.claim_next), so that a busy
    /// worker makes one call per task instead of two (default true). If a completion's response is lost, the
    /// task it claimed is not known to the worker and returns to the queue when its lease runs out.
    /// </summary>
    public bool ClaimNextOnComplete { get; init; } = true;

    /// <summary>Logs claims, lost leases and failures.</summary>
    public ILogger? Logger { get; init; }
}

/// <summary>What a task handler returns: the result bytes and their media type.</summary>
/// <param name="Result">The result stored with the task.</param>
/// <param name="ContentType">Media type of the result.</param>
public sealed record TaskOutcome(ReadOnlyMemory<byte> Result, string ContentType = "application/octet-stream")
{
    /// <summary>A UTF-8 text result.</summary>
    /// <param name="text">The text.</param>
    /// <returns>The outcome.</returns>
    public static TaskOutcome Text(string text) => new(System.Text.Encoding.UTF8.GetBytes(text), "text/plain; charset=utf-8");

    /// <summary>A JSON result.</summary>
    /// <param name="json">The JSON document.</param>
    /// <returns>The outcome.</returns>
    public static TaskOutcome Json(string json) => new(System.Text.Encoding.UTF8.GetBytes(json), "application/json");
}

/// <summary>Thrown by a task handler to dead-letter the task at once instead of retrying it.</summary>
/// <param name="message">What went wrong.</param>
public sealed class NonRetryableTaskException(string message) : Exception(message);

/// <summary>
/// What a task handler gets: the task, its fencing token, a token that is cancelled when the lease is lost
/// (or the worker stops), and a way to save progress.
/// </summary>
public sealed class TaskContext
{
    private readonly BoardClient _client;
    private readonly CancellationTokenSource _lost;

    internal TaskContext(BoardClient client, Api.V1.Task task, long fencingToken, CancellationTokenSource lost)
    {
        _client = client;
        Task = task;
        FencingToken = fencingToken;
        _lost = lost;
    }

    /// <summary>The claimed task (payload, attempt, and the last checkpoint from any earlier owner).</summary>
    public Api.V1.Task Task { get; }

    /// <summary>The claim's fencing token; the worker passes it on every call about the task.</summary>
    public long FencingToken { get; }

    /// <summary>Cancelled when the claim is lost (lease expired, task cancelled or taken over) or the worker stops.</summary>
    public CancellationToken CancellationToken => _lost.Token;

    /// <summary>Progress saved by the previous owner, empty on a first attempt.</summary>
    public ReadOnlyMemory<byte> LastCheckpoint => Task.Checkpoint.Memory;

    /// <summary>Saves progress; a later owner of the task reads it in <see cref="LastCheckpoint"/>.</summary>
    /// <param name="checkpoint">The progress to save (replaces the previous one).</param>
    /// <returns>A task that completes when the checkpoint is durable.</returns>
    /// <exception cref="BoardRpcException">The checkpoint was refused; if the claim is lost, <see cref="CancellationToken"/> is cancelled too.</exception>
    public async Task CheckpointAsync(ReadOnlyMemory<byte> checkpoint)
    {
        try
        {
            await _client.CheckpointAsync(new CheckpointRequest
            {
                WorkflowId = Task.WorkflowId,
                TaskId = Task.Id,
                FencingToken = FencingToken,
                Checkpoint = ByteString.CopyFrom(checkpoint.Span),
            }, new CallOptions(CancellationToken: CancellationToken)).ConfigureAwait(false);
        }
        catch (BoardRpcException ex) when (ex.IsClaimLost)
        {
            await _lost.CancelAsync().ConfigureAwait(false);
            throw;
        }
    }
}

/// <summary>
/// A worker loop: claim the next ready task (waiting on the server, not polling), run the handler while
/// renewing the lease in the background, then complete or fail the task, every call carrying the fencing
/// token. When the lease is lost the handler's token is cancelled and nothing more is written for that
/// claim; when the worker stops, running tasks are released for others.
/// </summary>
public sealed class BoardWorker
{
    private readonly BoardClient _client;
    private readonly BoardWorkerOptions _options;
    private readonly ILogger _logger;

    internal BoardWorker(BoardClient client, BoardWorkerOptions options)
    {
        if (options.MaxConcurrency < 1)
        {
            throw new ArgumentException("MaxConcurrency must be at least 1.", nameof(options));
        }

        _client = client;
        _options = options;
        _logger = options.Logger ?? NullLogger.Instance;
    }

    /// <summary>Tasks this worker completed.</summary>
    public int Completed => _completed;

    /// <summary>Tasks this worker reported as failed.</summary>
    public int Failed => _failed;

    /// <summary>Claims this worker lost before finishing.</summary>
    public int LostClaims => _lost;

    private int _completed;
    private int _failed;
    private int _lost;

    /// <summary>Runs until <paramref name="cancellationToken"/> is cancelled.</summary>
    /// <param name="handler">The work: gets the task, returns its result; throwing fails the attempt.</param>
    /// <param name="cancellationToken">Stops the worker; running tasks are released.</param>
    /// <returns>A task that completes when the worker has stopped.</returns>
    public Task RunAsync(Func<TaskContext, Task<TaskOutcome>> handler, CancellationToken cancellationToken)
    {
        var slots = Enumerable.Range(0, _options.MaxConcurrency).Select(_ => SlotAsync(handler, cancellationToken));
        return Task.WhenAll(slots);
    }

    /// <summary>Claims and runs at most one task.</summary>
    /// <param name="handler">The work.</param>
    /// <param name="cancellationToken">Stops waiting, or stops the task and releases it.</param>
    /// <returns>True if a task was claimed (whatever its outcome), false if none became ready within the claim wait.</returns>
    public async Task<bool> RunOnceAsync(Func<TaskContext, Task<TaskOutcome>> handler, CancellationToken cancellationToken) =>
        (await ClaimAndRunAsync(handler, claimNext: false, cancellationToken).ConfigureAwait(false)).Claimed;

    /// <summary>Claims a task and runs it; with <paramref name="claimNext"/>, returns the claim its completion made.</summary>
    private async Task<(bool Claimed, Claim? Next)> ClaimAndRunAsync(Func<TaskContext, Task<TaskOutcome>> handler, bool claimNext, CancellationToken cancellationToken)
    {
        var claim = await _client.ClaimTaskAsync(new ClaimTaskRequest
        {
            WorkflowId = _options.WorkflowId,
            WorkerId = _options.WorkerId,
            Skills = { _options.Skills },
            LeaseDuration = Duration.FromTimeSpan(_options.LeaseDuration),
            Wait = Duration.FromTimeSpan(_options.ClaimWait),
        }, new CallOptions(CancellationToken: cancellationToken)).ConfigureAwait(false);
        if (claim.Task is null)
        {
            return (false, null);
        }

        return (true, await RunClaimAsync(new Claim(claim.Task, claim.FencingToken), handler, claimNext, cancellationToken).ConfigureAwait(false));
    }

    /// <summary>A task this worker holds, with the token of its claim.</summary>
    private sealed record Claim(Api.V1.Task Task, long Token);

    private async Task SlotAsync(Func<TaskContext, Task<TaskOutcome>> handler, CancellationToken cancellationToken)
    {
        var failures = 0;
        Claim? next = null;
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                if (next is { } held)
                {
                    next = null;
                    next = await RunClaimAsync(held, handler, _options.ClaimNextOnComplete, cancellationToken).ConfigureAwait(false);
                }
                else
                {
                    next = (await ClaimAndRunAsync(handler, _options.ClaimNextOnComplete, cancellationToken).ConfigureAwait(false)).Next;
                }

                failures = 0;
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
            catch (BoardRpcException ex) when (cancellationToken.IsCancellationRequested && ex.StatusCode == StatusCode.Cancelled)
            {
                return;
            }
            catch (BoardRpcException ex) when (ex.IsTransient || ex.StatusCode == StatusCode.DeadlineExceeded)
            {
                // Server or store unavailable: back off and try again rather than spin.
                failures++;
                _logger.LogWarning(ex, "Claim failed ({Status}); retrying.", ex.StatusCode);
                try
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(Math.Min(10_000, 200 * (1 << Math.Min(failures, 6)))), cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }
        }

        if (next is { } unused)
        {
            // Stopped holding the claim the last completion made: give it back for another worker at once.
            await TryAsync(() => _client.ReleaseTaskAsync(new ReleaseTaskRequest { WorkflowId = unused.Task.WorkflowId, TaskId = unused.Task.Id, FencingToken = unused.Token }), unused.Task).ConfigureAwait(false);
        }
    }

    /// <summary>Runs a claimed task to its end; returns the claim its completion made, if it asked for one.</summary>
    private async Task<Claim?> RunClaimAsync(Claim claim, Func<TaskContext, Task<TaskOutcome>> handler, bool claimNext, CancellationToken stopping)
    {
        var (task, token) = claim;
        using var lost = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        using var renewing = new CancellationTokenSource();
        var context = new TaskContext(_client, task, token, lost);
        _logger.LogInformation("Claimed {Task} (attempt {Attempt}, token {Token}).", task.Id, task.Attempt, token);
        var renewal = RenewLoopAsync(task, token, lost, renewing.Token);
        TaskOutcome? outcome = null;
        Exception? failure = null;
        try
        {
            outcome = await handler(context).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            failure = ex;
        }
        finally
        {
            await renewing.CancelAsync().ConfigureAwait(false);
            await renewal.ConfigureAwait(false);
        }

        if (lost.IsCancellationRequested && !stopping.IsCancellationRequested)
        {
            // The claim is gone: any write would be refused by its fencing token, and another worker may own the task.
            Interlocked.Increment(ref _lost);
            _logger.LogWarning("Lost the claim on {Task} (token {Token}); its result is discarded.", task.Id, token);
            return null;
        }

        if (stopping.IsCancellationRequested && outcome is null)
        {
            // Stopping: give the task back so another worker takes it at once, without counting the attempt.
            await TryAsync(() => _client.ReleaseTaskAsync(new ReleaseTaskRequest { WorkflowId = task.WorkflowId, TaskId = task.Id, FencingToken = token }), task).ConfigureAwait(false);
            return null;
        }

        if (outcome is not null)
        {
            var request = new CompleteTaskRequest
            {
                WorkflowId = task.WorkflowId,
                TaskId = task.Id,
                FencingToken = token,
                Result = ByteString.CopyFrom(outcome.Result.Span),
                ResultContentType = outcome.ContentType,
            };
            if (claimNext && !stopping.IsCancellationRequested)
            {
                request.ClaimNext = new ClaimNext { Skills = { _options.Skills }, LeaseDuration = Duration.FromTimeSpan(_options.LeaseDuration) };
            }

            // CompleteTask is idempotent for the same token and result, so a retry after a lost response is safe.
            if (await TryAsync(() => _client.CompleteTaskAsync(request), task).ConfigureAwait(false) is not { } completed)
            {
                return null;
            }

            Interlocked.Increment(ref _completed);
            return completed.NextTask is { } nextTask ? new Claim(nextTask, completed.NextFencingToken) : null;
        }

        var fail = new FailTaskRequest
        {
            WorkflowId = task.WorkflowId,
            TaskId = task.Id,
            FencingToken = token,
            ErrorMessage = Truncate(failure!.Message, 4000),
            NonRetryable = failure is NonRetryableTaskException,
        };
        _logger.LogWarning(failure, "Task {Task} failed on attempt {Attempt}.", task.Id, task.Attempt);
        if (await TryAsync(() => _client.FailTaskAsync(fail), task).ConfigureAwait(false) is not null)
        {
            Interlocked.Increment(ref _failed);
        }

        return null;
    }

    /// <summary>Renews until told to stop; cancels <paramref name="lost"/> when the claim is gone or the lease runs out unrenewed.</summary>
    private async Task RenewLoopAsync(Api.V1.Task task, long token, CancellationTokenSource lost, CancellationToken stop)
    {
        var interval = _options.RenewInterval ?? _options.LeaseDuration / 3;
        var time = _client.Options.Channel.TimeProvider;
        var leaseEnd = time.GetUtcNow() + _options.LeaseDuration;
        while (!stop.IsCancellationRequested && !lost.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(interval, time, stop).ConfigureAwait(false);
                var renewed = await _client.RenewLeaseAsync(new RenewLeaseRequest
                {
                    WorkflowId = task.WorkflowId,
                    TaskId = task.Id,
                    FencingToken = token,
                    LeaseDuration = Duration.FromTimeSpan(_options.LeaseDuration),
                }, new CallOptions(Deadline: Min(leaseEnd, time.GetUtcNow() + _client.Options.DefaultTimeout), CancellationToken: stop)).ConfigureAwait(false);
                leaseEnd = renewed.LeaseExpireTime.ToDateTimeOffset();
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (BoardRpcException ex) when (ex.IsClaimLost)
            {
                _logger.LogWarning("Renewing {Task} was refused ({Reason}); stopping its work.", task.Id, ex.ReasonName);
                await lost.CancelAsync().ConfigureAwait(false);
                return;
            }
            catch (Exception ex) when (!stop.IsCancellationRequested && ex is not OperationCanceledException)
            {
                // Not refused, just not renewed (server down, connection gone): keep trying while the lease may
                // still be alive; past its end it surely is not, and the work must stop.
                if (time.GetUtcNow() >= leaseEnd)
                {
                    _logger.LogWarning(ex, "Could not renew {Task} before its lease ended; stopping its work.", task.Id);
                    await lost.CancelAsync().ConfigureAwait(false);
                    return;
                }
            }
            catch (Exception) when (stop.IsCancellationRequested)
            {
                return;
            }
        }
    }

    /// <summary>Runs a final call for a claim, retrying transient failures a few times. Returns null if it did not succeed.</summary>
    private async Task<T?> TryAsync<T>(Func<Task<T>> call, Api.V1.Task task)
        where T : class
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await call().ConfigureAwait(false);
            }
            catch (BoardRpcException ex) when (ex.IsTransient && attempt < 5)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(100 * attempt)).ConfigureAwait(false);
            }
            catch (BoardRpcException ex)
            {
                if (ex.IsClaimLost)
                {
                    Interlocked.Increment(ref _lost);
                }

                _logger.LogWarning(ex, "Finishing {Task} was refused ({Reason}).", task.Id, ex.ReasonName);
                return null;
            }
        }
    }

    private static DateTimeOffset Min(DateTimeOffset a, DateTimeOffset b) => a < b ? a : b;

    private static string Truncate(string s, int max) => s.Length <= max ? s : s[..max];
}
