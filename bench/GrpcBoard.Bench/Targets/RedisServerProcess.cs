using System.Globalization;

namespace GrpcBoard.Bench.Targets;

/// <summary>
/// A redis-server the tool starts for one run: a free port on 127.0.0.1, a new temporary directory, AOF on
/// (<c>--appendonly yes --appendfsync always</c> by default: the mode docs/redis.md calls safe), no RDB snapshots.
/// Stopped with SIGTERM and its directory deleted on dispose.
/// </summary>
public sealed class RedisServerProcess : IAsyncDisposable
{
    private readonly ExternalProcess _process;

    private RedisServerProcess(ExternalProcess process, int port, string directory, string appendFsync, string aofRewrite)
    {
        AofRewrite = aofRewrite;
        _process = process;
        Port = port;
        Directory = directory;
        AppendFsync = appendFsync;
    }

    public int Port { get; }

    public string Endpoint => $"127.0.0.1:{Port.ToString(CultureInfo.InvariantCulture)}";

    public int Pid => _process.Pid;

    public string Directory { get; }

    public string AppendFsync { get; }

    /// <summary>"auto" (Redis's default) or "off" (auto-aof-rewrite-percentage 0).</summary>
    public string AofRewrite { get; }

    public string Description => $"redis-server pid {Pid} on {Endpoint} (appendonly yes, appendfsync {AppendFsync}, AOF rewrites {AofRewrite}, no RDB, dir {Directory})";

    public static async Task<RedisServerProcess> StartAsync(string appendFsync, string aofRewrite, CancellationToken cancellationToken)
    {
        var file = ExternalTool.RedisServer.Require();
        // A port that was free a moment ago can be taken before redis-server binds it: try a few.
        for (var attempt = 1; ; attempt++)
        {
            var directory = System.IO.Directory.CreateTempSubdirectory("grpcboard-bench-redis-").FullName;
            var port = ExternalProcess.FreeLoopbackPort();
            string[] arguments =
            [
                "--port", port.ToString(CultureInfo.InvariantCulture), "--bind", "127.0.0.1", "--dir", directory,
                "--appendonly", "yes", "--appendfsync", appendFsync, "--save", "", "--daemonize", "no",
                "--logfile", "", "--loglevel", "warning", "--protected-mode", "yes",
                .. aofRewrite == "off" ? (string[])["--auto-aof-rewrite-percentage", "0"] : [],
            ];
            var process = ExternalProcess.Start(file, arguments, "redis-server", directory, deleteDirectory: directory);
            var server = new RedisServerProcess(process, port, directory, appendFsync, aofRewrite);
            try
            {
                await process.WaitUntilReadyAsync(async () =>
                {
                    await using var client = await RespClient.ConnectAsync(server.Endpoint, cancellationToken);
                    return (string?)await client.CommandAsync("PING") == "PONG";
                }, TimeSpan.FromSeconds(15), cancellationToken);
                return server;
            }
            catch (Exception ex) when (attempt < 3 && ex is InvalidOperationException)
            {
                await server.DisposeAsync();
            }
            catch
            {
                await server.DisposeAsync();
                throw;
            }
        }
    }

    public Task<RespClient> ConnectAsync(CancellationToken cancellationToken = default) => RespClient.ConnectAsync(Endpoint, cancellationToken);

    public ValueTask DisposeAsync() => _process.DisposeAsync();
}
