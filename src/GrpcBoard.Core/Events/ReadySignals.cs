using System.Collections.Concurrent;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Rules;

namespace GrpcBoard.Core.Events;

/// <summary>
/// Wakes claims that wait for a ready task: for each task that becomes ready, the longest-waiting claim
/// whose skills cover the task's, and only that one. Waking every waiter of the workflow instead (a
/// thundering herd) would make N claims look for one task, N - 1 of them for nothing; on the Redis store
/// each of those looks is a read confirmed through Redis.
///
/// No wake-up is lost: a waiter is armed before it looks for a task, so a task made ready between its
/// look and its wait still wakes it; and a waiter that was woken but leaves without waiting again (it
/// claimed something else in that look, its deadline came, its call was cancelled) hands the wake-up on
/// to the next waiter that could use it. The coordinator's periodic re-check is a further safety net.
/// A change of the workflow itself (paused, resumed, deleted) wakes every waiter. Fed from the event hub,
/// so changes committed through other server instances wake waiters here too.
/// </summary>
public sealed class ReadySignals
{
    private readonly ConcurrentDictionary<string, WaitList> _lists = new(StringComparer.Ordinal);

    public ReadySignals(EventHub hub) => hub.AddListener(OnEvents, workflowId => WaitingCount(workflowId) > 0);

    /// <summary>Queues a waiting claim of a worker with these skills; dispose it when the claim ends.</summary>
    public Waiter Join(string workflowId, IReadOnlyCollection<string> skills)
    {
        while (true)
        {
            var list = _lists.GetOrAdd(workflowId, static _ => new WaitList());
            var waiter = new Waiter(this, workflowId, list, skills);
            if (list.TryAdd(waiter))
            {
                return waiter;
            }

            // The list was emptied and retired concurrently: it is (being) removed, so take a new one.
            _lists.TryRemove(new KeyValuePair<string, WaitList>(workflowId, list));
        }
    }

    /// <summary>Waiting claims of a workflow (for tests and metrics).</summary>
    public int WaitingCount(string workflowId) => _lists.TryGetValue(workflowId, out var list) ? list.Count : 0;

    private void OnEvents(string workflowId, IReadOnlyList<EventRecord> events)
    {
        if (!_lists.TryGetValue(workflowId, out var list))
        {
            return;
        }

        foreach (var e in events)
        {
            if (e.Kind is EventKind.WorkflowUpdated or EventKind.WorkflowDeleted)
            {
                list.WakeAll();
            }
            else if (e.Task is { State: TaskState.Ready } task)
            {
                list.WakeOne(task.RequiredSkills);
            }
        }
    }

    private void Leave(string workflowId, WaitList list, Waiter waiter)
    {
        if (list.Remove(waiter))
        {
            // A retired list takes no new waiter, so removing it cannot cut one off.
            _lists.TryRemove(new KeyValuePair<string, WaitList>(workflowId, list));
        }
    }

    /// <summary>One waiting claim: arm it before each look for a task, then await <see cref="Signal"/>.</summary>
    public sealed class Waiter : IDisposable
    {
        private readonly ReadySignals _owner;
        private readonly string _workflowId;
        private readonly WaitList _list;
        private TaskCompletionSource _signal = NewSignal();

        internal Waiter(ReadySignals owner, string workflowId, WaitList list, IReadOnlyCollection<string> skills)
        {
            _owner = owner;
            _workflowId = workflowId;
            _list = list;
            Skills = skills;
        }

        internal IReadOnlyCollection<string> Skills { get; }

        /// <summary>
        /// Under the list's lock: the required skills of each task this waiter was woken for since its last
        /// arm. Wake-ups that came while it was already woken are kept too: if it leaves instead of looking
        /// again, every one of them is handed on.
        /// </summary>
        private readonly List<IReadOnlyList<string>> _wokenFor = [];

        /// <summary>Completes when a task this waiter may claim became ready after the last <see cref="Arm"/>.</summary>
        public Task Signal
        {
            get
            {
                lock (_list)
                {
                    return _signal.Task;
                }
            }
        }

        /// <summary>Before each look for a task: the look covers what woke this waiter; from now on, a task made ready wakes it.</summary>
        public void Arm()
        {
            lock (_list)
            {
                if (_signal.Task.IsCompleted)
                {
                    _signal = NewSignal();
                }

                _wokenFor.Clear();
            }
        }

        /// <summary>Leaves the queue; wake-ups this waiter got but will not look for go to the next waiters that can use them.</summary>
        public void Dispose() => _owner.Leave(_workflowId, _list, this);

        internal bool IsWaiting => !_signal.Task.IsCompleted;

        /// <summary>Under the list's lock: wakes this waiter (for a task with these skills, or null for a workflow change).</summary>
        internal void Wake(IReadOnlyList<string>? forSkills)
        {
            if (forSkills is not null)
            {
                _wokenFor.Add(forSkills);
            }

            _signal.TrySetResult();
        }

        /// <summary>Under the list's lock: the wake-ups to hand on when this waiter leaves.</summary>
        internal IReadOnlyList<IReadOnlyList<string>> UnusedWakeUps => _wokenFor;

        private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>The waiters of one workflow, oldest first. Lock: the list itself.</summary>
    internal sealed class WaitList
    {
        private readonly LinkedList<Waiter> _waiters = new();
        private bool _retired;

        public int Count
        {
            get
            {
                lock (this)
                {
                    return _waiters.Count;
                }
            }
        }

        public bool TryAdd(Waiter waiter)
        {
            lock (this)
            {
                if (_retired)
                {
                    return false;
                }

                _waiters.AddLast(waiter);
                return true;
            }
        }

        /// <summary>Removes a waiter, handing on a wake-up it holds. True when the list became empty and is retired.</summary>
        public bool Remove(Waiter waiter)
        {
            lock (this)
            {
                if (!_waiters.Remove(waiter))
                {
                    return false;
                }

                foreach (var skills in waiter.UnusedWakeUps)
                {
                    WakeOneLocked(skills);
                }

                _retired = _waiters.Count == 0;
                return _retired;
            }
        }

        public void WakeOne(IReadOnlyList<string> requiredSkills)
        {
            lock (this)
            {
                WakeOneLocked(requiredSkills);
            }
        }

        public void WakeAll()
        {
            lock (this)
            {
                foreach (var waiter in _waiters)
                {
                    waiter.Wake(null);
                }
            }
        }

        /// <summary>
        /// Wakes the oldest waiter that is waiting and may claim the task. If every waiter that may claim it
        /// is already woken (looking), the oldest of them keeps the wake-up: it looks again anyway, and
        /// hands the wake-up on if it leaves instead.
        /// </summary>
        private void WakeOneLocked(IReadOnlyList<string> requiredSkills)
        {
            Waiter? looking = null;
            foreach (var waiter in _waiters)
            {
                if (!TaskIndexing.Covers(waiter.Skills, requiredSkills))
                {
                    continue;
                }

                if (waiter.IsWaiting)
                {
                    waiter.Wake(requiredSkills);
                    return;
                }

                looking ??= waiter;
            }

            looking?.Wake(requiredSkills);
        }
    }
}
