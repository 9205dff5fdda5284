using System.Runtime.CompilerServices;

namespace GrpcBoard.Wire.Client;

/// <summary>
/// A call with a response stream (server streaming or duplex). Dispose it to cancel the call if it
/// has not ended.
/// </summary>
public sealed class StreamingCall<TRequest, TResponse> : IAsyncDisposable
{
    private readonly IStreamingCallCore<TRequest, TResponse> _call;

    internal StreamingCall(IStreamingCallCore<TRequest, TResponse> call) => _call = call;

    /// <summary>The status once the call has ended; null while it runs.</summary>
    public Status? Status => _call.Status;

    /// <summary>Trailers once the call has ended.</summary>
    public Metadata Trailers => _call.Trailers;

    public Task<Metadata> GetResponseHeadersAsync() => _call.GetResponseHeadersAsync();

    /// <summary>
    /// Reads every response until the call ends. Ending with OK ends the enumeration; any other status
    /// throws <see cref="RpcException"/>.
    /// </summary>
    public async IAsyncEnumerable<TResponse> ReadAllAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var registration = cancellationToken.Register(static s => ((StreamingCall<TRequest, TResponse>)s!).Cancel(), this);
        while (true)
        {
            var (has, message) = await _call.ReadNextAsync().ConfigureAwait(false);
            if (!has)
            {
                yield break;
            }

            yield return message!;
        }
    }

    /// <summary>Writes one request message (duplex calls only).</summary>
    public ValueTask WriteAsync(TRequest message, CancellationToken cancellationToken = default) =>
        _call.WriteRequestAsync(message, cancellationToken);

    /// <summary>Ends the request stream (duplex calls only).</summary>
    public void CompleteRequests() => _call.CompleteRequests();

    public ValueTask DisposeAsync() => _call.DisposeAsync();

    private void Cancel() => _call.Cancel();
}

/// <summary>What a <see cref="StreamingCall{TRequest, TResponse}"/> runs on: HttpClient or the channel's own connection.</summary>
internal interface IStreamingCallCore<TRequest, TResponse> : IAsyncDisposable
{
    Status? Status { get; }

    Metadata Trailers { get; }

    Task<Metadata> GetResponseHeadersAsync();

    /// <summary>The next message, or false once the call ended with OK; throws <see cref="RpcException"/> for any other status.</summary>
    ValueTask<(bool HasMessage, TResponse? Message)> ReadNextAsync();

    ValueTask WriteRequestAsync(TRequest message, CancellationToken cancellationToken);

    void CompleteRequests();

    void Cancel();
}
