using System.Diagnostics;
using GrpcBoard.Bench.LoadGen;
using GrpcBoard.Bench.Measurement;
using GrpcBoard.Bench.Reporting;

namespace GrpcBoard.Bench.Scenarios;

/// <summary>What a claim run measured, for a summary across runs (compare).</summary>
/// <param name="ClaimNext">Each CompleteTask also claimed the worker's next task (claim_next), as the provided workers do.</param>
public sealed record ClaimOutcome(string Scenario, string Store, LoadGenerator Client, int ExitCode, ClaimRun Run, TimeSpan Posting, LatencyStats Claim, LatencyStats? Pair, ResourceUsage Usage, RedisStoreFigures? Redis, bool ClaimNext)
{
    public double ClaimsPerSecond => Run.Claims / Run.Wall.TotalSeconds;

    public double PairsPerSecond => Run.Completions / Run.Wall.TotalSeconds;

    /// <summary>Cores other processes used during the run (0.1 or more: the run was disturbed).</summary>
    public double? OtherCores => Usage.OtherCores(Run.Wall);
}

/// <summary>
/// claim-complete: W workers loop ClaimTask (next ready task) → CompleteTask over N pre-posted tasks.
/// claim-only: the same, without completing (a long lease), to isolate claim throughput.
/// Both: warm up on a separate workflow, post N tasks in batches, measure, then check the server's counts.
/// </summary>
public sealed class ClaimScenario(string name, bool completes) : IScenario
{
    public string Name { get; } = name;

    public string Description { get; } = completes
        ? "W workers loop ClaimTask (next ready) -> CompleteTask until N pre-posted tasks are completed."
        : "W workers loop ClaimTask (next ready, long lease) until N pre-posted tasks are claimed.";

    private string Unit => completes ? "claim+complete pair" : "claim";

    public async Task<int> RunAsync(BenchContext context) => (await MeasureAsync(context)).ExitCode;

