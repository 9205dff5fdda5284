namespace GrpcBoard.Testing;

/// <summary>Every await in a test has a timeout: a hang fails the test instead of stalling the run.</summary>
public static class TestTimeouts
{
    public static readonly TimeSpan Default = TimeSpan.FromSeconds(20);

    public static Task<T> Within<T>(this Task<T> task, TimeSpan? timeout = null) => task.WaitAsync(timeout ?? Default);

    public static Task Within(this Task task, TimeSpan? timeout = null) => task.WaitAsync(timeout ?? Default);

    public static Task<T> Within<T>(this ValueTask<T> task, TimeSpan? timeout = null) => task.AsTask().WaitAsync(timeout ?? Default);

    /// <summary>Polls a condition on real time (for effects of background loops); fails after the timeout.</summary>
    public static async Task Eventually(Func<Task<bool>> condition, string what, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? Default);
        while (true)
        {
            // The condition's own call is bounded too: one that never returns (a server that stopped answering)
            // would otherwise hang the test past its deadline.
            var left = deadline - DateTime.UtcNow;
            bool met;
            try
            {
                met = await condition().WaitAsync(left > TimeSpan.FromSeconds(1) ? left : TimeSpan.FromSeconds(1));
            }
            catch (TimeoutException ex) when (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"Timed out waiting for: {what} (its last check did not end)", ex);
            }

            if (met)
            {
                return;
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"Timed out waiting for: {what}");
            }

            await Task.Delay(20);
        }
    }
}
