using System.Globalization;
using System.Text;
using GrpcBoard.Bench.LoadGen;

namespace GrpcBoard.Bench.Cli;

/// <summary>
/// Every option of the tool, with its default, stated once (the help text is generated from <see cref="Table"/>).
/// Scenarios read what they need; options a scenario does not use are still printed with the results.
/// </summary>
public sealed class BenchOptions
{
    public string Scenario { get; private set; } = "";

    // ---- Load ----
    public int Tasks { get; private set; } = 100_000;
    public int Workers { get; private set; } = 64;
    public int Connections { get; private set; } = 1;
    public int Workflows { get; private set; } = 1;
    public int WarmupTasks { get; private set; } = 5_000;
    public TimeSpan WarmupLimit { get; private set; } = TimeSpan.FromSeconds(20);
    public TimeSpan? Duration { get; private set; }
    public int BatchSize { get; private set; } = 1000;
    public int PayloadBytes { get; private set; } = 32;
    public int ResultBytes { get; private set; } = 16;

    /// <summary>
    /// The load generators to run with: one for the claim scenarios (default the C# client), the lean one, the
    /// C# client or both, each in turn, for compare (default both).
    /// </summary>
    public IReadOnlyList<LoadGenerator> Clients { get; private set; } = [];

    /// <summary>The load generator of a claim scenario.</summary>
    public LoadGenerator Client => Clients[0];

    /// <summary>Lease asked for by each claim; null lets the scenario choose.</summary>
    public TimeSpan? Lease { get; private set; }

    // ---- Server ----
    public string Store { get; private set; } = "embedded";
    public string Synchronous { get; private set; } = "FULL";
    public bool InProcess { get; private set; }
    public Uri? Target { get; private set; }
    public int? ServerPid { get; private set; }
    public string? ServerDll { get; private set; }
    public string? DataDirectory { get; private set; }
    public bool KeepData { get; private set; }
    public string ServerLogLevel { get; private set; } = "Warning";
    public IReadOnlyList<KeyValuePair<string, string>> ServerEnvironment { get; private set; } = [];

    /// <summary>--instances: server processes started on the same Redis; workers are spread over them.</summary>
    public int Instances { get; private set; } = 1;

    /// <summary>--redis: an existing Redis for a --store redis server; null: the tool starts a redis-server.</summary>
    public string? RedisEndpoint { get; private set; }
    public string RedisAppendFsync { get; private set; } = "always";

    /// <summary>
    /// --redis-aof-rewrite: whether a redis-server the tool starts rewrites its AOF when it has doubled (Redis's
    /// default) or never (off, the default here). A rewrite forks and copies the dataset: a board of 800,000 tasks is
    /// ~200 MB, redis-benchmark's keys ~12 MB (under the 64 MB below which Redis never rewrites), so with rewrites on
    /// only the Redis store's runs would pay for them.
    /// </summary>
    public string RedisAofRewrite { get; private set; } = "off";

    /// <summary>--redis-delay-ms: servers reach Redis through a relay that delays each direction this long; null: directly.</summary>
    public TimeSpan? RedisDelay { get; private set; }

    /// <summary>Key prefix of a Redis-store server, new for every run so that runs on one Redis never mix.</summary>
    public string RedisPrefix { get; } = "gbbench-" + DateTime.UtcNow.ToString("MMddHHmmss", CultureInfo.InvariantCulture);

    // ---- watch-fanout ----
    public int Watchers { get; private set; } = 10_000;
    public int WatchChannels { get; private set; } = 20;
    public double WatchRate { get; private set; } = 5;
    public TimeSpan WatchDuration { get; private set; } = TimeSpan.FromSeconds(20);

    // ---- compare ----
    public IReadOnlyList<string> Parts { get; private set; } = CompareParts;
    public TimeSpan? PartLimit { get; private set; } = TimeSpan.FromSeconds(60);
    public int RedisBenchmarkRequests { get; private set; } = 200_000;
    public int RedisBenchmarkKeyspace { get; private set; } = 100_000;
    public int EtcdTxns { get; private set; } = 100_000;
    public int Rounds { get; private set; } = 1;

    /// <summary>What compare can run: GrpcBoard on each store, redis-benchmark, etcd.</summary>
    public static readonly string[] CompareParts = ["embedded", "redis", "h2load", "redis-benchmark", "etcd"];

    // ---- Output ----
    public bool Timeline { get; private set; }