    /// <summary>Runs the scenario, prints its report, and returns its figures (for compare).</summary>
    public async Task<ClaimOutcome> MeasureAsync(BenchContext context)
    {
        var o = context.Options;
        var report = context.Report;
        var ct = context.CancellationToken;
        var lease = o.Lease ?? (completes ? TimeSpan.FromSeconds(60) : TimeSpan.FromHours(1));

        report.Section("parameters");
        foreach (var (key, value) in o.Describe(lease))
        {
            report.Line(key, value);
        }

        report.Line("target", context.Target.Description);
        report.Line("address", context.Target.Address.ToString());

        if (o.WarmupTasks > 0)
        {
            await WarmUpAsync(context, lease);
        }

        // One workflow by default; with --workflows K the tasks are split over K workflows (K locks, one journal).
        var workflowIds = Enumerable.Range(0, o.Workflows).Select(k => o.Workflows == 1 ? $"bench-{context.RunId}" : $"bench-{context.RunId}-{k}").ToArray();
        var posting = TimeSpan.Zero;
        for (var k = 0; k < workflowIds.Length; k++)
        {
            await BoardSetup.CreateWorkflowAsync(context.Clients.Main, workflowIds[k], $"benchmark {Name}", ct);
            posting += await BoardSetup.PostTasksAsync(context.Clients.Main, workflowIds[k], TasksOf(k), o.BatchSize, o.PayloadBytes, ct);
        }

        report.Section("setup");
        report.Line("workflow", workflowIds.Length == 1 ? workflowIds[0] : $"{workflowIds[0]} ... {workflowIds[^1]} ({workflowIds.Length})");
        report.Line("posted", string.Create(Report.Culture, $"{o.Tasks} tasks in {posting.TotalSeconds:0.00} s ({o.Tasks / posting.TotalSeconds:0} tasks/s, batches of {o.BatchSize}, one call at a time)"));

        var window = new ResourceWindow(context.Target.ProcessId, context.Target.Companions);
        var redisBefore = context.Target.RedisEndpoint is { } redis ? await RedisCommandStats.TakeAsync(redis) : null;
        var writesBefore = context.Clients.Writes(o.Client);
        using var sampler = o.Allocations ? new AllocationSampler() : null;
        window.Start();
        sampler?.Start();
        var run = await ClaimRun.ExecuteAsync(context.Clients, o.Client, workflowIds, o.Workers, o.Tasks, lease, completes, o.ResultBytes, o.Duration, ct, o.ClaimNext);
        var usage = window.Stop();
        var allocations = sampler?.Stop();
        var writes = context.Clients.Writes(o.Client) - writesBefore;
        var redisAfter = redisBefore is not null ? await RedisCommandStats.TakeAsync(context.Target.RedisEndpoint!) : null;
        var connections = context.Clients.CountConnections();

        var units = completes ? run.Completions : run.Claims;
        var seconds = run.Wall.TotalSeconds;
        report.Section($"results: {Name}");
        report.Line("wall time", string.Create(Report.Culture, $"{seconds:0.000} s") + (run.DeadlineReached ? " (stopped by --duration)" : ""));
        report.Line("claims", string.Create(Report.Culture, $"{run.Claims} ({run.Claims / seconds:0.0} claims/s)"));
        if (completes)
        {
            report.Line("claim+complete pairs", string.Create(Report.Culture, $"{run.Completions} ({run.Completions / seconds:0.0} pairs/s, {2 * run.Completions / seconds:0.0} calls/s)"));
        }

        report.Line("empty claims", string.Create(Report.Culture, $"{run.EmptyClaims} (a worker stops at its first: nothing left to claim)"));
        report.Line("failed calls", run.Errors.ToString(Report.Culture));
        report.Line("http/2 connections", connections is { } c ? $"{c} established to port{(context.Clients.Servers.Count > 1 ? "s" : "")} {string.Join(", ", context.Clients.Servers.Select(s => s.Port))} after the run ({context.Clients.Count} C# client channel(s), {context.Clients.LeanCount} lean connection(s))" : "unknown");
        // Calls that leave in one write cost both ends one system call. The C# client over HttpClient counts none.
        report.Line("client socket writes", string.Create(Report.Culture, $"{writes} ({(units > 0 ? 1000.0 * writes / units : 0):0.0} per 1,000 {Unit}s)"));
        var rows = new List<(string, LatencyStats)> { ("ClaimTask", LatencyStats.From(run.Workers.Select(w => w.ClaimLatency))) };
        if (completes)
        {
            rows.Add(("CompleteTask", LatencyStats.From(run.Workers.Select(w => w.CompleteLatency))));
            rows.Add(("claim+complete", LatencyStats.From(run.Workers.Select(w => w.PairLatency))));
        }

        report.LatencyTable(rows);
        var claimStats = rows[0].Item2;
        var pairStats = completes ? rows[2].Item2 : null;
        var perSecond = run.Timeline.FullSeconds(run.EndTimestamp);
        if (perSecond.Length > 1)
        {
            var sorted = perSecond.Order().ToArray();
            report.Line($"{Unit}s per second", string.Create(Report.Culture,
                $"min {sorted[0]}, median {sorted[sorted.Length / 2]}, max {sorted[^1]} over {perSecond.Length} second(s)"));
            if (o.Timeline)
            {
                report.Line("timeline", string.Join(' ', perSecond));
            }
        }

        report.Section("resources during the measured run");
        report.Resources(usage, run.Wall, units, Unit);
        RedisStoreFigures? redisFigures = null;
        if (redisBefore is not null && redisAfter is not null)
        {
            redisFigures = new RedisStoreFigures(redisAfter.Since(redisBefore), run.Claims, run.Completions, run.EmptyClaims);
            report.Section("redis during the measured run (INFO commandstats)");
            report.RedisStore(redisFigures, run.Wall, units, Unit);
        }

        if (context.Target.RelayReport is { } relayed)
        {
            report.Line("delay relay to redis", relayed);
        }

        if (allocations is not null)
        {
            report.Section(o.InProcess ? "allocations by type (sampled; this process: server and load generator)" : "allocations by type (sampled; this process: the load generator only)");
            report.Allocations(allocations, units, Unit);
        }

        var exitCode = await VerifyAsync(context, workflowIds, run);
        return new ClaimOutcome(Name, o.Store, o.Client, exitCode, run, posting, claimStats, pairStats, usage, redisFigures, completes && o.ClaimNext);

        int TasksOf(int k) => o.Tasks / o.Workflows + (k < o.Tasks % o.Workflows ? 1 : 0);
    }

