using System.Text;
using GrpcBoard.Core.Events;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Storage;
using GrpcBoard.Store.Embedded;
using GrpcBoard.Testing;
using Xunit;

namespace GrpcBoard.Core.Tests;

/// <summary>What only the embedded store has: its disk journal failing, and its single-lock transactions.</summary>
public sealed class EmbeddedStoreTests : IDisposable
{
    private readonly TempDirectory _data = new();
    private readonly ManualTimeProvider _time = new();

    /// <summary>A store on the test's directory whose disk commits fail with what <paramref name="fault"/> returns, while it returns one.</summary>
    private (EmbeddedStore Store, Coordinator Board) OpenFailingCommits(Func<Exception?> fault)
    {
        var hub = new EventHub();
        var store = new EmbeddedStore(new EmbeddedStoreOptions
        {
            DataDirectory = _data.Path,
            BeforeCommit = () =>
            {
                if (fault() is { } ex)
                {
                    throw ex;
                }
            },
        }, hub);
        return (store, new Coordinator(store, hub, _time, new BoardLimits()));
    }

    [Fact]
    public async Task FailedDiskCommit_RefusesCalls_LosesNoAcknowledgedWrite_AndRecovers()
    {
        var failing = false;
        var (store, board) = OpenFailingCommits(() => Volatile.Read(ref failing) ? new IOException("injected: disk full") : null);
        await using var _ = store;
        await board.CreateWorkflowAsync("wf", "", null, default).Within();
        await board.PostTasksAsync("wf", [new TaskSpec { Id = "kept" }], default).Within();
        var claim = await board.ClaimAsync(new ClaimCommand { WorkflowId = "wf", TaskId = "kept", WorkerId = "w" }, default).Within();

        Volatile.Write(ref failing, true);
        var refused = await Assert.ThrowsAsync<BoardException>(() => board.PostTasksAsync("wf", [new TaskSpec { Id = "lost" }], default).Within());
        Assert.Equal(BoardError.StoreUnavailable, refused.Error);
        Assert.False(await store.CheckHealthAsync(default).Within());

        Volatile.Write(ref failing, false);
        await TestTimeouts.Eventually(async () => await store.CheckHealthAsync(default), "the store to recover");

        // The unacknowledged post is gone; everything acknowledged is there; revisions continue from the disk.
        Assert.Equal(BoardError.TaskNotFound, (await Assert.ThrowsAsync<BoardException>(() => board.GetTaskAsync("wf", "lost", default).Within())).Error);
        var kept = await board.GetTaskAsync("wf", "kept", default).Within();
        Assert.Equal(claim.Task!.FencingToken, kept.Task.FencingToken);
        var done = await board.CompleteTaskAsync("wf", "kept", claim.Task.FencingToken, "ok"u8.ToArray(), "", default).Within();
        Assert.Equal(kept.Revision + 1, done.Revision);
    }

    /// <summary>
    /// A full disk: SQLite fails the commit with SQLITE_FULL (injected, as SQLite raises it). Its callers hear
    /// RESOURCE_EXHAUSTED (LIMIT_EXCEEDED, limit "disk"), as with a full Redis; nothing of the call was written, and the
    /// store goes on once there is room.
    /// </summary>
    [Fact]
    public async Task AFullDisk_IsResourceExhausted_AndWritesNothing()
    {
        var full = false;
        var (store, board) = OpenFailingCommits(() => Volatile.Read(ref full) ? new Microsoft.Data.Sqlite.SqliteException("database or disk is full", SQLitePCL.raw.SQLITE_FULL) : null);
        await using var _ = store;
        await board.CreateWorkflowAsync("wf", "", null, default).Within();
        await board.PostTasksAsync("wf", [new TaskSpec { Id = "kept" }], default).Within();

        Volatile.Write(ref full, true);
        var refused = await Assert.ThrowsAsync<BoardException>(() => board.PostTasksAsync("wf", [new TaskSpec { Id = "lost" }], default).Within());
        Assert.Equal(BoardError.LimitExceeded, refused.Error);
        Assert.Equal("disk", refused.Metadata["limit"]);

        Volatile.Write(ref full, false);
        await TestTimeouts.Eventually(async () => await store.CheckHealthAsync(default), "the store to recover");
        Assert.Equal(BoardError.TaskNotFound, (await Assert.ThrowsAsync<BoardException>(() => board.GetTaskAsync("wf", "lost", default).Within())).Error);
        Assert.Equal(1, (await board.GetWorkflowAsync("wf", default).Within()).Counts.Total);
        await board.PostTasksAsync("wf", [new TaskSpec { Id = "after" }], default).Within();
    }

