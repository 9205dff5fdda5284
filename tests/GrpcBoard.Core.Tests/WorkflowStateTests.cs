using System.Collections.Immutable;
using System.Text;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Storage;
using Xunit;

namespace GrpcBoard.Core.Tests;

/// <summary>
/// The in-memory workflow state both stores build on. The Redis store applies transactions to it before
/// Redis has accepted them and undoes them when another instance committed first, so undo must restore
/// every record, index, count, timer and the recent log exactly.
/// </summary>
public sealed class WorkflowStateTests
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private static readonly string[] Skills = ["gpu", "py"];

    /// <param name="maxEvents">Small: transactions also trim history (undo restores the oldest revision, and
    /// the recent events, a cache, stay trimmed).</param>
    [Theory]
    [InlineData(1, 100_000)]
    [InlineData(2, 100_000)]
    [InlineData(3, 100_000)]
    [InlineData(4, 20)]
    [InlineData(5, 20)]
    public void Undo_OfAnySequenceOfTransactions_NewestFirst_RestoresTheStateExactly(int seed, int maxEvents)
    {
        var random = new Random(seed);
        var timers = new TimerIndex();
        var state = new WorkflowState("wf", 100_000, timers);
        var slack = maxEvents / 10;
        state.Apply([Workflow(EventKind.WorkflowCreated, "goal")], maxEvents, slack);
        for (var i = 0; i < 20; i++)
        {
            state.Apply(RandomTransaction(random, state), maxEvents, slack);
        }

        for (var round = 0; round < 30; round++)
        {
            var withRecent = maxEvents > 1000;
            var before = Fingerprint(state, timers, withRecent);
            var applied = new List<AppliedChanges>();
            for (var i = random.Next(1, 6); i > 0; i--)
            {
                applied.Add(state.Apply(RandomTransaction(random, state), maxEvents, slack));
            }

            Assert.NotEqual(before, Fingerprint(state, timers, withRecent));
            for (var i = applied.Count - 1; i >= 0; i--)
            {
                Assert.True(state.Undo(applied[i]));
            }

            Assert.Equal(before, Fingerprint(state, timers, withRecent));
            Assert.Equal(state.Head, state.Recent.LastRevision);

            // Keep some of the history, so later rounds undo over a longer one.
            state.Apply(RandomTransaction(random, state), maxEvents, slack);
        }
    }

    [Fact]
    public void Undo_OfADeletion_IsRefused()
    {
        var state = new WorkflowState("wf", 64, null);
        state.Apply([Workflow(EventKind.WorkflowCreated, "goal"), Posted(Task("a"))], 100, 0);
        var deletion = state.Apply([new EventRecord { Revision = 0, Kind = EventKind.WorkflowDeleted, Time = T0, WorkflowId = "wf" }], 100, 0);
        Assert.False(state.Undo(deletion));
    }

    [Fact]
    public void Apply_AssignsRevisions_AndTheDeletionComesFirst_WithOnlyWhatFollowedIt()
    {
        var state = new WorkflowState("wf", 64, null);
        var applied = state.Apply(
        [
            Workflow(EventKind.WorkflowCreated, "one"),
            Posted(Task("a")),
            new EventRecord { Revision = 0, Kind = EventKind.WorkflowDeleted, Time = T0, WorkflowId = "wf" },
            Workflow(EventKind.WorkflowCreated, "two"),
        ], 100, 0);

        Assert.Equal([3L, 4L], applied.Events.Select(e => e.Revision));
        Assert.Equal(EventKind.WorkflowDeleted, applied.Events[0].Kind);
        Assert.True(applied.DeletedContents);
        Assert.Equal([4L], applied.Logged.Select(e => e.Revision));
        Assert.Empty(state.Tasks);
        Assert.Equal(4, state.Record!.ModRevision);
        Assert.Equal(4, state.Oldest);
    }

    private static List<EventRecord> RandomTransaction(Random random, WorkflowState state)
    {
        var changes = new List<EventRecord>();
        var tasks = state.Tasks.Values.ToList();
        for (var n = random.Next(1, 4); n > 0; n--)
        {
            switch (random.Next(6))
            {
                case 0:
                    var deps = tasks.Count > 0 && random.Next(2) == 0 ? ImmutableArray.Create(tasks[random.Next(tasks.Count)].Id) : [];
                    var skills = random.Next(3) switch { 0 => ImmutableArray<string>.Empty, 1 => ["gpu"], _ => ImmutableArray.Create(Skills) };
                    var fresh = Task($"t{state.Head + changes.Count + 1}") with
                    {
                        State = deps.IsEmpty ? TaskState.Ready : TaskState.Pending,
                        DependsOn = deps,
                        RequiredSkills = skills,
                        Priority = random.Next(3),
                        ReadyTime = T0.AddSeconds(random.Next(100)),
                    };
                    changes.Add(Posted(fresh));
                    break;
                case 1 or 2 when tasks.Count > 0:
                    var task = changes.LastOrDefault(c => c.Task is not null)?.Task is { } same && random.Next(2) == 0 ? same : tasks[random.Next(tasks.Count)];
                    var next = random.Next(4) switch
                    {
                        0 => task with { State = TaskState.Claimed, Owner = "w", FencingToken = state.Head + 1, LeaseExpireTime = T0.AddSeconds(random.Next(1000)) },
                        1 => task with { State = TaskState.Backoff, ReadyTime = T0.AddSeconds(random.Next(1000)), LeaseExpireTime = null },
                        2 => task with { State = TaskState.Completed, Result = Encoding.UTF8.GetBytes("r"), LeaseExpireTime = null },
                        _ => task with { State = TaskState.Ready, ReadyTime = T0.AddSeconds(random.Next(1000)), LeaseExpireTime = null },
                    };
                    changes.Add(new EventRecord { Revision = 0, Kind = EventKind.TaskClaimed, Time = T0, WorkflowId = "wf", Task = next });
                    break;
                case 3:
                    var key = "n" + random.Next(5);
                    changes.Add(new EventRecord
                    {
                        Revision = 0,
                        Kind = EventKind.NotePut,
                        Time = T0,
                        WorkflowId = "wf",
                        Note = new NoteRecord { Key = key, Version = random.Next(100), UpdateTime = T0, Value = Encoding.UTF8.GetBytes("v"), ExpireTime = random.Next(2) == 0 ? T0.AddSeconds(random.Next(1000)) : null },
                    });
                    break;
                case 4 when state.Notes.Count > 0:
                    var gone = state.Notes.Values.ElementAt(random.Next(state.Notes.Count));
                    changes.Add(new EventRecord { Revision = 0, Kind = EventKind.NoteDeleted, Time = T0, WorkflowId = "wf", Note = gone });
                    break;
                default:
                    changes.Add(Workflow(EventKind.WorkflowUpdated, "goal " + random.Next(100)));
                    break;
            }
        }

        return changes;
    }

    private static string Fingerprint(WorkflowState state, TimerIndex timers, bool withRecent)
    {
        var b = new StringBuilder();
        b.Append($"head {state.Head} oldest {state.Oldest} workflow {state.Record?.Goal}@{state.Record?.ModRevision}\n");
        foreach (var task in state.Tasks.Values.OrderBy(t => t.Id, StringComparer.Ordinal))
        {
            b.Append($"task {task.Id} {task.State} @{task.ModRevision} dependents [{string.Join(",", state.Dependents(task.Id))}]\n");
        }

        foreach (var note in state.Notes.Values)
        {
            b.Append($"note {note.Key} v{note.Version} @{note.ModRevision}\n");
        }

        foreach (var s in Enum.GetValues<TaskState>())
        {
            b.Append($"{s}={state.Counts[s]} ");
        }

        foreach (var skills in new[] { Array.Empty<string>(), ["gpu"], Skills })
        {
            b.Append($"\nready [{string.Join(",", skills)}]: {string.Join(",", state.ReadyFor(skills, 1000).Select(t => t.Id))}");
        }

        b.Append($"\nlist {string.Join(",", state.ListTasks(null, null, 1000).Select(t => t.Id))}");
        b.Append($"\ntimers {string.Join(",", timers.Due(DateTimeOffset.MaxValue, 10_000).Select(t => $"{t.Kind}:{t.Id}:{t.Due.ToUnixTimeSeconds()}"))}");
        if (withRecent)
        {
            b.Append($"\nrecent {string.Join(",", state.Recent.Read(state.Recent.FirstRevision, long.MaxValue, 100_000)?.Select(e => e.Revision) ?? [])}");
        }

        return b.ToString();
    }

    /// <summary>
    /// A transaction that changed a ready task and then asks for the best ready task must get the next one of that
    /// task's queue, even when another queue, listed first, holds more than enough worse ones. (Asking for one candidate
    /// more per changed task, from all queues together, missed it: the first queue filled the candidates.)
    /// </summary>
    [Fact]
    public async System.Threading.Tasks.Task ReadyTasks_OfATransaction_PassOverWhatItChanged_InEveryQueue()
    {
        var state = new WorkflowState("wf", 1000, new TimerIndex());
        state.Apply([Workflow(EventKind.WorkflowCreated, "goal")], 1000, 100);
        state.Apply(
        [
            .. Enumerable.Range(1, 4).Select(i => Posted(Task($"plain-{i}") with { Priority = 1 })),
            Posted(Task("gpu-1") with { Priority = 9, RequiredSkills = ["gpu"] }),
            Posted(Task("gpu-2") with { Priority = 9, RequiredSkills = ["gpu"] }),
        ], 1000, 100);
        var txn = new StateTransaction(state);
        var gpu1 = state.Tasks["gpu-1"];
        txn.Append(new EventRecord { Revision = 0, Kind = EventKind.TaskClaimed, Time = T0, WorkflowId = "wf", Task = gpu1 with { State = TaskState.Claimed, Owner = "w" } });

        var best = await txn.GetReadyTasksAsync(["gpu"], 1);

        Assert.Equal("gpu-2", Assert.Single(best).Id);
    }

    private static TaskRecord Task(string id) => new()
    {
        Id = id,
        MaxAttempts = 3,
        Retry = RetryPolicy.Default,
        State = TaskState.Ready,
        ReadyTime = T0,
        CreateTime = T0,
        UpdateTime = T0,
    };

    private static EventRecord Posted(TaskRecord task) =>
        new() { Revision = 0, Kind = EventKind.TaskPosted, Time = T0, WorkflowId = "wf", Task = task };

    private static EventRecord Workflow(EventKind kind, string goal) => new()
    {
        Revision = 0,
        Kind = kind,
        Time = T0,
        WorkflowId = "wf",
        Workflow = new WorkflowRecord { Id = "wf", Goal = goal, Status = WorkflowStatus.Active, CreateTime = T0, UpdateTime = T0 },
    };
}
