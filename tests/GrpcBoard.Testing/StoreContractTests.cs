using System.Collections.Concurrent;
using System.Text;
using GrpcBoard.Core;
using GrpcBoard.Core.Events;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Storage;
using GrpcBoard.Core.Watch;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace GrpcBoard.Testing;

/// <summary>A store, a hub, a coordinator on a manual clock, and helpers, created fresh for each test.</summary>
public abstract class BoardTestBase : IAsyncLifetime
{
    protected ManualTimeProvider Time { get; } = new();

    protected EventHub Hub { get; private set; } = null!;

    protected IBoardStore Store { get; private set; } = null!;

    protected Coordinator Board { get; private set; } = null!;

    protected TimerLoop Timers { get; private set; } = null!;

    /// <summary>Events a store keeps per workflow in these tests (small, so compaction is testable).</summary>
    protected virtual int MaxEventsPerWorkflow => 100_000;

    protected abstract Task<IBoardStore> CreateStoreAsync(EventHub hub, int maxEventsPerWorkflow);

    public virtual async Task InitializeAsync() => await OpenAsync();

    public virtual async Task DisposeAsync() => await Store.DisposeAsync();

    protected async Task OpenAsync(int? maxEvents = null)
    {
        Hub = new EventHub();
        Store = await CreateStoreAsync(Hub, maxEvents ?? MaxEventsPerWorkflow);
        Board = new Coordinator(Store, Hub, Time, new BoardLimits());
        Timers = new TimerLoop(Store, Board, Time, NullLogger<TimerLoop>.Instance);
    }

    /// <summary>A fresh workflow id per test, so stores shared between tests (one Redis) do not collide.</summary>
    protected static string NewId(string prefix = "wf") => $"{prefix}-{Guid.NewGuid():N}"[..24];

    protected async Task<string> NewWorkflowAsync(string goal = "contract test")
    {
        var id = NewId();
        await Board.CreateWorkflowAsync(id, goal, null, default).Within();
        return id;
    }

    protected static TaskSpec Spec(string id, int priority = 0, string[]? skills = null, string[]? deps = null, int maxAttempts = 0, TimeSpan? backoff = null) => new()
    {
        Id = id,
        Payload = Encoding.UTF8.GetBytes("payload of " + id),
        ContentType = "text/plain",
        Priority = priority,
        RequiredSkills = skills ?? [],
        DependsOn = deps ?? [],
        MaxAttempts = maxAttempts,
        InitialBackoff = backoff,
    };

    protected Task<ClaimResult> ClaimAsync(string wf, string worker, string? taskId = null, TimeSpan? lease = null, string[]? skills = null, TimeSpan? wait = null) =>
        Board.ClaimAsync(new ClaimCommand { WorkflowId = wf, TaskId = taskId, WorkerId = worker, Lease = lease, Skills = skills ?? [], Wait = wait }, default).Within();

    protected Task<List<EventRecord>> AllEventsAsync(string wf) => StoreReads.AllEventsAsync(Store, wf);

    protected static async Task<BoardException> Refused(Func<Task> call)
    {
        var ex = await Assert.ThrowsAsync<BoardException>(() => call().Within());
        return ex;
    }

    protected async Task<List<WatchItem>> TakeAsync(IAsyncEnumerable<WatchItem> stream, int count, Func<WatchItem, bool>? keep = null)
    {
        var items = new List<WatchItem>();
        using var cts = new CancellationTokenSource(TestTimeouts.Default);
        await foreach (var item in stream.WithCancellation(cts.Token))
        {
            if (keep is null || keep(item))
            {
                items.Add(item);
            }

            if (items.Count == count)
            {
                break;
            }
        }

        return items;
    }
}

/// <summary>
/// The contract every store passes: the coordination rules (which live once, in the Coordinator) must hold
/// whatever store runs them. A store's test class derives from this and says how to create the store; the
/// same bodies then run against memory, SQLite, Redis and Redis Cluster. Assertions are on accepted effects
/// (revisions, fencing tokens, results, events), never on timing.
/// </summary>
public abstract class StoreContractTests : BoardTestBase
{
    // ---- Workflows and revisions --------------------------------------------------------------------

    [Fact]
    public async Task CreateWorkflow_SameGoal_IsIdempotent_OtherGoal_IsRefused()
    {
        var id = NewId();
        var (first, created) = await Board.CreateWorkflowAsync(id, "goal", new Dictionary<string, string> { ["team"] = "a" }, default).Within();
        var (again, createdAgain) = await Board.CreateWorkflowAsync(id, "goal", null, default).Within();
        Assert.True(created);
        Assert.False(createdAgain);
        Assert.Equal(first.Workflow.ModRevision, again.Workflow.ModRevision);
        Assert.Equal("a", again.Workflow.Labels["team"]);
        var ex = await Refused(() => Board.CreateWorkflowAsync(id, "another goal", null, default));
        Assert.Equal(BoardError.WorkflowAlreadyExists, ex.Error);
    }

    [Fact]
    public async Task Revisions_IncreaseByOnePerChange_AndSnapshotsCarryTheirRevision()
    {
        var wf = await NewWorkflowAsync();
        await Board.PostTasksAsync(wf, [Spec("a"), Spec("b", deps: ["a"])], default).Within();
        var claim = await ClaimAsync(wf, "w1");
        await Board.CheckpointAsync(wf, "a", claim.Task!.FencingToken, new byte[] { 1, 2 }, default).Within();
        await Board.CompleteTaskAsync(wf, "a", claim.Task.FencingToken, "r"u8.ToArray(), "text/plain", default).Within();
        await Board.PutNoteAsync(new NotePutCommand { WorkflowId = wf, Key = "k", Value = "v"u8.ToArray() }, default).Within();

        var events = await AllEventsAsync(wf);
        Assert.Equal(Enumerable.Range(1, events.Count).Select(i => (long)i), events.Select(e => e.Revision));
        Assert.Equal(
            [EventKind.WorkflowCreated, EventKind.TaskPosted, EventKind.TaskPosted, EventKind.TaskClaimed, EventKind.TaskCheckpointed, EventKind.TaskCompleted, EventKind.TaskReady, EventKind.NotePut],
            events.Select(e => e.Kind));
        foreach (var e in events)
        {
            Assert.Equal(e.Revision, e.Task?.ModRevision ?? e.Note?.ModRevision ?? e.Workflow?.ModRevision);
        }

        var b = await Board.GetTaskAsync(wf, "b", default).Within();
        Assert.Equal(TaskState.Ready, b.Task.State);
        Assert.Equal(events.Single(e => e.Kind == EventKind.TaskReady).Revision, b.Task.ModRevision);
        Assert.Equal(events.Count, b.Revision);
    }

    [Fact]
    public async Task FailingTransactionBody_CommitsNothing()
    {
        var wf = await NewWorkflowAsync();
        var before = await AllEventsAsync(wf);
        await Assert.ThrowsAsync<InvalidOperationException>(() => Store.ExecuteAsync<bool>(wf, txn =>
        {
            txn.Append(new EventRecord
            {
                Revision = 0,
                Kind = EventKind.TaskPosted,
                Time = Time.GetUtcNow(),
                WorkflowId = wf,
                Task = Core.Rules.TaskStateMachine.Post(new TaskDefinition { Id = "ghost", MaxAttempts = 1, Retry = RetryPolicy.Default }, true, Time.GetUtcNow()),
            });
            throw new InvalidOperationException("body failed after appending");
        }, default).Within());

        Assert.Equal(before.Count, (await AllEventsAsync(wf)).Count);
        Assert.Equal(BoardError.TaskNotFound, (await Refused(() => Board.GetTaskAsync(wf, "ghost", default))).Error);
    }