    [Fact]
    public async Task FailedFsync_StopsTheStoreForGood_AndARestartRecoversWhatWasAcknowledged()
    {
        var failing = false;
        var hub = new EventHub();
        var store = new EmbeddedStore(new EmbeddedStoreOptions
        {
            DataDirectory = _data.Path,
            BeforeSync = () =>
            {
                if (Volatile.Read(ref failing))
                {
                    throw new IOException("injected: fsync failed");
                }
            },
        }, hub);
        var board = new Coordinator(store, hub, _time, new BoardLimits());
        await board.CreateWorkflowAsync("wf", "", null, default).Within();
        await board.PostTasksAsync("wf", [new TaskSpec { Id = "kept" }], default).Within();

        Volatile.Write(ref failing, true);
        var refused = await Assert.ThrowsAsync<BoardException>(() => board.PostTasksAsync("wf", [new TaskSpec { Id = "unknown-fate" }], default).Within());
        Assert.Equal(BoardError.StoreUnavailable, refused.Error);

        // Unlike a failed commit, a failed fsync is not retried: the store stays down though the "disk" is fine again.
        Volatile.Write(ref failing, false);
        await Assert.ThrowsAsync<BoardException>(() => board.GetWorkflowAsync("wf", default).Within());
        Assert.False(await store.CheckHealthAsync(default).Within());
        await store.DisposeAsync();

        hub = new EventHub();
        await using var restarted = new EmbeddedStore(new EmbeddedStoreOptions { DataDirectory = _data.Path }, hub);
        board = new Coordinator(restarted, hub, _time, new BoardLimits());
        Assert.Equal("kept", (await board.GetTaskAsync("wf", "kept", default).Within()).Task.Id);
    }

    [Fact]
    public async Task AcknowledgedWrites_AreOnDisk_BeforeTheCallReturns()
    {
        var hub = new EventHub();
        var store = new EmbeddedStore(new EmbeddedStoreOptions { DataDirectory = _data.Path }, hub);
        var board = new Coordinator(store, hub, _time, new BoardLimits());
        await board.CreateWorkflowAsync("wf", "", null, default).Within();
        var posted = await Task.WhenAll(Enumerable.Range(0, 200).Select(i =>
            board.PostTasksAsync("wf", [new TaskSpec { Id = $"t{i}", Payload = Encoding.UTF8.GetBytes($"p{i}") }], default))).Within();

        // Read the database file with a separate connection while the store is still open: what was acknowledged is there.
        using var db = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={store.DatabasePath};Mode=ReadOnly");
        db.Open();
        using var cmd = db.CreateCommand();
        cmd.CommandText = "SELECT max(last_rev) FROM log WHERE workflow_id = 'wf'";
        Assert.Equal(posted.Max(p => p.Revision), (long)cmd.ExecuteScalar()!);
        await store.DisposeAsync();
    }

