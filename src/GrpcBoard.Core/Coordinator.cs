using System.Globalization;
using GrpcBoard.Core.Events;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Rules;
using GrpcBoard.Core.Storage;
using GrpcBoard.Core.Watch;

namespace GrpcBoard.Core;

/// <summary>
/// The board's operations: each validates its input, runs one store transaction whose body applies the
/// state machine, and returns what was committed. Knows nothing of gRPC, protobuf or any particular
/// store; both stores get exactly these rules.
/// </summary>
public sealed class Coordinator
{
    private readonly IBoardStore _store;
    private readonly TimeProvider _time;
    private readonly BoardLimits _limits;
    private readonly ReadySignals _ready;
    private readonly WatchEngine _watch;
    private readonly WatchOptions _watchOptions;

    public Coordinator(IBoardStore store, EventHub hub, TimeProvider time, BoardLimits limits, WatchOptions? watchOptions = null)
    {
        limits.Validate();
        _store = store;
        _time = time;
        _limits = limits;
        _ready = new ReadySignals(hub);
        _watchOptions = watchOptions ?? new WatchOptions();
        _watch = new WatchEngine(store, hub, time, _watchOptions);
    }

    public BoardLimits Limits => _limits;

    /// <summary>How often a waiting claim looks again even without a signal (a safety net, not the mechanism).</summary>
    public TimeSpan ClaimRecheckInterval { get; set; } = TimeSpan.FromSeconds(5);

    private DateTimeOffset Now => _time.GetUtcNow();

    internal ReadySignals ReadySignalsForTests => _ready;

    // ---- Workflows ----------------------------------------------------------------------------------

    public async Task<(WorkflowView View, bool Created)> CreateWorkflowAsync(string workflowId, string goal, IReadOnlyDictionary<string, string>? labels, CancellationToken ct)
    {
        Validation.Id(workflowId, "workflow_id", _limits);
        Validation.Text(goal ?? "", "goal", _limits.MaxGoalBytes, allowNewlines: true);
        var labelSet = Validation.Labels(labels, "labels", _limits);
        var result = await _store.ExecuteAsync(workflowId, txn =>
        {
            if (txn.Workflow is { } existing)
            {
                if (existing.Goal != (goal ?? ""))
                {
                    throw new BoardException(BoardError.WorkflowAlreadyExists,
                        $"Workflow '{workflowId}' already exists with a different goal.",
                        new Dictionary<string, string> { ["workflow_id"] = workflowId });
                }

                return new ValueTask<(WorkflowRecord, TaskCounts, bool)>((existing, txn.Counts.Clone(), false));
            }

            var now = Now;
            var record = new WorkflowRecord
            {
                Id = workflowId,
                Goal = goal ?? "",
                Labels = labelSet,
                Status = WorkflowStatus.Active,
                CreateTime = now,
                UpdateTime = now,
            };
            txn.Append(new EventRecord { Revision = 0, Kind = EventKind.WorkflowCreated, Time = now, WorkflowId = workflowId, Workflow = record });
            return new ValueTask<(WorkflowRecord, TaskCounts, bool)>((record, new TaskCounts(), true));
        }, ct).ConfigureAwait(false);
        var (workflow, counts, created) = result.Value;
        var committed = created ? result.Events[^1].Workflow! : workflow;
        return (new WorkflowView(committed, counts, result.Revision), created);
    }

    public async Task<WorkflowView> GetWorkflowAsync(string workflowId, CancellationToken ct)
    {
        Validation.Id(workflowId, "workflow_id", _limits);
        var result = await _store.ExecuteAsync(workflowId, txn =>
            new ValueTask<(WorkflowRecord, TaskCounts)>((RequireWorkflow(txn), txn.Counts.Clone())), ct).ConfigureAwait(false);
        return new WorkflowView(result.Value.Item1, result.Value.Item2, result.Revision);
    }

    public async Task<Page<WorkflowView>> ListWorkflowsAsync(WorkflowStatus? status, string? pageToken, int pageSize, CancellationToken ct)
    {
        var size = Validation.PageSize(pageSize, _limits);
        var listing = "workflows:" + (status?.ToString() ?? "*");
        var after = PageToken.Decode(pageToken, listing);
        var items = await _store.ListWorkflowsAsync(status, after, size + 1, ct).ConfigureAwait(false);
        var page = items.Take(size).Select(s => new WorkflowView(s.Workflow, s.Counts, s.Revision)).ToArray();
        var next = items.Count > size ? PageToken.Encode(listing, page[^1].Workflow.Id) : "";
        return new Page<WorkflowView>(page, next, 0);
    }

