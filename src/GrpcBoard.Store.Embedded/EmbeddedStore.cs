using System.Collections.Concurrent;
using GrpcBoard.Core;
using GrpcBoard.Core.Events;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Rules;
using GrpcBoard.Core.Storage;

namespace GrpcBoard.Store.Embedded;

/// <summary>
/// The default store: all state in memory, guarded per workflow, and every commit durable in a SQLite
/// journal before it is acknowledged or published. A transaction runs under its workflow's lock, so it
/// never conflicts; disk work happens on the journal thread, many transactions per fsync.
///
/// Why readers wait too: a transaction may observe changes that are applied in memory but not yet on
/// disk. Answering from them and then crashing would show a client something that never happened, so
/// every transaction, reads included, returns only once what it saw is durable.
///
/// A failed disk commit poisons the in-memory state (it is ahead of the disk). The store then refuses
/// calls with StoreUnavailable, fails everything queued, and once a probe write succeeds, reloads from
/// disk, which holds exactly the acknowledged writes; retries then succeed. A failed fsync of the journal
/// is fatal instead: the store refuses calls until the process restarts.
/// </summary>
public sealed class EmbeddedStore : IBoardStore
{
    private readonly EmbeddedStoreOptions _options;
    private readonly EventHub _hub;
    private readonly SqliteJournal? _journal;
    private readonly ReaderWriterLockSlim _generation = new(LockRecursionPolicy.NoRecursion);
    private ConcurrentDictionary<string, WorkflowState> _workflows = new(StringComparer.Ordinal);
    private TimerIndex _timers = new();
    private volatile Exception? _failure;
    private volatile Exception? _fatalFailure;
    private int _disposed;

    public EmbeddedStore(EmbeddedStoreOptions options, EventHub hub)
    {
        options.Validate();
        _options = options;
        _hub = hub;
        if (options.DataDirectory is not null)
        {
            _journal = new SqliteJournal(options);
            (_workflows, _timers) = Rebuild(_journal.Load());
            _journal.Start(OnCommitted, OnCommitFailed, OnSyncFailed);
        }
    }

    /// <summary>Null while healthy; the cause while the store refuses calls.</summary>
    public Exception? Failure => _failure;

    public string? DatabasePath => _journal?.DatabasePath;

    /// <summary>In memory-only mode the in-memory log is the whole retained history.</summary>
    private int RecentCapacity => _journal is null ? _options.MaxEventsPerWorkflow : _options.RecentEventsInMemory;

    public async Task<TxnResult<T>> ExecuteAsync<T>(string workflowId, Func<IWorkflowTransaction, ValueTask<T>> body, CancellationToken cancellationToken)
    {
        T value = default!;
        long revision = 0;
        IReadOnlyList<EventRecord> committed = [];
        Task? waitFor;
        BoardException? refusal = null;
        _generation.EnterReadLock();
        try
        {
            ThrowIfFailed();
            var state = _workflows.TryGetValue(workflowId, out var existing)
                ? existing
                : new WorkflowState(workflowId, RecentCapacity, _timers);
            while (true)
            {
                lock (state.Gate)
                {
                    var txn = new StateTransaction(state);
                    try
                    {
                        value = StateTransaction.RunSynchronously(txn, body);
                    }
                    catch (BoardException ex)
                    {
                        // A refusal is read from memory too ("already claimed" by a claim still being written):
                        // it is answered only once what it saw is durable, like any other read.
                        refusal = ex;
                        waitFor = state.LastWrite;
                        break;
                    }

                    if (txn.Changes.Count == 0)
                    {
                        revision = state.Head;
                        waitFor = state.LastWrite;
                        committed = [];
                        break;
                    }

                    if (!ReferenceEquals(existing, state) && _workflows.GetOrAdd(workflowId, state) is var registered && !ReferenceEquals(registered, state))
                    {
                        // Another caller registered this id first; run the body again against its state.
                        existing = state = registered;
                        continue;
                    }

                    committed = Apply(state, txn.Changes, out waitFor);
                    revision = state.Head;
                    break;
                }
            }
        }
        finally
        {
            _generation.ExitReadLock();
        }

        if (waitFor is { IsCompletedSuccessfully: false })
        {
            await waitFor.WaitAsync(cancellationToken).ConfigureAwait(false);
        }

        if (refusal is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(refusal);
        }

        return new TxnResult<T>(value, revision, committed);
    }

    public async ValueTask<IReadOnlyList<WorkflowSummary>> ListWorkflowsAsync(WorkflowStatus? status, string? afterId, int limit, CancellationToken cancellationToken)
    {
        var result = new List<WorkflowSummary>();
        Task? waitFor = null;
        _generation.EnterReadLock();
        try
        {
            ThrowIfFailed();
            foreach (var id in _workflows.Keys.Where(k => afterId is null || string.CompareOrdinal(k, afterId) > 0).Order(StringComparer.Ordinal))
            {
                var state = _workflows[id];
                lock (state.Gate)
                {
                    if (state.Record is { } record && (status is null || record.Status == status))
                    {
                        result.Add(new WorkflowSummary(record, state.Counts.Clone(), state.Head));
                        if (state.LastWrite is { IsCompletedSuccessfully: false } write)
                        {
                            waitFor = write;
                        }
                    }
                }

                if (result.Count >= limit)
                {
                    break;
                }
            }
        }
        finally
        {
            _generation.ExitReadLock();
        }

        if (waitFor is not null)
        {
            await waitFor.WaitAsync(cancellationToken).ConfigureAwait(false);
        }

        return result;
    }

