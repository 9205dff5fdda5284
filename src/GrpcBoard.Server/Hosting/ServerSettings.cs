using System.Globalization;
using System.Text;
using Microsoft.Extensions.Configuration;

namespace GrpcBoard.Server.Hosting;

/// <summary>
/// Every server setting, with its default, stated once. Each can come from the command line
/// (--port 50051), an environment variable (GRPCBOARD_PORT=50051) or appsettings.json
/// ({"GrpcBoard": {"Port": 50051}}); the command line wins, then the environment, then the file.
/// </summary>
public sealed class ServerSettings
{
    public string Host { get; set; } = "127.0.0.1";
    public int Port { get; set; } = 50051;
    public string Store { get; set; } = "embedded";
    public string DataDirectory { get; set; } = "./data";
    public string Redis { get; set; } = "127.0.0.1:6379";
    public string RedisPrefix { get; set; } = "gb";
    public string RedisBatchesInFlight { get; set; } = "auto";
    public bool RedisDirectCommits { get; set; } = true;
    public int RedisTurnMilliseconds { get; set; } = 10;
    public int RedisTurnLeaseMilliseconds { get; set; } = 30;
    public int RedisReplicas { get; set; }
    public int RedisReplicaTimeoutMilliseconds { get; set; } = 1000;
    public bool RedisSentinelMajority { get; set; }
    public int RedisSentinelConfirmMilliseconds { get; set; } = 3000;
    public string? RedisTlsCa { get; set; }
    public string? RedisTlsCertificate { get; set; }
    public string? RedisTlsKey { get; set; }
    public string? RedisTlsKeyPassword { get; set; }
    public bool Forward { get; set; } = true;
    public string? AdvertiseUrl { get; set; }
    public string Synchronous { get; set; } = "FULL";
    public int MaxEventsPerWorkflow { get; set; } = 100_000;
    public int MaxMessageBytes { get; set; } = 4 * 1024 * 1024;
    public string? TlsCertificate { get; set; }
    public string? TlsCertificatePassword { get; set; }
    public bool Gzip { get; set; }
    public bool DetailedErrors { get; set; }
    public int MaxStreamsPerConnection { get; set; } = 1000;
    public int TimerPollMilliseconds { get; set; } = 100;
    public string LogLevel { get; set; } = "Information";