    [Fact]
    public async Task UpdateWorkflow_CompareAndSet_OnModRevision()
    {
        var wf = await NewWorkflowAsync();
        var current = await Board.GetWorkflowAsync(wf, default).Within();
        var updated = await Board.UpdateWorkflowAsync(new WorkflowUpdate { WorkflowId = wf, Goal = "new goal", ExpectedModRevision = current.Workflow.ModRevision }, default).Within();
        Assert.Equal("new goal", updated.Workflow.Goal);
        var ex = await Refused(() => Board.UpdateWorkflowAsync(new WorkflowUpdate { WorkflowId = wf, Goal = "lost update", ExpectedModRevision = current.Workflow.ModRevision }, default));
        Assert.Equal(BoardError.WorkflowRevisionMismatch, ex.Error);
        Assert.Equal(updated.Workflow.ModRevision.ToString(System.Globalization.CultureInfo.InvariantCulture), ex.Metadata["mod_revision"]);
    }

    [Fact]
    public async Task PausedWorkflow_GrantsNoClaims_AndCancellingIt_CancelsOpenTasks()
    {
        var wf = await NewWorkflowAsync();
        await Board.PostTasksAsync(wf, [Spec("a"), Spec("b"), Spec("c")], default).Within();
        var held = await ClaimAsync(wf, "w1", "c");
        await Board.CompleteTaskAsync(wf, "c", held.Task!.FencingToken, "done"u8.ToArray(), "", default).Within();
        await Board.UpdateWorkflowAsync(new WorkflowUpdate { WorkflowId = wf, Status = WorkflowStatus.Paused }, default).Within();

        Assert.Null((await ClaimAsync(wf, "w1")).Task);
        Assert.Equal(BoardError.WorkflowNotActive, (await Refused(() => ClaimAsync(wf, "w1", "a"))).Error);

        var active = await Board.UpdateWorkflowAsync(new WorkflowUpdate { WorkflowId = wf, Status = WorkflowStatus.Active }, default).Within();
        var claimed = await ClaimAsync(wf, "w1");
        Assert.NotNull(claimed.Task);
        // Both open tasks are claimable at once: the refused claims held none back (a store may set one
        // aside for a claimer before it reads the workflow's status).
        Assert.NotNull((await ClaimAsync(wf, "w2")).Task);
        var cancelled = await Board.UpdateWorkflowAsync(new WorkflowUpdate { WorkflowId = wf, Status = WorkflowStatus.Cancelled }, default).Within();
        Assert.Equal(2, cancelled.Counts[TaskState.Cancelled]);
        Assert.Equal(1, cancelled.Counts[TaskState.Completed]);
        Assert.True(cancelled.Revision > active.Revision);
        Assert.Equal(BoardError.ClaimNotHeld, (await Refused(() => Board.RenewLeaseAsync(wf, claimed.Task!.Id, claimed.Task.FencingToken, null, default))).Error);
        Assert.Equal(BoardError.WorkflowNotActive, (await Refused(() => Board.PostTasksAsync(wf, [Spec("late")], default))).Error);
        Assert.Equal(BoardError.WorkflowNotActive, (await Refused(() => Board.UpdateWorkflowAsync(new WorkflowUpdate { WorkflowId = wf, Status = WorkflowStatus.Active }, default))).Error);
    }

    // ---- Posting ------------------------------------------------------------------------------------

    [Fact]
    public async Task PostTasks_IsIdempotentPerId_AndRefusesADifferentDefinition()
    {
        var wf = await NewWorkflowAsync();
        var first = await Board.PostTasksAsync(wf, [Spec("a"), Spec("b")], default).Within();
        var again = await Board.PostTasksAsync(wf, [Spec("a"), Spec("c")], default).Within();
        Assert.Equal(["a"], again.ExistingIds);
        Assert.Equal(first.Tasks[0].ModRevision, again.Tasks[0].ModRevision);
        // The answer lists the batch in its order: the stored task as it was, the new one as just posted.
        Assert.Equal(["a", "c"], again.Tasks.Select(t => t.Id));
        Assert.Equal(again.Revision, again.Tasks[1].ModRevision);
        Assert.True(again.Tasks[1].ModRevision > first.Revision);
        var ex = await Refused(() => Board.PostTasksAsync(wf, [Spec("b", priority: 9)], default));
        Assert.Equal(BoardError.TaskAlreadyExists, ex.Error);
        Assert.Equal(3, (await Board.GetWorkflowAsync(wf, default).Within()).Counts.Total);
    }

    [Fact]
    public async Task PostTasks_IsAtomic_ABadTaskLeavesNoTrace()
    {
        var wf = await NewWorkflowAsync();
        var before = (await AllEventsAsync(wf)).Count;
        var missing = await Refused(() => Board.PostTasksAsync(wf, [Spec("a"), Spec("b", deps: ["nowhere"])], default));
        Assert.Equal(BoardError.InvalidDependency, missing.Error);
        var cycle = await Refused(() => Board.PostTasksAsync(wf, [Spec("x", deps: ["z"]), Spec("y", deps: ["x"]), Spec("z", deps: ["y"])], default));
        Assert.Equal(BoardError.InvalidDependency, cycle.Error);
        Assert.Equal(before, (await AllEventsAsync(wf)).Count);
        Assert.Equal(0, (await Board.GetWorkflowAsync(wf, default).Within()).Counts.Total);
    }

    [Fact]
    public async Task Dependencies_MakeTasksReadyInOrder_AndAFailureCancelsDependentsTransitively()
    {
        var wf = await NewWorkflowAsync();
        var posted = await Board.PostTasksAsync(wf, [Spec("join", deps: ["left", "right"]), Spec("left"), Spec("right"), Spec("after", deps: ["join"])], default).Within();
        Assert.Equal([TaskState.Pending, TaskState.Ready, TaskState.Ready, TaskState.Pending], posted.Tasks.Select(t => t.State));

        var left = await ClaimAsync(wf, "w", "left");
        var done = await Board.CompleteTaskAsync(wf, "left", left.Task!.FencingToken, default, "", default).Within();
        Assert.Empty(done.ReadyDependents);
        var right = await ClaimAsync(wf, "w", "right");
        done = await Board.CompleteTaskAsync(wf, "right", right.Task!.FencingToken, default, "", default).Within();
        Assert.Equal(["join"], done.ReadyDependents);

        var join = await ClaimAsync(wf, "w", "join");
        var failed = await Board.FailTaskAsync(wf, "join", join.Task!.FencingToken, "broken", default, nonRetryable: true, default).Within();
        Assert.Equal(TaskState.DeadLettered, failed.Task.State);
        Assert.Equal(["after"], failed.CancelledDependents);
        var after = await Board.GetTaskAsync(wf, "after", default).Within();
        Assert.Equal(TaskState.Cancelled, after.Task.State);
        Assert.Contains("join", after.Task.EndReason, StringComparison.Ordinal);
        var ex = await Refused(() => Board.PostTasksAsync(wf, [Spec("needs-dead", deps: ["join"])], default));
        Assert.Equal(BoardError.InvalidDependency, ex.Error);
    }