    /// <summary>
    /// Rounds of --warmup-tasks through the same loop on a separate workflow, until two rounds in a row in
    /// which the JIT of the server and of this tool was quiet (after 3 s at least), or --warmup-seconds have passed.
    /// </summary>
    private async Task WarmUpAsync(BenchContext context, TimeSpan lease)
    {
        var o = context.Options;
        var report = context.Report;
        var ct = context.CancellationToken;
        var warmupId = $"bench-warmup-{context.RunId}";
        await BoardSetup.CreateWorkflowAsync(context.Clients.Main, warmupId, "benchmark warm-up", ct);
        report.Section("warm-up (not counted)");
        var gate = new WarmupGate(o.WarmupLimit);
        for (var round = 0; ; round++)
        {
            var before = JitActivity.Take(context.Target.ProcessId);
            await BoardSetup.PostTasksAsync(context.Clients.Main, warmupId, o.WarmupTasks, o.BatchSize, o.PayloadBytes, ct, firstId: round * o.WarmupTasks);
            var run = await ClaimRun.ExecuteAsync(context.Clients, o.Client, [warmupId], o.Workers, o.WarmupTasks, lease, completes, o.ResultBytes, null, ct, o.ClaimNext);
            var (methods, tiering) = JitActivity.Take(context.Target.ProcessId).Since(before);
            var seconds = run.Wall.TotalSeconds;
            var quiet = WarmupGate.IsQuiet(methods, tiering, seconds);
            report.Line($"round {round + 1}", string.Create(Report.Culture,
                $"{run.Claims} claims, {run.Completions} completions, {run.Errors} errors in {seconds:0.00} s ({run.Claims / seconds:0} claims/s); JIT: {methods} methods compiled here, server tiering thread {(tiering is { } t ? $"{t:0.00} s" : "unknown")}{(quiet ? " - quiet" : "")}"));
            if (gate.Done(quiet))
            {
                break;
            }
        }
    }

    private async Task<int> VerifyAsync(BenchContext context, IReadOnlyList<string> workflowIds, ClaimRun run)
    {
        var o = context.Options;
        var report = context.Report;
        var counts = new Api.V1.TaskCounts();
        foreach (var id in workflowIds)
        {
            var c = await BoardSetup.CountsAsync(context.Clients.Main, id, context.CancellationToken);
            counts.Ready += c.Ready;
            counts.Claimed += c.Claimed;
            counts.Completed += c.Completed;
            counts.Backoff += c.Backoff;
            counts.DeadLettered += c.DeadLettered;
            counts.Pending += c.Pending;
        }

        report.Section("verification (from the server)");
        report.Line("task counts", $"ready {counts.Ready}, claimed {counts.Claimed}, completed {counts.Completed}, backoff {counts.Backoff}, dead-lettered {counts.DeadLettered}, pending {counts.Pending}");
        var failures = new List<string>();
        void Check(bool ok, string what)
        {
            report.Line(ok ? "ok" : "FAILED", what);
            if (!ok)
            {
                failures.Add(what);
            }
        }

        var all = !run.DeadlineReached;
        if (completes)
        {
            if (all)
            {
                Check(counts.Completed == o.Tasks, $"server completed == tasks posted ({counts.Completed} vs {o.Tasks})");
            }

            Check(counts.Completed == run.Completions, $"server completed == successful CompleteTask calls ({counts.Completed} vs {run.Completions})");
            Check(run.AlreadyCompleted == 0, $"no CompleteTask answered already_completed ({run.AlreadyCompleted})");
        }
        else
        {
            if (all)
            {
                Check(counts.Claimed == o.Tasks, $"server claimed == tasks posted ({counts.Claimed} vs {o.Tasks})");
            }

            Check(counts.Claimed == run.Claims, $"server claimed == successful ClaimTask calls ({counts.Claimed} vs {run.Claims})");
        }

        Check(run.Errors == 0, $"every call succeeded ({run.Errors} failed)");
        foreach (var (kind, count, example) in run.MergedErrors().Kinds.Take(10))
        {
            report.Line("  error", $"{count} x {kind}: {example}");
        }

        report.Line("verdict", failures.Count == 0 ? "PASS" : $"FAIL ({failures.Count} check(s))");
        return failures.Count == 0 ? 0 : 1;
    }
}
