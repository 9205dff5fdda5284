using System.Diagnostics;

namespace GrpcBoard.Bench.Measurement;

/// <summary>Operations completed in each second of a run: shows stalls (GC, disk checkpoints) that averages hide.</summary>
public sealed class RateTimeline(long startTimestamp, int maxSeconds = 3600)
{
    private readonly long[] _buckets = new long[maxSeconds + 1];
    private int _highest = -1;

    public void Add(long timestamp)
    {
        var second = (int)Math.Min((timestamp - startTimestamp) / Stopwatch.Frequency, _buckets.Length - 1);
        Interlocked.Increment(ref _buckets[second]);
        if (second > Volatile.Read(ref _highest))
        {
            InterlockedMax(ref _highest, second);
        }
    }

    /// <summary>Counts per whole second; the last, partial second is left out unless it is the only one.</summary>
    public long[] FullSeconds(long endTimestamp)
    {
        var whole = (int)((endTimestamp - startTimestamp) / Stopwatch.Frequency);
        var length = Math.Clamp(whole, 1, _buckets.Length);
        return _buckets[..Math.Min(length, Math.Max(_highest + 1, 1))];
    }

    private static void InterlockedMax(ref int target, int value)
    {
        var current = Volatile.Read(ref target);
        while (value > current)
        {
            var seen = Interlocked.CompareExchange(ref target, value, current);
            if (seen == current)
            {
                return;
            }

            current = seen;
        }
    }
}