    public async Task<WorkflowView> UpdateWorkflowAsync(WorkflowUpdate update, CancellationToken ct)
    {
        Validation.Id(update.WorkflowId, "workflow_id", _limits);
        if (update.Goal is not null)
        {
            Validation.Text(update.Goal, "goal", _limits.MaxGoalBytes, allowNewlines: true);
        }

        var setLabels = Validation.Labels(update.SetLabels, "set_labels", _limits);
        var result = await _store.ExecuteAsync(update.WorkflowId, async txn =>
        {
            var workflow = RequireWorkflow(txn);
            if (update.ExpectedModRevision != 0 && workflow.ModRevision != update.ExpectedModRevision)
            {
                throw new BoardException(BoardError.WorkflowRevisionMismatch,
                    $"Workflow '{workflow.Id}' is at mod_revision {workflow.ModRevision}, not {update.ExpectedModRevision}.",
                    new Dictionary<string, string> { ["mod_revision"] = workflow.ModRevision.ToString(CultureInfo.InvariantCulture) });
            }

            var labels = workflow.Labels.SetItems(setLabels).RemoveRange(update.RemoveLabels ?? []);
            if (labels.Count > _limits.MaxLabels)
            {
                throw BoardException.Invalid("set_labels", $"The workflow would have {labels.Count} labels; the limit is {_limits.MaxLabels}.");
            }

            var status = update.Status ?? workflow.Status;
            if (status != workflow.Status && workflow.Status.IsWorkflowTerminal())
            {
                // ACTIVE and PAUSED move freely between each other and to either end; an end is final.
                throw WorkflowNotActive(workflow, "change status");
            }

            var goal = update.Goal ?? workflow.Goal;
            if (goal == workflow.Goal && status == workflow.Status && labels.SequenceEqual(workflow.Labels))
            {
                return (workflow, txn.Counts.Clone(), false);
            }

            var now = Now;
            var updated = workflow with { Goal = goal, Status = status, Labels = labels, UpdateTime = now };
            txn.Append(new EventRecord { Revision = 0, Kind = EventKind.WorkflowUpdated, Time = now, WorkflowId = workflow.Id, Workflow = updated });
            if (status == WorkflowStatus.Cancelled)
            {
                await CancelOpenTasksAsync(txn, now).ConfigureAwait(false);
            }

            return (updated, txn.Counts.Clone(), true);
        }, ct).ConfigureAwait(false);
        var (record, counts, changed) = result.Value;
        var committed = changed ? result.Events.First(e => e.Kind == EventKind.WorkflowUpdated).Workflow! : record;
        return new WorkflowView(committed, changed ? await CountsAsync(update.WorkflowId, ct).ConfigureAwait(false) : counts, result.Revision);
    }

    public async Task<long> DeleteWorkflowAsync(string workflowId, CancellationToken ct)
    {
        Validation.Id(workflowId, "workflow_id", _limits);
        var result = await _store.ExecuteAsync(workflowId, txn =>
        {
            var workflow = RequireWorkflow(txn);
            txn.Append(new EventRecord { Revision = 0, Kind = EventKind.WorkflowDeleted, Time = Now, WorkflowId = workflowId, Workflow = workflow });
            return ValueTask.FromResult(true);
        }, ct).ConfigureAwait(false);
        return result.Revision;
    }

    // ---- Tasks --------------------------------------------------------------------------------------

    public async Task<PostResult> PostTasksAsync(string workflowId, IReadOnlyList<TaskSpec> specs, CancellationToken ct)
    {
        Validation.Id(workflowId, "workflow_id", _limits);
        if (specs.Count == 0)
        {
            throw BoardException.Invalid("tasks", "tasks must hold at least one task.");
        }

        if (specs.Count > _limits.MaxTasksPerBatch)
        {
            throw new BoardException(BoardError.LimitExceeded, $"A batch holds at most {_limits.MaxTasksPerBatch} tasks; this one has {specs.Count}.",
                new Dictionary<string, string> { ["limit"] = _limits.MaxTasksPerBatch.ToString(CultureInfo.InvariantCulture) });
        }

        var definitions = new List<TaskDefinition>(specs.Count);
        var batchIds = new HashSet<string>(StringComparer.Ordinal);
        foreach (var spec in specs)
        {
            var definition = Validation.Task(spec, _limits);
            if (!batchIds.Add(definition.Id))
            {
                throw BoardException.Invalid("tasks.id", $"Task id '{definition.Id}' appears twice in the batch.");
            }

            definitions.Add(definition);
        }

        var result = await _store.ExecuteAsync(workflowId, async txn =>
        {
            var workflow = RequireWorkflow(txn);
            if (workflow.Status.IsWorkflowTerminal())
            {
                throw WorkflowNotActive(workflow, "accept new tasks");
            }

            var existing = new Dictionary<string, TaskRecord>(StringComparer.Ordinal);
            var fresh = new Dictionary<string, TaskDefinition>(StringComparer.Ordinal);
            foreach (var definition in definitions)
            {
                if (await txn.GetTaskAsync(definition.Id).ConfigureAwait(false) is { } stored)
                {
                    if (!definition.SameAs(stored))
                    {
                        throw new BoardException(BoardError.TaskAlreadyExists,
                            $"Task '{definition.Id}' already exists with a different definition.",
                            new Dictionary<string, string> { ["task_id"] = definition.Id });
                    }

                    existing[definition.Id] = stored;
                }
                else
                {
                    fresh[definition.Id] = definition;
                }
            }

            // Dependencies: on tasks already stored, or on new tasks of this batch (which must not form a cycle).
            var blockedByBatch = new HashSet<string>(StringComparer.Ordinal);
            foreach (var definition in fresh.Values)
            {
                foreach (var dep in definition.DependsOn)
                {
                    if (fresh.ContainsKey(dep))
                    {
                        blockedByBatch.Add(definition.Id);
                        continue;
                    }

                    var stored = existing.TryGetValue(dep, out var e) ? e : await txn.GetTaskAsync(dep).ConfigureAwait(false);
                    if (stored is null)
                    {
                        throw InvalidDependency(definition.Id, dep, $"Task '{definition.Id}' depends on '{dep}', which is neither on the board nor in the batch.");
                    }

                    if (stored.State is TaskState.DeadLettered or TaskState.Cancelled)
                    {
                        throw InvalidDependency(definition.Id, dep, $"Task '{definition.Id}' depends on '{dep}', which is {TaskStateMachine.Name(stored.State)} and can never complete.");
                    }

                    if (stored.State != TaskState.Completed)
                    {
                        blockedByBatch.Add(definition.Id);
                    }
                }
            }

            ThrowOnCycle(fresh);
            var now = Now;
            foreach (var definition in definitions)
            {
                if (fresh.ContainsKey(definition.Id))
                {
                    var task = TaskStateMachine.Post(definition, dependenciesComplete: !blockedByBatch.Contains(definition.Id), now);
                    txn.Append(new EventRecord { Revision = 0, Kind = EventKind.TaskPosted, Time = now, WorkflowId = workflowId, Task = task });
                }
            }

            return existing;
        }, ct).ConfigureAwait(false);

        var changed = result.LastTasks();
        var tasks = definitions.Select(d => changed.TryGetValue(d.Id, out var t) ? t : result.Value[d.Id]).ToArray();
        return new PostResult(tasks, definitions.Where(d => result.Value.ContainsKey(d.Id)).Select(d => d.Id).ToArray(), result.Revision);
    }

