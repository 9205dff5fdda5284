using System.Reflection;
using System.Text.RegularExpressions;
using GrpcBoard.Bench.Cli;

namespace GrpcBoard.Bench.Targets;

/// <summary>
/// A server in a child process: "dotnet GrpcBoard.Server.dll --port 0 ...", so the server and the load
/// generator have a garbage collector and a thread pool each. The address is read from the server's
/// "GrpcBoard listening on http://127.0.0.1:PORT/" line. Stopped with SIGTERM (then killed if it hangs).
/// </summary>
public sealed partial class ServerProcess : IServerTarget
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);
    private readonly ExternalProcess _process;
    private readonly DataDirectory? _data;

    private ServerProcess(ExternalProcess process, DataDirectory? data, string dll)
    {
        _process = process;
        _data = data;
        Dll = dll;
    }

    public Uri Address { get; private set; } = null!;

    public int? ProcessId => _process.Pid;

    public string Dll { get; }

    public string Description => $"child process pid {_process.Pid}: dotnet {Dll}";

    public static async Task<ServerProcess> StartAsync(BenchOptions options, DataDirectory? data, string? redis, CancellationToken cancellationToken)
    {
        var dll = Path.GetFullPath(options.ServerDll ?? DefaultServerDll());
        if (!File.Exists(dll))
        {
            throw new FileNotFoundException($"No server at {dll}: build it first (dotnet build -c Release), or pass --server-dll.", dll);
        }

        var process = ExternalProcess.Start("dotnet", [dll, .. ServerArguments(options, data, redis)], "server",
            workingDirectory: Path.GetDirectoryName(dll), environment: options.ServerEnvironment, readyLine: ListeningLine());
        var server = new ServerProcess(process, data, dll);
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(StartTimeout);
            try
            {
                server.Address = new Uri((await process.ReadyLine.WaitAsync(timeout.Token)).Groups[1].Value);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                throw new TimeoutException($"The server printed no 'GrpcBoard listening on' line within {StartTimeout.TotalSeconds} s. Its last lines:\n  {process.LastLines()}");
            }

            return server;
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
    }

    /// <summary>The server options the tool passes, in the server's own switches.</summary>
    public static IEnumerable<string> ServerArguments(BenchOptions options, DataDirectory? data, string? redis)
    {
        yield return "--port";
        yield return "0";
        yield return "--store";
        yield return options.Store;
        if (redis is not null)
        {
            yield return "--redis";
            yield return redis;
            yield return "--redis-prefix";
            yield return options.RedisPrefix;
        }
        if (data is not null)
        {
            yield return "--data";
            yield return data.Path;
            yield return "--synchronous";
            yield return options.Synchronous;
        }

        yield return "--log-level";
        yield return options.ServerLogLevel;
    }

    /// <summary>SIGTERM (then a kill if it hangs), then the data directory goes.</summary>
    public async ValueTask DisposeAsync()
    {
        await _process.DisposeAsync();
        _data?.Dispose();
    }

    private static string DefaultServerDll() =>
        typeof(ServerProcess).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().FirstOrDefault(a => a.Key == "GrpcBoard.ServerDll")?.Value
        ?? throw new InvalidOperationException("This build does not know where the server is: pass --server-dll.");

    [GeneratedRegex(@"GrpcBoard listening on (\S+)")]
    private static partial Regex ListeningLine();
}
