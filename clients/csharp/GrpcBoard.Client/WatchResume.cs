using GrpcBoard.Api.V1;

namespace GrpcBoard.Client;

/// <summary>
/// The resume rule of a watch, in one place: the next stream starts at (last delivered revision + 1).
///
/// Walk through the race it handles: a stream delivers revision 41, then the connection drops while 42
/// and 43 commit. Reopening at 42 gets 42 and 43 from history, then live events; nothing is skipped.
/// If the drop happened after 43 was sent but before the client read it, the new stream sends 43 again,
/// and it is delivered once, because only revisions at or above the next start are accepted.
/// Progress messages move the start forward too: after "everything up to 57 was sent" (filters may have
/// dropped 44-57), a resume starts at 58 instead of replaying what the filter would drop anyway. A watch
/// started "from now" (0) learns its position from the first progress message, so even it resumes
/// without a gap.
/// </summary>
public sealed class WatchResume(long startRevision)
{
    private long _next = startRevision;

    /// <summary>The start_revision for the next stream (0 only before the first message of a "from now" watch).</summary>
    public long NextStart => _next;

    /// <summary>Takes one stream message; returns the event to deliver, or null (progress, or a duplicate).</summary>
    public Event? Accept(WatchResponse message)
    {
        switch (message.MessageCase)
        {
            case WatchResponse.MessageOneofCase.Event when message.Event.Revision >= _next:
                _next = message.Event.Revision + 1;
                return message.Event;
            case WatchResponse.MessageOneofCase.Progress:
                _next = Math.Max(_next, message.Progress.Revision + 1);
                return null;
            default:
                return null;
        }
    }
}
