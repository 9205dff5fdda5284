using System.Collections.Concurrent;
using System.Net.Http;
using GrpcBoard.Core.Storage;
using GrpcBoard.Wire;
using GrpcBoard.Wire.Client;
using GrpcBoard.Wire.Server;
using Microsoft.Extensions.Logging;

namespace GrpcBoard.Server.Services;

/// <summary>
/// Sends a unary call on a workflow to the server instance that the store says serves that workflow best
/// (<see cref="IWorkflowRouting"/>: with the Redis store, the instance holding the workflow's turn), and
/// relays its answer, status and trailers included, as if this instance had served the call.
///
/// A forwarded call is never forwarded again (<see cref="ForwardedHeader"/>), so a stale view of who holds a
/// turn costs at most one extra hop: the receiver serves the call itself, waiting for the turn if it must.
/// A call is served here instead only when it never reached the other instance (the connection was refused,
/// or the stream was refused, which HTTP/2 guarantees was not processed). Any other failure after sending is
/// answered UNAVAILABLE without serving the call here: it may have taken effect there, and serving it again
/// could, for example, post tasks twice. The caller then retries as after any lost reply.
/// </summary>
public sealed partial class CallForwarder(IWorkflowRouting routing, ILogger logger) : IDisposable
{
    /// <summary>Marks a call one instance sent to another.</summary>
    public const string ForwardedHeader = "grpcboard-forwarded";

    private readonly ConcurrentDictionary<string, GrpcChannel> _channels = new(StringComparer.Ordinal);
    private long _forwarded;
    private long _servedHereAfterRefusal;

    /// <summary>Calls this instance sent to another and relayed the answer of.</summary>
    public long ForwardedCalls => Interlocked.Read(ref _forwarded);

    /// <summary>Calls served here because the instance they were meant for could not be reached.</summary>
    public long ServedHereAfterRefusal => Interlocked.Read(ref _servedHereAfterRefusal);

    /// <summary>The handler, preceded by the choice to forward the call to the instance that serves its workflow.</summary>
    public UnaryServerMethod<TRequest, TResponse> Wrap<TRequest, TResponse>(
        Method<TRequest, TResponse> method, Func<TRequest, string> workflowOf, UnaryServerMethod<TRequest, TResponse> serveHere) =>
        (request, context) =>
        {
            // The header itself, not RequestHeaders: that would build the call's whole metadata, on every call.
            if (context.HttpContext.Request.Headers.ContainsKey(ForwardedHeader) || workflowOf(request) is not { Length: > 0 } workflowId)
            {
                return serveHere(request, context);
            }

            return routing.PreferredServer(workflowId) is { } target
                ? ForwardAsync(method, request, context, target, serveHere)
                : ServeHereOrMoveAsync(method, request, context, serveHere);
        };

    /// <summary>
    /// Serves the call here unless the store finds, before committing any of it, that another instance holds
    /// the workflow's turn (<see cref="ServedElsewhereException"/>): then it goes there. Without this, the calls
    /// that had reached the store when the turn moved would wait here for the turn, and take it back, over and
    /// over (measured: turns passed back and forth for the whole run).
    /// </summary>
    private async Task<TResponse> ServeHereOrMoveAsync<TRequest, TResponse>(
        Method<TRequest, TResponse> method, TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> serveHere)
    {
        // Scoped to this async method: the flag reaches the store's transactions and no other call.
        CallRouting.BeginMovableCall();
        try
        {
            return await serveHere(request, context).ConfigureAwait(false);
        }
        catch (ServedElsewhereException moved)
        {
            return await ForwardAsync(method, request, context, moved.Address, serveHere).ConfigureAwait(false);
        }
    }

    private async Task<TResponse> ForwardAsync<TRequest, TResponse>(
        Method<TRequest, TResponse> method, TRequest request, ServerCallContext context, string target, UnaryServerMethod<TRequest, TResponse> serveHere)
    {
        // No size limits of its own: the request passed this server's limit, and the answer is the caller's to take.
        var channel = _channels.GetOrAdd(target, static address => GrpcChannel.ForAddress(address, new GrpcChannelOptions { MaxReceiveMessageSize = int.MaxValue }));
        var options = new CallOptions(
            Headers: new Metadata().Add(ForwardedHeader, "1"),
            Deadline: context.Deadline == DateTimeOffset.MaxValue ? null : context.Deadline,
            CancellationToken: context.CancellationToken);
        try
        {
            var response = await channel.UnaryAsync(method, request, options).ConfigureAwait(false);
            Interlocked.Increment(ref _forwarded);
            return response;
        }
        catch (RpcException ex) when (NeverReached(ex))
        {
            routing.ReportUnreachable(target);
            Interlocked.Increment(ref _servedHereAfterRefusal);
            Log.Unreachable(logger, target, ex.Status.Detail);
            CallRouting.Pin();
            return await serveHere(request, context).ConfigureAwait(false);
        }
        catch (RpcException ex)
        {
            Interlocked.Increment(ref _forwarded);
            if (ex.InnerException is not null && ex.StatusCode is StatusCode.Unavailable or StatusCode.Internal)
            {
                // A transport failure after the call was sent: its outcome there is unknown.
                throw new RpcException(new Status(StatusCode.Unavailable,
                    $"The call was sent to the server instance that serves workflow calls now ({target}), and its answer was lost: {ex.Status.Detail}"));
            }

            // The other instance's answer (its status, message and details), relayed as it is.
            throw;
        }
    }

    /// <summary>
    /// True when the other instance cannot have seen the call: no connection (refused, name not resolved, TLS
    /// handshake failed: instances with TLS must trust each other's certificates), or its stream refused.
    /// </summary>
    private static bool NeverReached(RpcException ex) => ex.InnerException switch
    {
        CallNotSentException => true,
        HttpRequestException { HttpRequestError: HttpRequestError.ConnectionError or HttpRequestError.NameResolutionError or HttpRequestError.SecureConnectionError } => true,
        HttpRequestException { InnerException: HttpProtocolException { ErrorCode: 0x7 } } => true,
        HttpProtocolException { ErrorCode: 0x7 } => true,
        _ => false,
    };

    public void Dispose()
    {
        foreach (var channel in _channels.Values)
        {
            channel.Dispose();
        }

        _channels.Clear();
    }

    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Information, Message = "Serving calls here: the instance at {Target} that holds their workflow's turn could not be reached ({Detail}).")]
        public static partial void Unreachable(ILogger logger, string target, string detail);
    }
}
