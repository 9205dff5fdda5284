namespace GrpcBoard.Wire.Tests.Infrastructure;

/// <summary>Every await in a test has a timeout, so a hang fails that test instead of stalling the run.</summary>
public static class Timeouts
{
    public static readonly TimeSpan Default = TimeSpan.FromSeconds(10);

    public static Task Within(this Task task, TimeSpan? timeout = null) => task.WaitAsync(timeout ?? Default);

    public static Task<T> Within<T>(this Task<T> task, TimeSpan? timeout = null) => task.WaitAsync(timeout ?? Default);

    public static Task Within(this ValueTask task, TimeSpan? timeout = null) => task.AsTask().WaitAsync(timeout ?? Default);

    public static Task<T> Within<T>(this ValueTask<T> task, TimeSpan? timeout = null) => task.AsTask().WaitAsync(timeout ?? Default);

    /// <summary>Awaits a call that must fail with <see cref="RpcException"/>, with a timeout.</summary>
    public static async Task<RpcException> ThrowsRpc(Func<Task> call, TimeSpan? timeout = null) =>
        await Assert.ThrowsAsync<RpcException>(() => call().WaitAsync(timeout ?? Default));

    /// <summary>Reads a whole response stream into a list, with a timeout.</summary>
    public static Task<List<T>> ToListWithin<T>(this IAsyncEnumerable<T> source, TimeSpan? timeout = null) =>
        ToListAsync(source).WaitAsync(timeout ?? Default);

    /// <summary>Reads a response stream that must end with a failure: what arrived before it, and the failure.</summary>
    public static async Task<(List<T> Received, RpcException Failure)> ReadUntilFailureWithin<T>(this IAsyncEnumerable<T> source, TimeSpan? timeout = null)
    {
        var received = new List<T>();
        var failure = await ThrowsRpc(
            async () =>
            {
                await foreach (var item in source.ConfigureAwait(false))
                {
                    received.Add(item);
                }
            },
            timeout);
        return (received, failure);
    }

    private static async Task<List<T>> ToListAsync<T>(IAsyncEnumerable<T> source)
    {
        var list = new List<T>();
        await foreach (var item in source.ConfigureAwait(false))
        {
            list.Add(item);
        }

        return list;
    }
}
