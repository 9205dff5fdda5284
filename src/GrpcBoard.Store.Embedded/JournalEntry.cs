using GrpcBoard.Core;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Storage;

namespace GrpcBoard.Store.Embedded;

/// <summary>
/// The disk writes of one committed transaction, built under the workflow's lock and written by the
/// journal thread in the order entries were enqueued.
/// </summary>
internal sealed class JournalEntry(WorkflowState state)
{
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public WorkflowState State { get; } = state;

    /// <summary>The workflow row is rewritten (created, updated, or deleted when <see cref="WorkflowBlob"/> is null).</summary>
    public bool WorkflowChanged { get; set; }

    public byte[]? WorkflowBlob { get; set; }

    /// <summary>The workflow was deleted: its tasks, notes and events go before anything else of this entry.</summary>
    public bool DeleteContents { get; set; }

    public List<(string Id, byte[] Blob)> Tasks { get; } = [];

    /// <summary>Blob null means delete the note.</summary>
    public List<(string Key, byte[]? Blob)> Notes { get; } = [];

    public List<(long Revision, byte[] Blob)> Events { get; } = [];

    /// <summary>Events below this revision are trimmed (0: none).</summary>
    public long TrimBelow { get; set; }

    public long Head { get; set; }

    public long Oldest { get; set; }

    /// <summary>What watchers get once the entry is durable.</summary>
    public IReadOnlyList<EventRecord> Published { get; set; } = [];

    /// <summary>The disk writes of what <see cref="WorkflowState.Apply"/> committed (each record once, with its last version).</summary>
    public static JournalEntry From(WorkflowState state, AppliedChanges applied)
    {
        var entry = new JournalEntry(state)
        {
            DeleteContents = applied.DeletedContents,
            WorkflowChanged = applied.DeletedContents,
            TrimBelow = applied.TrimBelow,
            Head = applied.Head,
            Oldest = applied.Oldest,
            Published = applied.Events,
        };
        var tasks = new Dictionary<string, TaskRecord>(StringComparer.Ordinal);
        var notes = new Dictionary<string, NoteRecord?>(StringComparer.Ordinal);
        foreach (var e in applied.Logged)
        {
            switch (e.Kind)
            {
                case EventKind.WorkflowCreated or EventKind.WorkflowUpdated:
                    entry.WorkflowChanged = true;
                    entry.WorkflowBlob = RecordCodec.Encode(e.Workflow!);
                    break;
                case EventKind.NotePut:
                    notes[e.Note!.Key] = e.Note;
                    break;
                case EventKind.NoteDeleted or EventKind.NoteExpired:
                    notes[e.Note!.Key] = null;
                    break;
                default:
                    tasks[e.Task!.Id] = e.Task;
                    break;
            }

            entry.Events.Add((e.Revision, RecordCodec.Encode(e)));
        }

        foreach (var (id, task) in tasks)
        {
            entry.Tasks.Add((id, RecordCodec.Encode(task)));
        }

        foreach (var (key, note) in notes)
        {
            entry.Notes.Add((key, note is null ? null : RecordCodec.Encode(note)));
        }

        return entry;
    }

    public Task Durable => _completion.Task;

    public bool IsDurable => _completion.Task.IsCompletedSuccessfully;

    public void MarkDurable() => _completion.TrySetResult();

    public void MarkFailed(Exception cause) =>
        _completion.TrySetException(new BoardException(BoardError.StoreUnavailable,
            "The embedded store could not commit to disk: " + cause.Message, inner: cause));
}
