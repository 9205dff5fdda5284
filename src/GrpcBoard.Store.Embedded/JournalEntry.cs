using GrpcBoard.Core;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Storage;
using Microsoft.Data.Sqlite;

namespace GrpcBoard.Store.Embedded;

/// <summary>
/// The disk writes of one committed transaction, built under the workflow's lock and written by the
/// journal thread in the order entries were enqueued: its events (encoded once, here), and the last
/// version of each record it changed, which the journal keeps until its next checkpoint.
/// </summary>
internal sealed class JournalEntry(WorkflowState state)
{
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public WorkflowState State { get; } = state;

    /// <summary>The workflow was deleted: its records and log go before anything else of this entry.</summary>
    public bool DeleteContents { get; private init; }

    /// <summary>With <see cref="DeleteContents"/>: the revision of the deletion.</summary>
    public long DeletedAt { get; private init; }

    /// <summary>The workflow record this entry wrote last (created or updated), if any.</summary>
    public WorkflowRecord? Workflow { get; private set; }

    public List<TaskRecord> Tasks { get; } = [];

    /// <summary>Note null: the note was deleted.</summary>
    public List<(string Key, NoteRecord? Note)> Notes { get; } = [];

    /// <summary>The events to log, in revision order (a deletion is not logged: the log it belongs to is gone).</summary>
    public List<(long Revision, byte[] Blob)> Events { get; } = [];

    /// <summary>Events below this revision are trimmed (0: none).</summary>
    public long TrimBelow { get; private init; }

    public long Head { get; private init; }

    public long Oldest { get; private init; }

    /// <summary>What watchers get once the entry is durable.</summary>
    public IReadOnlyList<EventRecord> Published { get; private init; } = [];

    public Task Durable => _completion.Task;

    /// <summary>The disk writes of what <see cref="WorkflowState.Apply"/> committed.</summary>
    public static JournalEntry From(WorkflowState state, AppliedChanges applied)
    {
        var entry = new JournalEntry(state)
        {
            DeleteContents = applied.DeletedContents,
            DeletedAt = applied.DeletedContents ? applied.Events[0].Revision : 0,
            TrimBelow = applied.TrimBelow,
            Head = applied.Head,
            Oldest = applied.Oldest,
            Published = applied.Events,
        };
        foreach (var e in applied.Logged)
        {
            switch (e.Kind)
            {
                case EventKind.WorkflowCreated or EventKind.WorkflowUpdated:
                    entry.Workflow = e.Workflow;
                    break;
                case EventKind.NotePut:
                    entry.Notes.Add((e.Note!.Key, e.Note));
                    break;
                case EventKind.NoteDeleted or EventKind.NoteExpired:
                    entry.Notes.Add((e.Note!.Key, null));
                    break;
                default:
                    entry.Tasks.Add(e.Task!);
                    break;
            }

            entry.Events.Add((e.Revision, RecordCodec.Encode(e)));
        }

        return entry;
    }

    public void MarkDurable() => _completion.TrySetResult();

    /// <summary>
    /// The disk commit holding this entry failed, so nothing of it was written (SQLite rolled the commit back, and the
    /// store reloads from disk). A full disk (SQLITE_FULL, which SQLite also answers for ENOSPC) is RESOURCE_EXHAUSTED, as
    /// a full Redis is for the Redis store; anything else, UNAVAILABLE.
    /// </summary>
    public void MarkFailed(Exception cause) =>
        _completion.TrySetException(cause is SqliteException { SqliteErrorCode: SQLitePCL.raw.SQLITE_FULL }
            ? BoardException.StoreFull("disk", "The embedded store's disk is full; nothing was written. Free space where its data directory is: " + cause.Message, cause)
            : new BoardException(BoardError.StoreUnavailable, "The embedded store could not commit to disk: " + cause.Message, inner: cause));
}
