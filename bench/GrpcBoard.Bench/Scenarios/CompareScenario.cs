using System.Globalization;
using GrpcBoard.Bench.Cli;
using GrpcBoard.Bench.LoadGen;
using GrpcBoard.Bench.Reporting;
using GrpcBoard.Bench.Targets;

namespace GrpcBoard.Bench.Scenarios;

/// <summary>One line of the comparison table.</summary>
/// <param name="Client">The load generator of a gRPC part; null for redis-benchmark (its own C client).</param>
/// <param name="OtherCores">Cores other processes used during the run (0.1 or more: disturbed); null when unknown.</param>
public sealed record CompareRow(string System, string Operation, LoadGenerator? Client, int Concurrency, long Done, double WallSeconds, double PerSecond, double P50Ms, double P99Ms, double? OtherCores, bool Verified, string Notes);

/// <summary>
/// compare: the same claim on GrpcBoard (embedded store, FULL; Redis store on a redis-server with appendfsync always),
/// on raw Redis (redis-benchmark SET NX) and on etcd (a Txn on create_revision), at the same concurrency on this
/// machine, one after the other; then a table and the ratios against the targets. Each part starts and stops what
/// it measures. A part whose program is missing is skipped with the package to install. The gRPC parts (GrpcBoard
/// and etcd) run once per load generator of --client, and ratios compare runs made with the same one. The h2load part
/// runs GrpcBoard's claim-only with h2load, a C load generator as redis-benchmark is one, on a server of its own per
/// store (<see cref="H2loadClaims"/>); its ratios are against raw Redis only (etcd's claim needs a new key per request,
/// which one fixed h2load request cannot give).
/// </summary>
public sealed class CompareScenario : ISelfHostedScenario
{
    public string Name => "compare";

    public string Description => "GrpcBoard (embedded and Redis store) vs raw Redis SET NX (redis-benchmark) vs etcd Txn: claims/s, p50/p99, ratios.";

    public Task<int> RunAsync(BenchContext context) => RunAsync(context.Options, context.Report, context.CancellationToken);

    public async Task<int> RunAsync(BenchOptions o, Report report, CancellationToken ct)
    {
        report.Section("compare: parameters");
        report.Line("parts", string.Join(", ", o.Parts));
        report.Line("concurrency", string.Create(Report.Culture, $"{o.Workers} closed-loop workers/clients everywhere, one call in flight each; {o.Connections} HTTP/2 connection(s) for gRPC"));
        report.Line("grpc load generators", string.Join(", ", o.Clients.Select(ClientName)) + " (each gRPC part runs with each)");
        report.Line("grpcboard runs", string.Create(Report.Culture, $"claim-only, claim-complete (one call each) and claim-complete with claim_next on one server per store, {o.Tasks} tasks each, stopped after {(o.PartLimit is { } l ? $"{l.TotalSeconds:0} s" : "none (all tasks)")}"));
        report.Line("redis persistence", $"appendonly yes, appendfsync {o.RedisAppendFsync}, AOF rewrites {o.RedisAofRewrite}, no RDB (Redis store and redis-benchmark alike)");
        report.Line("redis-benchmark", string.Create(Report.Culture, $"-c {o.Workers} -n {o.RedisBenchmarkRequests}, twice: -r {o.RedisBenchmarkKeyspace}, and -r {RedisBenchmarkClaims.NewKeysKeyspace} (new keys)"));
        report.Line("etcd", string.Create(Report.Culture, $"{o.EtcdTxns} transactions, single member, default fsync"));

        var skipped = new List<string>();
        var failed = new List<string>();
        var unverified = false;
        var ratios = new RatioLog();
        for (var round = 1; round <= o.Rounds; round++)
        {
            var outcomes = new List<ClaimOutcome>();
            var rows = new List<CompareRow>();
            var label = o.Rounds > 1 ? string.Create(Report.Culture, $" (round {round} of {o.Rounds})") : "";

            async Task Part(string part, Func<Task> run)
            {
                if (!o.Parts.Contains(part))
                {
                    return;
                }

                try
                {
                    await run();
                }
                catch (MissingToolException ex)
                {
                    report.Section($"{part}: SKIPPED");
                    report.Line("missing", ex.Message);
                    skipped.Add($"{part}{label}: {ex.Message}");
                }
                catch (Exception ex) when (ex is not OperationCanceledException || !ct.IsCancellationRequested)
                {
                    report.Section($"{part}: FAILED");
                    report.Line("error", ex.GetType().Name + ": " + ex.Message);
                    failed.Add($"{part}{label}: {ex.Message}");
                }
            }

            if (o.Rounds > 1)
            {
                report.Section($"compare: round {round} of {o.Rounds}");
            }

            await Part("embedded", () => BoardPartAsync(o, "embedded", report, outcomes, rows, ct));
            await Part("redis", () => BoardPartAsync(o, "redis", report, outcomes, rows, ct));
            await Part("h2load", async () =>
            {
                // Right before redis-benchmark, so the two C load generators measure minutes apart at most.
                rows.Add(await H2loadClaims.RunAsync(o, "embedded", report, ct));
                rows.Add(await H2loadClaims.RunAsync(o, "redis", report, ct));
            });
            await Part("redis-benchmark", async () =>
            {
                rows.Add(await RedisBenchmarkClaims.RunAsync(o, o.RedisBenchmarkKeyspace, report, ct));
                rows.Add(await RedisBenchmarkClaims.RunAsync(o, RedisBenchmarkClaims.NewKeysKeyspace, report, ct));
            });
            await Part("etcd", async () =>
            {
                foreach (var generator in o.Clients)
                {
                    rows.Add(await EtcdClaims.RunAsync(o, generator, report, ct));
                }
            });

            Summary(o, report, outcomes, rows, label, ratios);
            unverified |= rows.Any(r => !r.Verified);
        }

        if (o.Rounds > 1)
        {
            ratios.Print(report, o.Rounds);
        }

        foreach (var s in skipped)
        {
            report.Line("SKIPPED", s);
        }

        foreach (var f in failed)
        {
            report.Line("FAILED", f);
        }

        var verdict = failed.Count > 0 || unverified ? 1 : skipped.Count > 0 ? 3 : 0;
        report.Line("verdict", verdict switch { 0 => "PASS (every part ran and its checks passed)", 3 => "INCOMPLETE (parts skipped: a program is missing)", _ => "FAIL (a part failed or a check did not pass)" });
        return verdict;
    }

