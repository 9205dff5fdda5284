using GrpcBoard.Core.Storage;

namespace GrpcBoard.Core.Storage;

/// <summary>Every pending timer of every workflow, earliest first.</summary>
public sealed class TimerIndex
{
    private readonly SortedSet<Entry> _entries = new();
    private readonly object _lock = new();

    public void Add(string workflowId, TimerKind kind, string id, DateTimeOffset due)
    {
        lock (_lock)
        {
            _entries.Add(new Entry(due.UtcTicks, workflowId, kind, id));
        }
    }

    public void Remove(string workflowId, TimerKind kind, string id, DateTimeOffset due)
    {
        lock (_lock)
        {
            _entries.Remove(new Entry(due.UtcTicks, workflowId, kind, id));
        }
    }

    public void RemoveWorkflow(string workflowId)
    {
        lock (_lock)
        {
            _entries.RemoveWhere(e => e.WorkflowId == workflowId);
        }
    }

    /// <summary>When the earliest pending timer is due; null when there is none.</summary>
    public DateTimeOffset? Earliest()
    {
        lock (_lock)
        {
            return _entries.Count == 0 ? null : new DateTimeOffset(_entries.Min.DueTicks, TimeSpan.Zero);
        }
    }

    public List<DueTimer> Due(DateTimeOffset now, int limit)
    {
        var result = new List<DueTimer>();
        lock (_lock)
        {
            foreach (var e in _entries)
            {
                if (e.DueTicks > now.UtcTicks || result.Count >= limit)
                {
                    break;
                }

                result.Add(new DueTimer(e.WorkflowId, e.Kind, e.Id, new DateTimeOffset(e.DueTicks, TimeSpan.Zero)));
            }
        }

        return result;
    }

    private readonly record struct Entry(long DueTicks, string WorkflowId, TimerKind Kind, string Id) : IComparable<Entry>
    {
        public int CompareTo(Entry other)
        {
            var c = DueTicks.CompareTo(other.DueTicks);
            if (c == 0)
            {
                c = string.CompareOrdinal(WorkflowId, other.WorkflowId);
            }

            if (c == 0)
            {
                c = Kind.CompareTo(other.Kind);
            }

            return c != 0 ? c : string.CompareOrdinal(Id, other.Id);
        }
    }
}
