using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace GrpcBoard.Bench.Measurement;

/// <summary>
/// Per-worker record of call durations in <see cref="Stopwatch"/> ticks. One worker writes it, without
/// locks; the array is allocated before the run and grows in chunks only if the estimate was short, so
/// recording costs one array store. Percentiles are computed after the run from all workers' recorders.
/// </summary>
public sealed class LatencyRecorder
{
    private const int MinimumChunk = 4096;
    private readonly List<long[]> _full = [];
    private long[] _current;
    private int _used;

    /// <param name="expected">Calls this worker is expected to record; the first chunk is sized for them.</param>
    public LatencyRecorder(int expected)
    {
        _current = new long[Math.Max(expected, MinimumChunk)];
    }

    public long Count => _fullCount + _used;

    private long _fullCount;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Record(long elapsedTicks)
    {
        if (_used == _current.Length)
        {
            Grow();
        }

        _current[_used++] = elapsedTicks;
    }

    /// <summary>Copies every recorded duration into <paramref name="destination"/> from <paramref name="offset"/>.</summary>
    public int CopyTo(long[] destination, int offset)
    {
        var start = offset;
        foreach (var chunk in _full)
        {
            chunk.CopyTo(destination, offset);
            offset += chunk.Length;
        }

        Array.Copy(_current, 0, destination, offset, _used);
        return offset + _used - start;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void Grow()
    {
        _full.Add(_current);
        _fullCount += _current.Length;
        _current = new long[Math.Max(MinimumChunk, _current.Length / 2)];
        _used = 0;
    }
}

/// <summary>Distribution of one operation's durations, merged over all workers.</summary>
public sealed record LatencyStats(long Count, double MeanMs, double P50Ms, double P90Ms, double P99Ms, double P999Ms, double MaxMs, double MinMs)
{
    public static LatencyStats From(IEnumerable<LatencyRecorder> recorders)
    {
        var list = recorders.ToList();
        var all = new long[list.Sum(r => r.Count)];
        var offset = 0;
        foreach (var recorder in list)
        {
            offset += recorder.CopyTo(all, offset);
        }

        if (all.Length == 0)
        {
            return new LatencyStats(0, 0, 0, 0, 0, 0, 0, 0);
        }

        Array.Sort(all);
        double total = 0;
        foreach (var ticks in all)
        {
            total += ticks;
        }

        return new LatencyStats(
            all.Length,
            Ms(total / all.Length),
            Ms(Percentile(all, 50)),
            Ms(Percentile(all, 90)),
            Ms(Percentile(all, 99)),
            Ms(Percentile(all, 99.9)),
            Ms(all[^1]),
            Ms(all[0]));
    }

    /// <summary>Nearest-rank percentile of sorted values.</summary>
    private static long Percentile(long[] sorted, double percent)
    {
        var rank = (int)Math.Ceiling(percent / 100 * sorted.Length);
        return sorted[Math.Clamp(rank - 1, 0, sorted.Length - 1)];
    }

    private static double Ms(double ticks) => ticks * 1000.0 / Stopwatch.Frequency;
}
