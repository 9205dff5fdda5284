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
