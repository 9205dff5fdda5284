using System.Net;
using GrpcBoard.Api.V1;
using Task = System.Threading.Tasks.Task;
using GrpcBoard.Core;
using GrpcBoard.Core.Events;
using GrpcBoard.Core.Storage;
using GrpcBoard.Core.Watch;
using GrpcBoard.Server.Mapping;
using GrpcBoard.Server.Protocol.Health;
using GrpcBoard.Server.Services;
using GrpcBoard.Store.Embedded;
using GrpcBoard.Store.Redis;
using GrpcBoard.Wire;
using GrpcBoard.Wire.Server;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace GrpcBoard.Server.Hosting;

/// <summary>What tests (and embedders) may substitute when starting a server.</summary>
public sealed record BoardServerOverrides
{
    public TimeProvider? TimeProvider { get; init; }
    public BoardLimits? Limits { get; init; }
    public WatchOptions? WatchOptions { get; init; }

    /// <summary>Builds the store instead of the settings' choice (fault injection, a shared Redis fixture).</summary>
    public Func<EventHub, IBoardStore>? StoreFactory { get; init; }

    /// <summary>Configures logging; null logs to the console at the settings' level.</summary>
    public Action<ILoggingBuilder>? Logging { get; init; }
}

/// <summary>
/// A running GrpcBoard server: the store, the coordinator, the timer loop and a Kestrel endpoint that
/// speaks gRPC over HTTP/2 (h2c, or h2 over TLS when a certificate is configured).
/// </summary>
public sealed class BoardServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly CancellationTokenSource _stopping;
    private readonly Task _timers;

    private BoardServer(WebApplication app, IBoardStore store, Coordinator coordinator, EventHub hub, TimerLoop timerLoop, CancellationTokenSource stopping, Task timers, Uri address)
    {
        _app = app;
        Store = store;
        Coordinator = coordinator;
        Hub = hub;
        TimerLoop = timerLoop;
        _stopping = stopping;
        _timers = timers;
        Address = address;
    }

    public Uri Address { get; }

    public IBoardStore Store { get; }

    public Coordinator Coordinator { get; }

    public EventHub Hub { get; }

    public TimerLoop TimerLoop { get; }

    /// <summary>Sends calls to the instance that serves their workflow (Redis store, --forward); null when off.</summary>
    public CallForwarder? Forwarder { get; private init; }

    public static async Task<BoardServer> StartAsync(ServerSettings settings, BoardServerOverrides? overrides = null, CancellationToken cancellationToken = default)
    {
        overrides ??= new BoardServerOverrides();
        settings.Validate();
        var time = overrides.TimeProvider ?? TimeProvider.System;
        // No watching for configuration changes: settings are read once (ServerSettings), and the host's
        // watcher on the content root (the working directory, which holds ./data by default) would wake on
        // every write of the journal, costing a thread's worth of inotify events under load.
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = ["--hostBuilder:reloadConfigOnChange=false"], ContentRootPath = Directory.GetCurrentDirectory() });
        builder.Logging.ClearProviders();
        if (overrides.Logging is { } configureLogging)
        {
            configureLogging(builder.Logging);
        }
        else
        {
            builder.Logging.AddSimpleConsole(o =>
            {
                o.SingleLine = true;
                o.TimestampFormat = "HH:mm:ss.fff ";
            });
            builder.Logging.SetMinimumLevel(Enum.Parse<LogLevel>(settings.LogLevel, ignoreCase: true));
            builder.Logging.AddFilter("Microsoft", LogLevel.Warning);
        }

        // The host starts an Activity and a log scope for every request whenever this category is enabled at any
        // level, though its request messages are Information, which the filter above drops. That cost a
        // System.Diagnostics.Activity, a scope and ExecutionContext changes per call: about 0.9 KiB of the 11.9 KiB
        // allocated per claim (bench/GrpcBoard.Bench/JOURNAL.md). What else it logs is about startup, whose exceptions reach our
        // caller anyway. Tracing is unaffected: with an ActivityListener on "Microsoft.AspNetCore" (OpenTelemetry,
        // say), the host still starts its Activity.
        builder.Logging.AddFilter("Microsoft.AspNetCore.Hosting.Diagnostics", LogLevel.None);

        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(5));
        builder.WebHost.ConfigureKestrel(kestrel => ConfigureKestrel(kestrel, settings));
        var app = builder.Build();
        var loggers = app.Services.GetRequiredService<ILoggerFactory>();

        var hub = new EventHub();
        var store = overrides.StoreFactory?.Invoke(hub) ?? await CreateStoreAsync(settings, hub, loggers);
        var coordinator = new Coordinator(store, hub, time, overrides.Limits ?? new BoardLimits(), overrides.WatchOptions);
        var stopping = new CancellationTokenSource();
        var registry = new GrpcServiceRegistry();
        var forwarder = settings.Forward && store is IWorkflowRouting routing ? new CallForwarder(routing, loggers.CreateLogger<CallForwarder>()) : null;
        new BoardServiceHandlers(coordinator, time, stopping.Token, forwarder).Register(registry);
        new HealthService(store, time).Register(registry);
        new ReflectionService([BoardServiceReflection.Descriptor.Services[0], HealthReflection.Descriptor.Services[0]]).Register(registry);
        var endpoint = registry.Build(new GrpcServerOptions
        {
            MaxReceiveMessageSize = settings.MaxMessageBytes,
            ResponseCompression = settings.Gzip ? GzipCompressionProvider.Instance : null,
            EnableDetailedErrors = settings.DetailedErrors,
            TimeProvider = time,
            ExceptionMapper = ErrorTable.Map,
        }, loggers.CreateLogger("GrpcBoard.Wire"));
        app.Run(endpoint.HandleAsync);

        try
        {
            await app.StartAsync(cancellationToken);
        }
        catch
        {
            forwarder?.Dispose();
            await store.DisposeAsync();
            await app.DisposeAsync();
            throw;
        }

        // On SIGTERM/Ctrl+C the host stops Kestrel, which waits for running calls. Waiting claims and watches
        // would otherwise be cut without a status when that wait runs out; ending them first answers them
        // (UNAVAILABLE) so clients retry or resume elsewhere at once.
        app.Lifetime.ApplicationStopping.Register(() => stopping.Cancel());
        var timerLoop = new TimerLoop(store, coordinator, time, loggers.CreateLogger<TimerLoop>())
        {
            PollInterval = TimeSpan.FromMilliseconds(settings.TimerPollMilliseconds),
        };
        var timers = Task.Run(() => timerLoop.RunAsync(stopping.Token), CancellationToken.None);
        var address = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());
        var server = new BoardServer(app, store, coordinator, hub, timerLoop, stopping, timers, address) { Forwarder = forwarder };
        if (settings.Forward && store is RedisStore redis)
        {
            if (AdvertisedAddress(settings, address) is { } advertised)
            {
                try
                {
                    await redis.AdvertiseAsync(advertised);
                }
                catch (Exception ex)
                {
                    // The store retries in the background; meanwhile calls are served where they arrive.
                    loggers.CreateLogger<BoardServer>().LogWarning(ex, "Could not advertise {Address} for forwarded calls yet.", advertised);
                }
            }
            else
            {
                loggers.CreateLogger<BoardServer>().LogWarning(
                    "Listening on a wildcard address: other instances cannot forward calls here until --advertise-url says where they reach this one.");
            }
        }

        return server;
    }

    /// <summary>Completes when the process is asked to stop (Ctrl+C, SIGTERM).</summary>
    public Task WaitForShutdownAsync(CancellationToken cancellationToken = default) => _app.WaitForShutdownAsync(cancellationToken);

    public async ValueTask DisposeAsync()
    {
        // Ending watches and waiting claims first lets Kestrel drain quickly; clients resume elsewhere.
        await _stopping.CancelAsync();
        await _app.StopAsync();
        await _timers;
        await _app.DisposeAsync();
        Forwarder?.Dispose();
        await Store.DisposeAsync();
        _stopping.Dispose();
    }

    /// <summary>Where other instances call this one: --advertise-url, else the bound address unless it is a wildcard.</summary>
    private static string? AdvertisedAddress(ServerSettings settings, Uri bound)
    {
        if (!string.IsNullOrWhiteSpace(settings.AdvertiseUrl))
        {
            return settings.AdvertiseUrl;
        }

        return IPAddress.TryParse(bound.Host.Trim('[', ']'), out var ip) && (ip.Equals(IPAddress.Any) || ip.Equals(IPAddress.IPv6Any))
            ? null
            : bound.GetLeftPart(UriPartial.Authority) + "/";
    }

    private static async Task<IBoardStore> CreateStoreAsync(ServerSettings settings, EventHub hub, ILoggerFactory loggers)
    {
        if (settings.Store == "redis")
        {
            return await RedisStore.ConnectAsync(new RedisStoreOptions
            {
                Configuration = settings.Redis,
                KeyPrefix = settings.RedisPrefix,
                MaxEventsPerWorkflow = settings.MaxEventsPerWorkflow,
                EpochFile = Path.Combine(settings.DataDirectory, "redis-epoch-" + settings.RedisPrefix),
                MaxBatchesInFlight = settings.RedisBatches,
                DirectCommits = settings.RedisDirectCommits,
                TurnLength = TimeSpan.FromMilliseconds(settings.RedisTurnMilliseconds),
                TurnLease = TimeSpan.FromMilliseconds(settings.RedisTurnLeaseMilliseconds),
                ReplicasToWaitFor = settings.RedisReplicas,
                ReplicaWaitTimeout = TimeSpan.FromMilliseconds(settings.RedisReplicaTimeoutMilliseconds),
                SentinelMajority = settings.RedisSentinelMajority,
                SentinelConfirmWindow = TimeSpan.FromMilliseconds(settings.RedisSentinelConfirmMilliseconds),
                TlsCaFile = settings.RedisTlsCa,
                TlsCertificateFile = settings.RedisTlsCertificate,
                TlsKeyFile = settings.RedisTlsKey,
                TlsKeyPassword = settings.RedisTlsKeyPassword,
            }, hub, loggers.CreateLogger<RedisStore>());
        }

        return settings.Store switch
        {
            "embedded" => new EmbeddedStore(new EmbeddedStoreOptions
            {
                DataDirectory = settings.DataDirectory,
                MaxEventsPerWorkflow = settings.MaxEventsPerWorkflow,
                Synchronous = settings.Synchronous,
            }, hub),
            "memory" => new EmbeddedStore(new EmbeddedStoreOptions { MaxEventsPerWorkflow = settings.MaxEventsPerWorkflow }, hub),
            _ => throw new ArgumentException($"Store '{settings.Store}' is not available in this build."),
        };
    }

    private static void ConfigureKestrel(KestrelServerOptions kestrel, ServerSettings settings)
    {
        kestrel.AddServerHeader = false;
        kestrel.Limits.Http2.MaxStreamsPerConnection = settings.MaxStreamsPerConnection;
        // Larger windows than Kestrel's defaults: many concurrent calls share one connection.
        kestrel.Limits.Http2.InitialConnectionWindowSize = 4 * 1024 * 1024;
        kestrel.Limits.Http2.InitialStreamWindowSize = 1024 * 1024;
        // Watch streams send nothing for long stretches by design; gRPC has its own keepalive.
        kestrel.Limits.MinRequestBodyDataRate = null;
        kestrel.Limits.MinResponseDataRate = null;
        kestrel.Limits.KeepAliveTimeout = TimeSpan.FromMinutes(10);

        void Endpoint(ListenOptions listen)
        {
            if (settings.TlsCertificate is { } certificate)
            {
                listen.Protocols = HttpProtocols.Http1AndHttp2;
                listen.UseHttps(certificate, settings.TlsCertificatePassword);
            }
            else
            {
                // h2c with prior knowledge: what gRPC clients speak over plain TCP.
                listen.Protocols = HttpProtocols.Http2;
            }
        }

        if (settings.Host is "localhost")
        {
            kestrel.ListenLocalhost(settings.Port, Endpoint);
        }
        else
        {
            kestrel.Listen(IPAddress.Parse(settings.Host), settings.Port, Endpoint);
        }
    }
}