    public bool ClaimNext { get; private set; }

    public bool Allocations { get; private set; }

    /// <summary>Switch, value name (null for a flag), description, and how the value is applied.</summary>
    private sealed record Option(string Switch, string? Value, string Description, Action<BenchOptions, string> Apply);

    private static readonly Option[] Table =
    [
        new("--tasks", "N", "Tasks posted before the measured run (default 100000).", (o, v) => o.Tasks = Int(v, "--tasks", 1)),
        new("--workers", "W", "Concurrent workers, each one call at a time (default 64).", (o, v) => o.Workers = Int(v, "--workers", 1)),
        new("--connections", "C", "HTTP/2 connections the workers are spread over: one BoardClient/GrpcChannel each (default 1).", (o, v) => o.Connections = Int(v, "--connections", 1)),
        new("--client", "sdk|lean|both", "Who calls the board (and etcd): sdk = GrpcBoard's C# client (default), lean = the tool's frame-level HTTP/2 client, which costs the shared CPU far less; both (compare only, its default) runs every gRPC part with each.", (o, v) => o.Clients = v == "both" ? [LoadGenerator.Lean, LoadGenerator.Sdk] : [OneOf(v, "--client", "sdk", "lean", "both") == "lean" ? LoadGenerator.Lean : LoadGenerator.Sdk]),
        new("--workflows", "K", "Split the tasks over K workflows; worker i works on workflow i mod K (default 1).", (o, v) => o.Workflows = Int(v, "--workflows", 1)),
        new("--warmup-tasks", "N", "Tasks per warm-up round, run through the same loop on a separate workflow and not counted (default 5000; 0 skips warm-up).", (o, v) => o.WarmupTasks = Int(v, "--warmup-tasks", 0)),
        new("--warmup-seconds", "S", "Warm-up rounds repeat until the JIT goes quiet in server and tool, for at most this long (default 20; 0: one round).", (o, v) => o.WarmupLimit = TimeSpan.FromSeconds(v == "0" ? 0 : Double(v, "--warmup-seconds"))),
        new("--duration", "SECONDS", "Stop the measured run after this long even if tasks remain (post enough with --tasks).", (o, v) => o.Duration = TimeSpan.FromSeconds(Double(v, "--duration"))),
        new("--batch", "N", "Tasks per PostTasks call (default 1000, the server's limit).", (o, v) => o.BatchSize = Int(v, "--batch", 1)),
        new("--payload-bytes", "N", "Payload bytes of each task (default 32).", (o, v) => o.PayloadBytes = Int(v, "--payload-bytes", 0)),
        new("--result-bytes", "N", "Result bytes of each completion (default 16).", (o, v) => o.ResultBytes = Int(v, "--result-bytes", 0)),
        new("--lease", "SECONDS", "Lease asked for by each claim (default 60; claim-only 3600).", (o, v) => o.Lease = TimeSpan.FromSeconds(Double(v, "--lease"))),
        new("--store", "embedded|memory|redis", "Store of a server the tool starts (default embedded; redis: also starts a redis-server unless --redis).", (o, v) => o.Store = OneOf(v, "--store", "embedded", "memory", "redis")),
        new("--redis", "HOST:PORT", "With --store redis: use this Redis instead of starting a redis-server (keys under a new prefix).", (o, v) => o.RedisEndpoint = v),
        new("--redis-delay-ms", "MS", "With --store redis: servers reach Redis through a relay that holds every chunk at least MS ms each way (plus up to about 1 ms), standing in for a Redis on another host; the delay added is reported.", (o, v) => o.RedisDelay = TimeSpan.FromMilliseconds(Double(v, "--redis-delay-ms"))),
        new("--redis-fsync", "always|everysec|no", "appendfsync of a redis-server the tool starts (default always; appendonly is always on).", (o, v) => o.RedisAppendFsync = OneOf(v, "--redis-fsync", "always", "everysec", "no")),
        new("--redis-aof-rewrite", "off|auto", "AOF rewrites of a redis-server the tool starts: off (default; auto-aof-rewrite-percentage 0, for the Redis store and redis-benchmark alike) or auto (Redis's default: when the AOF doubles, from 64 MB).", (o, v) => o.RedisAofRewrite = OneOf(v, "--redis-aof-rewrite", "off", "auto")),
        new("--synchronous", "FULL|NORMAL|EXTRA", "Embedded store durability of a server the tool starts (default FULL: fsync per group commit).", (o, v) => o.Synchronous = OneOf(v.ToUpperInvariant(), "--synchronous", "FULL", "NORMAL", "EXTRA")),
        new("--in-process", null, "Host the server in this process (shares GC and thread pool with the load) instead of a child process.", (o, _) => o.InProcess = true),
        new("--target", "URL", "Use an already running server (http://host:port/) instead of starting one.", (o, v) => o.Target = new Uri(v)),
        new("--server-pid", "PID", "With --target: the server's process id, to report its CPU time.", (o, v) => o.ServerPid = Int(v, "--server-pid", 1)),
        new("--server-dll", "PATH", "GrpcBoard.Server.dll to start (default: the one built beside this tool's configuration).", (o, v) => o.ServerDll = v),
        new("--data", "DIR", "Data directory of a started embedded server (default: a new temporary directory, deleted afterwards).", (o, v) => o.DataDirectory = v),
        new("--keep-data", null, "Do not delete the temporary data directory.", (o, _) => o.KeepData = true),
        new("--server-log-level", "LEVEL", "Log level of a started server (default Warning).", (o, v) => o.ServerLogLevel = v),
        new("--instances", "N", "With --store redis: start N servers on the same Redis (each with a data directory of its own); connections, and so workers, are spread over them round-robin, at least one connection each (default 1).", (o, v) => o.Instances = Int(v, "--instances", 1)),
        new("--server-env", "NAME=VALUE", "Environment variable for a started server process, e.g. DOTNET_gcServer=0 (repeatable).", (o, v) => o.ServerEnvironment = [.. o.ServerEnvironment, EnvPair(v)]),
        new("--watchers", "N", "watch-fanout: concurrent Watch streams on one workflow (default 10000).", (o, v) => o.Watchers = Int(v, "--watchers", 1)),
        new("--watch-channels", "C", "watch-fanout: client channels (HTTP/2 connections) the watchers are spread over (default 20; the server allows 1000 streams each).", (o, v) => o.WatchChannels = Int(v, "--watch-channels", 1)),
        new("--watch-rate", "R", "watch-fanout: changes (PutNote) per second while watched (default 5: 50,000 deliveries/s to 10,000 watchers).", (o, v) => o.WatchRate = Double(v, "--watch-rate")),
        new("--watch-seconds", "S", "watch-fanout: how long changes are made (default 20).", (o, v) => o.WatchDuration = TimeSpan.FromSeconds(Double(v, "--watch-seconds"))),
        new("--parts", "LIST", $"compare: which parts, comma-separated (default {string.Join(',', CompareParts)}).", (o, v) => o.Parts = ParseParts(v)),
        new("--part-seconds", "S", "compare: stop each GrpcBoard claim run after S seconds (default 60; 0: run until all --tasks are done).", (o, v) => o.PartLimit = v == "0" ? null : TimeSpan.FromSeconds(Double(v, "--part-seconds"))),
        new("--redis-benchmark-requests", "N", "compare: requests of the redis-benchmark run (default 200000).", (o, v) => o.RedisBenchmarkRequests = Int(v, "--redis-benchmark-requests", 1)),
        new("--redis-benchmark-keyspace", "N", "compare: redis-benchmark -r, the random key space of SET NX (default 100000).", (o, v) => o.RedisBenchmarkKeyspace = Int(v, "--redis-benchmark-keyspace", 1)),
        new("--rounds", "N", "compare: run all parts N times, one round after the other, and print each round's ratios and their median (default 1).", (o, v) => o.Rounds = Int(v, "--rounds", 1)),
        new("--etcd-txns", "N", "compare: claim transactions against etcd, one new key each (default 100000).", (o, v) => o.EtcdTxns = Int(v, "--etcd-txns", 1)),
        new("--timeline", null, "Print completed operations per second of the measured run.", (o, _) => o.Timeline = true),
        new("--allocations", null, "claim-only, claim-complete: print what this process allocated in the measured run, by type (sampled about every 100 KB; with --in-process that includes the server).", (o, _) => o.Allocations = true),
        new("--claim-next", null, "claim-complete: each CompleteTask also claims the worker's next task (claim_next); ClaimTask only when it returned none. compare runs claim-complete both ways.", (o, _) => o.ClaimNext = true),
    ];