    [Fact]
    public async Task CancelTask_CancelsPendingDependents_AndTheHolderLosesItsClaim()
    {
        var wf = await NewWorkflowAsync();
        await Board.PostTasksAsync(wf, [Spec("a"), Spec("b", deps: ["a"]), Spec("c", deps: ["b"])], default).Within();
        var held = await ClaimAsync(wf, "w", "a");
        var result = await Board.CancelTaskAsync(wf, "a", "not needed", default).Within();
        Assert.Equal(TaskState.Cancelled, result.Task.State);
        Assert.Equal(["b", "c"], result.CancelledDependents);
        var ex = await Refused(() => Board.CompleteTaskAsync(wf, "a", held.Task!.FencingToken, default, "", default));
        Assert.Equal(BoardError.ClaimNotHeld, ex.Error);
        Assert.Equal(BoardError.TaskFinished, (await Refused(() => Board.CancelTaskAsync(wf, "a", "", default))).Error);
    }

    // ---- Claims and fencing -------------------------------------------------------------------------

    [Fact]
    public async Task ClaimRace_FiftyClaimersOfOneTask_ExactlyOneWins()
    {
        var wf = await NewWorkflowAsync();
        await Board.PostTasksAsync(wf, [Spec("contested")], default).Within();
        var outcomes = await Task.WhenAll(Enumerable.Range(0, 50).Select(async i =>
        {
            try
            {
                var won = await Board.ClaimAsync(new ClaimCommand { WorkflowId = wf, TaskId = "contested", WorkerId = $"w{i}" }, default);
                return (Winner: won.Task?.Owner, Error: (BoardError?)null);
            }
            catch (BoardException ex)
            {
                return (Winner: (string?)null, Error: ex.Error);
            }
        })).Within();

        var winners = outcomes.Where(o => o.Winner is not null).ToArray();
        Assert.Single(winners);
        Assert.All(outcomes.Where(o => o.Winner is null), o => Assert.Equal(BoardError.TaskAlreadyClaimed, o.Error));
        var task = await Board.GetTaskAsync(wf, "contested", default).Within();
        Assert.Equal(winners[0].Winner, task.Task.Owner);
        Assert.Single(await AllEventsAsync(wf), e => e.Kind == EventKind.TaskClaimed);
    }

    [Fact]
    public async Task ClaimNextRace_ManyWorkers_EachTaskIsClaimedExactlyOnce()
    {
        var wf = await NewWorkflowAsync();
        await Board.PostTasksAsync(wf, Enumerable.Range(0, 60).Select(i => Spec($"t{i:D2}")).ToArray(), default).Within();
        var claimed = new ConcurrentBag<(string Task, long Token)>();
        await Task.WhenAll(Enumerable.Range(0, 16).Select(async w =>
        {
            while ((await Board.ClaimAsync(new ClaimCommand { WorkflowId = wf, WorkerId = $"w{w}" }, default)).Task is { } t)
            {
                claimed.Add((t.Id, t.FencingToken));
            }
        })).Within();

        Assert.Equal(60, claimed.Count);
        Assert.Equal(60, claimed.Select(c => c.Task).Distinct().Count());
        Assert.Equal(60, (await Board.GetWorkflowAsync(wf, default).Within()).Counts[TaskState.Claimed]);
        foreach (var (task, token) in claimed)
        {
            // Tokens are per task: each task's stored token is the one its single claim returned.
            Assert.Equal(token, (await Board.GetTaskAsync(wf, task, default).Within()).Task.FencingToken);
        }
    }

    /// <summary>
    /// Concurrent claimers of the next task with different skills, over tasks that several of them may take:
    /// one claim per task, only by a worker with its skills, one event per claim at consecutive revisions.
    /// </summary>
    [Fact]
    public async Task ClaimNextRace_WorkersWithDifferentSkills_EachTaskOnce_OnlyToAWorkerWithItsSkills()
    {
        var wf = await NewWorkflowAsync();
        var specs = Enumerable.Range(0, 20).Select(i => Spec($"plain{i:D2}"))
            .Concat(Enumerable.Range(0, 20).Select(i => Spec($"gpu{i:D2}", priority: i % 3, skills: ["gpu"])))
            .Concat(Enumerable.Range(0, 10).Select(i => Spec($"cuda{i:D2}", skills: ["gpu", "cuda"])))
            .ToArray();
        var posted = await Board.PostTasksAsync(wf, specs, default).Within();
        string[][] kinds = [[], ["gpu"], ["cuda", "gpu"]];
        var claimed = new ConcurrentBag<(string Task, string[] Skills)>();
        await Task.WhenAll(Enumerable.Range(0, 48).Select(async w =>
        {
            var skills = kinds[w % 3];
            while ((await Board.ClaimAsync(new ClaimCommand { WorkflowId = wf, WorkerId = $"w{w}", Skills = skills }, default)).Task is { } t)
            {
                claimed.Add((t.Id, skills));
            }
        })).Within();

        Assert.Equal(specs.Select(s => s.Id).Order(), claimed.Select(c => c.Task).Order());
        var required = specs.ToDictionary(s => s.Id, s => s.RequiredSkills);
        Assert.All(claimed, c => Assert.Subset(c.Skills.ToHashSet(), required[c.Task].ToHashSet()));
        var claims = (await AllEventsAsync(wf)).Where(e => e.Revision > posted.Revision).ToList();
        Assert.Equal(50, claims.Count);
        Assert.All(claims, e => Assert.Equal(EventKind.TaskClaimed, e.Kind));
        Assert.Equal(Enumerable.Range(1, 50).Select(i => posted.Revision + i), claims.Select(e => e.Revision));
    }

    /// <summary>
    /// CompleteTask with a next claim: one transaction completes the task and claims the best ready task for
    /// the same worker, seeing its own changes (a dependent it just made READY may be the best).
    /// </summary>
    [Fact]
    public async Task CompleteWithClaimNext_ClaimsTheBestReadyTask_InTheSameTransaction()
    {
        var wf = await NewWorkflowAsync();
        var posted = await Board.PostTasksAsync(wf, [Spec("a"), Spec("b", priority: 5), Spec("gpu", priority: 7, skills: ["gpu"]), Spec("d", priority: 9, deps: ["a"])], default).Within();
        var a = await ClaimAsync(wf, "w1", "a");
        var lease = TimeSpan.FromSeconds(90);

        var done = await Board.CompleteTaskAsync(wf, "a", a.Task!.FencingToken, "ra"u8.ToArray(), "", new NextClaim([], lease), default).Within();
        Assert.Equal(TaskState.Completed, done.Task.State);
        Assert.Equal(["d"], done.ReadyDependents);
        var next = done.Next!;
        Assert.Equal(("d", TaskState.Claimed, "w1"), (next.Id, next.State, next.Owner));
        Assert.Equal(Time.GetUtcNow() + lease, next.LeaseExpireTime);
        Assert.Equal(next.FencingToken, (await Board.GetTaskAsync(wf, "d", default).Within()).Task.FencingToken);
        var events = (await AllEventsAsync(wf)).Where(e => e.Revision > a.Revision).ToList();
        Assert.Equal([(EventKind.TaskCompleted, "a"), (EventKind.TaskReady, "d"), (EventKind.TaskClaimed, "d")], events.Select(e => (e.Kind, e.Task!.Id)));
        Assert.Equal(done.Revision, events[^1].Revision);

        // Without the skill, the gpu task is not offered: b is next, then nothing.
        var second = await Board.CompleteTaskAsync(wf, "d", next.FencingToken, default, "", new NextClaim([], null), default).Within();
        Assert.Equal("b", second.Next!.Id);
        var third = await Board.CompleteTaskAsync(wf, "b", second.Next.FencingToken, default, "", new NextClaim([], null), default).Within();
        Assert.Null(third.Next);
        Assert.Equal(TaskState.Ready, (await Board.GetTaskAsync(wf, "gpu", default).Within()).Task.State);

        // A repeated completion claims nothing more, and a refused one claims nothing at all.
        var head = (await Board.GetWorkflowAsync(wf, default).Within()).Revision;
        var repeat = await Board.CompleteTaskAsync(wf, "b", second.Next.FencingToken, default, "", new NextClaim(["gpu"], null), default).Within();
        Assert.True(repeat.AlreadyCompleted);
        Assert.Null(repeat.Next);
        var stale = await Refused(() => Board.CompleteTaskAsync(wf, "a", a.Task.FencingToken + 100, default, "", new NextClaim(["gpu"], null), default));
        Assert.Equal(BoardError.FencingTokenInvalid, stale.Error);
        Assert.Equal(head, (await Board.GetWorkflowAsync(wf, default).Within()).Revision);
        Assert.Equal(TaskState.Ready, (await Board.GetTaskAsync(wf, "gpu", default).Within()).Task.State);
        Assert.Equal(posted.Tasks.Count, (await AllEventsAsync(wf)).Count(e => e.Kind == EventKind.TaskPosted));
    }

