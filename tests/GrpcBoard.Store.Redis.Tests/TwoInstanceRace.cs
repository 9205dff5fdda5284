using System.Collections.Concurrent;
using GrpcBoard.Core;
using GrpcBoard.Core.Model;
using GrpcBoard.Testing;
using Xunit;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>
/// Two instances on one workflow, 8 workers each, claiming and completing 400 tasks. What must hold is what a
/// checker sees: every task claimed and completed once, every event once at consecutive revisions, and both
/// instances agreeing with Redis at the end.
/// </summary>
internal static class TwoInstanceRace
{
    public static async Task RunAsync((RedisStore Store, Coordinator Board) first, (RedisStore Store, Coordinator Board) second)
    {
        const int tasks = 400;
        var (a, b) = (first.Board, second.Board);
        var wf = "race-" + Guid.NewGuid().ToString("N")[..8];
        await a.CreateWorkflowAsync(wf, "two instances", null, default).Within();
        await b.PostTasksAsync(wf, Enumerable.Range(0, tasks).Select(i => new TaskSpec { Id = $"t{i:D3}" }).ToArray(), default).Within();

        var completed = new ConcurrentBag<(string Task, long Token)>();
        await Task.WhenAll(Enumerable.Range(0, 16).Select(async w =>
        {
            var board = w % 2 == 0 ? a : b;
            while ((await board.ClaimAsync(new ClaimCommand { WorkflowId = wf, WorkerId = $"w{w}" }, default)).Task is { } task)
            {
                await board.CompleteTaskAsync(wf, task.Id, task.FencingToken, "done"u8.ToArray(), "", default);
                completed.Add((task.Id, task.FencingToken));
            }
        })).Within(TimeSpan.FromSeconds(120));

        Assert.Equal(tasks, completed.Count);
        Assert.Equal(tasks, completed.Select(c => c.Task).Distinct().Count());

        // Both instances read the same, and the log holds each change once, in order, without gaps.
        foreach (var (store, board) in new[] { first, second })
        {
            var view = await board.GetWorkflowAsync(wf, default).Within();
            Assert.Equal(tasks, view.Counts[TaskState.Completed]);
            var events = await StoreReads.AllEventsAsync(store, wf);
            Assert.Equal(Enumerable.Range(1, (int)view.Revision).Select(r => (long)r), events.Select(e => e.Revision));
            Assert.Equal(tasks, events.Count(e => e.Kind == EventKind.TaskClaimed));
            Assert.Equal(tasks, events.Count(e => e.Kind == EventKind.TaskCompleted));
            foreach (var (task, token) in completed)
            {
                var stored = (await board.GetTaskAsync(wf, task, default).Within()).Task;
                Assert.Equal(TaskState.Completed, stored.State);
                Assert.Equal(token, stored.FencingToken);
            }
        }
    }
}
