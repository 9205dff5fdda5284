namespace GrpcBoard.Wire.Client;

/// <summary>Settings of a <see cref="GrpcChannel"/>.</summary>
public sealed class GrpcChannelOptions
{
    /// <summary>Largest response message accepted (default 4 MiB); larger ones fail with RESOURCE_EXHAUSTED.</summary>
    public int MaxReceiveMessageSize { get; set; } = GrpcProtocol.DefaultMaxReceiveMessageSize;

    /// <summary>Largest request message sent; null means no limit.</summary>
    public int? MaxSendMessageSize { get; set; }

    /// <summary>Compression for request messages (for example gzip); null sends them as they are.</summary>
    public ICompressionProvider? SendCompression { get; set; }

    /// <summary>
    /// The HTTP handler to send calls with, for TLS settings or tests. Null creates a
    /// <see cref="SocketsHttpHandler"/> tuned for gRPC.
    /// </summary>
    public HttpMessageHandler? HttpHandler { get; set; }

    /// <summary>
    /// With calls open, how long a connection may stay silent before the channel sends an HTTP/2 PING
    /// (default 15 s; at least 1 s; <see cref="Timeout.InfiniteTimeSpan"/> sends none). A half-open connection
    /// (the peer's host gone, a NAT entry dropped) never fails by itself: without the ping, a watch stream or a
    /// unary call without a deadline on it would wait forever. Applies to the channel's own connections and to
    /// its default HttpClient handler; not to <see cref="HttpHandler"/>.
    /// </summary>
    public TimeSpan KeepAliveInterval { get; set; } = TimeSpan.FromSeconds(15);

    /// <summary>How long the channel waits for a PING's answer before it drops the connection and fails its calls with UNAVAILABLE (default 10 s; <see cref="Timeout.InfiniteTimeSpan"/> waits forever).</summary>
    public TimeSpan KeepAliveTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Send calls through HttpClient instead of the channel's own HTTP/2 connections (default false). The own
    /// connections cost about half of HttpClient's CPU per call (bench/GrpcBoard.Bench/JOURNAL.md). A custom <see cref="HttpHandler"/>
    /// always means HttpClient.
    /// </summary>
    public bool HttpClientForCalls { get; set; }

    /// <summary>
    /// TLS settings for an "https://" address, on both transports: how the server's certificate is checked (by default
    /// against the system's trusted roots, for the address's host name), client certificates, protocol versions. ALPN
    /// is set to h2 whatever is given here. Null: the defaults. Not used with a custom <see cref="HttpHandler"/>, which
    /// has its own.
    /// </summary>
    public System.Net.Security.SslClientAuthenticationOptions? SslOptions { get; set; }

    /// <summary>Whether disposing the channel disposes <see cref="HttpHandler"/>.</summary>
    public bool DisposeHttpHandler { get; set; } = true;

    /// <summary>Clock for deadlines; tests substitute a manual one.</summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    public string UserAgent { get; set; } = "grpcboard-dotnet/1.0";
}

/// <summary>Per-call settings.</summary>
public readonly record struct CallOptions(
    Metadata? Headers = null,
    DateTimeOffset? Deadline = null,
    CancellationToken CancellationToken = default)
{
    public CallOptions WithDeadline(DateTimeOffset deadline) => this with { Deadline = deadline };
}
