using GrpcBoard.Client;
using GrpcBoard.Core;
using GrpcBoard.Testing;
using GrpcBoard.Wire;

namespace GrpcBoard.Store.Redis.Tests;

/// <summary>
/// Calls the store, or a server through the C# client, as a client would while Redis is away or failing over:
/// UNAVAILABLE is retried.
/// </summary>
public static class UntilAvailable
{
    /// <summary>Calls until the call is not refused with UNAVAILABLE and its result satisfies <paramref name="until"/>; returns that result.</summary>
    public static async Task<T> CallAsync<T>(Func<Task<T>> call, string what, Func<T, bool>? until = null, TimeSpan? within = null)
    {
        T result = default!;
        await TestTimeouts.Eventually(async () =>
        {
            try
            {
                result = await call();
                return until?.Invoke(result) ?? true;
            }
            catch (Exception ex) when (ex is BoardException { Error: BoardError.StoreUnavailable } or BoardRpcException { StatusCode: StatusCode.Unavailable })
            {
                return false;
            }
        }, what, within ?? TimeSpan.FromSeconds(30));
        return result;
    }
}
