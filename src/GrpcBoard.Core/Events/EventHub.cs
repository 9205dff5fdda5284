using System.Collections.Concurrent;
using System.Threading.Channels;
using GrpcBoard.Core.Model;

namespace GrpcBoard.Core.Events;

/// <summary>
/// In-process fan-out of committed events. A store publishes each workflow's events here in revision
/// order, and only once they are durable; watchers and waiting claims subscribe. Delivery never blocks
/// the publisher: a subscriber that falls behind by more than its buffer is marked overflowed and must
/// catch up from the store (the watch engine does), instead of making the buffer grow.
/// </summary>
public sealed class EventHub
{
    private readonly ConcurrentDictionary<string, Subscribers> _subscribers = new(StringComparer.Ordinal);
    private volatile Action<string, IReadOnlyList<EventRecord>>[] _listeners = [];
    private volatile Func<string, bool>[] _interests = [];
    private readonly object _listenerLock = new();

    public EventSubscription Subscribe(string workflowId, int capacity)
    {
        var subscription = new EventSubscription(this, workflowId, capacity);
        while (true)
        {
            var subscribers = _subscribers.GetOrAdd(workflowId, static _ => new Subscribers());
            if (subscribers.TryAdd(subscription))
            {
                return subscription;
            }

            // The list emptied and retired between the lookup and the add: drop it and use a fresh one.
            _subscribers.TryRemove(new KeyValuePair<string, Subscribers>(workflowId, subscribers));
        }
    }

    /// <summary>
    /// Registers a callback for every published batch of every workflow (called on the publisher's thread; keep
    /// it short), and optionally whether it waits for a workflow's events right now (<see cref="HasInterest"/>).
    /// </summary>
    public void AddListener(Action<string, IReadOnlyList<EventRecord>> listener, Func<string, bool>? interestedIn = null)
    {
        lock (_listenerLock)
        {
            _listeners = [.. _listeners, listener];
            if (interestedIn is not null)
            {
                _interests = [.. _interests, interestedIn];
            }
        }
    }

    /// <summary>Delivers committed, durable events of one workflow, in revision order.</summary>
    public void Publish(string workflowId, IReadOnlyList<EventRecord> events)
    {
        if (events.Count == 0)
        {
            return;
        }

        if (_subscribers.TryGetValue(workflowId, out var subscribers))
        {
            foreach (var subscription in subscribers.Snapshot)
            {
                foreach (var e in events)
                {
                    if (!subscription.Deliver(e))
                    {
                        break;
                    }
                }
            }
        }

        foreach (var listener in _listeners)
        {
            listener(workflowId, events);
        }
    }

    /// <summary>True when someone watches the workflow on this instance.</summary>
    public bool HasSubscribers(string workflowId) => _subscribers.ContainsKey(workflowId);

    /// <summary>
    /// True when something here waits for the workflow's events now: a watcher, or a listener that says so (a
    /// waiting claim). A store told of changes made elsewhere may put off reading them while this is false.
    /// </summary>
    public bool HasInterest(string workflowId)
    {
        if (HasSubscribers(workflowId))
        {
            return true;
        }

        foreach (var interested in _interests)
        {
            if (interested(workflowId))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Number of live subscriptions (for metrics and tests).</summary>
    public int SubscriptionCount => _subscribers.Values.Sum(s => s.Snapshot.Length);

    internal void Remove(string workflowId, EventSubscription subscription)
    {
        if (_subscribers.TryGetValue(workflowId, out var subscribers) && subscribers.RemoveAndRetireIfEmpty(subscription))
        {
            // A retired list takes no new subscriber, so removing it cannot cut one off.
            _subscribers.TryRemove(new KeyValuePair<string, Subscribers>(workflowId, subscribers));
        }
    }

    private sealed class Subscribers
    {
        private readonly object _lock = new();

        private bool _retired;

        public volatile EventSubscription[] Snapshot = [];

        public bool TryAdd(EventSubscription s)
        {
            lock (_lock)
            {
                if (_retired)
                {
                    return false;
                }

                Snapshot = [.. Snapshot, s];
                return true;
            }
        }

        /// <summary>Removes the subscription; when the list becomes empty it retires for good and returns true.</summary>
        public bool RemoveAndRetireIfEmpty(EventSubscription s)
        {
            lock (_lock)
            {
                Snapshot = Snapshot.Where(x => x != s).ToArray();
                _retired = Snapshot.Length == 0;
                return _retired;
            }
        }
    }
}

/// <summary>One subscriber's bounded buffer of live events.</summary>
public sealed class EventSubscription : IDisposable
{
    private readonly EventHub _hub;
    private readonly string _workflowId;
    private readonly Channel<EventRecord> _channel;
    private int _disposed;

    internal EventSubscription(EventHub hub, string workflowId, int capacity)
    {
        _hub = hub;
        _workflowId = workflowId;
        _channel = Channel.CreateBounded<EventRecord>(new BoundedChannelOptions(capacity)
        {
            SingleReader = true,
            SingleWriter = false,
            FullMode = BoundedChannelFullMode.Wait,
        });
    }

    public ChannelReader<EventRecord> Reader => _channel.Reader;

    /// <summary>True once an event could not be buffered: the reader must resynchronize from the store.</summary>
    public bool Overflowed { get; private set; }

    internal bool Deliver(EventRecord e)
    {
        if (_channel.Writer.TryWrite(e))
        {
            return true;
        }

        if (!Overflowed)
        {
            Overflowed = true;
            _channel.Writer.TryComplete();
            _hub.Remove(_workflowId, this);
        }

        return false;
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _channel.Writer.TryComplete();
            _hub.Remove(_workflowId, this);
        }
    }
}