    [Fact]
    public async Task CompleteWithClaimNext_InAPausedWorkflow_CompletesButClaimsNothing()
    {
        var wf = await NewWorkflowAsync();
        await Board.PostTasksAsync(wf, [Spec("a"), Spec("b")], default).Within();
        var a = await ClaimAsync(wf, "w1", "a");
        await Board.UpdateWorkflowAsync(new WorkflowUpdate { WorkflowId = wf, Status = WorkflowStatus.Paused }, default).Within();

        var done = await Board.CompleteTaskAsync(wf, "a", a.Task!.FencingToken, default, "", new NextClaim([], null), default).Within();
        Assert.Equal(TaskState.Completed, done.Task.State);
        Assert.Null(done.Next);
        await Board.UpdateWorkflowAsync(new WorkflowUpdate { WorkflowId = wf, Status = WorkflowStatus.Active }, default).Within();
        Assert.Equal("b", (await ClaimAsync(wf, "w2")).Task!.Id);
    }

    [Fact]
    public async Task ClaimNext_OffersHighestPriority_ThenOldestReady_AndOnlyMatchingSkills()
    {
        var wf = await NewWorkflowAsync();
        await Board.PostTasksAsync(wf, [Spec("low", priority: 1), Spec("high-gpu", priority: 9, skills: ["gpu"]), Spec("high", priority: 9)], default).Within();
        Time.Advance(TimeSpan.FromSeconds(1));
        await Board.PostTasksAsync(wf, [Spec("high-later", priority: 9)], default).Within();

        Assert.Equal("high", (await ClaimAsync(wf, "cpu")).Task!.Id);
        Assert.Equal("high-later", (await ClaimAsync(wf, "cpu")).Task!.Id);
        Assert.Equal("low", (await ClaimAsync(wf, "cpu")).Task!.Id);
        Assert.Null((await ClaimAsync(wf, "cpu")).Task);
        var gpu = await ClaimAsync(wf, "gpu-box", skills: ["gpu", "cuda"]);
        Assert.Equal("high-gpu", gpu.Task!.Id);
        await Board.PostTasksAsync(wf, [Spec("needs-tpu", skills: ["tpu"])], default).Within();
        var mismatch = await Refused(() => ClaimAsync(wf, "cpu", "needs-tpu"));
        Assert.Equal(BoardError.SkillsMismatch, mismatch.Error);
    }

    [Fact]
    public async Task ClaimNext_AcrossSkillQueues_FollowsPriorityThenReadyTime()
    {
        // Tasks with different required skills sit in different ready queues; a worker whose skills cover several
        // must get the best task of all of them, not the first of whichever queue comes first.
        var wf = await NewWorkflowAsync();
        await Board.PostTasksAsync(wf, [Spec("plain-low-old", priority: 1), Spec("gpu-high-old", priority: 9, skills: ["gpu"])], default).Within();
        Time.Advance(TimeSpan.FromSeconds(1));
        await Board.PostTasksAsync(wf, [Spec("plain-high-new", priority: 9), Spec("gpu-low-new", priority: 1, skills: ["gpu"])], default).Within();

        var order = new List<string>();
        while ((await ClaimAsync(wf, "gpu-box", skills: ["gpu"])).Task is { } task)
        {
            order.Add(task.Id);
        }

        Assert.Equal(["gpu-high-old", "plain-high-new", "plain-low-old", "gpu-low-new"], order);
    }

    [Fact]
    public async Task ClaimNext_WithWait_ReturnsWhenATaskBecomesReady()
    {
        var wf = await NewWorkflowAsync();
        var waiting = ClaimAsync(wf, "patient", wait: TimeSpan.FromMinutes(1));
        Assert.False(waiting.IsCompleted);
        await Board.PostTasksAsync(wf, [Spec("arrives")], default).Within();
        var claimed = await waiting;
        Assert.Equal("arrives", claimed.Task!.Id);
        Assert.Equal("patient", claimed.Task.Owner);
    }

    [Fact]
    public async Task FencingTokens_StrictlyIncrease_AndStaleTokensAreRefusedEverywhere()
    {
        var wf = await NewWorkflowAsync();
        await Board.PostTasksAsync(wf, [Spec("t", maxAttempts: 5, backoff: TimeSpan.Zero)], default).Within();
        var first = await ClaimAsync(wf, "w1", lease: TimeSpan.FromSeconds(5));
        await Board.CheckpointAsync(wf, "t", first.Task!.FencingToken, "half way"u8.ToArray(), default).Within();
        Time.Advance(TimeSpan.FromSeconds(6));
        await Timers.RunOnceAsync(default).Within();

        var second = await ClaimAsync(wf, "w2");
        Assert.True(second.Task!.FencingToken > first.Task.FencingToken);
        Assert.Equal("half way", Encoding.UTF8.GetString(second.Task.Checkpoint.Span));
        var oldToken = first.Task.FencingToken;
        foreach (var call in new Func<Task>[]
        {
            () => Board.RenewLeaseAsync(wf, "t", oldToken, null, default),
            () => Board.ReleaseTaskAsync(wf, "t", oldToken, default),
            () => Board.CheckpointAsync(wf, "t", oldToken, new byte[] { 9 }, default),
            () => Board.CompleteTaskAsync(wf, "t", oldToken, "late"u8.ToArray(), "", default),
            () => Board.FailTaskAsync(wf, "t", oldToken, "late", default, false, default),
        })
        {
            var ex = await Refused(call);
            Assert.Equal(BoardError.FencingTokenStale, ex.Error);
            Assert.Equal(second.Task.FencingToken.ToString(System.Globalization.CultureInfo.InvariantCulture), ex.Metadata["fencing_token"]);
        }

        Assert.Equal(BoardError.FencingTokenInvalid, (await Refused(() => Board.RenewLeaseAsync(wf, "t", second.Task.FencingToken + 1, null, default))).Error);
        var released = await Board.ReleaseTaskAsync(wf, "t", second.Task.FencingToken, default).Within();
        Assert.Equal(1, released.Task.Attempt);
        var third = await ClaimAsync(wf, "w3");
        Assert.True(third.Task!.FencingToken > second.Task.FencingToken);
        var done = await Board.CompleteTaskAsync(wf, "t", third.Task.FencingToken, "final"u8.ToArray(), "text/plain", default).Within();
        Assert.Equal("final", Encoding.UTF8.GetString(done.Task.Result.Span));
        Assert.Equal("half way", Encoding.UTF8.GetString(done.Task.Checkpoint.Span));
    }

