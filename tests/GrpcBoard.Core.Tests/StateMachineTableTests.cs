using GrpcBoard.Testing;
using System.Text;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Rules;
using Xunit;
using Xunit.Abstractions;

namespace GrpcBoard.Core.Tests;

/// <summary>
/// docs/state-machine.md holds the table "state x operation -> new state or refusal". This test computes
/// every cell by running <see cref="TaskStateMachine"/> on a task brought into each state, and compares the
/// result with the document cell by cell: the document is the specification, and it cannot drift.
/// </summary>
public sealed class StateMachineTableTests(ITestOutputHelper output)
{
    private const string StartMarker = "<!-- state-table:start -->";
    private const string EndMarker = "<!-- state-table:end -->";

    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private static readonly TimeSpan Lease = TimeSpan.FromSeconds(30);

    /// <summary>Each row: a label and how to get a task into that state (the task, and the time "now" is).</summary>
    private static readonly (string Label, Func<(TaskRecord Task, DateTimeOffset Now)> Make)[] Rows =
    [
        ("PENDING", () => (Posted(ready: false), T0)),
        ("READY", () => (Posted(), T0)),
        ("READY (after a release)", () =>
        {
            var claimed = TaskStateMachine.Claim(Posted(), "w1", null, Lease, 10, T0);
            return (TaskStateMachine.Release(claimed, claimed.FencingToken, T0), T0);
        }),
        ("CLAIMED", () => (TaskStateMachine.Claim(Posted(), "w1", null, Lease, 10, T0), T0)),
        ("CLAIMED, lease run out", () => (TaskStateMachine.Claim(Posted(), "w1", null, Lease, 10, T0), T0 + Lease)),
        ("BACKOFF", () =>
        {
            var claimed = TaskStateMachine.Claim(Posted(), "w1", null, Lease, 10, T0);
            return (TaskStateMachine.Fail(claimed, claimed.FencingToken, "boom", default, false, T0), T0);
        }),
        ("BACKOFF, retry due", () =>
        {
            var claimed = TaskStateMachine.Claim(Posted(), "w1", null, Lease, 10, T0);
            return (TaskStateMachine.Fail(claimed, claimed.FencingToken, "boom", default, false, T0), T0 + TimeSpan.FromSeconds(1));
        }),
        ("BACKOFF (after a lease expiry)", () =>
        {
            var claimed = TaskStateMachine.Claim(Posted(), "w1", null, Lease, 10, T0);
            return (TaskStateMachine.ExpireLease(claimed, T0 + Lease), T0 + Lease);
        }),
        ("COMPLETED", () =>
        {
            var claimed = TaskStateMachine.Claim(Posted(), "w1", null, Lease, 10, T0);
            return (TaskStateMachine.Complete(claimed, claimed.FencingToken, "r"u8.ToArray(), "text/plain", T0).Task, T0);
        }),
        ("DEAD_LETTERED", () =>
        {
            var claimed = TaskStateMachine.Claim(Posted(maxAttempts: 1), "w1", null, Lease, 10, T0);
            return (TaskStateMachine.Fail(claimed, claimed.FencingToken, "boom", default, false, T0), T0);
        }),
        ("CANCELLED (while claimed)", () =>
        {
            var claimed = TaskStateMachine.Claim(Posted(), "w1", null, Lease, 10, T0);
            return (TaskStateMachine.Cancel(claimed, "not needed", T0), T0);
        }),
    ];

    /// <summary>Each column: an operation, applied with the task's current fencing token (1 if it was never claimed).</summary>
    private static readonly (string Label, Func<TaskRecord, long, DateTimeOffset, TaskRecord?> Apply)[] Columns =
    [
        ("Claim", (t, _, now) => TaskStateMachine.Claim(t, "w2", null, Lease, 100, now)),
        ("RenewLease", (t, token, now) => TaskStateMachine.Renew(t, token, null, now)),
        ("ReleaseTask", (t, token, now) => TaskStateMachine.Release(t, token, now)),
        ("Checkpoint", (t, token, now) => TaskStateMachine.Checkpoint(t, token, "cp"u8.ToArray(), now)),
        ("CompleteTask", (t, token, now) => TaskStateMachine.Complete(t, token, "r"u8.ToArray(), "text/plain", now).Task),
        ("CompleteTask, other result", (t, token, now) => TaskStateMachine.Complete(t, token, "other"u8.ToArray(), "text/plain", now).Task),
        ("FailTask", (t, token, now) => TaskStateMachine.Fail(t, token, "boom", default, false, now)),
        ("FailTask, non-retryable", (t, token, now) => TaskStateMachine.Fail(t, token, "fatal", default, true, now)),
        ("lease timer", (t, _, now) => TaskStateMachine.IsLeaseDue(t, now) ? TaskStateMachine.ExpireLease(t, now) : null),
        ("backoff timer", (t, _, now) => TaskStateMachine.IsBackoffDue(t, now) ? TaskStateMachine.EndBackoff(t, now) : null),
        ("CancelTask", (t, _, now) => TaskStateMachine.Cancel(t, "cancelled", now)),
        ("dependencies done", (t, _, now) => t.State == TaskState.Pending ? TaskStateMachine.DependenciesCompleted(t, now) : null),
    ];

