using System.Globalization;
using GrpcBoard.Core.Model;

namespace GrpcBoard.Core.Rules;

/// <summary>
/// Every task transition, as pure functions from the current record to the next one. This is the only
/// place the rules live; both stores only persist what these return. docs/state-machine.md is the
/// same table in prose, and tests cover every cell.
/// </summary>
public static class TaskStateMachine
{
    /// <summary>A task as posted: PENDING while a dependency has not completed, READY otherwise.</summary>
    public static TaskRecord Post(TaskDefinition spec, bool dependenciesComplete, DateTimeOffset now) => new()
    {
        Id = spec.Id,
        Payload = spec.Payload,
        ContentType = spec.ContentType,
        Priority = spec.Priority,
        Labels = spec.Labels,
        RequiredSkills = spec.RequiredSkills,
        DependsOn = spec.DependsOn,
        MaxAttempts = spec.MaxAttempts,
        Retry = spec.Retry,
        State = dependenciesComplete ? TaskState.Ready : TaskState.Pending,
        ReadyTime = dependenciesComplete ? now : null,
        CreateTime = now,
        UpdateTime = now,
    };

    /// <summary>
    /// READY to CLAIMED. The fencing token is above both the task's last token and the workflow's head
    /// revision: the head never goes backwards for a workflow id (not even across delete and re-create),
    /// so a token can never repeat for the same task id, whatever happened in between.
    /// </summary>
    public static TaskRecord Claim(TaskRecord task, string workerId, IReadOnlyCollection<string>? workerSkills, TimeSpan lease, long headRevision, DateTimeOffset now)
    {
        switch (task.State)
        {
            case TaskState.Ready:
                break;
            case TaskState.Claimed:
                throw new BoardException(BoardError.TaskAlreadyClaimed,
                    $"Task '{task.Id}' is already claimed by '{task.Owner}' until {task.LeaseExpireTime:O}.",
                    new Dictionary<string, string> { ["owner"] = task.Owner, ["lease_expire_time"] = task.LeaseExpireTime?.ToString("O", CultureInfo.InvariantCulture) ?? "" });
            case TaskState.Pending:
            case TaskState.Backoff:
                throw new BoardException(BoardError.TaskNotReady,
                    task.State == TaskState.Pending
                        ? $"Task '{task.Id}' is waiting for its dependencies."
                        : $"Task '{task.Id}' is in retry backoff until {task.ReadyTime:O}.",
                    StateMetadata(task));
            default:
                throw Finished(task);
        }

        if (workerSkills is not null)
        {
            foreach (var skill in task.RequiredSkills)
            {
                if (!workerSkills.Contains(skill))
                {
                    throw new BoardException(BoardError.SkillsMismatch,
                        $"Task '{task.Id}' requires skill '{skill}', which worker '{workerId}' did not declare.",
                        new Dictionary<string, string> { ["missing_skill"] = skill });
                }
            }
        }

        return task with
        {
            State = TaskState.Claimed,
            Attempt = task.Attempt + 1,
            Owner = workerId,
            FencingToken = Math.Max(task.FencingToken + 1, headRevision + 1),
            LeaseExpireTime = now + lease,
            LeaseDuration = lease,
            ReadyTime = null,
            LastClaimEnd = ClaimEnd.None,
            UpdateTime = now,
        };
    }

