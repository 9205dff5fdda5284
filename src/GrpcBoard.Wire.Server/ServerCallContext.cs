using Microsoft.AspNetCore.Http;

namespace GrpcBoard.Wire.Server;

/// <summary>What a handler knows about its call.</summary>
public abstract class ServerCallContext
{
    /// <summary>The method path, "/package.Service/Method".</summary>
    public abstract string Method { get; }

    /// <summary>The remote address, as "ipv4:1.2.3.4:5678" or "ipv6:[::1]:5678".</summary>
    public abstract string Peer { get; }

    /// <summary>When the client's grpc-timeout runs out; <see cref="DateTimeOffset.MaxValue"/> without one.</summary>
    public abstract DateTimeOffset Deadline { get; }

    /// <summary>Custom metadata the client sent (no pseudo-headers, no grpc-* headers).</summary>
    public abstract Metadata RequestHeaders { get; }

    /// <summary>Cancelled when the client cancels (RST_STREAM), disconnects, or the deadline passes.</summary>
    public abstract CancellationToken CancellationToken { get; }

    /// <summary>Custom trailers to send with the status.</summary>
    public abstract Metadata ResponseTrailers { get; }

    /// <summary>The underlying HTTP context, for transport facts (connection, TLS). Not for writing responses.</summary>
    public abstract HttpContext HttpContext { get; }
}

/// <summary>Writes messages of a response stream. Writes are serialized; do not write after the handler returns.</summary>
public interface IServerStreamWriter<in T>
{
    Task WriteAsync(T message, CancellationToken cancellationToken = default);
}

/// <summary>Reads messages of a request stream.</summary>
public interface IAsyncStreamReader<T>
{
    /// <summary>Reads the next message; false at the end of the request stream.</summary>
    ValueTask<bool> MoveNextAsync(CancellationToken cancellationToken = default);

    T Current { get; }
}

public delegate Task<TResponse> UnaryServerMethod<TRequest, TResponse>(TRequest request, ServerCallContext context);

public delegate Task ServerStreamingServerMethod<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context);

public delegate Task DuplexStreamingServerMethod<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context);