    [Fact]
    public async Task FencingTokens_NeverRepeat_AcrossDeleteAndRecreate()
    {
        var wf = await NewWorkflowAsync();
        await Board.PostTasksAsync(wf, [Spec("t")], default).Within();
        var before = await ClaimAsync(wf, "old-owner");
        var deleted = await Board.DeleteWorkflowAsync(wf, default).Within();
        Assert.Equal(BoardError.WorkflowNotFound, (await Refused(() => Board.GetWorkflowAsync(wf, default))).Error);

        var (recreated, _) = await Board.CreateWorkflowAsync(wf, "second life", null, default).Within();
        Assert.True(recreated.Revision > deleted);
        await Board.PostTasksAsync(wf, [Spec("t")], default).Within();
        var after = await ClaimAsync(wf, "new-owner");
        Assert.True(after.Task!.FencingToken > before.Task!.FencingToken);
        Assert.Equal(BoardError.FencingTokenStale, (await Refused(() => Board.CompleteTaskAsync(wf, "t", before.Task.FencingToken, default, "", default))).Error);
    }

    [Fact]
    public async Task CompleteTask_RepeatWithSameResultSucceeds_DifferentResultIsRefused()
    {
        var wf = await NewWorkflowAsync();
        await Board.PostTasksAsync(wf, [Spec("t")], default).Within();
        var claim = await ClaimAsync(wf, "w");
        var first = await Board.CompleteTaskAsync(wf, "t", claim.Task!.FencingToken, "42"u8.ToArray(), "text/plain", default).Within();
        var repeat = await Board.CompleteTaskAsync(wf, "t", claim.Task.FencingToken, "42"u8.ToArray(), "text/plain", default).Within();
        Assert.False(first.AlreadyCompleted);
        Assert.True(repeat.AlreadyCompleted);
        Assert.Equal(first.Task.ModRevision, repeat.Task.ModRevision);
        Assert.Equal(BoardError.ResultConflict, (await Refused(() => Board.CompleteTaskAsync(wf, "t", claim.Task.FencingToken, "43"u8.ToArray(), "text/plain", default))).Error);
        Assert.Single(await AllEventsAsync(wf), e => e.Kind == EventKind.TaskCompleted);
    }

    // ---- Time: leases, backoff, TTL -----------------------------------------------------------------

    [Fact]
    public async Task LeaseExpiry_IsEnforcedByTheServer_WithoutAnyCall()
    {
        var wf = await NewWorkflowAsync();
        await Board.PostTasksAsync(wf, [Spec("t", maxAttempts: 3, backoff: TimeSpan.FromSeconds(10))], default).Within();
        var claim = await ClaimAsync(wf, "sleepy", lease: TimeSpan.FromSeconds(5));
        Time.Advance(TimeSpan.FromSeconds(4));
        await Timers.RunOnceAsync(default).Within();
        Assert.Equal(TaskState.Claimed, (await Board.GetTaskAsync(wf, "t", default).Within()).Task.State);

        Time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(BoardError.LeaseExpired, (await Refused(() => Board.RenewLeaseAsync(wf, "t", claim.Task!.FencingToken, null, default))).Error);
        var (seen, acted) = await Timers.RunOnceAsync(default).Within();
        Assert.Equal(1, acted);
        var task = (await Board.GetTaskAsync(wf, "t", default).Within()).Task;
        Assert.Equal(TaskState.Backoff, task.State);
        Assert.True(task.LastError!.LeaseExpired);
        Assert.Equal(BoardError.LeaseExpired, (await Refused(() => Board.CompleteTaskAsync(wf, "t", claim.Task!.FencingToken, default, "", default))).Error);
        var expired = (await AllEventsAsync(wf)).Single(e => e.Kind == EventKind.TaskLeaseExpired);
        Assert.Equal("", expired.Actor);

        Time.Advance(TimeSpan.FromSeconds(10));
        await Timers.RunOnceAsync(default).Within();
        Assert.Equal(TaskState.Ready, (await Board.GetTaskAsync(wf, "t", default).Within()).Task.State);
        Assert.Equal(EventKind.TaskReady, (await AllEventsAsync(wf))[^1].Kind);
        Assert.True(seen >= 1);
    }

    [Fact]
    public async Task Failures_RetryWithExponentialBackoff_ThenDeadLetter()
    {
        var wf = await NewWorkflowAsync();
        await Board.PostTasksAsync(wf, [Spec("flaky", maxAttempts: 3, backoff: TimeSpan.FromSeconds(2)), Spec("child", deps: ["flaky"])], default).Within();
        var start = Time.GetUtcNow();
        for (var attempt = 1; attempt <= 3; attempt++)
        {
            var claim = await ClaimAsync(wf, "w");
            Assert.Equal(attempt, claim.Task!.Attempt);
            var failed = await Board.FailTaskAsync(wf, "flaky", claim.Task.FencingToken, $"boom {attempt}", default, false, default).Within();
            if (attempt < 3)
            {
                Assert.True(failed.WillRetry);
                Assert.Equal(TaskState.Backoff, failed.Task.State);
                // 2s, then 4s (coefficient 2).
                var expected = TimeSpan.FromSeconds(2 * Math.Pow(2, attempt - 1));
                Assert.Equal(Time.GetUtcNow() + expected, failed.Task.ReadyTime);
                Assert.Null((await ClaimAsync(wf, "w")).Task);
                Time.Advance(expected);
                await Timers.RunOnceAsync(default).Within();
            }
            else
            {
                Assert.False(failed.WillRetry);
                Assert.Equal(TaskState.DeadLettered, failed.Task.State);
                Assert.Equal(["child"], failed.CancelledDependents);
                Assert.Contains("boom 3", failed.Task.EndReason, StringComparison.Ordinal);
            }
        }

        Assert.Equal(TimeSpan.FromSeconds(6), Time.GetUtcNow() - start);
    }

    [Fact]
    public async Task LeaseExpiry_OnTheLastAttempt_DeadLetters()
    {
        var wf = await NewWorkflowAsync();
        await Board.PostTasksAsync(wf, [Spec("once", maxAttempts: 1)], default).Within();
        await ClaimAsync(wf, "crashy", lease: TimeSpan.FromSeconds(1));
        Time.Advance(TimeSpan.FromSeconds(2));
        await Timers.RunOnceAsync(default).Within();
        var task = (await Board.GetTaskAsync(wf, "once", default).Within()).Task;
        Assert.Equal(TaskState.DeadLettered, task.State);
        Assert.True(task.LastError!.LeaseExpired);
    }

