namespace GrpcBoard.Store.Embedded;

/// <summary>
/// A queue between request threads and one consumer thread that blocks without spinning (a spinning
/// consumer costs a core's worth of yields on a 2-core machine). Items are taken in batches.
/// </summary>
internal sealed class WorkQueue<T>
{
    private readonly object _lock = new();
    private List<T> _items = [];
    private bool _completed;

    public bool TryAdd(T item)
    {
        lock (_lock)
        {
            if (_completed)
            {
                return false;
            }

            _items.Add(item);
            if (_items.Count == 1)
            {
                Monitor.Pulse(_lock);
            }

            return true;
        }
    }

    /// <summary>Every queued item (at most <paramref name="max"/>); with <paramref name="wait"/>, blocks until there is one. Empty once completed and drained.</summary>
    public List<T> TakeAll(bool wait = false, int max = int.MaxValue)
    {
        lock (_lock)
        {
            while (wait && _items.Count == 0 && !_completed)
            {
                Monitor.Wait(_lock);
            }

            if (_items.Count <= max)
            {
                var all = _items;
                _items = [];
                return all;
            }

            var some = _items.GetRange(0, max);
            _items.RemoveRange(0, max);
            return some;
        }
    }

    public void Complete()
    {
        lock (_lock)
        {
            _completed = true;
            Monitor.PulseAll(_lock);
        }
    }
}
