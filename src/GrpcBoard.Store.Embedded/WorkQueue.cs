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

            List<T> taken;
            if (_items.Count <= max)
            {
                taken = _items;
                _items = [];
            }
            else
            {
                taken = _items.GetRange(0, max);
                _items.RemoveRange(0, max);
            }

            if (taken.Count > 0)
            {
                // Wakes a producer waiting in WaitUntilEmpty.
                Monitor.PulseAll(_lock);
            }

            return taken;
        }
    }

    /// <summary>Blocks until a consumer has taken every queued item (or the queue is completed).</summary>
    public void WaitUntilEmpty()
    {
        lock (_lock)
        {
            while (_items.Count > 0 && !_completed)
            {
                Monitor.Wait(_lock);
            }
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