    public async Task<TaskResult> GetTaskAsync(string workflowId, string taskId, CancellationToken ct)
    {
        Validation.Id(workflowId, "workflow_id", _limits);
        Validation.Id(taskId, "task_id", _limits);
        var result = await _store.ExecuteAsync(workflowId, async txn =>
        {
            RequireWorkflow(txn);
            return await RequireTaskAsync(txn, taskId).ConfigureAwait(false);
        }, ct).ConfigureAwait(false);
        return new TaskResult(result.Value, result.Revision);
    }

    public async Task<Page<TaskRecord>> ListTasksAsync(string workflowId, TaskState? state, string? pageToken, int pageSize, CancellationToken ct)
    {
        Validation.Id(workflowId, "workflow_id", _limits);
        var size = Validation.PageSize(pageSize, _limits);
        var listing = "tasks:" + workflowId + ":" + (state?.ToString() ?? "*");
        var after = PageToken.Decode(pageToken, listing);
        var result = await _store.ExecuteAsync(workflowId, async txn =>
        {
            RequireWorkflow(txn);
            return await txn.ListTasksAsync(state, after, size + 1).ConfigureAwait(false);
        }, ct).ConfigureAwait(false);
        var items = result.Value.Take(size).ToArray();
        var next = result.Value.Count > size ? PageToken.Encode(listing, items[^1].Id) : "";
        return new Page<TaskRecord>(items, next, result.Revision);
    }

    public async Task<CancelResult> CancelTaskAsync(string workflowId, string taskId, string reason, CancellationToken ct)
    {
        Validation.Id(workflowId, "workflow_id", _limits);
        Validation.Id(taskId, "task_id", _limits);
        Validation.Text(reason ?? "", "reason", _limits.MaxErrorMessageLength, allowNewlines: true);
        var result = await _store.ExecuteAsync(workflowId, async txn =>
        {
            RequireWorkflow(txn);
            var task = await RequireTaskAsync(txn, taskId).ConfigureAwait(false);
            var now = Now;
            var why = string.IsNullOrEmpty(reason) ? "Cancelled by a caller." : reason;
            txn.Append(TaskChange(EventKind.TaskCancelled, workflowId, TaskStateMachine.Cancel(task, why, now), now, reason: why));
            return await CancelDependentsAsync(txn, taskId, "cancelled", now).ConfigureAwait(false);
        }, ct).ConfigureAwait(false);
        return new CancelResult(result.LastTask(taskId)!, result.Value, result.Revision);
    }

    // ---- Claims -------------------------------------------------------------------------------------

    /// <summary>
    /// Claims the given task, or the next ready one. With a wait, a claim for the next task blocks until
    /// a task may be ready (signalled by committed events) or the wait ends.
    /// </summary>
    public async Task<ClaimResult> ClaimAsync(ClaimCommand command, CancellationToken ct)
    {
        Validation.Id(command.WorkflowId, "workflow_id", _limits);
        Validation.WorkerId(command.WorkerId, _limits);
        var skills = new HashSet<string>(Validation.Skills(command.Skills, "skills", _limits), StringComparer.Ordinal);
        var lease = Validation.Lease(command.Lease, _limits);
        var wait = command.Wait ?? TimeSpan.Zero;
        if (wait < TimeSpan.Zero || wait > _limits.MaxClaimWait)
        {
            throw BoardException.Invalid("wait", $"wait must be between 0 and {_limits.MaxClaimWait.TotalSeconds}s.");
        }

        if (!string.IsNullOrEmpty(command.TaskId))
        {
            Validation.Id(command.TaskId, "task_id", _limits);
            var byId = await _store.ExecuteAsync(command.WorkflowId, txn => ClaimByIdAsync(txn, command.TaskId, command.WorkerId, skills, lease), ct).ConfigureAwait(false);
            return new ClaimResult(byId.LastTask(command.TaskId), byId.Revision);
        }

        var deadline = Now + wait;
        using var waiter = wait > TimeSpan.Zero ? _ready.Join(command.WorkflowId, skills) : null;
        while (true)
        {
            // Armed before looking, so a task made ready after the look still wakes this claim.
            waiter?.Arm();
            var result = await _store.ExecuteAsync(command.WorkflowId, txn => ClaimNextAsync(txn, command.WorkerId, skills, lease), ct).ConfigureAwait(false);
            if (result.Value is { } claimedId)
            {
                return new ClaimResult(result.LastTask(claimedId), result.Revision);
            }

            var remaining = deadline - Now;
            if (remaining <= TimeSpan.Zero)
            {
                return new ClaimResult(null, result.Revision);
            }

            try
            {
                await waiter!.Signal.WaitAsync(Min(remaining, ClaimRecheckInterval), _time, ct).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                // Look again: either the wait is over, or this is the periodic re-check.
            }
        }
    }

