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

        var redis = options.Store == "redis" && options.RedisEndpoint is null ? await RedisServerProcess.StartAsync(options.RedisAppendFsync, cancellationToken) : null;
        // A Redis-store server keeps its record of the store epoch there: a fresh directory per run, as each
        // run starts a fresh redis-server.
        var data = options.Store is "embedded" or "redis" ? DataDirectory.Create(options.DataDirectory, options.KeepData) : null;
        try
        {
            var endpoint = options.Store == "redis" ? redis?.Endpoint ?? options.RedisEndpoint : null;
            IServerTarget server = options.InProcess
                ? await InProcessServer.StartAsync(options, data, endpoint, cancellationToken)
                : await ServerProcess.StartAsync(options, data, endpoint, cancellationToken);
            return endpoint is null ? server : new RedisBackedServer(server, endpoint, redis);
        }
        catch
        {
            data?.Dispose();
            if (redis is not null)
            {
                await redis.DisposeAsync();
            }

            throw;
        }
    }
}

/// <summary>A Redis-store server and its Redis: the redis-server (when the tool started it) is measured with the server and stopped after it.</summary>
public sealed class RedisBackedServer(IServerTarget server, string endpoint, RedisServerProcess? redis) : IServerTarget
{
    public Uri Address => server.Address;

    public int? ProcessId => server.ProcessId;

    public string Description => server.Description + "; " + (redis?.Description ?? $"existing Redis at {endpoint}");

    public IReadOnlyList<CompanionProcess> Companions => redis is null ? [] : [new CompanionProcess("redis-server", redis.Pid)];

    public string? RedisEndpoint => endpoint;

    public async ValueTask DisposeAsync()
    {
        try
        {
            await server.DisposeAsync();
        }
        finally
        {
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