    /// <summary>
    /// claim-only, then claim-complete twice, on one server with the given store (and its redis-server): with a
    /// ClaimTask and a CompleteTask call per task, and with claim_next (CompleteTask also claims the worker's next
    /// task), which is what the C#, Python and TypeScript workers do. End to end is reported for both.
    /// </summary>
    private static async Task BoardPartAsync(BenchOptions o, string store, Report report, List<ClaimOutcome> outcomes, List<CompareRow> rows, CancellationToken ct)
    {
        report.Section($"GrpcBoard, {store} store: starting");
        var only = o.Derive("claim-only", store, o.PartLimit);
        await using var target = await ServerTargets.StartAsync(only, ct);
        await using var clients = new ClientPool(target.Addresses, o.Connections);
        report.Line("target", target.Description);
        var runs = o.Clients.SelectMany(g => new[]
        {
            (o.Derive("claim-only", store, o.PartLimit, g), false),
            (o.Derive("claim-complete", store, o.PartLimit, g), true),
            (o.Derive("claim-complete", store, o.PartLimit, g, claimNext: true), true),
        });
        foreach (var (options, completes) in runs)
        {
            report.Text("");
            report.Text($"---- GrpcBoard {options.Scenario}{(options.ClaimNext ? " (claim_next)" : "")}, {store} store, {ClientName(options.Client)} ----");
            var outcome = await new ClaimScenario(options.Scenario, completes).MeasureAsync(new BenchContext(options, target, clients, report, ct));
            outcomes.Add(outcome);
            rows.Add(Row(outcome, o));
        }
    }

    /// <summary>The operation of a claim-only row, whoever drives it.</summary>
    public const string ClaimOnlyOperation = "claim next ready task (gRPC)";

    /// <summary>The system column of a GrpcBoard row: the store and its durability setting.</summary>
    public static string BoardSystem(BenchOptions o, string store) =>
        store == "redis" ? $"GrpcBoard, Redis store (AOF {o.RedisAppendFsync})" : store == "embedded" ? $"GrpcBoard, embedded ({o.Synchronous})" : $"GrpcBoard, {store}";