    public ValueTask<EventPage> ReadEventsAsync(string workflowId, long fromRevision, int limit, CancellationToken cancellationToken)
    {
        _generation.EnterReadLock();
        try
        {
            ThrowIfFailed();
            if (!_workflows.TryGetValue(workflowId, out var state))
            {
                return new(new EventPage(false, 0, 1, []));
            }

            long durable;
            long oldest;
            lock (state.Gate)
            {
                if (state.Record is null)
                {
                    return new(new EventPage(false, state.Head, state.Head + 1, []));
                }

                durable = Math.Min(state.DurableHead, state.Head);
                oldest = state.Oldest;
                var from = Math.Max(fromRevision, oldest);
                if (from > durable)
                {
                    return new(new EventPage(true, durable, oldest, []));
                }

                if (state.Recent.Read(from, durable, limit) is { } cached)
                {
                    return new(new EventPage(true, durable, oldest, cached));
                }

                if (_journal is null)
                {
                    // Memory-only: the in-memory log is all there is, and Oldest tracks its first event.
                    return new(new EventPage(true, durable, oldest, []));
                }
            }

            // Older than the in-memory tail: read the disk, outside the lock. Revisions up to `durable` are committed.
            var events = _journal.ReadEvents(workflowId, Math.Max(fromRevision, oldest), durable, limit);
            return new(new EventPage(true, durable, oldest, events));
        }
        finally
        {
            _generation.ExitReadLock();
        }
    }

    public ValueTask<IReadOnlyList<DueTimer>> GetDueTimersAsync(DateTimeOffset now, int limit, CancellationToken cancellationToken)
    {
        _generation.EnterReadLock();
        try
        {
            ThrowIfFailed();
            return new(_timers.Due(now, limit));
        }
        finally
        {
            _generation.ExitReadLock();
        }
    }

    public ValueTask<bool> CheckHealthAsync(CancellationToken cancellationToken) =>
        new(_failure is null && Volatile.Read(ref _disposed) == 0);

    public ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _journal?.Dispose();
        }

        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// Applies a transaction's changes to memory and queues their disk writes. Runs under the workflow's
    /// lock, so revisions are assigned and entries are queued in the same order.
    /// </summary>
    private IReadOnlyList<EventRecord> Apply(WorkflowState state, IReadOnlyList<EventRecord> changes, out Task? written)
    {
        var applied = state.Apply(changes, _options.MaxEventsPerWorkflow, EventRetention.Slack(_options.MaxEventsPerWorkflow, trimmingCostsIo: _journal is not null));
        if (_journal is null)
        {
            // Memory-only: applied is durable. Publish under the lock, which keeps revision order.
            written = null;
            state.DurableHead = state.Head;
            _hub.Publish(state.Id, applied.Events);
            return applied.Events;
        }

        var entry = JournalEntry.From(state, applied);
        state.LastWrite = written = entry.Durable;
        _journal.Enqueue(entry);
        return applied.Events;
    }

    /// <summary>Journal thread, after a disk commit: the entries are durable; publish them in order.</summary>
    private void OnCommitted(List<JournalEntry> batch)
    {
        foreach (var entry in batch)
        {
            entry.State.DurableHead = entry.Head;
            _hub.Publish(entry.State.Id, entry.Published);
            entry.MarkDurable();
        }
    }

    /// <summary>Sync thread: the WAL could not be made durable. Refuse every call until the process restarts.</summary>
    private void OnSyncFailed(Exception cause)
    {
        _fatalFailure = new IOException("The journal could not be synced to disk; restart the server, which recovers from what is durable: " + cause.Message, cause);
        _failure = _fatalFailure;
    }

    /// <summary>Journal thread, after a failed disk commit: refuse calls, fail what is queued, reload from disk.</summary>
    private void OnCommitFailed(List<JournalEntry> batch, Exception cause)
    {
        _failure = _fatalFailure ?? cause;
        foreach (var entry in batch)
        {
            entry.MarkFailed(cause);
        }

        while (Volatile.Read(ref _disposed) == 0 && _fatalFailure is null)
        {
            _generation.EnterWriteLock();
            try
            {
                // No transaction is between its body and its enqueue now; everything queued is poisoned.
                foreach (var entry in _journal!.Drain())
                {
                    entry.MarkFailed(cause);
                }

                _journal.Reopen();
                _journal.Probe();
                (_workflows, _timers) = Rebuild(_journal.Load());
                _failure = null;
                return;
            }
            catch (Exception retry)
            {
                _failure = retry;
            }
            finally
            {
                _generation.ExitWriteLock();
            }

            Thread.Sleep(TimeSpan.FromSeconds(1));
        }
    }

    private (ConcurrentDictionary<string, WorkflowState>, TimerIndex) Rebuild(List<LoadedWorkflow> loaded)
    {
        var workflows = new ConcurrentDictionary<string, WorkflowState>(StringComparer.Ordinal);
        var timers = new TimerIndex();
        foreach (var w in loaded)
        {
            var state = new WorkflowState(w.Id, RecentCapacity, timers)
            {
                Record = w.Record,
                Head = w.Head,
                Oldest = w.Oldest,
                DurableHead = w.Head,
            };

            // Tasks whose dependencies appear later in id order still index correctly: PutTask only records edges.
            foreach (var task in w.Tasks.Values)
            {
                state.PutTask(task);
            }

            foreach (var note in w.Notes.Values)
            {
                state.PutNote(note);
            }

            workflows[w.Id] = state;
        }

        return (workflows, timers);
    }

    private void ThrowIfFailed()
    {
        if (Volatile.Read(ref _disposed) != 0)
        {
            throw new BoardException(BoardError.StoreUnavailable, "The store is shut down.");
        }

        if (_failure is { } failure)
        {
            throw new BoardException(BoardError.StoreUnavailable,
                "The embedded store is recovering from a failed disk commit: " + failure.Message, inner: failure);
        }
    }
}
