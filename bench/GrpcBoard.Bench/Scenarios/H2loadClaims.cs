using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Google.Protobuf.WellKnownTypes;
using GrpcBoard.Api;
using GrpcBoard.Api.V1;
using GrpcBoard.Bench.Cli;
using GrpcBoard.Bench.LoadGen;
using GrpcBoard.Bench.Measurement;
using GrpcBoard.Bench.Reporting;
using GrpcBoard.Bench.Targets;
using GrpcBoard.Wire;

namespace GrpcBoard.Bench.Scenarios;

/// <summary>
/// compare's h2load part: GrpcBoard's claim-only run driven by h2load (nghttp2's HTTP/2 load generator, a C program),
/// on a server of its own per store. The raw Redis side of the comparison is driven by redis-benchmark, a C program
/// that is not Redis's own server code; the lean and C# load generators are this project's, in .NET, and share the
/// two cores with the server and Redis. h2load is the same kind of driver for GrpcBoard as redis-benchmark is for
/// Redis: an outside C program (bench/GrpcBoard.Bench/JOURNAL.md, "GrpcBoard under h2load": 5.2-5.3 µs of CPU per claim, redis-benchmark
/// 10.4-12.0 µs per SET, the lean load generator 9.6-12.4 µs per claim). W concurrent streams over
/// --connections connections (a closed loop: a new request as soon as one ends), every request the same ClaimTask
/// (next ready task of one workflow, one worker id, a one-hour lease), as every redis-benchmark request is the same SET.
///
/// h2load reads no gRPC trailers, so it cannot tell a call answered with an error status from a claim. The checks
/// do: exactly as many tasks are posted as requests are sent, so the server's claimed count equals the requests only
/// if every request claimed a task (a failed or empty claim takes none).
/// </summary>
public static class H2loadClaims
{
    public static async Task<CompareRow> RunAsync(BenchOptions o, string store, Report report, CancellationToken ct)
    {
        var tool = ExternalTool.H2load.Require();
        if (o.Workers % o.Connections != 0)
        {
            throw new ArgumentException($"h2load opens the same number of streams on every connection: --workers ({o.Workers}) must be a multiple of --connections ({o.Connections}).");
        }

        report.Section($"GrpcBoard, {store} store, h2load: starting");
        var options = o.Derive("claim-only", store, o.PartLimit);
        await using var target = await ServerTargets.StartAsync(options, ct);
        await using var clients = new ClientPool(target.Addresses, 1);
        var runId = DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture) + "-" + Random.Shared.Next(1000, 9999).ToString(CultureInfo.InvariantCulture);
        var lease = o.Lease ?? TimeSpan.FromHours(1);
        var streams = o.Workers / o.Connections;
        report.Line("target", target.Description);
        report.Line("load generator", string.Create(Report.Culture, $"h2load ({tool}): {o.Connections} connection(s) x {streams} concurrent streams = {o.Workers} calls in flight, closed loop; every request ClaimTask(next ready task, worker 'h2load', lease {lease.TotalSeconds:0} s)"));