    private static CompareRow Row(ClaimOutcome c, BenchOptions o)
    {
        var system = BoardSystem(o, c.Store);
        var completes = c.Pair is not null;
        var done = completes ? c.Run.Completions : c.Run.Claims;
        var notes = new List<string>();
        if (c.Run.DeadlineReached)
        {
            notes.Add(string.Create(Report.Culture, $"stopped after {c.Run.Wall.TotalSeconds:0} s: {done} of {o.Tasks}"));
        }

        if (c.Run.Errors > 0)
        {
            notes.Add(string.Create(Report.Culture, $"{c.Run.Errors} calls failed ({string.Join("; ", c.Run.MergedErrors().Kinds.Take(2).Select(k => $"{k.Count}x {k.Kind}"))})"));
        }

        if (c.Redis is { } r && c.Run.Claims > 0)
        {
            notes.Add(string.Create(Report.Culture, $"{r.TransactionsPerCommit:0.0} calls per commit batch, {r.RoundTrips / (double)done:0.00} Redis round trips/{(completes ? "pair" : "claim")}"));
        }

        var operation = !completes ? ClaimOnlyOperation : c.ClaimNext ? "claim+complete, claim_next (gRPC)" : "claim+complete pair (gRPC)";
        return new CompareRow(system, operation, c.Client, o.Workers, done, c.Run.Wall.TotalSeconds,
            completes ? c.PairsPerSecond : c.ClaimsPerSecond, (c.Pair ?? c.Claim).P50Ms, (c.Pair ?? c.Claim).P99Ms, c.OtherCores, c.ExitCode == 0, string.Join("; ", notes));
    }

    private static void Summary(BenchOptions o, Report report, List<ClaimOutcome> outcomes, List<CompareRow> rows, string label, RatioLog ratios)
    {
        report.Section("compare: summary" + label);
        report.Text(string.Create(Report.Culture, $"{"system",-36} {"operation",-44} {"client",-15} {"conc",4} {"done",8} {"wall s",8} {"per s",9} {"p50 ms",8} {"p99 ms",8} {"checks",6} {"other",5}  notes"));
        foreach (var r in rows)
        {
            var other = r.OtherCores is { } c ? string.Create(Report.Culture, $"{c:0.00}") + (c >= 0.1 ? "!" : "") : "?";
            var client = r.Client is { } g ? ClientName(g) : "redis-benchmark";
            report.Text(string.Create(Report.Culture,
                $"{r.System,-36} {r.Operation,-44} {client,-15} {r.Concurrency,4} {r.Done,8} {r.WallSeconds,8:0.00} {r.PerSecond,9:0} {r.P50Ms,8:0.000} {r.P99Ms,8:0.000} {(r.Verified ? "PASS" : "FAIL"),6} {other,5}  {r.Notes}"));
        }

        report.Text("(per s: claims/s, pairs/s or requests/s; client: the load generator (lean = the tool's frame-level HTTP/2 client, C# client = GrpcBoard's, h2load = nghttp2's, in C);");
        report.Text(" other: cores used by processes outside the measured systems, '!' = disturbed run)");

        report.Section("compare: ratios and targets" + label);
        var raw = rows.FirstOrDefault(r => r.System.StartsWith("raw Redis", StringComparison.Ordinal) && !r.Operation.Contains("new keys", StringComparison.Ordinal));
        var rawNew = rows.FirstOrDefault(r => r.System.StartsWith("raw Redis", StringComparison.Ordinal) && r.Operation.Contains("new keys", StringComparison.Ordinal));
        void Ratio(string name, LoadGenerator generator, double? board, CompareRow? other, double? target)
        {
            if (board is not { } perSecond || other is null)
            {
                report.Line(name, "not measured (part not run)");
                return;
            }

            var ratio = perSecond / other.PerSecond;
            ratios.Add($"{ClientName(generator)}: {name}", ratio, target);
            var verdict = Verdict(ratio, target);
            report.Line(name, string.Create(Report.Culture, $"{ratio:0.000}x ({perSecond:0} vs {other.PerSecond:0} per s) {verdict}"));
        }

        // Ratios against etcd compare runs made with the same load generator; redis-benchmark is its own C client.
        foreach (var generator in o.Clients)
        {
            var redisClaims = outcomes.FirstOrDefault(x => x.Store == "redis" && x.Pair is null && x.Client == generator)?.ClaimsPerSecond;
            var embeddedClaims = outcomes.FirstOrDefault(x => x.Store == "embedded" && x.Pair is null && x.Client == generator)?.ClaimsPerSecond;
            var etcd = rows.FirstOrDefault(r => r.System.StartsWith("etcd", StringComparison.Ordinal) && r.Client == generator);
            report.Text($"with {ClientName(generator)}:");
            Ratio("redis store / etcd", generator, redisClaims, etcd, 3);
            Ratio("redis store / raw SET NX", generator, redisClaims, raw, 0.5);
            Ratio("redis store / raw, new keys", generator, redisClaims, rawNew, 0.5);
            Ratio("embedded / etcd", generator, embeddedClaims, etcd, null);
            Ratio("embedded / raw SET NX", generator, embeddedClaims, raw, null);
        }

        // h2load against redis-benchmark: a C load generator on each side. No etcd ratio (see the class comment).
        if (o.Parts.Contains("h2load"))
        {
            var redisH2 = rows.FirstOrDefault(r => r.Client == LoadGenerator.H2load && r.System == BoardSystem(o, "redis"))?.PerSecond;
            var embeddedH2 = rows.FirstOrDefault(r => r.Client == LoadGenerator.H2load && r.System == BoardSystem(o, "embedded"))?.PerSecond;
            report.Text("with h2load (claim-only; a C load generator, as redis-benchmark is):");
            Ratio("redis store / raw SET NX", LoadGenerator.H2load, redisH2, raw, 0.5);
            Ratio("redis store / raw, new keys", LoadGenerator.H2load, redisH2, rawNew, 0.5);
            Ratio("embedded / raw SET NX", LoadGenerator.H2load, embeddedH2, raw, null);
        }

        report.Section("compare: end-to-end claim+complete (target < 10 s)" + label);
        foreach (var pair in outcomes.Where(x => x.Pair is not null))
        {
            var done = pair.Run.Completions;
            var wall = pair.Run.Wall.TotalSeconds;
            string text;
            if (!pair.Run.DeadlineReached && done == o.Tasks)
            {
                text = string.Create(Report.Culture, $"{o.Tasks} tasks by {o.Workers} workers in {wall:0.00} s (posting before: {pair.Posting.TotalSeconds:0.00} s); counts {(pair.ExitCode == 0 ? "verified by GetWorkflow" : "did NOT verify")}; {(wall < 10 ? "MET" : "MISSED")}");
            }
            else
            {
                var projected = done > 0 ? o.Tasks / (done / wall) : double.PositiveInfinity;
                text = string.Create(Report.Culture, $"not finished: {done} of {o.Tasks} in {wall:0.0} s; at that rate all would take ~{projected:0} s; MISSED (run with --part-seconds 0 for the full run)");
            }

            report.Line($"{pair.Store}, {ClientName(pair.Client)}, {(pair.ClaimNext ? "claim_next" : "2 calls/task")}", text);
        }
    }