    private async ValueTask<string?> ClaimByIdAsync(IWorkflowTransaction txn, string taskId, string workerId, IReadOnlyCollection<string> skills, TimeSpan lease)
    {
        var workflow = RequireWorkflow(txn);
        if (workflow.Status != WorkflowStatus.Active)
        {
            throw WorkflowNotActive(workflow, "grant claims");
        }

        var task = await RequireTaskAsync(txn, taskId).ConfigureAwait(false);
        var now = Now;
        if (TaskStateMachine.IsLeaseDue(task, now))
        {
            // The lease ran out but the timer has not fired yet: expire it here, then judge the claim.
            task = await ExpireLeaseAsync(txn, task, now).ConfigureAwait(false);
        }

        var claimed = TaskStateMachine.Claim(task, workerId, skills, lease, txn.HeadRevision, now);
        txn.Append(TaskChange(EventKind.TaskClaimed, txn.WorkflowId, claimed, now, actor: workerId));
        return taskId;
    }

    private async ValueTask<string?> ClaimNextAsync(IWorkflowTransaction txn, string workerId, IReadOnlyCollection<string> skills, TimeSpan lease)
    {
        var workflow = RequireWorkflow(txn);
        if (workflow.Status == WorkflowStatus.Paused)
        {
            return null;
        }

        if (workflow.Status != WorkflowStatus.Active)
        {
            throw WorkflowNotActive(workflow, "grant claims");
        }

        return await ClaimBestReadyAsync(txn, workerId, skills, lease, Now).ConfigureAwait(false);
    }

    /// <summary>Claims the best ready task these skills allow (callers have checked the workflow is ACTIVE); null if none is ready.</summary>
    private static async ValueTask<string?> ClaimBestReadyAsync(IWorkflowTransaction txn, string workerId, IReadOnlyCollection<string> skills, TimeSpan lease, DateTimeOffset now)
    {
        var candidates = await txn.GetReadyTasksAsync(skills, 1).ConfigureAwait(false);
        if (candidates.Count == 0)
        {
            return null;
        }

        var claimed = TaskStateMachine.Claim(candidates[0], workerId, skills, lease, txn.HeadRevision, now);
        txn.Append(TaskChange(EventKind.TaskClaimed, txn.WorkflowId, claimed, now, actor: workerId));
        return claimed.Id;
    }

    public async Task<TaskResult> RenewLeaseAsync(string workflowId, string taskId, long token, TimeSpan? lease, CancellationToken ct)
    {
        var length = lease is null || lease == TimeSpan.Zero ? (TimeSpan?)null : Validation.Lease(lease, _limits);
        var result = await FencedAsync(workflowId, taskId, (txn, task, now) =>
        {
            txn.Append(TaskChange(EventKind.TaskLeaseRenewed, workflowId, TaskStateMachine.Renew(task, token, length, now), now, actor: task.Owner));
            return new ValueTask<bool>(true);
        }, ct).ConfigureAwait(false);
        return new TaskResult(result.LastTask(taskId)!, result.Revision);
    }

    public async Task<TaskResult> ReleaseTaskAsync(string workflowId, string taskId, long token, CancellationToken ct)
    {
        var result = await FencedAsync(workflowId, taskId, (txn, task, now) =>
        {
            txn.Append(TaskChange(EventKind.TaskReleased, workflowId, TaskStateMachine.Release(task, token, now), now, actor: task.Owner));
            return new ValueTask<bool>(true);
        }, ct).ConfigureAwait(false);
        return new TaskResult(result.LastTask(taskId)!, result.Revision);
    }

    public async Task<TaskResult> CheckpointAsync(string workflowId, string taskId, long token, ReadOnlyMemory<byte> checkpoint, CancellationToken ct)
    {
        Validation.Size(checkpoint, "checkpoint", _limits.MaxCheckpointBytes);
        var result = await FencedAsync(workflowId, taskId, (txn, task, now) =>
        {
            txn.Append(TaskChange(EventKind.TaskCheckpointed, workflowId, TaskStateMachine.Checkpoint(task, token, checkpoint, now), now, actor: task.Owner));
            return new ValueTask<bool>(true);
        }, ct).ConfigureAwait(false);
        return new TaskResult(result.LastTask(taskId)!, result.Revision);
    }

    public Task<CompleteResult> CompleteTaskAsync(string workflowId, string taskId, long token, ReadOnlyMemory<byte> resultBytes, string resultContentType, CancellationToken ct) =>
        CompleteTaskAsync(workflowId, taskId, token, resultBytes, resultContentType, next: null, ct);

