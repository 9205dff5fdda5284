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

    /// <summary>
    /// Longest time between checkpoints, which write each changed record's last version to its row; until
    /// then the log holds it. Rarer: fewer writes (a task claimed and completed in between is written
    /// once). More often: less log to replay when the store opens.
    /// </summary>
    public TimeSpan CheckpointInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>A checkpoint is also made once this many changed records are not yet checkpointed.</summary>
    public int CheckpointRecords { get; set; } = 50_000;

    /// <summary>
    /// Records of checkpoints in progress that each commit writes at least (more when the commit itself
    /// changed many): small enough that no commit waits long, large enough to keep up.
    /// </summary>
    public int CheckpointRecordsPerCommit { get; set; } = 256;

    /// <summary>Fault injection for tests: called before each disk commit; throwing fails that commit.</summary>
    public Action? BeforeCommit { get; set; }

    /// <summary>Fault injection for tests: called before each fsync of the journal; throwing fails it.</summary>
    public Action? BeforeSync { get; set; }

    public void Validate()
    {
        if (MaxEventsPerWorkflow < 16 || RecentEventsInMemory < 16 || MaxTransactionsPerCommit < 1 || CheckpointRecords < 1 || CheckpointRecordsPerCommit < 1 || CheckpointInterval < TimeSpan.Zero)
        {
            throw new ArgumentException("Embedded store limits are too small (events >= 16, batch >= 1, checkpoint records >= 1, interval >= 0).");
        }

        if (Synchronous is not ("FULL" or "NORMAL" or "EXTRA"))
        {
            throw new ArgumentException("Synchronous must be FULL, EXTRA or NORMAL.");
        }
    }
}