    [Fact]
    public async Task ClaimById_OfAnExpiredButUnreapedLease_ExpiresItFirst()
    {
        var wf = await NewWorkflowAsync();
        await Board.PostTasksAsync(wf, [Spec("t", backoff: TimeSpan.Zero)], default).Within();
        var first = await ClaimAsync(wf, "w1", lease: TimeSpan.FromSeconds(1));
        Time.Advance(TimeSpan.FromSeconds(2));
        var second = await ClaimAsync(wf, "w2", "t");
        Assert.True(second.Task!.FencingToken > first.Task!.FencingToken);
        var kinds = (await AllEventsAsync(wf)).Select(e => e.Kind).TakeLast(2);
        Assert.Equal([EventKind.TaskLeaseExpired, EventKind.TaskClaimed], kinds);
    }

    [Fact]
    public async Task Notes_CompareAndSet_Versions_Ttl_AndPrefixListing()
    {
        var wf = await NewWorkflowAsync();
        var created = await Board.PutNoteAsync(new NotePutCommand { WorkflowId = wf, Key = "plan/a", Value = "1"u8.ToArray(), ExpectedVersion = 0, Writer = "planner" }, default).Within();
        Assert.Equal(1, created.Note.Version);
        Assert.Equal(BoardError.NoteVersionMismatch, (await Refused(() => Board.PutNoteAsync(new NotePutCommand { WorkflowId = wf, Key = "plan/a", ExpectedVersion = 0 }, default))).Error);
        var v2 = await Board.PutNoteAsync(new NotePutCommand { WorkflowId = wf, Key = "plan/a", Value = "2"u8.ToArray(), ExpectedVersion = 1 }, default).Within();
        Assert.Equal(2, v2.Note.Version);
        var stale = await Refused(() => Board.PutNoteAsync(new NotePutCommand { WorkflowId = wf, Key = "plan/a", ExpectedVersion = 1 }, default));
        Assert.Equal("2", stale.Metadata["version"]);

        await Board.PutNoteAsync(new NotePutCommand { WorkflowId = wf, Key = "plan/b", Value = "b"u8.ToArray() }, default).Within();
        await Board.PutNoteAsync(new NotePutCommand { WorkflowId = wf, Key = "scratch", Value = "s"u8.ToArray(), Ttl = TimeSpan.FromSeconds(30) }, default).Within();
        var page1 = await Board.ListNotesAsync(wf, "plan/", null, 1, false, default).Within();
        var page2 = await Board.ListNotesAsync(wf, "plan/", page1.NextPageToken, 1, false, default).Within();
        Assert.Equal(["plan/a"], page1.Items.Select(n => n.Key));
        Assert.Equal(["plan/b"], page2.Items.Select(n => n.Key));
        Assert.Equal("", page2.NextPageToken);
        Assert.Equal(BoardError.InvalidPageToken, (await Refused(() => Board.ListNotesAsync(wf, "other/", page1.NextPageToken, 1, false, default))).Error);

        Time.Advance(TimeSpan.FromSeconds(31));
        Assert.Equal(BoardError.NoteNotFound, (await Refused(() => Board.GetNoteAsync(wf, "scratch", default))).Error);
        await Timers.RunOnceAsync(default).Within();
        Assert.Equal(EventKind.NoteExpired, (await AllEventsAsync(wf))[^1].Kind);

        Assert.Equal(BoardError.NoteVersionMismatch, (await Refused(() => Board.DeleteNoteAsync(wf, "plan/a", 1, "x", default))).Error);
        await Board.DeleteNoteAsync(wf, "plan/a", 2, "x", default).Within();
        var recreated = await Board.PutNoteAsync(new NotePutCommand { WorkflowId = wf, Key = "plan/a", ExpectedVersion = 0 }, default).Within();
        Assert.Equal(1, recreated.Note.Version);
    }

    // ---- Listing ------------------------------------------------------------------------------------

    [Fact]
    public async Task ListTasks_PagesInIdOrder_AndFiltersByState()
    {
        var wf = await NewWorkflowAsync();
        await Board.PostTasksAsync(wf, Enumerable.Range(0, 25).Select(i => Spec($"task-{i:D2}", deps: i % 5 == 0 && i > 0 ? ["task-00"] : null)).ToArray(), default).Within();
        var ids = new List<string>();
        string? token = null;
        do
        {
            var page = await Board.ListTasksAsync(wf, null, token, 7, default).Within();
            ids.AddRange(page.Items.Select(t => t.Id));
            token = page.NextPageToken;
        }
        while (token != "");

        Assert.Equal(Enumerable.Range(0, 25).Select(i => $"task-{i:D2}"), ids);
        var pending = await Board.ListTasksAsync(wf, TaskState.Pending, null, 100, default).Within();
        Assert.Equal(["task-05", "task-10", "task-15", "task-20"], pending.Items.Select(t => t.Id));
    }

    [Fact]
    public async Task ListWorkflows_PagesInIdOrder()
    {
        var prefix = NewId("list")[..12];
        foreach (var i in Enumerable.Range(0, 5))
        {
            await Board.CreateWorkflowAsync($"{prefix}-{i}", "", null, default).Within();
        }

        var seen = new List<string>();
        string? token = null;
        do
        {
            var page = await Board.ListWorkflowsAsync(null, token, 2, default).Within();
            seen.AddRange(page.Items.Select(v => v.Workflow.Id));
            token = page.NextPageToken;
        }
        while (token != "");

        var mine = seen.Where(id => id.StartsWith(prefix, StringComparison.Ordinal)).ToArray();
        Assert.Equal(Enumerable.Range(0, 5).Select(i => $"{prefix}-{i}"), mine);
        Assert.Equal(seen.Order(StringComparer.Ordinal), seen);
    }

    // ---- Watch --------------------------------------------------------------------------------------

    [Fact]
    public async Task Watch_FromRevisionOne_DeliversEveryChangeOnce_InOrder_WhileWritesContinue()
    {
        var wf = await NewWorkflowAsync();
        await Board.PostTasksAsync(wf, Enumerable.Range(0, 20).Select(i => Spec($"t{i}")).ToArray(), default).Within();
        using var cts = new CancellationTokenSource(TestTimeouts.Default);
        var stream = Board.WatchAsync(wf, 1, WatchFilter.All, null, cts.Token);
        var collecting = TakeAsync(stream, 1 + 20 + 40, i => i is WatchItem.Change);
        var workers = Enumerable.Range(0, 4).Select(async w =>
        {
            while ((await Board.ClaimAsync(new ClaimCommand { WorkflowId = wf, WorkerId = $"w{w}" }, default)).Task is { } t)
            {
                await Board.CompleteTaskAsync(wf, t.Id, t.FencingToken, default, "", default);
            }
        });
        await Task.WhenAll(workers).Within();
        var seen = (await collecting.Within()).Cast<WatchItem.Change>().Select(c => c.Event).ToList();

        var log = await AllEventsAsync(wf);
        Assert.Equal(log.Select(e => e.Revision), seen.Select(e => e.Revision));
        Assert.Equal(log.Select(e => e.Kind), seen.Select(e => e.Kind));
        Assert.Equal(Enumerable.Range(1, seen.Count).Select(i => (long)i), seen.Select(e => e.Revision));
    }

