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
/// <remarks>
/// The worker keeps, for each claim, the latest time its lease can still be alive, on the local monotonic
/// clock (<see cref="TimeProvider.GetTimestamp"/> of the channel's time provider; server timestamps come
/// from another clock): the time the claim or the last successful renewal was sent, plus the lease. A
/// completion, failure or release that fails with a transient status (the server restarting, UNAVAILABLE)
/// is retried with backoff until that time, never after; a refusal (FAILED_PRECONDITION: stale token,
/// lease expired) ends it at once.
/// </remarks>
public sealed class BoardWorker
{
    /// <summary>Below this much lease left, a failed final call is not tried again (it could not reach the server in time).</summary>
    private static readonly TimeSpan FinalRetryMargin = TimeSpan.FromMilliseconds(20);

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
        // The lease starts when the server grants it, which is after this request leaves (for a waiting claim,
        // perhaps long after): counting from now can end the lease early in the worker's view, never late. A
        // claim that waited longer than the renewal interval is renewed at once, which counts from then.
        var sent = Time.GetTimestamp();
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

        var lease = new Lease(Time, sent, LeaseOf(claim.Task));
        return (true, await RunClaimAsync(new Claim(claim.Task, claim.FencingToken, lease), handler, claimNext, cancellationToken).ConfigureAwait(false));
    }

    /// <summary>A task this worker holds, with the token of its claim and its lease as this worker counts it.</summary>
    private sealed record Claim(Api.V1.Task Task, long Token, Lease Lease);

    /// <summary>
    /// The latest time a claim's lease can still be alive, as a timestamp of the local monotonic clock: when
    /// the claim (or the last successful renewal) was sent, plus the lease length. Read by the final writes,
    /// moved by the renewal loop.
    /// </summary>
    private sealed class Lease(TimeProvider time, long sent, TimeSpan length)
    {
        private long _sent = sent;
        private long _end = sent + Ticks(time, length);

        /// <summary>When the claim or the last successful renewal was sent.</summary>
        public long Sent => Volatile.Read(ref _sent);

        /// <summary>Time left until the lease surely ended; zero or less once it may have.</summary>
        public TimeSpan Remaining => time.GetElapsedTime(time.GetTimestamp(), Volatile.Read(ref _end));

        /// <summary>A renewal sent at <paramref name="renewalSent"/> succeeded.</summary>
        public void Renewed(long renewalSent, TimeSpan renewedLength)
        {
            Volatile.Write(ref _end, renewalSent + Ticks(time, renewedLength));
            Volatile.Write(ref _sent, renewalSent);
        }

        private static long Ticks(TimeProvider time, TimeSpan span) => (long)(span.TotalSeconds * time.TimestampFrequency);
    }

    private TimeProvider Time => _client.Options.Channel.TimeProvider;

    /// <summary>The lease length the server granted (it refuses lengths it does not grant), else the one asked for.</summary>
    private TimeSpan LeaseOf(Api.V1.Task task) =>
        task.LeaseDuration?.ToTimeSpan() is { } granted && granted > TimeSpan.Zero ? granted : _options.LeaseDuration;

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
            await FinishAsync(o => _client.ReleaseTaskAsync(new ReleaseTaskRequest { WorkflowId = unused.Task.WorkflowId, TaskId = unused.Task.Id, FencingToken = unused.Token }, o), unused.Task, unused.Lease).ConfigureAwait(false);
        }
    }

    /// <summary>Runs a claimed task to its end; returns the claim its completion made, if it asked for one.</summary>
    private async Task<Claim?> RunClaimAsync(Claim claim, Func<TaskContext, Task<TaskOutcome>> handler, bool claimNext, CancellationToken stopping)
    {
        var (task, token, lease) = claim;
        using var lost = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        using var renewing = new CancellationTokenSource();
        var context = new TaskContext(_client, task, token, lost);
        _logger.LogInformation("Claimed {Task} (attempt {Attempt}, token {Token}).", task.Id, task.Attempt, token);
        var renewal = RenewLoopAsync(task, token, lease, lost, renewing.Token);
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
            await FinishAsync(o => _client.ReleaseTaskAsync(new ReleaseTaskRequest { WorkflowId = task.WorkflowId, TaskId = task.Id, FencingToken = token }, o), task, lease).ConfigureAwait(false);
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
            if (await FinishAsync(o => _client.CompleteTaskAsync(request, o), task, lease).ConfigureAwait(false) is not { } done)
            {
                return null;
            }

            var (completed, sent) = done;
            Interlocked.Increment(ref _completed);
            // The next claim was granted while the attempt that succeeded was processed, so after it was sent.
            return completed.NextTask is { } nextTask
                ? new Claim(nextTask, completed.NextFencingToken, new Lease(Time, sent, LeaseOf(nextTask)))
                : null;
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
        if (await FinishAsync(o => _client.FailTaskAsync(fail, o), task, lease).ConfigureAwait(false) is not null)
        {
            Interlocked.Increment(ref _failed);
        }

        return null;
    }

    /// <summary>
    /// Renews until told to stop; cancels <paramref name="lost"/> when the claim is gone or the lease runs out
    /// unrenewed. A renewal is due an interval after the claim or the previous renewal was sent (at once for a
    /// claim whose wait outlasted the interval); a failed one is retried with backoff while the lease may live.
    /// </summary>
    private async Task RenewLoopAsync(Api.V1.Task task, long token, Lease lease, CancellationTokenSource lost, CancellationToken stop)
    {
        var interval = _options.RenewInterval ?? _options.LeaseDuration / 3;
        var time = Time;
        var failures = 0;
        while (!stop.IsCancellationRequested && !lost.IsCancellationRequested)
        {
            try
            {
                var wait = failures == 0
                    ? interval - time.GetElapsedTime(lease.Sent)
                    : Min(TimeSpan.FromMilliseconds(100 * (1 << Math.Min(failures, 5))), interval);
                if (wait > TimeSpan.Zero)
                {
                    await Task.Delay(wait, time, stop).ConfigureAwait(false);
                }

                // A renewal that arrives after the lease ended is refused anyway: give it until then. When the
                // lease may already be over (a claim that waited longer than it), let the server judge.
                var sent = time.GetTimestamp();
                var remaining = lease.Remaining;
                var budget = Min(remaining > TimeSpan.Zero ? remaining : interval, _client.Options.DefaultTimeout);
                await _client.RenewLeaseAsync(new RenewLeaseRequest
                {
                    WorkflowId = task.WorkflowId,
                    TaskId = task.Id,
                    FencingToken = token,
                    LeaseDuration = Duration.FromTimeSpan(_options.LeaseDuration),
                }, new CallOptions(Deadline: time.GetUtcNow() + budget, CancellationToken: stop)).ConfigureAwait(false);
                lease.Renewed(sent, _options.LeaseDuration);
                failures = 0;
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
                failures++;
                if (lease.Remaining <= TimeSpan.Zero)
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

    /// <summary>
    /// Runs a final call for a claim (complete, fail, release). A transient failure (UNAVAILABLE while the
    /// server restarts) is retried with backoff as long as the lease may still be alive, and never after:
    /// each attempt's deadline is the lease's end, since the server refuses a late one anyway. A refusal
    /// (FAILED_PRECONDITION: stale token, lease expired) ends it at once. The first attempt is always made,
    /// even when this worker's count says the lease may be over (the server judges). Returns the response and
    /// when the attempt that got it was sent, or null if it did not succeed.
    /// </summary>
    private async Task<(T Response, long Sent)?> FinishAsync<T>(Func<CallOptions, Task<T>> call, Api.V1.Task task, Lease lease)
        where T : class
    {
        var time = Time;
        for (var attempt = 1; ; attempt++)
        {
            var remaining = lease.Remaining;
            if (attempt > 1 && remaining <= TimeSpan.Zero)
            {
                // The backoff overslept the lease's end: the next attempt would be too late.
                _logger.LogWarning("Gave up finishing {Task} after {Attempts} attempt(s): its lease has ended.", task.Id, attempt - 1);
                return null;
            }

            var budget = remaining > TimeSpan.Zero ? Min(remaining, _client.Options.DefaultTimeout) : _client.Options.DefaultTimeout;
            var sent = time.GetTimestamp();
            try
            {
                return (await call(new CallOptions(Deadline: time.GetUtcNow() + budget)).ConfigureAwait(false), sent);
            }
            catch (BoardRpcException ex) when (ex.IsTransient && lease.Remaining > FinalRetryMargin)
            {
                // Half the time left at most, so that one more attempt still goes out before the lease ends.
                var delay = Min(TimeSpan.FromMilliseconds(100 * (1 << Math.Min(attempt - 1, 4))), lease.Remaining / 2);
                var backoff = Task.Delay(delay, time);
                _logger.LogInformation("Finishing {Task} failed ({Status}, attempt {Attempt}); retrying in {Delay} before its lease ends.",
                    task.Id, ex.StatusCode, attempt, delay);
                await backoff.ConfigureAwait(false);
            }
            catch (BoardRpcException ex)
            {
                if (ex.IsClaimLost)
                {
                    Interlocked.Increment(ref _lost);
                    _logger.LogWarning(ex, "Finishing {Task} was refused ({Reason}).", task.Id, ex.ReasonName);
                }
                else
                {
                    _logger.LogWarning(ex, "Gave up finishing {Task} after {Attempts} attempt(s) ({Status}): its lease has ended or the failure is not transient.", task.Id, attempt, ex.StatusCode);
                }

                return null;
            }
        }
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    private static string Truncate(string s, int max) => s.Length <= max ? s : s[..max];
}