    [Fact]
    public void EveryCell_MatchesTheDocumentedTable()
    {
        var computed = Compute();
        var rendered = Render(computed);
        output.WriteLine(rendered);
        var documented = ReadDocumentedTable();
        Assert.True(documented is not null, $"docs/state-machine.md has no table between {StartMarker} and {EndMarker}. The computed table:\n{rendered}");

        var failures = new List<string>();
        for (var r = 0; r < Rows.Length; r++)
        {
            for (var c = 0; c < Columns.Length; c++)
            {
                var expected = documented!.Value.Cells.ElementAtOrDefault(r)?.ElementAtOrDefault(c);
                if (expected != computed[r][c])
                {
                    failures.Add($"[{Rows[r].Label} x {Columns[c].Label}] documented '{expected}', computed '{computed[r][c]}'");
                }
            }
        }

        Assert.Equal(Columns.Select(c => c.Label), documented!.Value.Columns);
        Assert.Equal(Rows.Select(r => r.Label), documented.Value.RowLabels);
        Assert.True(failures.Count == 0, string.Join("\n", failures) + "\n\nComputed table:\n" + rendered);
    }

    [Fact]
    public void AStaleToken_IsRefusedInEveryState()
    {
        foreach (var (label, make) in Rows)
        {
            var (task, now) = make();
            if (task.FencingToken < 2)
            {
                task = task with { FencingToken = 7 };
            }

            var ex = Assert.Throws<BoardException>(() => TaskStateMachine.CheckFence(task, task.FencingToken - 1, now));
            Assert.True(ex.Error == BoardError.FencingTokenStale, $"{label}: {ex.Error}");
        }
    }

    [Fact]
    public void Backoff_GrowsByTheCoefficient_UpToTheMaximum()
    {
        var policy = new RetryPolicy(TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(10), 3.0);
        Assert.Equal([1, 3, 9, 10, 10], Enumerable.Range(1, 5).Select(a => policy.BackoffAfter(a).TotalSeconds));
        Assert.Equal(TimeSpan.Zero, new RetryPolicy(TimeSpan.Zero, TimeSpan.FromSeconds(10), 2).BackoffAfter(3));
    }

    private static string[][] Compute() =>
        Rows.Select(row => Columns.Select(column =>
        {
            var (task, now) = row.Make();
            var token = task.FencingToken == 0 ? 1 : task.FencingToken;
            try
            {
                var next = column.Apply(task, token, now);
                if (next is null)
                {
                    return "-";
                }

                return ReferenceEquals(next, task) ? TaskStateMachine.Name(next.State) + " (no change)" : TaskStateMachine.Name(next.State);
            }
            catch (BoardException ex)
            {
                return ReasonName(ex.Error);
            }
        }).ToArray()).ToArray();

    /// <summary>BoardError names as the API spells its ErrorReason values (FencingTokenStale: FENCING_TOKEN_STALE).</summary>
    private static string ReasonName(BoardError error)
    {
        var name = error.ToString();
        var sb = new StringBuilder();
        for (var i = 0; i < name.Length; i++)
        {
            if (i > 0 && char.IsUpper(name[i]))
            {
                sb.Append('_');
            }

            sb.Append(char.ToUpperInvariant(name[i]));
        }

        return sb.ToString();
    }

    private static string Render(string[][] cells)
    {
        var sb = new StringBuilder();
        sb.Append("| State \\ Operation | ").Append(string.Join(" | ", Columns.Select(c => c.Label))).Append(" |\n");
        sb.Append("|---|").Append(string.Concat(Columns.Select(_ => "---|"))).Append('\n');
        for (var r = 0; r < Rows.Length; r++)
        {
            sb.Append("| ").Append(Rows[r].Label).Append(" | ").Append(string.Join(" | ", cells[r])).Append(" |\n");
        }

        return sb.ToString();
    }

    private static (string[] Columns, string[] RowLabels, string[][] Cells)? ReadDocumentedTable()
    {
        var path = Path.Combine(RepoPaths.Root, "docs", "state-machine.md");
        if (!File.Exists(path))
        {
            return null;
        }

        var text = File.ReadAllText(path);
        var start = text.IndexOf(StartMarker, StringComparison.Ordinal);
        var end = text.IndexOf(EndMarker, StringComparison.Ordinal);
        if (start < 0 || end < start)
        {
            return null;
        }

        var lines = text[(start + StartMarker.Length)..end].Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
            .Where(l => l.StartsWith('|'))
            .Select(l => l.Trim('|').Split('|').Select(c => c.Trim()).ToArray())
            .ToArray();
        var body = lines.Skip(2).ToArray();
        return (lines[0].Skip(1).ToArray(), body.Select(r => r[0]).ToArray(), body.Select(r => r.Skip(1).ToArray()).ToArray());
    }


    private static TaskRecord Posted(bool ready = true, int maxAttempts = 3) =>
        TaskStateMachine.Post(new TaskDefinition { Id = "t", MaxAttempts = maxAttempts, Retry = RetryPolicy.Default }, ready, T0);
}