    /// <summary>
    /// The check every fenced call makes: the token must be the task's current one, the claim must still
    /// be held, and its lease must not have run out (even if the server has not yet requeued the task).
    /// </summary>
    public static void CheckFence(TaskRecord task, long token, DateTimeOffset now)
    {
        if (token <= 0 || token > task.FencingToken)
        {
            throw new BoardException(BoardError.FencingTokenInvalid,
                $"Fencing token {token} was never issued for task '{task.Id}'.",
                new Dictionary<string, string> { ["fencing_token"] = task.FencingToken.ToString(CultureInfo.InvariantCulture) });
        }

        if (token < task.FencingToken)
        {
            throw new BoardException(BoardError.FencingTokenStale,
                $"Fencing token {token} is stale: task '{task.Id}' has been claimed again with token {task.FencingToken}.",
                new Dictionary<string, string> { ["fencing_token"] = task.FencingToken.ToString(CultureInfo.InvariantCulture) });
        }

        if (task.State != TaskState.Claimed)
        {
            if (task.LastClaimEnd == ClaimEnd.LeaseExpired)
            {
                throw LeaseExpired(task);
            }

            throw new BoardException(BoardError.ClaimNotHeld,
                $"The claim with token {token} on task '{task.Id}' has ended ({DescribeEnd(task.LastClaimEnd)}); the task is {Name(task.State)}.",
                StateMetadata(task));
        }

        if (task.LeaseExpireTime is { } expiry && expiry <= now)
        {
            throw LeaseExpired(task);
        }
    }

    public static TaskRecord Renew(TaskRecord task, long token, TimeSpan? lease, DateTimeOffset now)
    {
        CheckFence(task, token, now);
        var length = lease ?? task.LeaseDuration;
        return task with { LeaseExpireTime = now + length, LeaseDuration = length, UpdateTime = now };
    }

    /// <summary>CLAIMED to READY at once; a released attempt is not counted against max_attempts.</summary>
    public static TaskRecord Release(TaskRecord task, long token, DateTimeOffset now)
    {
        CheckFence(task, token, now);
        return task with
        {
            State = TaskState.Ready,
            Attempt = task.Attempt - 1,
            Owner = "",
            LeaseExpireTime = null,
            ReadyTime = now,
            LastClaimEnd = ClaimEnd.Released,
            UpdateTime = now,
        };
    }

    public static TaskRecord Checkpoint(TaskRecord task, long token, ReadOnlyMemory<byte> checkpoint, DateTimeOffset now)
    {
        CheckFence(task, token, now);
        return task with { Checkpoint = checkpoint, CheckpointTime = now, UpdateTime = now };
    }

    /// <summary>
    /// CLAIMED to COMPLETED. A repeat of the completion that was recorded (same token, same result) is
    /// answered as a success without a change, so a client can retry after a lost response.
    /// </summary>
    public static (TaskRecord Task, bool AlreadyCompleted) Complete(TaskRecord task, long token, ReadOnlyMemory<byte> result, string resultContentType, DateTimeOffset now)
    {
        if (task.State == TaskState.Completed && token == task.FencingToken)
        {
            if (task.Result.Span.SequenceEqual(result.Span) && task.ResultContentType == resultContentType)
            {
                return (task, true);
            }

            throw new BoardException(BoardError.ResultConflict,
                $"Task '{task.Id}' was already completed with a different result.", StateMetadata(task));
        }

        CheckFence(task, token, now);
        return (task with
        {
            State = TaskState.Completed,
            Result = result,
            ResultContentType = resultContentType,
            LeaseExpireTime = null,
            LastClaimEnd = ClaimEnd.Completed,
            UpdateTime = now,
        }, false);
    }

    public static TaskRecord Fail(TaskRecord task, long token, string message, ReadOnlyMemory<byte> details, bool nonRetryable, DateTimeOffset now)
    {
        CheckFence(task, token, now);
        var error = new TaskError(message, details, task.Attempt, task.Owner, nonRetryable, LeaseExpired: false, now);
        return RetryOrDeadLetter(task, error, ClaimEnd.Failed, now);
    }

    /// <summary>True when the task holds a lease that has run out and is waiting to be expired.</summary>
    public static bool IsLeaseDue(TaskRecord task, DateTimeOffset now) =>
        task.State == TaskState.Claimed && task.LeaseExpireTime is { } expiry && expiry <= now;

    /// <summary>CLAIMED with a run-out lease: the attempt counts as failed.</summary>
    public static TaskRecord ExpireLease(TaskRecord task, DateTimeOffset now)
    {
        if (!IsLeaseDue(task, now))
        {
            throw new InvalidOperationException($"Task '{task.Id}' has no expired lease.");
        }

        var error = new TaskError(
            $"Lease of worker '{task.Owner}' expired at {task.LeaseExpireTime:O} without renewal.",
            ReadOnlyMemory<byte>.Empty, task.Attempt, task.Owner, NonRetryable: false, LeaseExpired: true, now);
        return RetryOrDeadLetter(task, error, ClaimEnd.LeaseExpired, now);
    }

