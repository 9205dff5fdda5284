using GrpcBoard.Core.Model;

namespace GrpcBoard.Core.Storage;

/// <summary>
/// The most recent events of one workflow, oldest first, in a circular buffer. Guarded by the
/// workflow's lock. With a disk journal it is a cache of the tail; in memory-only mode it is the log.
/// </summary>
public sealed class EventLog(int capacity)
{
    private EventRecord[] _items = new EventRecord[Math.Min(capacity, 64)];
    private int _start;
    private int _count;

    public int Count => _count;

    /// <summary>Revision of the oldest event held, or 0 when empty.</summary>
    public long FirstRevision => _count == 0 ? 0 : _items[_start].Revision;

    /// <summary>Revision of the newest event held, or 0 when empty.</summary>
    public long LastRevision => _count == 0 ? 0 : _items[(_start + _count - 1) % _items.Length].Revision;

    public void Add(EventRecord e)
    {
        if (_count == _items.Length)
        {
            if (_items.Length < capacity)
            {
                var bigger = new EventRecord[Math.Min(capacity, _items.Length * 2)];
                for (var i = 0; i < _count; i++)
                {
                    bigger[i] = _items[(_start + i) % _items.Length];
                }

                _items = bigger;
                _start = 0;
            }
            else
            {
                _start = (_start + 1) % _items.Length;
                _count--;
            }
        }

        _items[(_start + _count) % _items.Length] = e;
        _count++;
    }

    /// <summary>Drops events below <paramref name="revision"/>.</summary>
    public void TrimBelow(long revision)
    {
        while (_count > 0 && _items[_start].Revision < revision)
        {
            _items[_start] = null!;
            _start = (_start + 1) % _items.Length;
            _count--;
        }
    }

    /// <summary>Drops events above <paramref name="revision"/> (undoing an apply).</summary>
    public void TruncateAfter(long revision)
    {
        while (_count > 0 && _items[(_start + _count - 1) % _items.Length].Revision > revision)
        {
            _items[(_start + _count - 1) % _items.Length] = null!;
            _count--;
        }
    }

    public void Clear()
    {
        Array.Clear(_items);
        _start = 0;
        _count = 0;
    }

    /// <summary>Events with from &lt;= revision &lt;= upTo, at most <paramref name="limit"/>; null if <paramref name="from"/> is older than what is held.</summary>
    public List<EventRecord>? Read(long from, long upTo, int limit)
    {
        if (_count == 0 || from < FirstRevision)
        {
            return null;
        }

        var result = new List<EventRecord>(Math.Min(limit, 64));
        var offset = (int)Math.Min(from - FirstRevision, _count);
        for (var i = offset; i < _count && result.Count < limit; i++)
        {
            var e = _items[(_start + i) % _items.Length];
            if (e.Revision > upTo)
            {
                break;
            }

            result.Add(e);
        }

        return result;
    }
}