    /// <summary>Parses "scenario [--name value | --name=value | --flag]...".</summary>
    public static BenchOptions Parse(string scenario, IReadOnlyList<string> args)
    {
        var options = new BenchOptions { Scenario = scenario };
        for (var i = 0; i < args.Count; i++)
        {
            var arg = args[i];
            var (name, inline) = arg.Split('=', 2) is [var n, var v] ? (n, v) : (arg, null);
            var option = Table.FirstOrDefault(o => string.Equals(o.Switch, name, StringComparison.OrdinalIgnoreCase))
                ?? throw new ArgumentException($"Unknown option '{name}'. Run with --help to list the options.");
            string value;
            if (option.Value is null)
            {
                if (inline is not null)
                {
                    throw new ArgumentException($"{option.Switch} takes no value.");
                }

                value = "";
            }
            else if (inline is not null)
            {
                value = inline;
            }
            else if (i + 1 < args.Count)
            {
                value = args[++i];
            }
            else
            {
                throw new ArgumentException($"{option.Switch} needs a value ({option.Value}).");
            }

            option.Apply(options, value);
        }

        options.Validate();
        return options;
    }

    /// <summary>These options for one part of a composite scenario (compare): another scenario name and store.</summary>
    public BenchOptions Derive(string scenario, string store, TimeSpan? duration, LoadGenerator? client = null, bool claimNext = false)
    {
        var copy = (BenchOptions)MemberwiseClone();
        copy.Scenario = scenario;
        copy.Store = store;
        copy.Duration = duration;
        copy.ClaimNext = claimNext;
        if (client is { } c)
        {
            copy.Clients = [c];
        }

        return copy;
    }

