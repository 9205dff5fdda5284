namespace GrpcBoard.Wire.Tests.Infrastructure;

/// <summary>
/// The system clock plus an offset the test moves forward with <see cref="Step"/>. Timers made from it fire only
/// when a step reaches their due time (or at once, if made already due), so a test can put a deadline after an
/// event (the server has the request) instead of hoping a short real deadline falls after it on a loaded machine.
/// Waits that use real time (a connection attempt bounded by the call's timeout) see the long deadline, not the step.
/// </summary>
public sealed class SteppedClock : TimeProvider
{
    private readonly object _lock = new();
    private readonly List<Held> _held = [];
    private long _offsetTicks;

    public override DateTimeOffset GetUtcNow() => System.GetUtcNow().AddTicks(Interlocked.Read(ref _offsetTicks));

    public override long GetTimestamp() =>
        System.GetTimestamp() + (long)(Interlocked.Read(ref _offsetTicks) * (double)TimestampFrequency / TimeSpan.TicksPerSecond);

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        if (period != Timeout.InfiniteTimeSpan)
        {
            throw new NotSupportedException("Only one-shot timers: the client's deadlines are.");
        }

        var timer = new Held(this, callback, state);
        timer.Change(dueTime, period);
        return timer;
    }

    /// <summary>Moves the clock forward and fires every timer that is then due.</summary>
    public void Step(TimeSpan by)
    {
        Interlocked.Add(ref _offsetTicks, by.Ticks);
        var now = GetUtcNow();
        List<Held> due;
        lock (_lock)
        {
            due = _held.Where(t => t.Due <= now).ToList();
            _held.RemoveAll(due.Contains);
        }

        foreach (var timer in due)
        {
            timer.Fire();
        }
    }

    private sealed class Held(SteppedClock clock, TimerCallback callback, object? state) : ITimer
    {
        public DateTimeOffset Due { get; private set; }

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            lock (clock._lock)
            {
                clock._held.Remove(this);
                if (dueTime == Timeout.InfiniteTimeSpan)
                {
                    return true;
                }

                Due = clock.GetUtcNow() + dueTime;
                if (dueTime > TimeSpan.Zero)
                {
                    clock._held.Add(this);
                    return true;
                }
            }

            Fire();
            return true;
        }

        // On the thread pool, as a real timer's callback runs: never inline in the code that made or stepped it.
        public void Fire() => ThreadPool.UnsafeQueueUserWorkItem(s => callback(s), state, preferLocal: false);

        public void Dispose()
        {
            lock (clock._lock)
            {
                clock._held.Remove(this);
            }
        }

        public ValueTask DisposeAsync()
        {
            Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
