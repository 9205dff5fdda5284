using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using GrpcBoard.Core;
using GrpcBoard.Core.Model;
using V1 = GrpcBoard.Api.V1;

namespace GrpcBoard.Server.Mapping;

/// <summary>
/// Domain records to API messages and back. Enum numbers are shared by design (the domain enums mirror
/// the proto ones), which a test checks; bytes cross without copies in either direction.
/// </summary>
public static class ProtoMapper
{
    /// <summary>A workflow with what only a read knows: the head revision and the task counts.</summary>
    public static V1.Workflow ToProto(WorkflowView view)
    {
        var proto = ToProto(view.Workflow);
        proto.Revision = view.Revision;
        proto.TaskCounts = ToProto(view.Counts);
        return proto;
    }

    public static V1.Workflow ToProto(WorkflowRecord w)
    {
        var proto = new V1.Workflow
        {
            Id = w.Id,
            Goal = w.Goal,
            Status = (V1.WorkflowStatus)(int)w.Status,
            CreateTime = Timestamp.FromDateTimeOffset(w.CreateTime),
            UpdateTime = Timestamp.FromDateTimeOffset(w.UpdateTime),
            ModRevision = w.ModRevision,
        };
        proto.Labels.Add(w.Labels);
        return proto;
    }

    public static V1.TaskCounts ToProto(TaskCounts c) => new()
    {
        Pending = c[TaskState.Pending],
        Ready = c[TaskState.Ready],
        Claimed = c[TaskState.Claimed],
        Backoff = c[TaskState.Backoff],
        Completed = c[TaskState.Completed],
        DeadLettered = c[TaskState.DeadLettered],
        Cancelled = c[TaskState.Cancelled],
    };

    public static V1.Task ToProto(string workflowId, TaskRecord t, bool omitBodies = false)
    {
        var proto = new V1.Task
        {
            WorkflowId = workflowId,
            Id = t.Id,
            Payload = omitBodies ? ByteString.Empty : Wrap(t.Payload),
            ContentType = t.ContentType,
            Priority = t.Priority,
            MaxAttempts = t.MaxAttempts,
            RetryPolicy = new V1.RetryPolicy
            {
                InitialBackoff = Duration.FromTimeSpan(t.Retry.InitialBackoff),
                MaximumBackoff = Duration.FromTimeSpan(t.Retry.MaximumBackoff),
                BackoffCoefficient = t.Retry.BackoffCoefficient,
            },
            State = (V1.TaskState)(int)t.State,
            Attempt = t.Attempt,
            Owner = t.Owner,
            FencingToken = t.FencingToken,
            LeaseExpireTime = Time(t.LeaseExpireTime),
            LeaseDuration = t.LeaseDuration > TimeSpan.Zero ? Duration.FromTimeSpan(t.LeaseDuration) : null,
            Checkpoint = omitBodies ? ByteString.Empty : Wrap(t.Checkpoint),
            CheckpointTime = Time(t.CheckpointTime),
            Result = omitBodies ? ByteString.Empty : Wrap(t.Result),
            ResultContentType = t.ResultContentType,
            ReadyTime = Time(t.ReadyTime),
            CreateTime = Timestamp.FromDateTimeOffset(t.CreateTime),
            UpdateTime = Timestamp.FromDateTimeOffset(t.UpdateTime),
            ModRevision = t.ModRevision,
            EndReason = t.EndReason,
        };
        proto.Labels.Add(t.Labels);
        proto.RequiredSkills.Add(t.RequiredSkills);
        proto.DependsOn.Add(t.DependsOn);
        if (t.LastError is { } e)
        {
            proto.LastError = new V1.TaskError
            {
                Message = e.Message,
                Details = Wrap(e.Details),
                Attempt = e.Attempt,
                WorkerId = e.WorkerId,
                NonRetryable = e.NonRetryable,
                LeaseExpired = e.LeaseExpired,
                Time = Timestamp.FromDateTimeOffset(e.Time),
            };
        }

        return proto;
    }

