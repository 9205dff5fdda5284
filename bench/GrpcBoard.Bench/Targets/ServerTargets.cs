using GrpcBoard.Bench.Cli;

namespace GrpcBoard.Bench.Targets;

public static class ServerTargets
{
    /// <summary>Connects to --target, hosts a server in process (--in-process), or starts a server process.</summary>
    public static async Task<IServerTarget> StartAsync(BenchOptions options, CancellationToken cancellationToken)
    {
        if (options.Target is { } target)
        {
            return new ExistingServer(target, options.ServerPid);
        }

        var data = options.Store == "embedded" ? DataDirectory.Create(options.DataDirectory, options.KeepData) : null;
        try
        {
            return options.InProcess
                ? await InProcessServer.StartAsync(options, data, cancellationToken)
                : await ServerProcess.StartAsync(options, data, cancellationToken);
        }
        catch
        {
            data?.Dispose();
            throw;
        }
    }
}

/// <summary>A server somebody else started.</summary>
public sealed class ExistingServer(Uri address, int? pid) : IServerTarget
{
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
