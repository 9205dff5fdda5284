using System.Diagnostics;
using System.Runtime;

namespace GrpcBoard.Bench.Measurement;

/// <summary>
/// How busy the JIT is: methods this process compiled (tier-0 and tier-1 re-compilations alike), and the CPU
/// of the server process's tiered-compilation thread (".NET Tiered Com" in /proc). A warm-up is over when
/// both stay near zero for a round: from then on the code that runs is the optimized code.
/// </summary>
public sealed record JitActivity(long ClientMethods, TimeSpan ClientCompileTime, long? ServerTieringTicks)
{
    private const string TieringThread = ".NET Tiered Com";

    public static JitActivity Take(int? serverPid)
    {
        long? serverTicks = null;
        if (serverPid is { } pid && pid != Environment.ProcessId && ProcessSnapshot.Take(pid) is { } snapshot)
        {
            serverTicks = snapshot.Threads.Values.Where(t => t.Name.StartsWith(TieringThread, StringComparison.Ordinal)).Sum(t => t.Ticks);
        }

        return new JitActivity(JitInfo.GetCompiledMethodCount(), JitInfo.GetCompilationTime(), serverTicks);
    }

    /// <summary>Methods compiled here, and seconds of server tiering CPU, since <paramref name="before"/>.</summary>
    public (long ClientMethods, double? ServerTieringSeconds) Since(JitActivity before) =>
        (ClientMethods - before.ClientMethods,
         ServerTieringTicks is { } now && before.ServerTieringTicks is { } then ? (now - then) / ProcessSnapshot.TicksPerSecond : null);
}

/// <summary>
/// When a warm-up may stop: after two quiet rounds in a row and 3 s at least, or at the limit. One quiet round is not
/// enough: the runtime holds tier-1 compilation back while new methods keep appearing, so a short round can be quiet
/// only because the work is still queued (seen: a quiet 0.4 s round, then 1 s of the server's CPU on tiering during
/// the measured run).
/// </summary>
public sealed class WarmupGate(TimeSpan limit)
{
    private readonly long _started = Stopwatch.GetTimestamp();
    private bool _quietBefore;

    /// <summary>
    /// A quiet round: the server's tiering thread under 2% of the round (one /proc tick is 10 ms, so at least that)
    /// and few methods compiled in this process (<paramref name="methodsHere"/>, 0 when another program made the calls).
    /// </summary>
    public static bool IsQuiet(long methodsHere, double? serverTieringSeconds, double roundSeconds) =>
        methodsHere <= 25 && (serverTieringSeconds is null || serverTieringSeconds <= Math.Max(0.01, 0.02 * roundSeconds));

    /// <summary>Records a round; true when the warm-up is over.</summary>
    public bool Done(bool quiet)
    {
        var elapsed = Stopwatch.GetElapsedTime(_started);
        var done = (quiet && _quietBefore && elapsed >= TimeSpan.FromSeconds(Math.Min(3, limit.TotalSeconds))) || elapsed >= limit;
        _quietBefore = quiet;
        return done;
    }
}