    /// <param name="next">Also claims the next ready task for the same worker, in the same transaction.</param>
    public async Task<CompleteResult> CompleteTaskAsync(string workflowId, string taskId, long token, ReadOnlyMemory<byte> resultBytes, string resultContentType, NextClaim? next, CancellationToken ct)
    {
        Validation.Size(resultBytes, "result", _limits.MaxResultBytes);
        Validation.Text(resultContentType ?? "", "result_content_type", 256);
        var nextSkills = next is null ? null : new HashSet<string>(Validation.Skills(next.Skills, "claim_next.skills", _limits), StringComparer.Ordinal);
        var nextLease = next is null ? TimeSpan.Zero : Validation.Lease(next.Lease, _limits);
        var result = await FencedAsync(workflowId, taskId, async (txn, task, now) =>
        {
            var (completed, already) = TaskStateMachine.Complete(task, token, resultBytes, resultContentType ?? "", now);
            if (already)
            {
                return (completed, true, (IReadOnlyList<string>)[], (string?)null);
            }

            txn.Append(TaskChange(EventKind.TaskCompleted, workflowId, completed, now, actor: task.Owner));
            var ready = await ReadyDependentsAsync(txn, taskId, now).ConfigureAwait(false);
            // The next claim sees this transaction's changes: a dependent that just became READY may be it.
            var nextId = nextSkills is not null && txn.Workflow?.Status == WorkflowStatus.Active
                ? await ClaimBestReadyAsync(txn, task.Owner, nextSkills, nextLease, now).ConfigureAwait(false)
                : null;
            return (completed, false, ready, nextId);
        }, ct).ConfigureAwait(false);
        var (task, alreadyCompleted, readyDependents, nextTaskId) = result.Value;
        return new CompleteResult(result.LastTask(taskId) ?? task, alreadyCompleted, readyDependents, result.Revision,
            nextTaskId is null ? null : result.LastTask(nextTaskId));
    }

    public async Task<FailResult> FailTaskAsync(string workflowId, string taskId, long token, string message, ReadOnlyMemory<byte> details, bool nonRetryable, CancellationToken ct)
    {
        Validation.Text(message ?? "", "error_message", _limits.MaxErrorMessageLength, allowNewlines: true);
        Validation.Size(details, "error_details", _limits.MaxErrorDetailsBytes);
        var result = await FencedAsync(workflowId, taskId, async (txn, task, now) =>
        {
            var failed = TaskStateMachine.Fail(task, token, message ?? "", details, nonRetryable, now);
            txn.Append(TaskChange(EventKind.TaskFailed, workflowId, failed, now, actor: task.Owner));
            return failed.State == TaskState.DeadLettered
                ? await CancelDependentsAsync(txn, taskId, "dead-lettered", now).ConfigureAwait(false)
                : [];
        }, ct).ConfigureAwait(false);
        var final = result.LastTask(taskId)!;
        return new FailResult(final, final.State is TaskState.Ready or TaskState.Backoff, result.Value, result.Revision);
    }

    // ---- Notes --------------------------------------------------------------------------------------

    public async Task<NoteResult> PutNoteAsync(NotePutCommand command, CancellationToken ct)
    {
        Validation.Id(command.WorkflowId, "workflow_id", _limits);
        Validation.NoteKey(command.Key, _limits);
        Validation.Size(command.Value, "value", _limits.MaxNoteValueBytes);
        Validation.Text(command.ContentType, "content_type", 256);
        Validation.Text(command.Writer, "writer", 256);
        if (command.Ttl is { } ttl && (ttl < TimeSpan.Zero || ttl > _limits.MaxNoteTtl))
        {
            throw BoardException.Invalid("ttl", $"ttl must be between 0 and {_limits.MaxNoteTtl.TotalDays} days.");
        }

        if (command.ExpectedVersion < 0)
        {
            throw BoardException.Invalid("expected_version", "expected_version must not be negative.");
        }

        var result = await _store.ExecuteAsync(command.WorkflowId, async txn =>
        {
            RequireWorkflow(txn);
            var now = Now;
            var current = await LiveNoteAsync(txn, command.Key, now).ConfigureAwait(false);
            CheckNoteVersion(command.Key, current, command.ExpectedVersion);
            var note = new NoteRecord
            {
                Key = command.Key,
                Value = command.Value,
                ContentType = command.ContentType,
                Version = (current?.Version ?? 0) + 1,
                ExpireTime = command.Ttl is { } t && t > TimeSpan.Zero ? now + t : null,
                UpdateTime = now,
                Writer = command.Writer,
            };
            txn.Append(new EventRecord { Revision = 0, Kind = EventKind.NotePut, Time = now, WorkflowId = command.WorkflowId, Note = note, Actor = command.Writer });
            return true;
        }, ct).ConfigureAwait(false);
        return new NoteResult(result.Events[^1].Note!, result.Revision);
    }

    public async Task<NoteResult> GetNoteAsync(string workflowId, string key, CancellationToken ct)
    {
        Validation.Id(workflowId, "workflow_id", _limits);
        Validation.NoteKey(key, _limits);
        var result = await _store.ExecuteAsync(workflowId, async txn =>
        {
            RequireWorkflow(txn);
            var note = await txn.GetNoteAsync(key).ConfigureAwait(false);
            return note is null || note.IsExpired(Now) ? throw NoteNotFound(key) : note;
        }, ct).ConfigureAwait(false);
        return new NoteResult(result.Value, result.Revision);
    }