    /// <summary>The options table: switch, property, environment variable, description.</summary>
    public static readonly IReadOnlyList<Option> Options =
    [
        new("--host", nameof(Host), "Address to listen on (127.0.0.1 keeps the board private to this machine)."),
        new("--port", nameof(Port), "TCP port; 0 picks a free one and prints it."),
        new("--store", nameof(Store), "embedded (durable, one directory), memory (nothing kept), or redis."),
        new("--data", nameof(DataDirectory), "Directory of the embedded store; with --store redis, where the server records the Redis store's epoch to detect a Redis that lost its data while the server was stopped."),
        new("--redis", nameof(Redis), "Redis for --store redis: host:port, or several (comma-separated): a primary and its replicas (the server follows a failover among them, and refuses calls while more than one answers as the primary), or the nodes of a Redis Cluster; or Redis Sentinel: the sentinels and the name they monitor the primary by (sentinel1:26379,sentinel2:26379,serviceName=NAME). Add ssl=true for TLS (to sentinels and nodes alike), password=... for AUTH."),
        new("--redis-prefix", nameof(RedisPrefix), "First part of every Redis key, so several boards can share one Redis."),
        new("--redis-batches", nameof(RedisBatchesInFlight), "Commit batches of one workflow in flight to Redis: more hide a longer round trip to a remote Redis, 1 makes bigger batches (fewer fsyncs); auto: 1 for a Redis on this host, else 2."),
        new("--redis-direct-commits", nameof(RedisDirectCommits), "Send commits over a connection of their own, read by a dedicated thread (true/false): to the primary, or on a Redis Cluster to the master of each workflow's slot (needed there to wait for replicas)."),
        new("--redis-turn-ms", nameof(RedisTurnMilliseconds), "With several instances writing one workflow, each holds its turn this long before passing it to an instance that waits (longer: fewer handovers, longer waits)."),
        new("--redis-turn-lease-ms", nameof(RedisTurnLeaseMilliseconds), "A workflow's turn that no commit renews lapses after this long (bounds how long a dead or idle instance delays the others)."),
        new("--redis-replicas", nameof(RedisReplicas), "Redis replicas that must have each commit before its callers are answered (WAIT), so a failover to one of them loses nothing acknowledged (Sentinel may promote any replica: give the number of replicas; on a Redis Cluster, per master); 0: don't wait."),
        new("--redis-replica-timeout-ms", nameof(RedisReplicaTimeoutMilliseconds), "How long a commit waits for --redis-replicas replicas; if fewer acknowledge it, its callers get UNAVAILABLE."),
        new("--redis-sentinel-majority", nameof(RedisSentinelMajority), "With Sentinel: follow only a primary that more than half of the sentinels listed name, and refuse calls (UNAVAILABLE) once no majority has confirmed it for --redis-sentinel-confirm-ms, so that a sentinel cut off with an old primary cannot lead writes there (true/false). With half of the sentinels down, calls stop."),
        new("--redis-sentinel-confirm-ms", nameof(RedisSentinelConfirmMilliseconds), "With --redis-sentinel-majority: how long a majority's answer lets calls through; keep it, plus the command timeout, below the sentinels' down-after-milliseconds."),
        new("--redis-tls-ca", nameof(RedisTlsCa), "With ssl=true in --redis: PEM file of the certificate authorities that Redis's (and the sentinels') certificates must chain to; only these are trusted. Default: the machine's trust store."),
        new("--redis-tls-cert", nameof(RedisTlsCertificate), "With ssl=true in --redis: PEM client certificate shown to Redis (which asks for one unless tls-auth-clients is no); with --redis-tls-key."),
        new("--redis-tls-key", nameof(RedisTlsKey), "PEM private key of --redis-tls-cert, in the clear or encrypted (PKCS#8, or OpenSSL's older Proc-Type: 4,ENCRYPTED form). The three files are read again when they change, for new connections: a renewed certificate needs no restart."),
        new("--redis-tls-key-password", nameof(RedisTlsKeyPassword), "Password of an encrypted --redis-tls-key (better given as GRPCBOARD_REDIS_TLS_KEY_PASSWORD than on the command line, which other users of the host can read)."),
        new("--forward", nameof(Forward), "With --store redis and several instances: send a call on a workflow to the instance that holds the workflow's turn, instead of waiting for the turn here (true/false)."),
        new("--advertise-url", nameof(AdvertiseUrl), "Where other instances reach this one for forwarded calls (http://host:port). Default: the listening address, unless it is a wildcard (0.0.0.0, ::), which others cannot call: then no call is forwarded here."),
        new("--synchronous", nameof(Synchronous), "Embedded store durability: FULL fsyncs every commit; NORMAL survives crashes but not power loss."),
        new("--history", nameof(MaxEventsPerWorkflow), "Events retained per workflow for Watch resumption."),
        new("--max-message-bytes", nameof(MaxMessageBytes), "Largest request message accepted."),
        new("--tls-cert", nameof(TlsCertificate), "PKCS#12 (.pfx) certificate: serve h2 over TLS instead of h2c."),
        new("--tls-password", nameof(TlsCertificatePassword), "Password of the --tls-cert file."),
        new("--gzip", nameof(Gzip), "Compress responses with gzip for clients that accept it (true/false)."),
        new("--detailed-errors", nameof(DetailedErrors), "Send unexpected exception messages to clients (true/false)."),
        new("--max-streams", nameof(MaxStreamsPerConnection), "HTTP/2 streams per connection (long Watch streams count)."),
        new("--timer-poll-ms", nameof(TimerPollMilliseconds), "How often expired leases, backoffs and note TTLs are looked for."),
        new("--log-level", nameof(LogLevel), "Trace, Debug, Information, Warning, Error."),
    ];

    public const string Section = "GrpcBoard";

