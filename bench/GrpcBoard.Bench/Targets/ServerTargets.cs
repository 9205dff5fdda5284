using GrpcBoard.Bench.Cli;

namespace GrpcBoard.Bench.Targets;

public static class ServerTargets
{
    /// <summary>
    /// Connects to --target, hosts a server in process (--in-process), or starts a server process. With
    /// --store redis and no --redis, a redis-server is started first (<see cref="RedisServerProcess"/>) and
    /// stopped after the server.
    /// </summary>
    public static async Task<IServerTarget> StartAsync(BenchOptions options, CancellationToken cancellationToken)
    {
        if (options.Target is { } target)
        {
            return new ExistingServer(target, options.ServerPid, options.RedisEndpoint);
        }

        var redis = options.Store == "redis" && options.RedisEndpoint is null ? await RedisServerProcess.StartAsync(options.RedisAppendFsync, options.RedisAofRewrite, cancellationToken) : null;
        // A Redis-store server keeps its record of the store epoch there: a fresh directory per run, as each
        // run starts a fresh redis-server.
        var data = options.Store is "embedded" or "redis" ? DataDirectory.Create(options.DataDirectory, options.KeepData) : null;
        DelayProxy? relay = null;
        try
        {
            var endpoint = options.Store == "redis" ? redis?.Endpoint ?? options.RedisEndpoint : null;
            relay = endpoint is not null && options.RedisDelay is { } delay ? DelayProxy.Start(endpoint, delay) : null;
            var serverEndpoint = relay?.Endpoint ?? endpoint;
            IServerTarget server = options.InProcess
                ? await InProcessServer.StartAsync(options, data, serverEndpoint, cancellationToken)
                : options.Instances > 1
                    ? await ServerGroup.StartAsync(options, data!, serverEndpoint!, cancellationToken)
                    : await ServerProcess.StartAsync(options, data, serverEndpoint, cancellationToken);
            return endpoint is null ? server : new RedisBackedServer(server, endpoint, redis, relay);
        }
        catch
        {
            data?.Dispose();
            if (relay is not null)
            {
                await relay.DisposeAsync();
            }

            if (redis is not null)
            {
                await redis.DisposeAsync();
            }

            throw;
        }
    }
}

/// <summary>
/// --instances N: N server processes on one Redis, as a team runs them on several hosts. The first is measured as
/// "the server" (and watched for JIT activity during warm-up); the others are measured as companions.
/// </summary>
public sealed class ServerGroup : IServerTarget
{
    private readonly IReadOnlyList<ServerProcess> _servers;

    private ServerGroup(IReadOnlyList<ServerProcess> servers)
    {
        _servers = servers;
        Addresses = [.. servers.Select(s => s.Address)];
        Companions = [.. servers.Skip(1).Select((s, i) => new CompanionProcess($"server {i + 2}", s.ProcessId!.Value))];
    }

    public Uri Address => _servers[0].Address;

    public IReadOnlyList<Uri> Addresses { get; }

    public int? ProcessId => _servers[0].ProcessId;

    public string Description => string.Join("; ", _servers.Select((s, i) => $"server {i + 1}: {s.Description}"));

    public IReadOnlyList<CompanionProcess> Companions { get; }

    /// <summary>Starts the servers one after the other; the first gets <paramref name="first"/> as its data directory, the others new ones.</summary>
    public static async Task<ServerGroup> StartAsync(BenchOptions options, DataDirectory first, string redis, CancellationToken cancellationToken)
    {
        var servers = new List<ServerProcess>();
        try
        {
            for (var i = 0; i < options.Instances; i++)
            {
                var data = i == 0 ? first : DataDirectory.Create(null, options.KeepData);
                try
                {
                    servers.Add(await ServerProcess.StartAsync(options, data, redis, cancellationToken));
                }
                catch when (i > 0)
                {
                    // The first directory is the caller's to delete; a server that started deletes its own.
                    data.Dispose();
                    throw;
                }
            }

            return new ServerGroup(servers);
        }
        catch
        {
            foreach (var server in servers)
            {
                await server.DisposeAsync();
            }

            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var server in _servers)
        {
            await server.DisposeAsync();
        }
    }
}

/// <summary>
/// A Redis-store server and its Redis: the redis-server (when the tool started it) is measured with the server and
/// stopped after it, as is the delay relay in between (--redis-delay-ms). <see cref="RedisEndpoint"/> is Redis itself,
/// so command statistics bypass the relay.
/// </summary>
public sealed class RedisBackedServer(IServerTarget server, string endpoint, RedisServerProcess? redis, DelayProxy? relay = null) : IServerTarget
{
    public Uri Address => server.Address;

    public int? ProcessId => server.ProcessId;

    public string Description => server.Description + "; " + (redis?.Description ?? $"existing Redis at {endpoint}");

    public IReadOnlyList<Uri> Addresses => server.Addresses;

    public IReadOnlyList<CompanionProcess> Companions => redis is null ? server.Companions : [.. server.Companions, new CompanionProcess("redis-server", redis.Pid)];

    public string? RedisEndpoint => endpoint;

    public string? RelayReport => relay?.Describe();

    public async ValueTask DisposeAsync()
    {
        try
        {
            await server.DisposeAsync();
        }
        finally
        {
            if (relay is not null)
            {
                await relay.DisposeAsync();
            }

            if (redis is not null)
            {
                await redis.DisposeAsync();
            }
        }
    }
}

/// <summary>A server somebody else started (with --redis: its Redis, for command statistics).</summary>
public sealed class ExistingServer(Uri address, int? pid, string? redis) : IServerTarget
{
    public string? RedisEndpoint { get; } = redis;

    public Uri Address { get; } = address;

    public int? ProcessId { get; } = pid;

    public string Description => $"existing server at {Address}" + (ProcessId is { } p ? $", pid {p}" : " (pid unknown: no server CPU figures)");

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}

/// <summary>The embedded store's directory: a fresh temporary one (deleted afterwards) unless --data names one.</summary>
public sealed class DataDirectory : IDisposable
{
    private readonly bool _delete;

    private DataDirectory(string path, bool delete)
    {
        Path = path;
        _delete = delete;
    }

    public string Path { get; }

    public static DataDirectory Create(string? requested, bool keep)
    {
        if (requested is not null)
        {
            Directory.CreateDirectory(requested);
            return new DataDirectory(System.IO.Path.GetFullPath(requested), delete: false);
        }

        return new DataDirectory(Directory.CreateTempSubdirectory("grpcboard-bench-").FullName, delete: !keep);
    }

    public void Dispose()
    {
        if (_delete)
        {
            try
            {
                Directory.Delete(Path, recursive: true);
            }
            catch (IOException)
            {
                // Left behind in the temporary directory; nothing depends on it.
            }
        }
    }
}