    public async Task<Page<NoteRecord>> ListNotesAsync(string workflowId, string prefix, string? pageToken, int pageSize, bool keysOnly, CancellationToken ct)
    {
        Validation.Id(workflowId, "workflow_id", _limits);
        Validation.Text(prefix ?? "", "key_prefix", _limits.MaxNoteKeyBytes);
        var size = Validation.PageSize(pageSize, _limits);
        var listing = "notes:" + workflowId + ":" + prefix;
        var after = PageToken.Decode(pageToken, listing);
        var result = await _store.ExecuteAsync(workflowId, async txn =>
        {
            RequireWorkflow(txn);
            return await txn.ListNotesAsync(prefix ?? "", after, size + 1).ConfigureAwait(false);
        }, ct).ConfigureAwait(false);
        var now = Now;
        var raw = result.Value.Take(size).ToArray();
        var items = raw.Where(n => !n.IsExpired(now)).Select(n => keysOnly ? n with { Value = ReadOnlyMemory<byte>.Empty } : n).ToArray();
        var next = result.Value.Count > size ? PageToken.Encode(listing, raw[^1].Key) : "";
        return new Page<NoteRecord>(items, next, result.Revision);
    }

    public async Task<long> DeleteNoteAsync(string workflowId, string key, long? expectedVersion, string writer, CancellationToken ct)
    {
        Validation.Id(workflowId, "workflow_id", _limits);
        Validation.NoteKey(key, _limits);
        Validation.Text(writer ?? "", "writer", 256);
        var result = await _store.ExecuteAsync(workflowId, async txn =>
        {
            RequireWorkflow(txn);
            var now = Now;
            var current = await LiveNoteAsync(txn, key, now).ConfigureAwait(false) ?? throw NoteNotFound(key);
            CheckNoteVersion(key, current, expectedVersion);
            txn.Append(new EventRecord
            {
                Revision = 0,
                Kind = EventKind.NoteDeleted,
                Time = now,
                WorkflowId = workflowId,
                Note = current with { Value = ReadOnlyMemory<byte>.Empty, UpdateTime = now },
                Actor = writer ?? "",
            });
            return true;
        }, ct).ConfigureAwait(false);
        return result.Revision;
    }

    // ---- Watch and export ---------------------------------------------------------------------------

    public IAsyncEnumerable<WatchItem> WatchAsync(string workflowId, long startRevision, WatchFilter filter, TimeSpan? progressInterval, CancellationToken ct)
    {
        Validation.Id(workflowId, "workflow_id", _limits);
        if (startRevision < 0)
        {
            throw BoardException.Invalid("start_revision", "start_revision must not be negative.");
        }

        var interval = progressInterval ?? TimeSpan.Zero;
        if (interval != TimeSpan.Zero && (interval < TimeSpan.FromMilliseconds(100) || interval > TimeSpan.FromHours(1)))
        {
            throw BoardException.Invalid("progress_interval", "progress_interval must be between 100ms and 1h.");
        }

        return _watch.WatchAsync(workflowId, startRevision, filter, interval == TimeSpan.Zero ? _watchOptions.DefaultProgressInterval : interval, ct);
    }

    /// <summary>Everything in a workflow at one revision, with up to <paramref name="historyLimit"/> recent events.</summary>
    public async Task<WorkflowSnapshot> ExportAsync(string workflowId, int historyLimit, CancellationToken ct)
    {
        Validation.Id(workflowId, "workflow_id", _limits);
        if (historyLimit < 0 || historyLimit > _limits.MaxExportEvents)
        {
            throw BoardException.Invalid("history_limit", $"history_limit must be between 0 and {_limits.MaxExportEvents}.");
        }

        var limit = historyLimit == 0 ? _limits.MaxExportEvents : historyLimit;
        var state = await _store.ExecuteAsync(workflowId, async txn =>
        {
            var workflow = RequireWorkflow(txn);
            var tasks = new List<TaskRecord>();
            string? after = null;
            while (true)
            {
                var page = await txn.ListTasksAsync(null, after, 1000).ConfigureAwait(false);
                tasks.AddRange(page);
                if (page.Count < 1000)
                {
                    break;
                }

                after = page[^1].Id;
            }

            var notes = new List<NoteRecord>();
            after = null;
            var now = Now;
            while (true)
            {
                var page = await txn.ListNotesAsync("", after, 1000).ConfigureAwait(false);
                notes.AddRange(page.Where(n => !n.IsExpired(now)));
                if (page.Count < 1000)
                {
                    break;
                }

                after = page[^1].Key;
            }

            return (workflow, txn.Counts.Clone(), tasks, notes);
        }, ct).ConfigureAwait(false);

        var (wf, counts, allTasks, allNotes) = state.Value;
        var head = state.Revision;
        var events = new List<EventRecord>();
        var first = await _store.ReadEventsAsync(workflowId, 1, 1, ct).ConfigureAwait(false);
        var from = Math.Max(first.OldestRevision, head - limit + 1);
        while (from <= head)
        {
            var page = await _store.ReadEventsAsync(workflowId, from, (int)Math.Min(1000, head - from + 1), ct).ConfigureAwait(false);
            if (page.Events.Count == 0)
            {
                break;
            }

            events.AddRange(page.Events.Where(e => e.Revision <= head));
            from = page.Events[^1].Revision + 1;
        }

        var oldest = events.Count > 0 ? events[0].Revision : first.OldestRevision;
        return new WorkflowSnapshot(new WorkflowView(wf, counts, head), allTasks, allNotes, events, oldest);
    }

    // ---- Timers -------------------------------------------------------------------------------------

