namespace GrpcBoard.Wire.Tests.Infrastructure;

/// <summary>
/// Counts the server handlers that are running, so that a test can await the moment none is left once its calls are
/// all done (every call ended on the server's side too), instead of polling for it.
/// </summary>
public sealed class RunningHandlers
{
    private readonly Signal _drained = new();
    private int _running;
    private int _callsDone;

    public void Enter() => Interlocked.Increment(ref _running);

    public void Exit()
    {
        if (Interlocked.Decrement(ref _running) == 0 && Volatile.Read(ref _callsDone) == 1)
        {
            _drained.Set();
        }
    }

    /// <summary>Called once the client's calls have all ended: completes when no handler is left running.</summary>
    public Task AllEndedAsync()
    {
        Volatile.Write(ref _callsDone, 1);
        if (Volatile.Read(ref _running) == 0)
        {
            _drained.Set();
        }

        return _drained.WaitAsync();
    }
}
