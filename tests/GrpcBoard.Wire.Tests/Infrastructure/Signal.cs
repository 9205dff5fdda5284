namespace GrpcBoard.Wire.Tests.Infrastructure;

/// <summary>A one-shot event a handler raises and a test awaits (never a sleep).</summary>
public sealed class Signal<T>
{
    private readonly TaskCompletionSource<T> _tcs = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public bool IsSet => _tcs.Task.IsCompleted;

    public void Set(T value) => _tcs.TrySetResult(value);

    public Task<T> WaitAsync(TimeSpan? timeout = null) => _tcs.Task.Within(timeout);
}

public sealed class Signal
{
    private readonly TaskCompletionSource _tcs = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public bool IsSet => _tcs.Task.IsCompleted;

    public void Set() => _tcs.TrySetResult();

    public Task WaitAsync(TimeSpan? timeout = null) => _tcs.Task.Within(timeout);
}