    [Fact]
    public async Task Watch_ResumesFromAnyRetainedRevision_Inclusive()
    {
        var wf = await NewWorkflowAsync();
        await Board.PostTasksAsync(wf, Enumerable.Range(0, 10).Select(i => Spec($"t{i}")).ToArray(), default).Within();
        var first = await TakeAsync(Board.WatchAsync(wf, 1, WatchFilter.All, null, default), 5, i => i is WatchItem.Change);
        var last = ((WatchItem.Change)first[^1]).Event.Revision;
        var resumed = await TakeAsync(Board.WatchAsync(wf, last + 1, WatchFilter.All, null, default), 6, i => i is WatchItem.Change);
        Assert.Equal(Enumerable.Range((int)last + 1, 6).Select(i => (long)i), resumed.Cast<WatchItem.Change>().Select(c => c.Event.Revision));
    }

    [Fact]
    public async Task Watch_FromNow_StartsWithProgressAtTheHead_ThenLiveEvents()
    {
        var wf = await NewWorkflowAsync();
        await Board.PostTasksAsync(wf, [Spec("old")], default).Within();
        using var cts = new CancellationTokenSource(TestTimeouts.Default);
        await using var stream = Board.WatchAsync(wf, 0, WatchFilter.All, null, cts.Token).GetAsyncEnumerator(cts.Token);
        Assert.True(await stream.MoveNextAsync().AsTask().Within());
        var progress = Assert.IsType<WatchItem.Progress>(stream.Current);
        Assert.True(progress.CaughtUp);
        Assert.Equal(2, progress.Revision);
        await Board.PostTasksAsync(wf, [Spec("new")], default).Within();
        Assert.True(await stream.MoveNextAsync().AsTask().Within());
        var change = Assert.IsType<WatchItem.Change>(stream.Current);
        Assert.Equal(3, change.Event.Revision);
        Assert.Equal("new", change.Event.Task!.Id);
    }

    [Fact]
    public async Task Watch_StartingBeyondTheHead_ReportsTheHead_AndDeliversFromTheAskedRevision()
    {
        var wf = await NewWorkflowAsync();
        using var cts = new CancellationTokenSource(TestTimeouts.Default);
        await using var stream = Board.WatchAsync(wf, 4, WatchFilter.All, null, cts.Token).GetAsyncEnumerator(cts.Token);
        Assert.True(await stream.MoveNextAsync().AsTask().Within());
        Assert.Equal(new WatchItem.Progress(1, true), stream.Current);
        await Board.PostTasksAsync(wf, [Spec("a"), Spec("b"), Spec("c")], default).Within();
        Assert.True(await stream.MoveNextAsync().AsTask().Within());
        Assert.Equal(4, Assert.IsType<WatchItem.Change>(stream.Current).Event.Revision);
    }

    [Fact]
    public async Task Watch_Filters_ByKind_Task_AndNotePrefix_StillAdvancingProgress()
    {
        var wf = await NewWorkflowAsync();
        await Board.PostTasksAsync(wf, [Spec("a"), Spec("b")], default).Within();
        await Board.PutNoteAsync(new NotePutCommand { WorkflowId = wf, Key = "plan/x", Value = "1"u8.ToArray() }, default).Within();
        await Board.PutNoteAsync(new NotePutCommand { WorkflowId = wf, Key = "other", Value = "1"u8.ToArray() }, default).Within();

        var onlyB = await TakeAsync(Board.WatchAsync(wf, 1, new WatchFilter(TaskIds: new HashSet<string> { "b" }), null, default), 2);
        Assert.Equal("b", Assert.IsType<WatchItem.Change>(onlyB[0]).Event.Task!.Id);
        Assert.Equal(new WatchItem.Progress(5, true), onlyB[1]);

        var plans = await TakeAsync(Board.WatchAsync(wf, 1, new WatchFilter(NoteKeyPrefix: "plan/"), null, default), 1);
        Assert.Equal("plan/x", Assert.IsType<WatchItem.Change>(plans[0]).Event.Note!.Key);

        var created = await TakeAsync(Board.WatchAsync(wf, 1, new WatchFilter(Kinds: new HashSet<EventKind> { EventKind.WorkflowCreated, EventKind.NotePut }), null, default), 3);
        Assert.Equal([EventKind.WorkflowCreated, EventKind.NotePut, EventKind.NotePut], created.Cast<WatchItem.Change>().Select(c => c.Event.Kind));
    }

    [Fact]
    public async Task Watch_OfAnUnknownWorkflow_IsNotFound_AndDeletionEndsTheStream()
    {
        var unknown = await Assert.ThrowsAsync<BoardException>(() => TakeAsync(Board.WatchAsync(NewId(), 1, WatchFilter.All, null, default), 1).Within());
        Assert.Equal(BoardError.WorkflowNotFound, unknown.Error);
        var wf = await NewWorkflowAsync();
        using var cts = new CancellationTokenSource(TestTimeouts.Default);
        var all = new List<WatchItem>();
        var watching = Task.Run(async () =>
        {
            await foreach (var item in Board.WatchAsync(wf, 1, WatchFilter.All, null, cts.Token))
            {
                all.Add(item);
                if (item is WatchItem.Progress { CaughtUp: true })
                {
                    await Board.DeleteWorkflowAsync(wf, default);
                }
            }
        });
        await watching.Within();
        Assert.Equal(EventKind.WorkflowDeleted, Assert.IsType<WatchItem.Change>(all[^1]).Event.Kind);
    }

    // ---- Timers and export --------------------------------------------------------------------------

    [Fact]
    public async Task DueTimers_AreReturnedEarliestFirst_AndFiringTwiceActsOnce()
    {
        var wf = await NewWorkflowAsync();
        await Board.PostTasksAsync(wf, [Spec("late"), Spec("early")], default).Within();
        await ClaimAsync(wf, "w", "late", lease: TimeSpan.FromSeconds(20));
        await ClaimAsync(wf, "w", "early", lease: TimeSpan.FromSeconds(10));
        await Board.PutNoteAsync(new NotePutCommand { WorkflowId = wf, Key = "n", Ttl = TimeSpan.FromSeconds(15) }, default).Within();
        Time.Advance(TimeSpan.FromSeconds(30));
        var due = (await Store.GetDueTimersAsync(Time.GetUtcNow(), 100, default).Within()).Where(t => t.WorkflowId == wf).ToArray();
        Assert.Equal([("early", TimerKind.LeaseExpiry), ("n", TimerKind.NoteExpiry), ("late", TimerKind.LeaseExpiry)], due.Select(t => (t.Id, t.Kind)));
        var outcomes = await Task.WhenAll(due.Concat(due).Select(t => Board.FireTimerAsync(t, default))).Within();
        Assert.Equal(3, outcomes.Count(o => o.Change is not null));
        Assert.DoesNotContain(await Store.GetDueTimersAsync(Time.GetUtcNow(), 100, default).Within(), t => t.WorkflowId == wf);
    }

    [Fact]
    public async Task Export_IsAConsistentSnapshot_WithHistory()
    {
        var wf = await NewWorkflowAsync("ship the release");
        await Board.PostTasksAsync(wf, [Spec("a"), Spec("b")], default).Within();
        await Board.PutNoteAsync(new NotePutCommand { WorkflowId = wf, Key = "plan", Value = "do a then b"u8.ToArray() }, default).Within();
        var snapshot = await Board.ExportAsync(wf, 0, default).Within();
        Assert.Equal("ship the release", snapshot.Workflow.Workflow.Goal);
        Assert.Equal(["a", "b"], snapshot.Tasks.Select(t => t.Id));
        Assert.Equal(["plan"], snapshot.Notes.Select(n => n.Key));
        Assert.Equal(snapshot.Workflow.Revision, snapshot.Events[^1].Revision);
        Assert.Equal(4, snapshot.Events.Count);
        var limited = await Board.ExportAsync(wf, 2, default).Within();
        Assert.Equal([3L, 4L], limited.Events.Select(e => e.Revision));
    }
}