    [Fact]
    public async Task SecondProcessOnTheSameDirectory_IsRefused()
    {
        await using var first = new EmbeddedStore(new EmbeddedStoreOptions { DataDirectory = _data.Path }, new EventHub());
        var ex = Assert.Throws<InvalidOperationException>(() => new EmbeddedStore(new EmbeddedStoreOptions { DataDirectory = _data.Path }, new EventHub()));
        Assert.Contains("in use", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ATransactionBodyThatReallyWaits_IsRejected()
    {
        await using var store = new EmbeddedStore(new EmbeddedStoreOptions(), new EventHub());
        var never = new TaskCompletionSource<bool>();
        await Assert.ThrowsAsync<InvalidOperationException>(() => store.ExecuteAsync<bool>("wf", async _ => await never.Task, default).Within());
    }

    /// <summary>
    /// Fixtures/layout-1/board.db was written by the previous release (a row per event, a record row per
    /// change): a workflow with a completed task with a checkpoint, a claimed task, a pending dependent now
    /// ready, a note put and one deleted, and a second workflow created and deleted. It opens in this layout
    /// with everything in it, and works on.
    /// </summary>
    [Fact]
    public async Task ADataDirectoryOfTheFirstLayout_IsMigrated_WithEveryRecordEventAndRevision()
    {
        File.Copy(Path.Combine(AppContext.BaseDirectory, "Fixtures", "layout-1", "board.db"), Path.Combine(_data.Path, "board.db"));
        var hub = new EventHub();
        await using (var store = new EmbeddedStore(new EmbeddedStoreOptions { DataDirectory = _data.Path }, hub))
        {
            var board = new Coordinator(store, hub, _time, new BoardLimits());
            var legacy = await board.GetWorkflowAsync("legacy", default).Within();
            Assert.Equal("written by the first data layout", legacy.Workflow.Goal);
            Assert.Equal(12, legacy.Revision);
            var a = (await board.GetTaskAsync("legacy", "a", default).Within()).Task;
            Assert.Equal((TaskState.Completed, "done-a", "half", 5L), (a.State, Encoding.UTF8.GetString(a.Result.Span), Encoding.UTF8.GetString(a.Checkpoint.Span), a.FencingToken));
            Assert.Equal(TaskState.Ready, (await board.GetTaskAsync("legacy", "b", default).Within()).Task.State);
            var c = (await board.GetTaskAsync("legacy", "c", default).Within()).Task;
            Assert.Equal((TaskState.Claimed, "w2", 12L), (c.State, c.Owner, c.FencingToken));
            Assert.Equal("v1", Encoding.UTF8.GetString((await board.GetNoteAsync("legacy", "plan", default).Within()).Note.Value.Span));
            Assert.Equal(BoardError.NoteNotFound, (await Assert.ThrowsAsync<BoardException>(() => board.GetNoteAsync("legacy", "gone", default).Within())).Error);
            Assert.Equal(BoardError.WorkflowNotFound, (await Assert.ThrowsAsync<BoardException>(() => board.GetWorkflowAsync("dropped", default).Within())).Error);
            var history = await store.ReadEventsAsync("legacy", 1, 100, default).Within();
            Assert.Equal(Enumerable.Range(1, 12).Select(r => (long)r), history.Events.Select(e => e.Revision));

            var next = await board.ClaimAsync(new ClaimCommand { WorkflowId = "legacy", TaskId = "b", WorkerId = "w3" }, default).Within();
            Assert.Equal(13, next.Task!.FencingToken);
            var again = await board.CreateWorkflowAsync("dropped", "again", null, default).Within();
            Assert.Equal(3, again.View.Revision); // it was created at 1 and deleted at 2: revisions go on
        }

        // And it reopens in the new layout.
        await using (var store = new EmbeddedStore(new EmbeddedStoreOptions { DataDirectory = _data.Path }, hub))
        {
            var board = new Coordinator(store, hub, _time, new BoardLimits());
            Assert.Equal(13, (await board.GetWorkflowAsync("legacy", default).Within()).Revision);
            Assert.Equal("w3", (await board.GetTaskAsync("legacy", "b", default).Within()).Task.Owner);
        }
    }

    public void Dispose() => _data.Dispose();
}
