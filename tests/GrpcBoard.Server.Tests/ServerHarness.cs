using GrpcBoard.Client;
using GrpcBoard.Server.Hosting;
using Microsoft.Extensions.Logging;

namespace GrpcBoard.Server.Tests;

/// <summary>A real server on 127.0.0.1 (Kestrel, HTTP/2) and a client for it; one per test.</summary>
public sealed class ServerHarness : IAsyncDisposable
{
    private ServerHarness(BoardServer server, BoardClient client)
    {
        Server = server;
        Client = client;
    }

    public BoardServer Server { get; }

    public BoardClient Client { get; }

    public string Address => Server.Address.ToString();

    public static async Task<ServerHarness> StartAsync(ServerSettings? settings = null, BoardServerOverrides? overrides = null)
    {
        settings ??= new ServerSettings { Port = 0, Store = "memory" };
        overrides ??= new BoardServerOverrides();
        if (overrides.Logging is null)
        {
            overrides = overrides with { Logging = l => l.SetMinimumLevel(LogLevel.Warning) };
        }

        var server = await BoardServer.StartAsync(settings, overrides);
        return new ServerHarness(server, new BoardClient(server.Address.ToString()));
    }

    public BoardClient NewClient(BoardClientOptions? options = null) => new(Address, options);

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await Server.DisposeAsync();
    }
}
