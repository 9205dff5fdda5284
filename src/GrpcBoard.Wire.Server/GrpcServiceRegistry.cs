using System.Collections.Frozen;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace GrpcBoard.Wire.Server;

/// <summary>
/// The methods this server answers, by path, and the request delegate that dispatches to them.
/// Add methods, then <see cref="Build"/> once; the result is immutable and lock-free.
/// </summary>
public sealed class GrpcServiceRegistry
{
    private readonly Dictionary<string, IServerCallHandler> _handlers = new(StringComparer.Ordinal);

    public GrpcServiceRegistry AddUnary<TRequest, TResponse>(Method<TRequest, TResponse> method, UnaryServerMethod<TRequest, TResponse> handler) =>
        Add(method, MethodType.Unary, new UnaryCallHandler<TRequest, TResponse>(method, handler));

    public GrpcServiceRegistry AddServerStreaming<TRequest, TResponse>(Method<TRequest, TResponse> method, ServerStreamingServerMethod<TRequest, TResponse> handler) =>
        Add(method, MethodType.ServerStreaming, new ServerStreamingCallHandler<TRequest, TResponse>(method, handler));

    public GrpcServiceRegistry AddDuplexStreaming<TRequest, TResponse>(Method<TRequest, TResponse> method, DuplexStreamingServerMethod<TRequest, TResponse> handler) =>
        Add(method, MethodType.DuplexStreaming, new DuplexStreamingCallHandler<TRequest, TResponse>(method, handler));

    /// <summary>Paths ("/Service/Method") of every registered method.</summary>
    public IReadOnlyCollection<string> MethodPaths => _handlers.Keys;

    public GrpcEndpoint Build(GrpcServerOptions options, ILogger? logger = null) =>
        new(_handlers.ToFrozenDictionary(StringComparer.Ordinal), options, logger ?? NullLogger.Instance);

    private GrpcServiceRegistry Add<TRequest, TResponse>(Method<TRequest, TResponse> method, MethodType expected, IServerCallHandler handler)
    {
        if (method.Type != expected)
        {
            throw new ArgumentException($"{method.FullName} is {method.Type}, not {expected}.", nameof(method));
        }

        if (!_handlers.TryAdd(method.FullName, handler))
        {
            throw new InvalidOperationException($"{method.FullName} already has a handler.");
        }

        return this;
    }
}

/// <summary>The built dispatcher: a request delegate for Kestrel.</summary>
public sealed class GrpcEndpoint
{
    private readonly FrozenDictionary<string, IServerCallHandler> _handlers;
    private readonly GrpcServerOptions _options;
    private readonly ILogger _logger;
    private readonly IServerCallHandler _unimplemented;

    internal GrpcEndpoint(FrozenDictionary<string, IServerCallHandler> handlers, GrpcServerOptions options, ILogger logger)
    {
        _handlers = handlers;
        _options = options;
        _logger = logger;
        _unimplemented = new UnimplementedHandler();
    }

    public IReadOnlyCollection<string> MethodPaths => _handlers.Keys;

    /// <summary>Handles one HTTP request as a gRPC call.</summary>
    public Task HandleAsync(HttpContext http)
    {
        var path = http.Request.Path.Value ?? "";
        if (_handlers.TryGetValue(path, out var handler))
        {
            return handler.HandleCallAsync(http, _options, _logger);
        }

        Log.Unimplemented(_logger, path);
        return _unimplemented.HandleCallAsync(http, _options, _logger);
    }

    /// <summary>Answers any unknown path with UNIMPLEMENTED, after the same checks as a real method.</summary>
    private sealed class UnimplementedHandler : IServerCallHandler
    {
        public string ServiceName => "";

        public string MethodName => "";

        public async Task HandleCallAsync(HttpContext http, GrpcServerOptions options, ILogger logger)
        {
            using var context = new HttpServerCallContext(http, options, logger, http.Request.Path.Value ?? "");
            if (context.TryStart())
            {
                await context.EndAsync(new Status(StatusCode.Unimplemented, $"Method {http.Request.Path.Value} is unimplemented.")).ConfigureAwait(false);
            }
        }
    }
}
