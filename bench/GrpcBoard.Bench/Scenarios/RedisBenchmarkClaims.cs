using System.Globalization;
using GrpcBoard.Bench.Cli;
using GrpcBoard.Bench.Measurement;
using GrpcBoard.Bench.Reporting;
using GrpcBoard.Bench.Targets;

namespace GrpcBoard.Bench.Scenarios;

/// <summary>
/// The claim done directly against Redis: <c>redis-benchmark -c W -n N -r K SET key:__rand_int__ val NX PX 30000</c>
/// (W concurrent connections, one request in flight each: a closed loop like the board's workers) against a
/// redis-server started with the same persistence as the Redis store's (AOF, appendfsync always). Its requests/s and
/// latency come from its --csv output; DBSIZE afterwards says how many SETs took their key (a SET NX that finds the
/// key taken writes nothing, so it costs Redis no AOF write and no fsync). Run twice by compare: with the key space
/// of --redis-benchmark-keyspace (by default as many keys as tasks, so about half the SETs find their key taken),
/// and with <see cref="NewKeysKeyspace"/>, where practically every SET takes a new key, as every claim of the board
/// takes a task.
/// </summary>
public static class RedisBenchmarkClaims
{
    /// <summary>A key space so large that 200,000 random keys repeat about 20 times: every SET is a successful claim.</summary>
    public const int NewKeysKeyspace = 1_000_000_000;

    public static async Task<CompareRow> RunAsync(BenchOptions o, int keyspace, Report report, CancellationToken ct)
    {
        var tool = ExternalTool.RedisBenchmark.Require();
        report.Section(string.Create(Report.Culture, $"raw Redis: claim = SET key NX PX 30000 (redis-benchmark, key space {keyspace})"));
        await using var redis = await RedisServerProcess.StartAsync(o.RedisAppendFsync, o.RedisAofRewrite, ct);
        string[] arguments =
        [
            "-h", "127.0.0.1", "-p", redis.Port.ToString(CultureInfo.InvariantCulture),
            "-c", o.Workers.ToString(CultureInfo.InvariantCulture), "-n", o.RedisBenchmarkRequests.ToString(CultureInfo.InvariantCulture),
            "-r", keyspace.ToString(CultureInfo.InvariantCulture), "--csv",
            "SET", "key:__rand_int__", "val", "NX", "PX", "30000",
        ];
        report.Line("target", redis.Description);
        report.Line("command", "redis-benchmark " + string.Join(' ', arguments));

        var window = new ResourceWindow(null, [new CompanionProcess("redis-server", redis.Pid)]);
        window.Start();
        var run = await ProgramRunner.RunAsync(tool, arguments, limit: null, overdue: null, ct);
        var wall = run.Wall;
        var usage = window.Stop();
        var result = Parse(run.Output) ?? throw run.Unusable("redis-benchmark");

        await using var client = await redis.ConnectAsync(ct);
        var keys = (long)(await client.CommandAsync("DBSIZE"))!;
        var seconds = o.RedisBenchmarkRequests / result.RequestsPerSecond;
        report.Line("requests", string.Create(Report.Culture, $"{o.RedisBenchmarkRequests} in {seconds:0.000} s = {result.RequestsPerSecond:0.0} requests/s (redis-benchmark's figure; process wall time {wall.TotalSeconds:0.000} s)"));
        report.Line("latency (ms)", string.Create(Report.Culture, $"avg {result.Avg:0.000}, min {result.Min:0.000}, p50 {result.P50:0.000}, p95 {result.P95:0.000}, p99 {result.P99:0.000}, max {result.Max:0.000}"));
        report.Line("keys taken", string.Create(Report.Culture,
            $"{keys} of {o.RedisBenchmarkRequests} SETs took a key ({100.0 * keys / o.RedisBenchmarkRequests:0.0}%; the others found it taken: NX failed, nothing written) = {keys / seconds:0.0} successful claims/s"));
        report.Section("resources during the measured run");
        report.Resources(usage, wall, o.RedisBenchmarkRequests, "request");
        var verified = keys > 0 && keys <= o.RedisBenchmarkRequests;
        report.Line(verified ? "ok" : "FAILED", string.Create(Report.Culture, $"0 < keys ({keys}) <= requests"));
        var operation = keyspace == NewKeysKeyspace ? "SET NX PX 30000, new keys (redis-benchmark)" : "SET key NX PX 30000 (redis-benchmark)";
        return new CompareRow($"raw Redis 7 (AOF {o.RedisAppendFsync})", operation, null, o.Workers, o.RedisBenchmarkRequests, seconds, result.RequestsPerSecond, result.P50, result.P99,
            usage.OtherCores(wall), verified, string.Create(Report.Culture, $"{100.0 * keys / o.RedisBenchmarkRequests:0}% took a key (-r {keyspace}); {keys / seconds:0} successful/s"));
    }

    public sealed record Result(double RequestsPerSecond, double Avg, double Min, double P50, double P95, double P99, double Max);

    /// <summary>
    /// redis-benchmark 7's --csv output: a header line
    /// "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    /// and one line per test. Returns null when it is not there.
    /// </summary>
    public static Result? Parse(string csv)
    {
        var lines = csv.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var header = Array.FindIndex(lines, l => l.StartsWith("\"test\",\"rps\"", StringComparison.Ordinal));
        if (header < 0 || header + 1 >= lines.Length)
        {
            return null;
        }

        var names = Fields(lines[header]);
        var values = Fields(lines[header + 1]);
        double Get(string name)
        {
            var i = Array.IndexOf(names, name);
            return i >= 0 && i < values.Length && double.TryParse(values[i], NumberStyles.Float, CultureInfo.InvariantCulture, out var v) ? v : double.NaN;
        }

        var result = new Result(Get("rps"), Get("avg_latency_ms"), Get("min_latency_ms"), Get("p50_latency_ms"), Get("p95_latency_ms"), Get("p99_latency_ms"), Get("max_latency_ms"));
        return double.IsNaN(result.RequestsPerSecond) ? null : result;

        // The test name holds spaces but no quotes or commas, so a plain split is enough.
        static string[] Fields(string line) => line.Split(',').Select(f => f.Trim('"')).ToArray();
    }
}
