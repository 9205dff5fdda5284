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