    /// <summary>How a ratio stands against its target ("(for reference)" when it has none).</summary>
    private static string Verdict(double ratio, double? target) =>
        target is { } t ? string.Create(Report.Culture, $"target >= {t:0.0#}x: {(ratio >= t ? "MET" : "MISSED")}") : "(for reference)";

    private static string ClientName(LoadGenerator generator) => generator switch
    {
        LoadGenerator.Lean => "lean",
        LoadGenerator.H2load => "h2load",
        _ => "C# client",
    };

    /// <summary>Each ratio of every round, for the median over rounds: one round's ratios move with the machine's drift between its parts.</summary>
    private sealed class RatioLog
    {
        private readonly Dictionary<string, (List<double> Values, double? Target)> _ratios = [];
        private readonly List<string> _order = [];

        public void Add(string name, double ratio, double? target)
        {
            if (!_ratios.TryGetValue(name, out var entry))
            {
                entry = ([], target);
                _ratios[name] = entry;
                _order.Add(name);
            }

            entry.Values.Add(ratio);
        }

        public void Print(Report report, int rounds)
        {
            report.Section(string.Create(Report.Culture, $"compare: ratios over {rounds} rounds (median; each round's in brackets)"));
            foreach (var name in _order)
            {
                var (values, target) = _ratios[name];
                var sorted = values.Order().ToArray();
                var median = sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
                var verdict = Verdict(median, target);
                var met = target is { } t2 ? string.Create(Report.Culture, $", met in {values.Count(v => v >= t2)} of {values.Count}") : "";
                report.Line(name, string.Create(Report.Culture, $"{median:0.000}x [{string.Join(", ", values.Select(v => v.ToString("0.000", Report.Culture)))}] {verdict}{met}"));
            }
        }
    }
}