/// <summary>Contract for stores that bound their history: resuming below it is OUT_OF_RANGE, never a silent gap.</summary>
public abstract class RetentionContractTests : BoardTestBase
{
    protected override int MaxEventsPerWorkflow => 16;

    [Fact]
    public async Task Watch_BelowRetainedHistory_IsHistoryCompacted_WithTheOldestRevision()
    {
        var wf = await NewWorkflowAsync();
        for (var i = 0; i < 50; i++)
        {
            await Board.PutNoteAsync(new NotePutCommand { WorkflowId = wf, Key = "counter", Value = BitConverter.GetBytes(i) }, default).Within();
        }

        var ex = await Assert.ThrowsAsync<BoardException>(() => TakeAsync(Board.WatchAsync(wf, 1, WatchFilter.All, null, default), 1).Within());
        Assert.Equal(BoardError.HistoryCompacted, ex.Error);
        var oldest = long.Parse(ex.Metadata["oldest_revision"], System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal("51", ex.Metadata["revision"]);
        Assert.InRange(oldest, 2, 51 - 16 + 1);

        var fromOldest = await TakeAsync(Board.WatchAsync(wf, oldest, WatchFilter.All, null, default), (int)(51 - oldest + 1), i => i is WatchItem.Change);
        Assert.Equal(Enumerable.Range((int)oldest, (int)(51 - oldest + 1)).Select(i => (long)i), fromOldest.Cast<WatchItem.Change>().Select(c => c.Event.Revision));
    }
}

/// <summary>Contract for durable stores: closing and reopening loses nothing, and counters keep going up.</summary>
public abstract class DurableStoreContractTests : StoreContractTests
{
    /// <summary>Closes the store and opens it again on the same data.</summary>
    protected async Task ReopenAsync()
    {
        await Store.DisposeAsync();
        await OpenAsync();
    }

    [Fact]
    public async Task ClaimsMadeAllAtOnce_KeepEveryLeaseTimer_AcrossAReopen()
    {
        // Concurrent claims share commits: on Redis, batches of hundreds of lease timers, which the commit script's
        // ops take 500 at a time (checked: some batches here held more). The reopened store must find each timer.
        var wf = await NewWorkflowAsync();
        var ids = Enumerable.Range(0, 1000).Select(i => $"t{i}").ToArray();
        await Board.PostTasksAsync(wf, ids.Select(id => Spec(id)).ToArray(), default).Within();
        var claims = await Task.WhenAll(ids.Select((id, i) => ClaimAsync(wf, $"w{i}", id, lease: TimeSpan.FromSeconds(5 + i % 3))));
        Assert.All(claims, c => Assert.NotNull(c.Task));

        await ReopenAsync();

        var due = (await Store.GetDueTimersAsync(Time.GetUtcNow() + TimeSpan.FromSeconds(7), 5000, default).Within()).Where(t => t.WorkflowId == wf).ToList();
        Assert.Equal(ids.Order(StringComparer.Ordinal), due.Select(t => t.Id).Order(StringComparer.Ordinal));
        Assert.All(due, t => Assert.Equal(TimerKind.LeaseExpiry, t.Kind));
        Assert.All(due, t => Assert.Equal(Time.GetUtcNow() + TimeSpan.FromSeconds(5 + Array.IndexOf(ids, t.Id) % 3), t.Due));
        Assert.DoesNotContain(await Store.GetDueTimersAsync(Time.GetUtcNow() + TimeSpan.FromSeconds(4), 5000, default).Within(), t => t.WorkflowId == wf);
    }

    [Fact]
    public async Task Reopen_KeepsRecordsHistoryAndCounters()
    {
        var wf = await NewWorkflowAsync();
        await Board.PostTasksAsync(wf, [Spec("a"), Spec("b", deps: ["a"]), Spec("c")], default).Within();
        var claim = await ClaimAsync(wf, "w", "a", lease: TimeSpan.FromMinutes(10));
        await Board.CheckpointAsync(wf, "a", claim.Task!.FencingToken, "cp"u8.ToArray(), default).Within();
        var held = await ClaimAsync(wf, "w2", "c", lease: TimeSpan.FromSeconds(30));
        await Board.PutNoteAsync(new NotePutCommand { WorkflowId = wf, Key = "k", Value = "v"u8.ToArray(), Ttl = TimeSpan.FromMinutes(1) }, default).Within();
        var before = await AllEventsAsync(wf);
        var view = await Board.GetWorkflowAsync(wf, default).Within();

        await ReopenAsync();

        var after = await AllEventsAsync(wf);
        Assert.Equal(before.Select(e => (e.Revision, e.Kind)), after.Select(e => (e.Revision, e.Kind)));
        var reopened = await Board.GetWorkflowAsync(wf, default).Within();
        Assert.Equal(view.Revision, reopened.Revision);
        Assert.Equal(view.Counts[TaskState.Claimed], reopened.Counts[TaskState.Claimed]);
        var a = (await Board.GetTaskAsync(wf, "a", default).Within()).Task;
        Assert.Equal("cp", Encoding.UTF8.GetString(a.Checkpoint.Span));
        Assert.Equal(claim.Task.FencingToken, a.FencingToken);
        Assert.Equal("v", Encoding.UTF8.GetString((await Board.GetNoteAsync(wf, "k", default).Within()).Note.Value.Span));

        // Indexes were rebuilt: the dependency edge, the lease timer and the ready queue all still work.
        var done = await Board.CompleteTaskAsync(wf, "a", claim.Task.FencingToken, default, "", default).Within();
        Assert.Equal(["b"], done.ReadyDependents);
        Assert.Equal(reopened.Revision + 1, done.Revision - 1);
        Time.Advance(TimeSpan.FromSeconds(31));
        await Timers.RunOnceAsync(default).Within();
        var c = (await Board.GetTaskAsync(wf, "c", default).Within()).Task;
        Assert.NotEqual(TaskState.Claimed, c.State);
        Assert.Equal(BoardError.LeaseExpired, (await Refused(() => Board.CompleteTaskAsync(wf, "c", held.Task!.FencingToken, default, "", default))).Error);
        var next = await ClaimAsync(wf, "w3", "b");
        Assert.True(next.Task!.FencingToken > held.Task!.FencingToken);
    }

    [Fact]
    public async Task Reopen_AfterDelete_KeepsTheRevisionGoingUp()
    {
        var wf = await NewWorkflowAsync();
        await Board.PostTasksAsync(wf, [Spec("t")], default).Within();
        var claim = await ClaimAsync(wf, "w");
        var deleted = await Board.DeleteWorkflowAsync(wf, default).Within();
        await ReopenAsync();
        var (recreated, created) = await Board.CreateWorkflowAsync(wf, "again", null, default).Within();
        Assert.True(created);
        Assert.Equal(deleted + 1, recreated.Revision);
        await Board.PostTasksAsync(wf, [Spec("t")], default).Within();
        Assert.True((await ClaimAsync(wf, "w")).Task!.FencingToken > claim.Task!.FencingToken);
    }
}
