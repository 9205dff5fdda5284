namespace GrpcBoard.Wire.Server;

/// <summary>Protocol-level settings of the gRPC endpoint.</summary>
public sealed class GrpcServerOptions
{
    /// <summary>Largest request message accepted (default 4 MiB); larger ones fail with RESOURCE_EXHAUSTED.</summary>
    public int MaxReceiveMessageSize { get; set; } = GrpcProtocol.DefaultMaxReceiveMessageSize;

    /// <summary>Largest response message sent; null means no limit.</summary>
    public int? MaxSendMessageSize { get; set; }

    /// <summary>Compression for response messages, used only when the client lists it in grpc-accept-encoding.</summary>
    public ICompressionProvider? ResponseCompression { get; set; }

    /// <summary>Whether an unexpected exception's message is sent to the client (off: only "Exception was thrown by handler.").</summary>
    public bool EnableDetailedErrors { get; set; }

    /// <summary>Clock for grpc-timeout deadlines; tests substitute a manual one.</summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    /// <summary>
    /// Turns an exception a handler threw into a status (for example a domain error table). Return null to
    /// fall back to UNKNOWN. <see cref="RpcException"/> and cancellation are handled before this is asked.
    /// </summary>
    public Func<Exception, Status?>? ExceptionMapper { get; set; }
}