    public static string Help(IEnumerable<(string Name, string Description)> scenarios)
    {
        var text = new StringBuilder();
        text.Append("GrpcBoard benchmark tool.\n\n");
        text.Append("Usage: dotnet run -c Release --project bench/GrpcBoard.Bench -- <scenario> [options]\n\nScenarios:\n");
        foreach (var (name, description) in scenarios)
        {
            text.Append(CultureInfo.InvariantCulture, $"  {name,-16} {description}\n");
        }

        text.Append("\nOptions:\n");
        foreach (var o in Table)
        {
            var left = o.Value is null ? o.Switch : $"{o.Switch} {o.Value}";
            text.Append(CultureInfo.InvariantCulture, $"  {left,-34} {o.Description}\n");
        }

        text.Append(CultureInfo.InvariantCulture, $"  {"--help",-34} Print this text.\n");
        return text.ToString();
    }

    /// <summary>The parameters as "name value" lines, for the report.</summary>
    public IEnumerable<(string Name, string Value)> Describe(TimeSpan lease)
    {
        yield return ("scenario", Scenario);
        yield return ("tasks", Tasks.ToString(CultureInfo.InvariantCulture));
        yield return ("workers", Workers.ToString(CultureInfo.InvariantCulture));
        yield return ("client", Client == LoadGenerator.Lean ? "lean (the tool's frame-level HTTP/2 client)" : "sdk (GrpcBoard's C# client, BoardClient)");
        yield return ("connections", Connections.ToString(CultureInfo.InvariantCulture));
        yield return ("workflows", Workflows.ToString(CultureInfo.InvariantCulture));
        yield return ("warm-up", WarmupTasks == 0 ? "none" : $"rounds of {WarmupTasks} tasks until the JIT is quiet, at most {WarmupLimit.TotalSeconds:0.#} s");
        yield return ("duration limit", Duration is { } d ? $"{d.TotalSeconds:0.###} s" : "none (until all tasks are done)");
        yield return ("post batch", BatchSize.ToString(CultureInfo.InvariantCulture));
        yield return ("payload / result bytes", $"{PayloadBytes} / {ResultBytes}");
        yield return ("lease", $"{lease.TotalSeconds:0.###} s");
        var server = Target is { } target
            ? $"existing server at {target}" + (ServerPid is { } pid ? $" (pid {pid})" : "")
            : InProcess ? "in this process" : "child process (dotnet GrpcBoard.Server.dll)";
        yield return ("server", Instances > 1 ? $"{Instances} child processes (dotnet GrpcBoard.Server.dll) on one Redis" : server);
        if (Target is null)
        {
            yield return ("store", Store switch
            {
                "embedded" => $"embedded, synchronous={Synchronous}",
                "redis" => (RedisEndpoint is { } r ? $"redis at {r}" : $"redis, a redis-server started by the tool (appendonly yes, appendfsync {RedisAppendFsync}, AOF rewrites {RedisAofRewrite})") + $", key prefix {RedisPrefix}"
                    + (RedisDelay is { } delay ? string.Create(CultureInfo.InvariantCulture, $", reached through a relay that delays each way by {delay.TotalMilliseconds:0.###} ms or more") : ""),
                _ => Store,
            });
            yield return ("server log level", ServerLogLevel);
            if (ServerEnvironment.Count > 0)
            {
                yield return ("server environment", string.Join(' ', ServerEnvironment.Select(e => $"{e.Key}={e.Value}")));
            }
        }
    }

