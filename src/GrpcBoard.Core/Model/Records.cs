using System.Collections.Immutable;

namespace GrpcBoard.Core.Model;

public enum WorkflowStatus
{
    Active = 1,
    Paused = 2,
    Completed = 3,
    Cancelled = 4,
}

public enum TaskState
{
    Pending = 1,
    Ready = 2,
    Claimed = 3,
    Backoff = 4,
    Completed = 5,
    DeadLettered = 6,
    Cancelled = 7,
}

/// <summary>How the last claim of a task ended; it tells an owner with the current token why it lost the claim.</summary>
public enum ClaimEnd
{
    None = 0,
    Released = 1,
    LeaseExpired = 2,
    Failed = 3,
    Completed = 4,
    Cancelled = 5,
}

public enum EventKind
{
    WorkflowCreated = 1,
    WorkflowUpdated = 2,
    WorkflowDeleted = 3,
    TaskPosted = 4,
    TaskReady = 5,
    TaskClaimed = 6,
    TaskLeaseRenewed = 7,
    TaskCheckpointed = 8,
    TaskReleased = 9,
    TaskCompleted = 10,
    TaskFailed = 11,
    TaskLeaseExpired = 12,
    TaskCancelled = 13,
    NotePut = 14,
    NoteDeleted = 15,
    NoteExpired = 16,
}

public static class TaskStates
{
    public static bool IsTerminal(this TaskState state) =>
        state is TaskState.Completed or TaskState.DeadLettered or TaskState.Cancelled;

    public static bool IsWorkflowTerminal(this WorkflowStatus status) =>
        status is WorkflowStatus.Completed or WorkflowStatus.Cancelled;
}

public sealed record WorkflowRecord
{
    public required string Id { get; init; }
    public required string Goal { get; init; }
    public ImmutableSortedDictionary<string, string> Labels { get; init; } = ImmutableSortedDictionary<string, string>.Empty.WithComparers(StringComparer.Ordinal);
    public required WorkflowStatus Status { get; init; }
    public required DateTimeOffset CreateTime { get; init; }
    public required DateTimeOffset UpdateTime { get; init; }

    /// <summary>Revision of the change that last wrote this record; assigned by the store at commit.</summary>
    public long ModRevision { get; init; }
}

/// <summary>Exponential backoff between attempts.</summary>
public sealed record RetryPolicy(TimeSpan InitialBackoff, TimeSpan MaximumBackoff, double BackoffCoefficient)
{
    public static readonly RetryPolicy Default = new(TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(60), 2.0);

    /// <summary>The wait after the <paramref name="failedAttempt"/>-th attempt failed (1-based).</summary>
    public TimeSpan BackoffAfter(int failedAttempt)
    {
        if (InitialBackoff <= TimeSpan.Zero)
        {
            return TimeSpan.Zero;
        }

        var factor = Math.Pow(BackoffCoefficient, Math.Max(0, failedAttempt - 1));
        var ticks = InitialBackoff.Ticks * factor;
        return ticks >= MaximumBackoff.Ticks || double.IsInfinity(ticks) ? MaximumBackoff : TimeSpan.FromTicks((long)ticks);
    }
}

public sealed record TaskError(
    string Message,
    ReadOnlyMemory<byte> Details,
    int Attempt,
    string WorkerId,
    bool NonRetryable,
    bool LeaseExpired,
    DateTimeOffset Time);

public sealed record TaskRecord
{
    public required string Id { get; init; }
    public ReadOnlyMemory<byte> Payload { get; init; }
    public string ContentType { get; init; } = "";
    public int Priority { get; init; }
    public ImmutableSortedDictionary<string, string> Labels { get; init; } = ImmutableSortedDictionary<string, string>.Empty.WithComparers(StringComparer.Ordinal);

    /// <summary>Sorted ordinally, without duplicates, so equal skill sets compare equal.</summary>
    public ImmutableArray<string> RequiredSkills { get; init; } = [];

    public ImmutableArray<string> DependsOn { get; init; } = [];
    public required int MaxAttempts { get; init; }
    public required RetryPolicy Retry { get; init; }
    public required TaskState State { get; init; }
    public int Attempt { get; init; }
    public string Owner { get; init; } = "";
    public long FencingToken { get; init; }
    public DateTimeOffset? LeaseExpireTime { get; init; }
    public TimeSpan LeaseDuration { get; init; }
    public ReadOnlyMemory<byte> Checkpoint { get; init; }
    public DateTimeOffset? CheckpointTime { get; init; }
    public ReadOnlyMemory<byte> Result { get; init; }
    public string ResultContentType { get; init; } = "";
    public TaskError? LastError { get; init; }

    /// <summary>READY: when it became ready (orders ties within a priority). BACKOFF: when it becomes ready.</summary>
    public DateTimeOffset? ReadyTime { get; init; }

    public required DateTimeOffset CreateTime { get; init; }
    public required DateTimeOffset UpdateTime { get; init; }

    /// <summary>Revision of the change that last wrote this record; assigned by the store at commit.</summary>
    public long ModRevision { get; init; }

    public string EndReason { get; init; } = "";
    public ClaimEnd LastClaimEnd { get; init; }
}

public sealed record NoteRecord
{
    public required string Key { get; init; }
    public ReadOnlyMemory<byte> Value { get; init; }
    public string ContentType { get; init; } = "";
    public required long Version { get; init; }

    /// <summary>Revision of the change that last wrote this record; assigned by the store at commit.</summary>
    public long ModRevision { get; init; }

    public DateTimeOffset? ExpireTime { get; init; }
    public required DateTimeOffset UpdateTime { get; init; }
    public string Writer { get; init; } = "";

    public bool IsExpired(DateTimeOffset now) => ExpireTime is { } expiry && expiry <= now;
}

/// <summary>One committed change: the unit of the event log and of Watch.</summary>
public sealed record EventRecord
{
    public required long Revision { get; init; }
    public required EventKind Kind { get; init; }
    public required DateTimeOffset Time { get; init; }
    public required string WorkflowId { get; init; }
    public TaskRecord? Task { get; init; }
    public NoteRecord? Note { get; init; }
    public WorkflowRecord? Workflow { get; init; }
    public string Actor { get; init; } = "";
    public string Reason { get; init; } = "";
}

/// <summary>Number of tasks in each state.</summary>
public sealed class TaskCounts
{
    private readonly long[] _counts = new long[8];

    public long this[TaskState state]
    {
        get => _counts[(int)state];
        set => _counts[(int)state] = value;
    }

    public long Total => _counts.Sum();

    public TaskCounts Clone()
    {
        var copy = new TaskCounts();
        Array.Copy(_counts, copy._counts, _counts.Length);
        return copy;
    }

    /// <summary>Moves one task from <paramref name="from"/> (null: new) to <paramref name="to"/> (null: removed).</summary>
    public void Move(TaskState? from, TaskState? to)
    {
        if (from is { } f)
        {
            _counts[(int)f]--;
        }

        if (to is { } t)
        {
            _counts[(int)t]++;
        }
    }
}
