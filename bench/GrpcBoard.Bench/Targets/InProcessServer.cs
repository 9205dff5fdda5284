using GrpcBoard.Bench.Cli;
using GrpcBoard.Server.Hosting;
using Microsoft.Extensions.Logging;

namespace GrpcBoard.Bench.Targets;

/// <summary>
/// A server hosted in this process through <see cref="BoardServer.StartAsync"/>. Cheaper to set up, but it
/// shares the garbage collector and thread pool with the load generator, which skews both.
/// </summary>
public sealed class InProcessServer : IServerTarget
{
    private readonly BoardServer _server;
    private readonly DataDirectory? _data;

    private InProcessServer(BoardServer server, DataDirectory? data)
    {
        _server = server;
        _data = data;
    }

    public Uri Address => _server.Address;

    public int? ProcessId => Environment.ProcessId;

    public string Description => "in this process (BoardServer.StartAsync)";

    public static async Task<InProcessServer> StartAsync(BenchOptions options, DataDirectory? data, string? redis, CancellationToken cancellationToken)
    {
        var settings = new ServerSettings
        {
            Port = 0,
            Store = options.Store,
            DataDirectory = data?.Path ?? "./data",
            Synchronous = options.Synchronous,
            Redis = redis ?? "127.0.0.1:6379",
            RedisPrefix = options.RedisPrefix,
            LogLevel = options.ServerLogLevel,
        };
        var level = Enum.Parse<LogLevel>(options.ServerLogLevel, ignoreCase: true);
        var server = await BoardServer.StartAsync(settings, new BoardServerOverrides
        {
            Logging = logging => logging.AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(level),
        }, cancellationToken);
        return new InProcessServer(server, data);
    }

    public async ValueTask DisposeAsync()
    {
        await _server.DisposeAsync();
        _data?.Dispose();
    }
}
