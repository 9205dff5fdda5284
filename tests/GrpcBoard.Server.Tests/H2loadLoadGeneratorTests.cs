using System.Diagnostics;
using Google.Protobuf.WellKnownTypes;
using GrpcBoard.Api.V1;
using GrpcBoard.Bench.Scenarios;
using GrpcBoard.Bench.Targets;
using Xunit;
using Task = System.Threading.Tasks.Task;

namespace GrpcBoard.Server.Tests;

/// <summary>
/// compare's h2load part: nghttp2's h2load (installed by .ci/setup) against the real server, and the reading of its
/// output. Its figures count only if each request was a real claim, and h2load itself cannot tell: it sees HTTP
/// status 200 on a call that failed with a gRPC status in the trailers, or that found no task.
/// </summary>
public sealed class H2loadLoadGeneratorTests
{
    private const string Output = """
        starting benchmark...
        spawning thread #0: 1 total client(s). 200 total requests
        Application protocol: h2c
        progress: 100% done

        finished in 10.88ms, 18387.42 req/s, 4.55MB/s
        requests: 200 total, 200 started, 200 done, 197 succeeded, 1 failed, 2 errored, 0 timeout
        status codes: 197 2xx, 0 3xx, 0 4xx, 1 5xx
        traffic: 50.70KB (51916) total, 647B (647) headers (space savings 95.44%), 44.53KB (45600) data
        """;

    [Fact]
    public void Parse_ReadsTheRunsTotalsAndUnit()
    {
        var totals = H2loadRun.Parse(Output);

        Assert.NotNull(totals);
        Assert.Equal(0.01088, totals.Seconds, 6);
        Assert.Equal(18387.42, totals.RequestsPerSecond, 2);
        Assert.Equal(197, totals.Succeeded);
        Assert.Equal(3, totals.Failed);
        Assert.Null(H2loadRun.Parse("starting benchmark...\nprogress: 10% done\n"));
    }

    [Fact]
    public void ReadLog_TakesTheLatencyOfAnsweredRequestsAndTheSpanOfTheRun()
    {
        string[] log =
        [
            "1000000\t200\t3000",
            "1000500\t200\t1000",
            "1001000\t503\t9000",
            "1002000\t200\t2000",
            "not a log line",
        ];

        var (latency, wall) = H2loadRun.ReadLog(log);

        Assert.Equal(3, latency.Count);
        Assert.Equal(3.0, latency.MaxMs, 3);
        Assert.Equal(1.0, latency.MinMs, 3);
        Assert.Equal(2.0, latency.P50Ms, 3);
        // First start 1,000,000 µs, last end 1,002,000 + 2,000 µs (the 503 is not counted).
        Assert.Equal(TimeSpan.FromMilliseconds(4), wall);
    }

    [Fact]
    public async Task RealH2load_EveryRequestClaimsATask_AndTheChecksSeeRequestsThatClaimedNothing()
    {
        var tool = ExternalTool.H2load.Find();
        Assert.True(tool is not null, ExternalTool.H2load.InstallHint + " (.ci/setup installs it)");
        await using var harness = await ServerHarness.StartAsync();
        const int tasks = 2000;
        // As the h2load part sets up its board.
        await BoardSetup.CreateWorkflowAsync(harness.Client, "h2", "h2load", CancellationToken.None);
        await BoardSetup.PostTasksAsync(harness.Client, "h2", tasks, batchSize: 1000, payloadBytes: 32, CancellationToken.None);

        var scratch = Directory.CreateTempSubdirectory("grpcboard-h2load-test-");
        try
        {
            var body = Path.Combine(scratch.FullName, "claim.bin");
            await File.WriteAllBytesAsync(body, H2loadClaims.ClaimFrame(new ClaimTaskRequest { WorkflowId = "h2", WorkerId = "h2load", LeaseDuration = Duration.FromTimeSpan(TimeSpan.FromMinutes(10)) }));
            var url = H2loadClaims.ClaimUrl(harness.Server.Address);
            var log = Path.Combine(scratch.FullName, "requests.log");

            var run = await H2loadRun.ExecuteAsync(tool, url, body, log, tasks, connections: 1, streams: 16, TimeSpan.FromSeconds(60), CancellationToken.None);

            var counts = (await harness.Client.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "h2" })).Workflow.TaskCounts;
            Assert.Equal(tasks, counts.Claimed);
            Assert.All(H2loadClaims.Checks(run, tasks, counts.Claimed), c => Assert.True(c.Ok, c.What));
            Assert.True(run.Totals.RequestsPerSecond > 0 && run.Latency.P99Ms > 0);

            // 500 more requests with no task left: each is answered OK with no task, which h2load counts as a success.
            var empty = await H2loadRun.ExecuteAsync(tool, url, body, log, 500, connections: 1, streams: 16, TimeSpan.FromSeconds(60), CancellationToken.None);
            var after = (await harness.Client.GetWorkflowAsync(new GetWorkflowRequest { WorkflowId = "h2" })).Workflow.TaskCounts;
            Assert.Equal(500, empty.Totals.Succeeded);
            var failed = H2loadClaims.Checks(empty, 500, after.Claimed - counts.Claimed).Where(c => !c.Ok).ToList();
            Assert.Single(failed);
            Assert.Contains("server claimed == requests sent", failed[0].What, StringComparison.Ordinal);
        }
        finally
        {
            scratch.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task RealH2load_PastItsTimeLimit_IsStoppedWithATimeout()
    {
        var tool = ExternalTool.H2load.Find();
        Assert.True(tool is not null, ExternalTool.H2load.InstallHint + " (.ci/setup installs it)");
        await using var harness = await ServerHarness.StartAsync();
        var scratch = Directory.CreateTempSubdirectory("grpcboard-h2load-test-");
        try
        {
            // A claim that waits up to a minute for a task in an empty workflow: no request ends before the limit.
            await BoardSetup.CreateWorkflowAsync(harness.Client, "idle", "nothing to claim", CancellationToken.None);
            var body = Path.Combine(scratch.FullName, "claim.bin");
            await File.WriteAllBytesAsync(body, H2loadClaims.ClaimFrame(new ClaimTaskRequest { WorkflowId = "idle", WorkerId = "h2load", Wait = Duration.FromTimeSpan(TimeSpan.FromMinutes(1)) }));
            var url = H2loadClaims.ClaimUrl(harness.Server.Address);
            var watch = Stopwatch.StartNew();

            await Assert.ThrowsAsync<TimeoutException>(() => H2loadRun.ExecuteAsync(tool, url, body, Path.Combine(scratch.FullName, "requests.log"), 10, 1, 2, TimeSpan.FromSeconds(1), CancellationToken.None));
            Assert.True(watch.Elapsed < TimeSpan.FromSeconds(30), $"h2load was stopped after {watch.Elapsed}");
        }
        finally
        {
            scratch.Delete(recursive: true);
        }
    }
}