        var scratch = Directory.CreateTempSubdirectory("grpcboard-h2load-");
        try
        {
            async Task<H2loadRun> Claim(string workflowId, int requests, bool measured)
            {
                var body = System.IO.Path.Combine(scratch.FullName, "claim-" + workflowId + ".bin");
                await File.WriteAllBytesAsync(body, ClaimFrame(new ClaimTaskRequest { WorkflowId = workflowId, WorkerId = "h2load", LeaseDuration = Duration.FromTimeSpan(lease) }), ct);
                var log = System.IO.Path.Combine(scratch.FullName, "requests.log");
                return await H2loadRun.ExecuteAsync(tool, ClaimUrl(target.Address), body, log, requests, o.Connections, streams, measured ? o.PartLimit : null, ct);
            }

            // Warm-up on a workflow of its own, as the other load generators do (WarmupGate): only the server's JIT
            // counts, as this tool makes no calls.
            if (o.WarmupTasks > 0)
            {
                var warmupId = $"bench-warmup-h2load-{runId}";
                await BoardSetup.CreateWorkflowAsync(clients.Main, warmupId, "benchmark warm-up (h2load)", ct);
                report.Section("warm-up (not counted)");
                var gate = new WarmupGate(o.WarmupLimit);
                for (var round = 0; ; round++)
                {
                    var before = JitActivity.Take(target.ProcessId);
                    await BoardSetup.PostTasksAsync(clients.Main, warmupId, o.WarmupTasks, o.BatchSize, o.PayloadBytes, ct, firstId: round * o.WarmupTasks);
                    var warm = await Claim(warmupId, o.WarmupTasks, measured: false);
                    var (_, tiering) = JitActivity.Take(target.ProcessId).Since(before);
                    var quiet = WarmupGate.IsQuiet(0, tiering, warm.Totals.Seconds);
                    report.Line($"round {round + 1}", string.Create(Report.Culture,
                        $"{warm.Totals.Succeeded} requests in {warm.Totals.Seconds:0.00} s ({warm.Totals.RequestsPerSecond:0} req/s); server tiering thread {(tiering is { } t ? $"{t:0.00} s" : "unknown")}{(quiet ? " - quiet" : "")}"));
                    if (gate.Done(quiet))
                    {
                        break;
                    }
                }
            }

            var workflowId = $"bench-h2load-{runId}";
            await BoardSetup.CreateWorkflowAsync(clients.Main, workflowId, "benchmark claim-only (h2load)", ct);
            var posting = await BoardSetup.PostTasksAsync(clients.Main, workflowId, o.Tasks, o.BatchSize, o.PayloadBytes, ct);
            report.Section("setup");
            report.Line("workflow", workflowId);
            report.Line("posted", string.Create(Report.Culture, $"{o.Tasks} tasks in {posting.TotalSeconds:0.00} s ({o.Tasks / posting.TotalSeconds:0} tasks/s), as many as h2load sends requests"));

            var window = new ResourceWindow(target.ProcessId, target.Companions);
            var redisBefore = target.RedisEndpoint is { } redis ? await RedisCommandStats.TakeAsync(redis) : null;
            window.Start();
            var run = await Claim(workflowId, o.Tasks, measured: true);
            var usage = window.Stop();
            var redisAfter = redisBefore is not null ? await RedisCommandStats.TakeAsync(target.RedisEndpoint!) : null;

            report.Section("results: claim-only (h2load)");
            report.Line("h2load", run.Totals.Summary);
            report.Line("claims", string.Create(Report.Culture, $"{run.Totals.Succeeded} requests in {run.Totals.Seconds:0.000} s ({run.Totals.RequestsPerSecond:0.0} requests/s, h2load's figure); from its per-request log: {run.LogWall.TotalSeconds:0.000} s first start to last end"));
            report.LatencyTable([("ClaimTask", run.Latency)]);
            report.Section("resources during the measured run");
            report.Text("(h2load is the ended child process; the load generator lines are this tool, which only waits meanwhile)");
            report.Resources(usage, run.Wall, run.Totals.Succeeded, "claim");
            if (redisBefore is not null && redisAfter is not null)
            {
                var figures = new RedisStoreFigures(redisAfter.Since(redisBefore), run.Totals.Succeeded, 0, 0);
                report.Section("redis during the measured run (INFO commandstats)");
                report.RedisStore(figures, run.Wall, run.Totals.Succeeded, "claim");
            }

            var counts = await BoardSetup.CountsAsync(clients.Main, workflowId, ct);
            report.Section("verification (from the server)");
            report.Line("task counts", $"ready {counts.Ready}, claimed {counts.Claimed}, completed {counts.Completed}");
            var checks = Checks(run, o.Tasks, counts.Claimed);
            foreach (var (ok, what) in checks)
            {
                report.Line(ok ? "ok" : "FAILED", what);
            }

            var failures = checks.Count(c => !c.Ok);
            report.Line("verdict", failures == 0 ? "PASS" : $"FAIL ({failures} check(s))");

            return new CompareRow(CompareScenario.BoardSystem(o, store), CompareScenario.ClaimOnlyOperation, LoadGenerator.H2load, o.Workers, run.Totals.Succeeded, run.Totals.Seconds, run.Totals.RequestsPerSecond,
                run.Latency.P50Ms, run.Latency.P99Ms, usage.OtherCores(run.Wall), failures == 0,
                string.Create(Report.Culture, $"h2load {usage.EndedChildrenSeconds * 1e6 / Math.Max(1, run.Totals.Succeeded):0.0} µs CPU/claim"));
        }
        finally
        {
            scratch.Delete(recursive: true);
        }
    }

    /// <summary>
    /// What a run must show to count: every request answered 2xx and logged, and the server's claimed count equal to
    /// the requests. h2load counts a call answered with a gRPC error (or with no task) as a success, since the status
    /// is in the trailers; such a call claims nothing, so the last check is the one that sees it.
    /// </summary>
    public static IReadOnlyList<(bool Ok, string What)> Checks(H2loadRun run, long requests, long claimed) =>
    [
        (run.Totals.Succeeded == requests && run.Totals.Failed == 0, $"h2load: every request answered 2xx ({run.Totals.Succeeded} of {requests}; {run.Totals.Failed} failed, errored or timed out)"),
        (run.Latency.Count == requests, $"h2load's log holds every request ({run.Latency.Count} of {requests})"),
        (claimed == requests, $"server claimed == requests sent (every call claimed a task) ({claimed} vs {requests})"),
    ];

    /// <summary>Where h2load sends its requests: the server's ClaimTask method.</summary>
    public static Uri ClaimUrl(Uri server) => new(server, BoardMethods.ClaimTask.FullName);

    /// <summary>A ClaimTask request framed as it goes on the wire (uncompressed), the body of every h2load request.</summary>
    public static byte[] ClaimFrame(ClaimTaskRequest request)
    {
        var frame = new ArrayBufferWriter<byte>();
        MessageFraming.WriteMessage(frame, request, BoardMethods.ClaimTask.RequestMarshaller, compression: null, maxSendSize: null);
        return frame.WrittenSpan.ToArray();
    }
}