    public static bool IsBackoffDue(TaskRecord task, DateTimeOffset now) =>
        task.State == TaskState.Backoff && task.ReadyTime is { } ready && ready <= now;

    public static TaskRecord EndBackoff(TaskRecord task, DateTimeOffset now) =>
        IsBackoffDue(task, now)
            ? task with { State = TaskState.Ready, UpdateTime = now }
            : throw new InvalidOperationException($"Task '{task.Id}' is not at the end of a backoff.");

    /// <summary>PENDING to READY once every dependency has completed.</summary>
    public static TaskRecord DependenciesCompleted(TaskRecord task, DateTimeOffset now) =>
        task.State == TaskState.Pending
            ? task with { State = TaskState.Ready, ReadyTime = now, UpdateTime = now }
            : throw new InvalidOperationException($"Task '{task.Id}' is not pending.");

    /// <summary>Any unfinished state to CANCELLED. A holder of the claim learns of it on its next call.</summary>
    public static TaskRecord Cancel(TaskRecord task, string reason, DateTimeOffset now)
    {
        if (task.State.IsTerminal())
        {
            throw Finished(task);
        }

        return task with
        {
            State = TaskState.Cancelled,
            LeaseExpireTime = null,
            ReadyTime = null,
            EndReason = reason,
            LastClaimEnd = task.State == TaskState.Claimed ? ClaimEnd.Cancelled : task.LastClaimEnd,
            UpdateTime = now,
        };
    }

    private static TaskRecord RetryOrDeadLetter(TaskRecord task, TaskError error, ClaimEnd end, DateTimeOffset now)
    {
        var ended = task with { LastError = error, LeaseExpireTime = null, LastClaimEnd = end, UpdateTime = now };
        if (error.NonRetryable || task.Attempt >= task.MaxAttempts)
        {
            return ended with
            {
                State = TaskState.DeadLettered,
                ReadyTime = null,
                EndReason = error.NonRetryable
                    ? $"Attempt {task.Attempt} failed as non-retryable: {error.Message}"
                    : $"All {task.MaxAttempts} attempts failed; the last: {error.Message}",
            };
        }

        var backoff = task.Retry.BackoffAfter(task.Attempt);
        return ended with
        {
            State = backoff > TimeSpan.Zero ? TaskState.Backoff : TaskState.Ready,
            Owner = "",
            ReadyTime = now + backoff,
        };
    }

    private static BoardException LeaseExpired(TaskRecord task) =>
        new(BoardError.LeaseExpired,
            $"The lease on task '{task.Id}' with token {task.FencingToken} has expired.",
            StateMetadata(task));

    private static BoardException Finished(TaskRecord task) =>
        new(BoardError.TaskFinished, $"Task '{task.Id}' is {Name(task.State)}.", StateMetadata(task));

    private static Dictionary<string, string> StateMetadata(TaskRecord task) => new() { ["state"] = Name(task.State) };

    /// <summary>The state's name as the API spells it (TASK_STATE_ prefix dropped).</summary>
    public static string Name(TaskState state) => state switch
    {
        TaskState.Pending => "PENDING",
        TaskState.Ready => "READY",
        TaskState.Claimed => "CLAIMED",
        TaskState.Backoff => "BACKOFF",
        TaskState.Completed => "COMPLETED",
        TaskState.DeadLettered => "DEAD_LETTERED",
        TaskState.Cancelled => "CANCELLED",
        _ => state.ToString(),
    };

    private static string DescribeEnd(ClaimEnd end) => end switch
    {
        ClaimEnd.Released => "released",
        ClaimEnd.LeaseExpired => "lease expired",
        ClaimEnd.Failed => "failed",
        ClaimEnd.Completed => "completed",
        ClaimEnd.Cancelled => "cancelled",
        _ => "ended",
    };
}
