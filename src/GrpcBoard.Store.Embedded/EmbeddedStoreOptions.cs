namespace GrpcBoard.Store.Embedded;

public sealed class EmbeddedStoreOptions
{
    /// <summary>Directory of the database file; null keeps everything in memory only (tests, throwaway boards).</summary>
    public string? DataDirectory { get; set; }

    /// <summary>Events kept per workflow for Watch resumption; older ones are trimmed and answer OUT_OF_RANGE.</summary>
    public int MaxEventsPerWorkflow { get; set; } = 100_000;

    /// <summary>Most recent events per workflow also kept in memory, so live catch-up does not touch the disk.</summary>
    public int RecentEventsInMemory { get; set; } = 4096;

    /// <summary>Most transactions one disk commit may carry (group commit).</summary>
    public int MaxTransactionsPerCommit { get; set; } = 4096;

    /// <summary>
    /// SQLite's synchronous setting: FULL syncs the WAL on every commit (no acknowledged write is lost on
    /// power failure); NORMAL survives a process crash but not a power loss. Default FULL.
    /// </summary>
    public string Synchronous { get; set; } = "FULL";

    /// <summary>Fault injection for tests: called before each disk commit; throwing fails that commit.</summary>
    public Action? BeforeCommit { get; set; }

    /// <summary>Fault injection for tests: called before each fsync of the journal; throwing fails it.</summary>
    public Action? BeforeSync { get; set; }

    public void Validate()
    {
        if (MaxEventsPerWorkflow < 16 || RecentEventsInMemory < 16 || MaxTransactionsPerCommit < 1)
        {
            throw new ArgumentException("Embedded store limits are too small (events >= 16, batch >= 1).");
        }

        if (Synchronous is not ("FULL" or "NORMAL" or "EXTRA"))
        {
            throw new ArgumentException("Synchronous must be FULL, EXTRA or NORMAL.");
        }
    }
}