    public static V1.Note ToProto(string workflowId, NoteRecord n) => new()
    {
        WorkflowId = workflowId,
        Key = n.Key,
        Value = Wrap(n.Value),
        ContentType = n.ContentType,
        Version = n.Version,
        ModRevision = n.ModRevision,
        ExpireTime = Time(n.ExpireTime),
        UpdateTime = Timestamp.FromDateTimeOffset(n.UpdateTime),
        Writer = n.Writer,
    };

    public static V1.Event ToProto(EventRecord e) => new()
    {
        Revision = e.Revision,
        Kind = (V1.EventKind)(int)e.Kind,
        Time = Timestamp.FromDateTimeOffset(e.Time),
        WorkflowId = e.WorkflowId,
        Task = e.Task is null ? null : ToProto(e.WorkflowId, e.Task),
        Note = e.Note is null ? null : ToProto(e.WorkflowId, e.Note),
        Workflow = e.Workflow is null ? null : ToProto(e.Workflow),
        Actor = e.Actor,
        Reason = e.Reason,
    };

    public static TaskSpec FromProto(V1.TaskSpec s) => new()
    {
        Id = s.Id,
        Payload = s.Payload.Memory,
        ContentType = s.ContentType,
        Priority = s.Priority,
        Labels = s.Labels,
        RequiredSkills = s.RequiredSkills,
        DependsOn = s.DependsOn,
        MaxAttempts = s.MaxAttempts,
        InitialBackoff = s.RetryPolicy?.InitialBackoff is { } i ? ToTimeSpan(i, "tasks.retry_policy.initial_backoff") : null,
        MaximumBackoff = s.RetryPolicy?.MaximumBackoff is { } m ? ToTimeSpan(m, "tasks.retry_policy.maximum_backoff") : null,
        BackoffCoefficient = s.RetryPolicy?.BackoffCoefficient,
    };

    public static WorkflowStatus? FromProto(V1.WorkflowStatus status, string field) => status switch
    {
        V1.WorkflowStatus.Unspecified => null,
        V1.WorkflowStatus.Active or V1.WorkflowStatus.Paused or V1.WorkflowStatus.Completed or V1.WorkflowStatus.Cancelled => (WorkflowStatus)(int)status,
        _ => throw BoardException.Invalid(field, $"{field} {(int)status} is not a known workflow status."),
    };

    public static TaskState? FromProto(V1.TaskState state, string field) => state switch
    {
        V1.TaskState.Unspecified => null,
        >= V1.TaskState.Pending and <= V1.TaskState.Cancelled => (TaskState)(int)state,
        _ => throw BoardException.Invalid(field, $"{field} {(int)state} is not a known task state."),
    };

    public static EventKind FromProto(V1.EventKind kind) =>
        kind is >= V1.EventKind.WorkflowCreated and <= V1.EventKind.NoteExpired
            ? (EventKind)(int)kind
            : throw BoardException.Invalid("kinds", $"Event kind {(int)kind} is not a known kind.");

    /// <summary>A duration from a request: unset is null; malformed or out-of-range values are the caller's error.</summary>
    public static TimeSpan? ToTimeSpan(Duration? duration, string field)
    {
        if (duration is null)
        {
            return null;
        }

        // Spec of google.protobuf.Duration: |seconds| <= 315,576,000,000 and nanos agree in sign.
        if (duration.Seconds is < -315_576_000_000 or > 315_576_000_000
            || duration.Nanos is < -999_999_999 or > 999_999_999
            || (duration.Seconds > 0 && duration.Nanos < 0) || (duration.Seconds < 0 && duration.Nanos > 0))
        {
            throw BoardException.Invalid(field, $"{field} is not a valid duration.");
        }

        if (duration.Seconds > TimeSpan.MaxValue.TotalSeconds / 2 || duration.Seconds < 0 || duration.Nanos < 0)
        {
            throw BoardException.Invalid(field, $"{field} must be a non-negative duration of reasonable length.");
        }

        return duration.ToTimeSpan();
    }

    private static ByteString Wrap(ReadOnlyMemory<byte> bytes) =>
        bytes.IsEmpty ? ByteString.Empty : UnsafeByteOperations.UnsafeWrap(bytes);

    private static Timestamp? Time(DateTimeOffset? value) =>
        value is { } v ? Timestamp.FromDateTimeOffset(v) : null;
}