    /// <summary>
    /// Acts on a due timer if it is still due: expires a lease, ends a backoff, or deletes an expired note.
    /// Safe to call from several server instances at once; the store's atomicity lets exactly one act.
    /// </summary>
    public async Task<TimerOutcome> FireTimerAsync(DueTimer timer, CancellationToken ct)
    {
        var result = await _store.ExecuteAsync(timer.WorkflowId, async txn =>
        {
            if (txn.Workflow is null)
            {
                return (EventKind?)null;
            }

            var now = Now;
            switch (timer.Kind)
            {
                case TimerKind.LeaseExpiry:
                    if (await txn.GetTaskAsync(timer.Id).ConfigureAwait(false) is { } leased && TaskStateMachine.IsLeaseDue(leased, now))
                    {
                        await ExpireLeaseAsync(txn, leased, now).ConfigureAwait(false);
                        return EventKind.TaskLeaseExpired;
                    }

                    break;
                case TimerKind.BackoffEnd:
                    if (await txn.GetTaskAsync(timer.Id).ConfigureAwait(false) is { } waiting && TaskStateMachine.IsBackoffDue(waiting, now))
                    {
                        txn.Append(TaskChange(EventKind.TaskReady, txn.WorkflowId, TaskStateMachine.EndBackoff(waiting, now), now, reason: "Retry backoff ended."));
                        return EventKind.TaskReady;
                    }

                    break;
                case TimerKind.NoteExpiry:
                    if (await txn.GetNoteAsync(timer.Id).ConfigureAwait(false) is { } note && note.IsExpired(now))
                    {
                        AppendNoteExpired(txn, note, now);
                        return EventKind.NoteExpired;
                    }

                    break;
            }

            return null;
        }, ct).ConfigureAwait(false);
        return new TimerOutcome(timer, result.Value);
    }

    // ---- Shared steps -------------------------------------------------------------------------------

    private Task<TxnResult<T>> FencedAsync<T>(string workflowId, string taskId, Func<IWorkflowTransaction, TaskRecord, DateTimeOffset, ValueTask<T>> step, CancellationToken ct)
    {
        Validation.Id(workflowId, "workflow_id", _limits);
        Validation.Id(taskId, "task_id", _limits);
        return _store.ExecuteAsync(workflowId, async txn =>
        {
            RequireWorkflow(txn);
            var task = await RequireTaskAsync(txn, taskId).ConfigureAwait(false);
            return await step(txn, task, Now).ConfigureAwait(false);
        }, ct);
    }

    private async ValueTask<TaskRecord> ExpireLeaseAsync(IWorkflowTransaction txn, TaskRecord task, DateTimeOffset now)
    {
        var expired = TaskStateMachine.ExpireLease(task, now);
        txn.Append(TaskChange(EventKind.TaskLeaseExpired, txn.WorkflowId, expired, now, reason: expired.LastError!.Message));
        if (expired.State == TaskState.DeadLettered)
        {
            await CancelDependentsAsync(txn, task.Id, "dead-lettered", now).ConfigureAwait(false);
        }

        return expired;
    }

    /// <summary>Makes READY every pending dependent of a completed task whose dependencies have all completed.</summary>
    private static async ValueTask<IReadOnlyList<string>> ReadyDependentsAsync(IWorkflowTransaction txn, string completedId, DateTimeOffset now)
    {
        List<string>? ready = null;
        foreach (var dependentId in await txn.GetDependentsAsync(completedId).ConfigureAwait(false))
        {
            var dependent = await txn.GetTaskAsync(dependentId).ConfigureAwait(false);
            if (dependent is null || dependent.State != TaskState.Pending)
            {
                continue;
            }

            var allDone = true;
            foreach (var dep in dependent.DependsOn)
            {
                if ((await txn.GetTaskAsync(dep).ConfigureAwait(false))?.State != TaskState.Completed)
                {
                    allDone = false;
                    break;
                }
            }

            if (allDone)
            {
                txn.Append(TaskChange(EventKind.TaskReady, txn.WorkflowId, TaskStateMachine.DependenciesCompleted(dependent, now), now,
                    reason: "All dependencies completed."));
                (ready ??= []).Add(dependentId);
            }
        }

        return ready ?? (IReadOnlyList<string>)[];
    }

    /// <summary>
    /// A task that can never complete takes its pending dependents with it, transitively: otherwise they
    /// would wait forever. Returns the ids cancelled.
    /// </summary>
    private static async ValueTask<IReadOnlyList<string>> CancelDependentsAsync(IWorkflowTransaction txn, string taskId, string how, DateTimeOffset now)
    {
        List<string>? cancelled = null;
        var queue = new Queue<(string Id, string How)>();
        queue.Enqueue((taskId, how));
        while (queue.TryDequeue(out var item))
        {
            foreach (var dependentId in await txn.GetDependentsAsync(item.Id).ConfigureAwait(false))
            {
                var dependent = await txn.GetTaskAsync(dependentId).ConfigureAwait(false);
                if (dependent is null || dependent.State != TaskState.Pending)
                {
                    continue;
                }

                var reason = $"Dependency '{item.Id}' was {item.How}.";
                txn.Append(TaskChange(EventKind.TaskCancelled, txn.WorkflowId, TaskStateMachine.Cancel(dependent, reason, now), now, reason: reason));
                (cancelled ??= []).Add(dependentId);
                queue.Enqueue((dependentId, "cancelled"));
            }
        }

        return cancelled ?? (IReadOnlyList<string>)[];
    }

