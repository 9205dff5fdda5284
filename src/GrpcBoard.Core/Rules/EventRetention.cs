namespace GrpcBoard.Core.Rules;

/// <summary>How a store trims a workflow's event log: keep at least the configured number of events.</summary>
public static class EventRetention
{
    /// <summary>
    /// How far past the limit the log may grow before it is trimmed back to the limit: a tenth of it, so a
    /// busy workflow deletes history in steps rather than one event per commit. Zero when trimming is free
    /// (an in-memory log).
    /// </summary>
    public static int Slack(int maxEvents, bool trimmingCostsIo) => trimmingCostsIo ? Math.Max(1, maxEvents / 10) : 0;

    /// <summary>The oldest revision to keep, or null while the log is within its limit plus slack.</summary>
    public static long? TrimTo(long head, long oldest, int maxEvents, int slack) =>
        head - oldest + 1 > maxEvents + slack ? head - maxEvents + 1 : null;
}