/// <summary>h2load's closing figures: its summary lines, its run time and rate, and requests answered 2xx or not.</summary>
public sealed record H2loadTotals(string Summary, double Seconds, double RequestsPerSecond, long Succeeded, long Failed);

/// <summary>One h2load run: its summary lines and its per-request log (--log-file).</summary>
public sealed partial class H2loadRun
{
    /// <summary>What h2load printed at the end (<see cref="Parse"/>).</summary>
    public required H2loadTotals Totals { get; init; }

    public required LatencyStats Latency { get; init; }
    public required TimeSpan LogWall { get; init; }

    /// <summary>How long the run took by this tool's clock (process start to exit): the window resources are divided by.</summary>
    public required TimeSpan Wall { get; init; }

    public static async Task<H2loadRun> ExecuteAsync(string tool, Uri url, string bodyFile, string logFile, int requests, int connections, int streams, TimeSpan? limit, CancellationToken ct)
    {
        string[] arguments =
        [
            "-n", requests.ToString(CultureInfo.InvariantCulture), "-c", connections.ToString(CultureInfo.InvariantCulture),
            "-m", streams.ToString(CultureInfo.InvariantCulture), "-t", "1", "-d", bodyFile,
            "-H", "content-type: " + GrpcProtocol.ContentType, "-H", GrpcProtocol.TeHeader + ": " + GrpcProtocol.TeTrailers, "--log-file=" + logFile,
            url.ToString(),
        ];
        File.Delete(logFile);
        var overdue = limit is { } l ? $"h2load did not finish {requests} requests within {l.TotalSeconds:0} s (--part-seconds)." : null;
        var run = await ProgramRunner.RunAsync(tool, arguments, limit, overdue, ct);
        var parsed = Parse(run.Output) ?? throw run.Unusable("h2load");
        var (latency, logWall) = ReadLog(await File.ReadAllLinesAsync(logFile, ct));
        return new H2loadRun
        {
            Totals = parsed,
            Latency = latency,
            LogWall = logWall,
            Wall = run.Wall,
        };
    }

    /// <summary>
    /// h2load's summary: "finished in 1.54s, 39015.03 req/s, 9.64MB/s" and "requests: 60000 total, 60000 started,
    /// 60000 done, 60000 succeeded, 0 failed, 0 errored, 0 timeout" (succeeded: a 2xx status). Null when missing.
    /// </summary>
    public static H2loadTotals? Parse(string output)
    {
        var finished = FinishedLine().Match(output);
        var counts = RequestsLine().Match(output);
        if (!finished.Success || !counts.Success)
        {
            return null;
        }

        var seconds = double.Parse(finished.Groups["value"].Value, CultureInfo.InvariantCulture) * finished.Groups["unit"].Value switch
        {
            "s" => 1.0,
            "ms" => 1e-3,
            "us" => 1e-6,
            _ => double.NaN,
        };
        long Count(string name) => long.Parse(counts.Groups[name].Value, CultureInfo.InvariantCulture);
        return new H2loadTotals(
            finished.Value.Trim() + "; " + counts.Value.Trim(),
            seconds,
            double.Parse(finished.Groups["rate"].Value, CultureInfo.InvariantCulture),
            Count("succeeded"),
            Count("failed") + Count("errored") + Count("timeout"));
    }

    /// <summary>
    /// The per-request log: one line per request, tab-separated: start (µs since the epoch), HTTP status, duration
    /// (µs). Lines with a status other than 200 are left out of the latencies (the checks count them).
    /// </summary>
    public static (LatencyStats Latency, TimeSpan Wall) ReadLog(IReadOnlyList<string> lines)
    {
        var recorder = new LatencyRecorder(lines.Count);
        long first = long.MaxValue, last = long.MinValue;
        foreach (var line in lines)
        {
            var fields = line.Split('\t');
            if (fields.Length < 3 || fields[1] != "200"
                || !long.TryParse(fields[0], CultureInfo.InvariantCulture, out var startUs) || !long.TryParse(fields[2], CultureInfo.InvariantCulture, out var durationUs))
            {
                continue;
            }

            recorder.Record((long)(durationUs * (Stopwatch.Frequency / 1e6)));
            first = Math.Min(first, startUs);
            last = Math.Max(last, startUs + durationUs);
        }

        return (LatencyStats.From([recorder]), first <= last ? TimeSpan.FromMicroseconds(last - first) : TimeSpan.Zero);
    }

    [GeneratedRegex(@"finished in (?<value>[\d.]+)(?<unit>s|ms|us), (?<rate>[\d.]+) req/s[^\n]*")]
    private static partial Regex FinishedLine();

    [GeneratedRegex(@"requests: (?<total>\d+) total, (?<started>\d+) started, (?<done>\d+) done, (?<succeeded>\d+) succeeded, (?<failed>\d+) failed, (?<errored>\d+) errored, (?<timeout>\d+) timeout")]
    private static partial Regex RequestsLine();
}