    private void Validate()
    {
        if (Clients.Count == 0)
        {
            Clients = Scenario == "compare" ? [LoadGenerator.Lean, LoadGenerator.Sdk] : [LoadGenerator.Sdk];
        }
        else if (Clients.Count > 1 && Scenario != "compare")
        {
            throw new ArgumentException("--client both is for compare; a claim scenario runs with one client (sdk or lean).");
        }

        if (Client == LoadGenerator.Lean && Scenario == "watch-fanout")
        {
            throw new ArgumentException("watch-fanout runs its watchers through the C# client; the lean client makes unary calls only.");
        }

        if (Scenario == "post" && Target is null)
        {
            throw new ArgumentException("post needs --target: a server the tool starts is stopped when the tool ends.");
        }

        if (Allocations && Scenario is not ("claim-only" or "claim-complete"))
        {
            throw new ArgumentException("--allocations goes with claim-only or claim-complete.");
        }

        if (Target is not null && InProcess)
        {
            throw new ArgumentException("--target and --in-process exclude each other.");
        }

        if (Target is { } t && t.Scheme is not ("http" or "https"))
        {
            throw new ArgumentException("--target must be an http:// or https:// address.");
        }

        if (ServerPid is not null && Target is null)
        {
            throw new ArgumentException("--server-pid goes with --target (a started server's CPU is measured anyway).");
        }

        if (Workflows > Workers || Workflows > Tasks)
        {
            throw new ArgumentException("--workflows must not exceed --workers (each workflow needs a worker) or --tasks.");
        }

        if (RedisEndpoint is not null && Store != "redis" && Scenario != "compare")
        {
            throw new ArgumentException("--redis goes with --store redis.");
        }

        if (Instances > 1 && (Store != "redis" || Target is not null || InProcess || Scenario is not ("claim-only" or "claim-complete")))
        {
            throw new ArgumentException("--instances goes with --store redis and a claim scenario, on servers the tool starts as processes.");
        }

        if (RedisDelay is { } delay && (delay < TimeSpan.Zero || Store != "redis" || Target is not null))
        {
            throw new ArgumentException("--redis-delay-ms goes with --store redis on servers the tool starts, and is not negative.");
        }

        if (Duration is { } d && d <= TimeSpan.Zero)
        {
            throw new ArgumentException("--duration must be positive.");
        }
    }

    private static int Int(string value, string name, int min)
    {
        var text = value.Replace("_", "", StringComparison.Ordinal);
        var multiplier = 1;
        if (text.EndsWith('k') || text.EndsWith('K'))
        {
            multiplier = 1000;
            text = text[..^1];
        }

        if (!int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var parsed) || parsed * (long)multiplier < min || parsed * (long)multiplier > int.MaxValue)
        {
            throw new ArgumentException($"{name} needs a whole number of at least {min}, not '{value}'.");
        }

        return parsed * multiplier;
    }

    private static double Double(string value, string name) =>
        double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var parsed) && parsed > 0
            ? parsed
            : throw new ArgumentException($"{name} needs a positive number, not '{value}'.");

    private static string OneOf(string value, string name, params string[] allowed) =>
        allowed.Contains(value, StringComparer.Ordinal) ? value : throw new ArgumentException($"{name} must be one of {string.Join(", ", allowed)}, not '{value}'.");

    private static string[] ParseParts(string value)
    {
        var parts = value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        foreach (var part in parts)
        {
            OneOf(part, "--parts", CompareParts);
        }

        return parts.Length > 0 ? parts : throw new ArgumentException("--parts needs at least one part.");
    }

    private static KeyValuePair<string, string> EnvPair(string value) =>
        value.Split('=', 2) is [var k, var v] && k.Length > 0
            ? new(k, v)
            : throw new ArgumentException($"--server-env needs NAME=VALUE, not '{value}'.");
}
