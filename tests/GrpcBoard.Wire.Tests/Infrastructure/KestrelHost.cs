using System.Net;
using GrpcBoard.Wire.Server;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace GrpcBoard.Wire.Tests.Infrastructure;

/// <summary>
/// A real Kestrel server on 127.0.0.1 with an ephemeral port, HTTP/2 only (h2c with prior knowledge),
/// running either a <see cref="GrpcEndpoint"/> or an arbitrary request delegate (a misbehaving "server"
/// for client tests). Optionally a second, HTTP/1.1-only listener.
/// </summary>
public sealed class KestrelHost : IAsyncDisposable
{
    private readonly WebApplication _app;

    private KestrelHost(WebApplication app, Uri address, Uri? http1Address)
    {
        _app = app;
        Address = address;
        Http1Address = http1Address;
    }

    /// <summary>The h2c address, "http://127.0.0.1:PORT/".</summary>
    public Uri Address { get; }

    /// <summary>The HTTP/1.1-only address when asked for; null otherwise.</summary>
    public Uri? Http1Address { get; }

    public static Task<KestrelHost> StartGrpcAsync(Action<GrpcServiceRegistry> register, Action<GrpcServerOptions>? configure = null, bool withHttp1Listener = false, Action<KestrelServerOptions>? kestrelOptions = null, Action<ListenOptions>? listen = null)
    {
        var registry = new GrpcServiceRegistry();
        register(registry);
        var options = new GrpcServerOptions();
        configure?.Invoke(options);
        var endpoint = registry.Build(options);
        return StartAsync(endpoint.HandleAsync, withHttp1Listener, kestrelOptions, listen);
    }

    /// <param name="listen">Changes the main listener (TLS, say) after it is set to HTTP/2 only.</param>
    public static async Task<KestrelHost> StartAsync(RequestDelegate handler, bool withHttp1Listener = false, Action<KestrelServerOptions>? kestrelOptions = null, Action<ListenOptions>? listen = null)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        // A test that leaves a call open must not hold the run for the default 30 s shutdown.
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(2));
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrelOptions?.Invoke(kestrel);
            kestrel.Listen(IPAddress.Loopback, 0, o =>
            {
                o.Protocols = HttpProtocols.Http2;
                listen?.Invoke(o);
            });
            if (withHttp1Listener)
            {
                kestrel.Listen(IPAddress.Loopback, 0, o => o.Protocols = HttpProtocols.Http1);
            }
        });
        var app = builder.Build();
        app.Run(handler);
        await app.StartAsync().Within();

        var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses
            .Select(a => new Uri(a.Replace("[::]", "127.0.0.1", StringComparison.Ordinal)))
            .ToList();
        // Listen() registrations are reported in order.
        return new KestrelHost(app, addresses[0], withHttp1Listener ? addresses[1] : null);
    }

    /// <summary>A channel to this server, with its own connection pool.</summary>
    public Client.GrpcChannel CreateChannel(Action<Client.GrpcChannelOptions>? configure = null)
    {
        var options = new Client.GrpcChannelOptions();
        configure?.Invoke(options);
        return Client.GrpcChannel.ForAddress(Address, options);
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync().Within();
        await _app.DisposeAsync().Within();
    }
}