    private static async ValueTask CancelOpenTasksAsync(IWorkflowTransaction txn, DateTimeOffset now)
    {
        const string reason = "The workflow was cancelled.";
        string? after = null;
        while (true)
        {
            var page = await txn.ListTasksAsync(null, after, 1000).ConfigureAwait(false);
            foreach (var task in page)
            {
                // Read each task before changing it: a listing is not a read the store checks at commit
                // (optimistic stores validate and re-index what was read with GetTaskAsync).
                var current = await txn.GetTaskAsync(task.Id).ConfigureAwait(false);
                if (current is not null && !current.State.IsTerminal())
                {
                    txn.Append(TaskChange(EventKind.TaskCancelled, txn.WorkflowId, TaskStateMachine.Cancel(current, reason, now), now, reason: reason));
                }
            }

            if (page.Count < 1000)
            {
                return;
            }

            after = page[^1].Id;
        }
    }

    /// <summary>A note whose TTL has passed is gone; if the timer has not removed it yet, remove it here first.</summary>
    private static async ValueTask<NoteRecord?> LiveNoteAsync(IWorkflowTransaction txn, string key, DateTimeOffset now)
    {
        var note = await txn.GetNoteAsync(key).ConfigureAwait(false);
        if (note is not null && note.IsExpired(now))
        {
            AppendNoteExpired(txn, note, now);
            return null;
        }

        return note;
    }

    private static void AppendNoteExpired(IWorkflowTransaction txn, NoteRecord note, DateTimeOffset now) =>
        txn.Append(new EventRecord
        {
            Revision = 0,
            Kind = EventKind.NoteExpired,
            Time = now,
            WorkflowId = txn.WorkflowId,
            Note = note with { Value = ReadOnlyMemory<byte>.Empty },
            Reason = $"The note's time to live ended at {note.ExpireTime:O}.",
        });

    private static void CheckNoteVersion(string key, NoteRecord? current, long? expected)
    {
        if (expected is not { } want)
        {
            return;
        }

        var have = current?.Version ?? 0;
        if (have != want)
        {
            throw new BoardException(BoardError.NoteVersionMismatch,
                want == 0 ? $"Note '{key}' already exists (version {have})." : $"Note '{key}' is at version {have}, not {want}.",
                new Dictionary<string, string> { ["version"] = have.ToString(CultureInfo.InvariantCulture), ["key"] = key });
        }
    }

    private async Task<TaskCounts> CountsAsync(string workflowId, CancellationToken ct) =>
        (await _store.ExecuteAsync(workflowId, txn => new ValueTask<TaskCounts>(txn.Counts.Clone()), ct).ConfigureAwait(false)).Value;

    private static WorkflowRecord RequireWorkflow(IWorkflowTransaction txn) =>
        txn.Workflow ?? throw BoardException.WorkflowNotFound(txn.WorkflowId);

    private static async ValueTask<TaskRecord> RequireTaskAsync(IWorkflowTransaction txn, string taskId) =>
        await txn.GetTaskAsync(taskId).ConfigureAwait(false) ?? throw BoardException.TaskNotFound(txn.WorkflowId, taskId);

    private static EventRecord TaskChange(EventKind kind, string workflowId, TaskRecord task, DateTimeOffset now, string actor = "", string reason = "") =>
        new() { Revision = 0, Kind = kind, Time = now, WorkflowId = workflowId, Task = task, Actor = actor, Reason = reason };

    private static BoardException WorkflowNotActive(WorkflowRecord workflow, string what) =>
        new(BoardError.WorkflowNotActive, $"Workflow '{workflow.Id}' is {workflow.Status.ToString().ToUpperInvariant()} and does not {what}.",
            new Dictionary<string, string> { ["status"] = workflow.Status.ToString().ToUpperInvariant() });

    private static BoardException InvalidDependency(string taskId, string dependency, string message) =>
        new(BoardError.InvalidDependency, message, new Dictionary<string, string> { ["task_id"] = taskId, ["dependency"] = dependency });

    private static BoardException NoteNotFound(string key) =>
        new(BoardError.NoteNotFound, $"Note '{key}' does not exist.", new Dictionary<string, string> { ["key"] = key });

    /// <summary>Rejects a batch whose new tasks depend on each other in a cycle (Kahn's algorithm).</summary>
    private static void ThrowOnCycle(Dictionary<string, TaskDefinition> fresh)
    {
        var indegree = fresh.Keys.ToDictionary(k => k, _ => 0, StringComparer.Ordinal);
        foreach (var d in fresh.Values)
        {
            indegree[d.Id] = d.DependsOn.Count(fresh.ContainsKey);
        }

        var queue = new Queue<string>(indegree.Where(kv => kv.Value == 0).Select(kv => kv.Key));
        var dependents = fresh.Values
            .SelectMany(d => d.DependsOn.Where(fresh.ContainsKey).Select(dep => (dep, d.Id)))
            .ToLookup(x => x.dep, x => x.Id, StringComparer.Ordinal);
        var seen = 0;
        while (queue.TryDequeue(out var id))
        {
            seen++;
            foreach (var next in dependents[id])
            {
                if (--indegree[next] == 0)
                {
                    queue.Enqueue(next);
                }
            }
        }

        if (seen != fresh.Count)
        {
            var member = indegree.First(kv => kv.Value > 0).Key;
            throw InvalidDependency(member, string.Join(",", fresh[member].DependsOn), $"The batch's dependencies form a cycle through task '{member}'.");
        }
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;
}
