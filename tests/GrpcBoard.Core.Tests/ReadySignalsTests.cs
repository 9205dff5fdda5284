using System.Collections.Immutable;
using GrpcBoard.Core.Events;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Storage;
using GrpcBoard.Store.Embedded;
using GrpcBoard.Testing;
using Xunit;

namespace GrpcBoard.Core.Tests;

/// <summary>
/// Waiting claims are woken one per ready task (no thundering herd), by skills, oldest first, and no
/// wake-up is lost when a woken claim leaves without looking again.
/// </summary>
public sealed class ReadySignalsTests
{
    private static readonly DateTimeOffset T0 = DateTimeOffset.UnixEpoch;
    private readonly EventHub _hub = new();
    private readonly ReadySignals _signals;
    private long _revision;

    public ReadySignalsTests() => _signals = new ReadySignals(_hub);

    private ReadySignals.Waiter Armed(params string[] skills)
    {
        var waiter = _signals.Join("wf", skills);
        waiter.Arm();
        return waiter;
    }

    private void Ready(params string[] requiredSkills) => _hub.Publish("wf", [new EventRecord
    {
        Revision = ++_revision,
        Kind = EventKind.TaskPosted,
        Time = T0,
        WorkflowId = "wf",
        Task = new TaskRecord
        {
            Id = "t" + _revision,
            RequiredSkills = [.. requiredSkills.Order(StringComparer.Ordinal)],
            MaxAttempts = 1,
            Retry = RetryPolicy.Default,
            State = TaskState.Ready,
            CreateTime = T0,
            UpdateTime = T0,
        },
    }]);

    private static bool[] Woken(params ReadySignals.Waiter[] waiters) => [.. waiters.Select(w => w.Signal.IsCompleted)];

    [Fact]
    public void OneReadyTask_WakesOnlyTheOldestWaiter()
    {
        var waiters = Enumerable.Range(0, 5).Select(_ => Armed()).ToArray();
        Ready();
        Assert.Equal([true, false, false, false, false], Woken(waiters));
        Ready();
        Ready();
        Assert.Equal([true, true, true, false, false], Woken(waiters));
    }

    [Fact]
    public void ATaskWakesAWaiterWhoseSkillsCoverIt_NotAnOlderOneWhoseSkillsDoNot()
    {
        var plain = Armed();
        var gpu = Armed("gpu", "python");
        Ready("gpu");
        Assert.Equal([false, true], Woken(plain, gpu));
        Ready();
        Assert.Equal([true, true], Woken(plain, gpu));
        var late = Armed();
        Ready("tpu");
        Assert.False(late.Signal.IsCompleted);
    }

    [Fact]
    public void AWokenWaiterThatLeavesWithoutLooking_HandsItsWakeUpToTheNextOne()
    {
        var first = Armed();
        var second = Armed();
        Ready();
        Assert.Equal([true, false], Woken(first, second));
        first.Dispose();
        Assert.True(second.Signal.IsCompleted);
    }

    [Fact]
    public void WakeUpsThatFindEveryWaiterLooking_AreKept_AndHandedOnWhenTheWaiterLeaves()
    {
        var a = Armed();
        var b = Armed();
        Ready();
        Ready();
        Assert.Equal([true, true], Woken(a, b));

        // Both are looking: the third task's wake-up stays with the oldest, whose look may have missed it.
        Ready();
        b.Arm();
        Assert.False(b.Signal.IsCompleted);

        // a leaves (it claimed something): its wake-ups, the third task's among them, go to b.
        a.Dispose();
        Assert.True(b.Signal.IsCompleted);
    }

    [Fact]
    public void AWaiterArmedAgain_IsCoveredByItsNewLook_AndLeavesNothingToHandOn()
    {
        var a = Armed();
        var b = Armed();
        Ready();
        a.Arm();
        a.Dispose();
        Assert.False(b.Signal.IsCompleted);
    }

    [Fact]
    public void AWorkflowChange_WakesEveryWaiter()
    {
        var waiters = Enumerable.Range(0, 3).Select(_ => Armed("x")).ToArray();
        _hub.Publish("wf", [new EventRecord { Revision = ++_revision, Kind = EventKind.WorkflowUpdated, Time = T0, WorkflowId = "wf" }]);
        Assert.Equal([true, true, true], Woken(waiters));
    }

    [Fact]
    public void WaitersLeave_AndTheWorkflowsListGoes()
    {
        var a = Armed();
        Assert.Equal(1, _signals.WaitingCount("wf"));
        a.Dispose();
        Assert.Equal(0, _signals.WaitingCount("wf"));
        var b = Armed();
        Ready();
        Assert.True(b.Signal.IsCompleted);
    }

    /// <summary>
    /// Through the coordinator: twenty claims wait on an empty workflow and one task is posted. One claim
    /// gets it, and the others do not all look for it: counted at the store, after every claim ended.
    /// </summary>
    [Fact]
    public async Task TwentyWaitingClaims_OneTaskPosted_OneClaimLooksAgain_NotTwenty()
    {
        var hub = new EventHub();
        await using var inner = new EmbeddedStore(new EmbeddedStoreOptions(), hub);
        var store = new CountingStore(inner);
        var time = new ManualTimeProvider();
        var board = new Coordinator(store, hub, time, new BoardLimits());
        await board.CreateWorkflowAsync("wf", "", null, default).Within();
        var signals = board.ReadySignalsForTests;

        using var stop = new CancellationTokenSource();
        var claims = Enumerable.Range(0, 20)
            .Select(i => board.ClaimAsync(new ClaimCommand { WorkflowId = "wf", WorkerId = $"w{i}", Wait = TimeSpan.FromMinutes(1) }, stop.Token))
            .ToArray();
        await TestTimeouts.Eventually(() => Task.FromResult(signals.WaitingCount("wf") == 20 && store.Transactions == 21), "every claim to have looked once and be waiting");

        await board.PostTasksAsync("wf", [new TaskSpec { Id = "only" }], default).Within();
        var winner = await Task.WhenAny(claims).Within();
        Assert.Equal("only", (await winner).Task!.Id);

        await stop.CancelAsync();
        foreach (var claim in claims.Where(c => c != winner))
        {
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => claim).Within();
        }

        // Create + 20 first looks + post + the winner's look, and at most one look more (a wake-up handed on).
        Assert.InRange(store.Transactions, 23, 24);
    }
}