    /// <summary>Reads settings from appsettings.json, GRPCBOARD_* variables and the command line.</summary>
    public static ServerSettings Load(string[] args, string? baseDirectory = null)
    {
        var switches = Options.ToDictionary(o => o.Switch, o => $"{Section}:{o.Property}", StringComparer.OrdinalIgnoreCase);
        foreach (var arg in args.Where(a => a.StartsWith("--", StringComparison.Ordinal)))
        {
            var name = arg.Split('=', 2)[0];
            if (!switches.ContainsKey(name))
            {
                throw new ArgumentException($"Unknown option '{name}'. Run with --help to list the options.");
            }
        }

        var environment = Options
            .Select(o => (Key: $"{Section}:{o.Property}", Value: Environment.GetEnvironmentVariable(o.EnvironmentVariable)))
            .Where(x => x.Value is not null)
            .ToDictionary(x => x.Key, x => x.Value);
        var configuration = new ConfigurationBuilder()
            .SetBasePath(baseDirectory ?? AppContext.BaseDirectory)
            .AddJsonFile("appsettings.json", optional: true)
            .AddInMemoryCollection(environment)
            .AddCommandLine(args, switches)
            .Build();
        var settings = new ServerSettings();
        configuration.GetSection(Section).Bind(settings);
        settings.Validate();
        return settings;
    }

    public void Validate()
    {
        if (Port is < 0 or > 65535)
        {
            throw new ArgumentException($"--port {Port} is not a TCP port.");
        }

        if (Store is not ("embedded" or "memory" or "redis"))
        {
            throw new ArgumentException($"--store '{Store}' is not one of embedded, memory, redis.");
        }

        if (MaxMessageBytes < 1024 || MaxEventsPerWorkflow < 16 || MaxStreamsPerConnection < 1 || TimerPollMilliseconds < 1)
        {
            throw new ArgumentException("--max-message-bytes must be at least 1024, --history at least 16, --max-streams and --timer-poll-ms positive.");
        }

        if (RedisBatchesInFlight != "auto" && RedisBatches is not > 0)
        {
            throw new ArgumentException($"--redis-batches must be auto or a positive number, not '{RedisBatchesInFlight}'.");
        }

        if (!string.IsNullOrWhiteSpace(AdvertiseUrl)
            && (!Uri.TryCreate(AdvertiseUrl, UriKind.Absolute, out var advertised) || advertised.Scheme is not ("http" or "https")))
        {
            throw new ArgumentException($"--advertise-url must be an http:// or https:// address, not '{AdvertiseUrl}'.");
        }

        if (RedisReplicas < 0 || RedisReplicaTimeoutMilliseconds < 1)
        {
            throw new ArgumentException("--redis-replicas must not be negative, and --redis-replica-timeout-ms must be at least 1.");
        }

        if (RedisSentinelConfirmMilliseconds <= 1000)
        {
            throw new ArgumentException("--redis-sentinel-confirm-ms must be longer than the 1,000 ms between questions to the sentinels.");
        }

        if (RedisTurnMilliseconds < 0 || RedisTurnLeaseMilliseconds < 1)
        {
            throw new ArgumentException("--redis-turn-ms must not be negative, and --redis-turn-lease-ms must be at least 1.");
        }
    }

    /// <summary>--redis-batches as a number, or null for auto (the store chooses by where Redis runs).</summary>
    public int? RedisBatches => int.TryParse(RedisBatchesInFlight, NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n : null;

    public static string Help()
    {
        var text = new StringBuilder();
        text.Append("GrpcBoard: a coordination board for agents and workers, served over gRPC.\n\n");
        text.Append("Usage: dotnet run --project src/GrpcBoard.Server -- [options]\n\nOptions (also GRPCBOARD_<NAME> variables and appsettings.json section \"GrpcBoard\"):\n");
        var defaults = new ServerSettings();
        foreach (var o in Options)
        {
            var value = typeof(ServerSettings).GetProperty(o.Property)!.GetValue(defaults);
            text.Append(CultureInfo.InvariantCulture, $"  {o.Switch,-20} {o.Description}\n  {"",-20} default: {value ?? "(none)"}; env: {o.EnvironmentVariable}\n");
        }

        text.Append("  --help               Print this text.\n");
        return text.ToString();
    }

    public sealed record Option(string Switch, string Property, string Description)
    {
        public string EnvironmentVariable => "GRPCBOARD_" + Switch[2..].Replace('-', '_').ToUpperInvariant();
    }
}
