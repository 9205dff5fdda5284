using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace GrpcBoard.Wire.Server;

/// <summary>Handles every call of one method.</summary>
internal interface IServerCallHandler
{
    string ServiceName { get; }

    string MethodName { get; }

    Task HandleCallAsync(HttpContext http, GrpcServerOptions options, ILogger logger);
}

/// <summary>
/// The shared shape of a call: validate, run the method-type-specific part, map what it threw to a
/// status, send the status. Subclasses only read requests and write responses.
/// </summary>
internal abstract class ServerCallHandler<TRequest, TResponse>(Method<TRequest, TResponse> method) : IServerCallHandler
{
    protected Method<TRequest, TResponse> Method { get; } = method;

    public string ServiceName => Method.ServiceName;

    public string MethodName => Method.Name;

    public async Task HandleCallAsync(HttpContext http, GrpcServerOptions options, ILogger logger)
    {
        using var context = new HttpServerCallContext(http, options, logger, Method.FullName);
        if (!context.TryStart())
        {
            return;
        }

        Status status;
        try
        {
            await RunAsync(context).ConfigureAwait(false);
            status = context.DeadlineExceeded
                ? new Status(StatusCode.DeadlineExceeded, "The deadline passed before the call completed.")
                : Status.Ok;
        }
        catch (Exception ex)
        {
            status = context.StatusFromException(ex);
        }

        await context.EndAsync(status).ConfigureAwait(false);
    }

    protected abstract Task RunAsync(HttpServerCallContext context);

    /// <summary>Reads the single request message of a unary or server-streaming call, and the end of the body.</summary>
    protected async Task<TRequest> ReadSingleRequestAsync(HttpServerCallContext context)
    {
        var (has, request) = await MessageFraming.ReadMessageAsync(
            context.RequestBody, Method.RequestMarshaller, context.RequestDecompression, context.MaxReceiveMessageSize, context.CancellationToken).ConfigureAwait(false);
        if (!has)
        {
            throw new RpcException(StatusCode.Internal, "The request ended without a message.");
        }

        // A unary request is exactly one message: anything after it is a protocol error, not something to ignore.
        var (extra, _) = await MessageFraming.ReadMessageAsync(
            context.RequestBody, Method.RequestMarshaller, context.RequestDecompression, context.MaxReceiveMessageSize, context.CancellationToken).ConfigureAwait(false);
        if (extra)
        {
            throw new RpcException(StatusCode.Internal, "The request carried more than one message for a method that takes one.");
        }

        return request!;
    }
}

internal sealed class UnaryCallHandler<TRequest, TResponse>(Method<TRequest, TResponse> method, UnaryServerMethod<TRequest, TResponse> invoker)
    : ServerCallHandler<TRequest, TResponse>(method)
{
    protected override async Task RunAsync(HttpServerCallContext context)
    {
        var request = await ReadSingleRequestAsync(context).ConfigureAwait(false);
        var response = await invoker(request, context).ConfigureAwait(false);
        if (context.DeadlineExceeded)
        {
            // The handler finished after the deadline: the client has already given up, send no message.
            return;
        }

        // No flush: Kestrel sends the message and the trailers together when the call ends.
        await context.WriteMessageAsync(response, Method.ResponseMarshaller, flush: false, context.CancellationToken).ConfigureAwait(false);
    }
}

internal sealed class ServerStreamingCallHandler<TRequest, TResponse>(Method<TRequest, TResponse> method, ServerStreamingServerMethod<TRequest, TResponse> invoker)
    : ServerCallHandler<TRequest, TResponse>(method)
{
    protected override async Task RunAsync(HttpServerCallContext context)
    {
        var request = await ReadSingleRequestAsync(context).ConfigureAwait(false);
        await invoker(request, new StreamWriter<TResponse>(context, Method.ResponseMarshaller), context).ConfigureAwait(false);
    }
}

internal sealed class DuplexStreamingCallHandler<TRequest, TResponse>(Method<TRequest, TResponse> method, DuplexStreamingServerMethod<TRequest, TResponse> invoker)
    : ServerCallHandler<TRequest, TResponse>(method)
{
    protected override Task RunAsync(HttpServerCallContext context) =>
        invoker(new StreamReader<TRequest>(context, Method.RequestMarshaller), new StreamWriter<TResponse>(context, Method.ResponseMarshaller), context);
}

internal sealed class StreamWriter<T>(HttpServerCallContext context, Marshaller<T> marshaller) : IServerStreamWriter<T>
{
    public Task WriteAsync(T message, CancellationToken cancellationToken = default) =>
        context.WriteMessageAsync(message, marshaller, flush: true,
            cancellationToken.CanBeCanceled ? cancellationToken : context.CancellationToken);
}

internal sealed class StreamReader<T>(HttpServerCallContext context, Marshaller<T> marshaller) : IAsyncStreamReader<T>
{
    private T? _current;

    public T Current => _current ?? throw new InvalidOperationException("No current message: call MoveNextAsync first.");

    public async ValueTask<bool> MoveNextAsync(CancellationToken cancellationToken = default)
    {
        var (has, message) = await MessageFraming.ReadMessageAsync(
            context.RequestBody, marshaller, context.RequestDecompression, context.MaxReceiveMessageSize,
            cancellationToken.CanBeCanceled ? cancellationToken : context.CancellationToken).ConfigureAwait(false);
        _current = message;
        return has;
    }
}
