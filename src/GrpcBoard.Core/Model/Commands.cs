using GrpcBoard.Core.Storage;

namespace GrpcBoard.Core.Model;

/// <summary>A task as a client posts it, before validation and defaults.</summary>
public sealed record TaskSpec
{
    public required string Id { get; init; }
    public ReadOnlyMemory<byte> Payload { get; init; }
    public string ContentType { get; init; } = "";
    public int Priority { get; init; }
    public IReadOnlyDictionary<string, string>? Labels { get; init; }
    public IReadOnlyList<string> RequiredSkills { get; init; } = [];
    public IReadOnlyList<string> DependsOn { get; init; } = [];

    /// <summary>0 means the default.</summary>
    public int MaxAttempts { get; init; }

    public TimeSpan? InitialBackoff { get; init; }
    public TimeSpan? MaximumBackoff { get; init; }
    public double? BackoffCoefficient { get; init; }
}

public sealed record WorkflowUpdate
{
    public required string WorkflowId { get; init; }
    public string? Goal { get; init; }
    public WorkflowStatus? Status { get; init; }
    public IReadOnlyDictionary<string, string>? SetLabels { get; init; }
    public IReadOnlyList<string>? RemoveLabels { get; init; }

    /// <summary>0 means no check.</summary>
    public long ExpectedModRevision { get; init; }
}

public sealed record ClaimCommand
{
    public required string WorkflowId { get; init; }

    /// <summary>Null or empty claims the next ready task.</summary>
    public string? TaskId { get; init; }

    public required string WorkerId { get; init; }
    public IReadOnlyCollection<string> Skills { get; init; } = [];
    public TimeSpan? Lease { get; init; }
    public TimeSpan? Wait { get; init; }
}

public sealed record NotePutCommand
{
    public required string WorkflowId { get; init; }
    public required string Key { get; init; }
    public ReadOnlyMemory<byte> Value { get; init; }
    public string ContentType { get; init; } = "";

    /// <summary>Null: unconditional. 0: only if absent. N: only if the version is N.</summary>
    public long? ExpectedVersion { get; init; }

    public TimeSpan? Ttl { get; init; }
    public string Writer { get; init; } = "";
}

/// <summary>A workflow with its counts and head revision.</summary>
public sealed record WorkflowView(WorkflowRecord Workflow, TaskCounts Counts, long Revision);

public sealed record Page<T>(IReadOnlyList<T> Items, string NextPageToken, long Revision);

public sealed record ClaimResult(TaskRecord? Task, long Revision);

public sealed record TaskResult(TaskRecord Task, long Revision);

public sealed record PostResult(IReadOnlyList<TaskRecord> Tasks, IReadOnlyList<string> ExistingIds, long Revision);

public sealed record CancelResult(TaskRecord Task, IReadOnlyList<string> CancelledDependents, long Revision);

/// <param name="Next">With a <see cref="NextClaim"/>: the task claimed in the same transaction, or null.</param>
public sealed record CompleteResult(TaskRecord Task, bool AlreadyCompleted, IReadOnlyList<string> ReadyDependents, long Revision, TaskRecord? Next = null);

/// <summary>A claim of the next ready task made by the transaction that completes the worker's current one.</summary>
public sealed record NextClaim(IReadOnlyCollection<string> Skills, TimeSpan? Lease);

public sealed record FailResult(TaskRecord Task, bool WillRetry, IReadOnlyList<string> CancelledDependents, long Revision);

public sealed record NoteResult(NoteRecord Note, long Revision);

/// <summary>A consistent picture of a whole workflow at one revision.</summary>
public sealed record WorkflowSnapshot(WorkflowView Workflow, IReadOnlyList<TaskRecord> Tasks, IReadOnlyList<NoteRecord> Notes, IReadOnlyList<EventRecord> Events, long OldestRevision);

/// <summary>What a fired timer did, for logs and tests.</summary>
public sealed record TimerOutcome(DueTimer Timer, EventKind? Change);
