using GrpcBoard.Core;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Rules;
using GrpcBoard.Core.Storage;
using StackExchange.Redis;

namespace GrpcBoard.Store.Redis;

/// <summary>
/// One instance's copy of one workflow, and the pipeline of its commits to Redis.
///
/// Transactions run their body against the replica under its lock, as in the embedded store, so reads
/// cost no round trip; their changes are applied at once (speculatively) and join the open batch. A
/// batch is sent as one commit script that succeeds only if the workflow's last committed batch is the
/// one this replica built on. So up to <see cref="RedisStoreOptions.BatchesInFlight"/> batches are in
/// flight, each built on the previous one, and Redis applies them in order or refuses the first that
/// another instance overtook, and with it every later one (their predecessor never committed).
///
/// A refused batch means another instance committed first: the speculative changes are undone (newest
/// first), the replica catches up from the workflow's log, and the refused transactions run again on
/// the fresh state. A batch whose reply was lost (Redis down or slow) may or may not have committed: its
/// transactions fail with UNAVAILABLE and the replica is dropped, to be loaded again from Redis. A batch that Redis
/// refused before running it (a cluster slot on the move, a script cache flushed, a Redis still loading) fails its
/// transactions with UNAVAILABLE too, but is undone like a refused batch: the replica is kept.
///
/// Reads commit too: a transaction that changed nothing rides in the next batch (a batch of reads
/// only writes nothing), so it returns only once what it saw is committed and Redis confirmed that
/// no other instance had changed the workflow since.
/// </summary>
internal sealed class WorkflowReplica
{
    private readonly RedisStore _store;
    private readonly RedisStoreOptions _options;
    private readonly Queue<CommitBatch> _inFlight = new();
    private readonly List<CommitBatch> _refused = [];

    /// <summary>Transactions decided under the lock, reported once it is released.</summary>
    private List<PendingTxn> _decided = [];

    /// <summary>Null until loaded, and after being dropped.</summary>
    private WorkflowState? _state;

    /// <summary>The load in progress (or the last one, faulted, if it failed).</summary>
    private Task? _loading;

    /// <summary>Non-null from the moment a batch is refused or lost until the replica is current again: no body runs meanwhile.</summary>
    private TaskCompletionSource? _recovery;

    private CommitBatch? _open;
    private long _committedHead;
    private string _committedId = "";
    private string _sentId = "";
    private bool _broken;

    /// <summary>
    /// The last catch-up could not read the log (Redis unavailable for this workflow): the replica is at its last
    /// commit, which may not be the workflow's head, so it catches up before a body runs or it answers a read.
    /// </summary>
    private bool _stale;

    /// <summary>
    /// Catch-ups in a row that ended behind (another instance committed while they read), since this replica last sent a
    /// batch. A busy instance can commit faster than a catch-up reads; catching up again every time, this one would run
    /// nothing, never be refused for the other's turn, and so never queue for it, for as long as the other kept writing.
    /// So after <see cref="CatchUpsBehindBeforeRunning"/> of them, bodies run on the replica as it is: their batch
    /// commits, or is refused (and waits for the turn), as any batch built on old state would be.
    /// </summary>
    private int _catchUpsBehind;

    /// <summary>The first catch-up, and a second read because its notice may have come before what the first read.</summary>
    private const int CatchUpsBehindBeforeRunning = 2;

    /// <summary>
    /// Set when a batch was refused because another instance held the workflow's turn: the catch-up waits
    /// until the turn is passed here (or lapses, after <see cref="_turnLapsesIn"/> ms) before bodies run again.
    /// Completed already when the notice of the pass came before the refusal; cleared by a commit.
    /// </summary>
    private TaskCompletionSource? _turn;
    private long _turnLapsesIn;

    /// <summary>Another instance waits for the turn this one may hold: pass it as soon as nothing is left to commit.</summary>
    private bool _turnWanted;

    private static readonly TimeSpan IdleBeforePassingTurn = TimeSpan.FromMilliseconds(2);

    /// <summary>
    /// The newest event this replica knows to be committed (its own, or read from the log); kept when the replica's state
    /// is dropped, so that the history is checked when it is loaded again (<see cref="ExpectSameHistory"/>).
    /// </summary>
    private EventRecord? _anchor;

    /// <summary>Notifications of other instances' commits, and how many of them the last catch-up covered.</summary>
    private long _foreignNotices;
    private long _noticesCaughtUp;
    private long _sequence;
    private long _lastUsedTicks = Environment.TickCount64;

    public WorkflowReplica(RedisStore store, string workflowId)
    {
        _store = store;
        _options = store.Options;
        Id = workflowId;
    }

    public string Id { get; }

    public object Gate { get; } = new();

    /// <summary>Set when the store dropped this replica (idle): callers get a new one.</summary>
    public bool Evicted { get; private set; }

    public long IdleMilliseconds => Environment.TickCount64 - Interlocked.Read(ref _lastUsedTicks);

    /// <summary>Completes when a body may run: the replica is loaded and not recovering. Starts a load if needed.</summary>
    public Task WhenReadyAsync()
    {
        lock (Gate)
        {
            if (_recovery is { } recovery)
            {
                return recovery.Task;
            }

            if (Evicted)
            {
                // The caller finds it evicted and takes the store's new replica.
                return Task.CompletedTask;
            }

            if (_state is null && (_loading is null || _loading.IsCompleted))
            {
                _loading = Task.Run(LoadAsync);
            }

            return _state is null ? _loading! : Task.CompletedTask;
        }
    }

    private bool CanRun => _state is not null && _recovery is null && !Evicted;

    /// <summary>
    /// Runs the body on the replica and queues its changes. False when the replica is not ready (loading,
    /// recovering or dropped): wait for <see cref="WhenReadyAsync"/> and try again.
    /// </summary>
    public bool TryRun<T>(Func<IWorkflowTransaction, ValueTask<T>> body, out T value, out PendingTxn? pending, out bool needsRegistration)
    {
        value = default!;
        pending = null;
        needsRegistration = false;
        lock (Gate)
        {
            if (!CanRun || _state is not { } state)
            {
                return false;
            }

            if ((_stale || CatchUpAgain) && _inFlight.Count == 0 && _open is null)
            {
                // Other instances committed since this replica last caught up (it put that off, or the catch-up
                // failed): catch up first, rather than run the body on old state and have its batch refused. Not
                // after two catch-ups that ended behind (_catchUpsBehind): then the batch goes, and may queue for the turn.
                BeginRecovery(broken: false);
                Recover();
                return false;
            }

            Interlocked.Exchange(ref _lastUsedTicks, Environment.TickCount64);
            var txn = new StateTransaction(state);
            try
            {
                value = StateTransaction.RunSynchronously(txn, body);
            }
            catch (BoardException refusal)
            {
                // A refusal is an answer read from the replica ("no such note", "stale token"): like any read
                // it stands only once Redis confirms the replica was current, so it rides in the next batch.
                pending = new PendingTxn(null, state.Head, refusal);
                (_open ??= new CommitBatch()).Add(pending);
                SendWhatFits();
                return true;
            }

            if (txn.Changes.Any(c => c.Kind == EventKind.WorkflowCreated) && !_store.IsRegistered(Id))
            {
                // The registry lives in another slot, so it cannot be written by the commit: register first.
                needsRegistration = true;
                return true;
            }

            var applied = txn.Changes.Count == 0
                ? null
                : state.Apply(txn.Changes, _options.MaxEventsPerWorkflow, EventRetention.Slack(_options.MaxEventsPerWorkflow, trimmingCostsIo: true));
            pending = new PendingTxn(applied, state.Head);
            (_open ??= new CommitBatch()).Add(pending);
            SendWhatFits();
            return true;
        }
    }

    /// <summary>Notifications of other instances' commits this replica got (for tests: whether they have arrived).</summary>
    internal long ForeignNotices
    {
        get
        {
            lock (Gate)
            {
                return _foreignNotices;
            }
        }
    }

    /// <summary>Other instances' commits were notified here that no catch-up has read yet.</summary>
    private bool Behind => _foreignNotices > _noticesCaughtUp;

    /// <summary>The replica may not be at the workflow's head: behind other instances' commits, or its last catch-up failed.</summary>
    private bool MustCatchUp => Behind || _stale;

    /// <summary>Behind, and not yet caught up twice in a row in vain (<see cref="_catchUpsBehind"/>): read the log before running bodies.</summary>
    private bool CatchUpAgain => Behind && _catchUpsBehind < CatchUpsBehindBeforeRunning;

    /// <summary>Committed events from <paramref name="from"/>, if this replica holds them; null to read Redis.</summary>
    public EventPage? TryReadEvents(long from, int limit)
    {
        lock (Gate)
        {
            // A replica that put off its catch-up would answer with a head that is not the workflow's.
            if (_state is not { } state || _recovery is not null || MustCatchUp)
            {
                return null;
            }

            if (state.Record is null)
            {
                return state.Head == _committedHead ? new EventPage(false, _committedHead, _committedHead + 1, []) : null;
            }

            var oldest = state.Oldest;
            var start = Math.Max(from, oldest);
            if (start > _committedHead)
            {
                return new EventPage(true, _committedHead, oldest, []);
            }

            return state.Recent.Read(start, _committedHead, limit) is { } events ? new EventPage(true, _committedHead, oldest, events) : null;
        }
    }

    /// <summary>
    /// Another instance committed a batch: this replica is behind. When something here waits for the
    /// workflow's events (<paramref name="eager"/>: a watcher, a waiting claim), it catches up from the log at
    /// once if it has nothing in flight, else once its own batches are answered (they will be refused).
    /// Otherwise it catches up only when next used (<see cref="TryRun"/>), in one read however many batches
    /// came in between: an instance that touched a workflow once would else read every batch that the
    /// instances working on it commit (measured: 2,526 reads in a 100,000-claim run). False when there is no
    /// loaded replica to bring along (the caller then informs watchers itself).
    /// </summary>
    public bool OnForeignCommit(string id, bool eager = true)
    {
        List<PendingTxn>? decided;
        lock (Gate)
        {
            if (_state is null || Evicted)
            {
                return false;
            }

            if (_committedId != id)
            {
                _foreignNotices++;
                if (eager && _recovery is null && _inFlight.Count == 0)
                {
                    BeginRecovery(broken: false);
                    Recover();
                }
            }

            decided = TakeDecided();
        }

        Complete(decided);
        return true;
    }

    /// <summary>Drops an idle replica; false if it has work in flight.</summary>
    public bool TryEvict()
    {
        lock (Gate)
        {
            if (_open is not null || _inFlight.Count > 0 || _recovery is not null || _loading is { IsCompleted: false })
            {
                return false;
            }

            Evicted = true;
            _state = null;
            return true;
        }
    }

    private void SendWhatFits()
    {
        while (_open is { } batch && _state is not null && _recovery is null && _inFlight.Count < _store.BatchesInFlight)
        {
            _open = null;
            _catchUpsBehind = 0;
            batch.PreviousId = _sentId;
            batch.Id = batch.HasWrites ? _store.InstanceId + ":" + (++_sequence).ToString(System.Globalization.CultureInfo.InvariantCulture) : _sentId;
            batch.Head = _state.Head;
            batch.Floor = _store.Watermark(Id);
            _sentId = batch.Id;
            // The state now holds exactly what Redis will hold once this batch commits (every decided transaction is in
            // it or in a batch before it), so its earliest timer is the workflow's after the commit.
            var args = batch.Arguments(_store.Keys.Channel(Id), _store.InstanceId, _state.Counts, _state.Timers!.Earliest(), _options.TurnLease, _options.TurnLength, _store.WaitsForReplicas);
            _inFlight.Enqueue(batch);
            // Sent under the lock: both connections write commands in the order they are issued, so the
            // batches of this workflow reach Redis in order (and should a batch take the other connection after
            // one broke, the commit's condition on the last batch keeps the order anyway).
            if (!_store.TrySendCommit(Id, args, (reply, error) => OnReply(batch, reply, error)))
            {
                _ = _store.CommitAsync(Id, args).ContinueWith(
                    static (t, state) =>
                    {
                        var (replica, batch) = ((WorkflowReplica, CommitBatch))state!;
                        CommitReply reply = default;
                        Exception? error = null;
                        try
                        {
                            reply = t.GetAwaiter().GetResult();
                        }
                        catch (Exception ex)
                        {
                            error = ex;
                        }

                        replica.OnReply(batch, reply, error);
                    },
                    (this, batch), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            }
        }
    }

    private void OnReply(CommitBatch batch, CommitReply reply, Exception? error)
    {
        List<PendingTxn>? decided;
        lock (Gate)
        {
            batch.Answer(reply, error ?? _store.ReplicationShortfall(reply));
            // Replies may be handled out of order; resolve them in send order.
            while (_inFlight.TryPeek(out var first) && first.Answered)
            {
                _inFlight.Dequeue();
                Resolve(first);
            }

            if (_inFlight.Count == 0 && _recovery is null && Behind)
            {
                // Another instance committed while ours were in flight, after them: catch up now.
                BeginRecovery(broken: false);
            }

            if (_inFlight.Count == 0 && _recovery is not null)
            {
                Recover();
            }
            else
            {
                SendWhatFits();
            }

            PassTurnIfIdle();
            decided = TakeDecided();
        }

        Complete(decided);
    }

    private void Resolve(CommitBatch batch)
    {
        if (batch.Error is { } ex)
        {
            // Whether it committed (or, after a script error, how much of it) is unknown: the callers hear
            // the failure, the replica is reloaded. Unless Redis refused the script before running it: then
            // it is undone like a batch refused by the script itself, and the replica is kept (a slot moving
            // for seconds would else have it loaded again, every record of it, after every failed batch).
            BeginRecovery(broken: !RedisStore.RefusedBeforeRunning(ex));
            _refused.Add(batch);
            var error = RedisStore.CommitFailure(ex);
            foreach (var txn in batch.Txns)
            {
                Decide(txn, false, error);
            }

            return;
        }

        var reply = batch.ReplyValue;
        if (reply.Code < 0)
        {
            var head = reply.Head;
            _store.CountRefusal();
            BeginRecovery(broken: false);
            _refused.Add(batch);
            if (head < _committedHead)
            {
                // Redis is behind what it acknowledged to this instance: it lost data.
                foreach (var txn in batch.Txns)
                {
                    Decide(txn, false, _store.LoseData($"workflow '{Id}' is at revision {head}, but this instance had committed up to {_committedHead}"));
                }

                _broken = true;
                return;
            }

            if (reply.Code == CommitReply.NotOurTurn)
            {
                // Not a lost race: this instance waits for its turn, and its callers run again after it.
                _store.CountTurnWait();
                if (reply.TurnHolder is { } holder)
                {
                    _store.TurnHeldElsewhere(Id, holder, reply.TurnLapsesIn);
                }

                // A batch whose calls all go to the holder did not queue: nobody will pass the turn here, so
                // there is nothing to wait for; calls that stay after all queue with their next batch.
                if (batch.QueuesForTurn)
                {
                    _turn ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    _turnLapsesIn = Math.Max(_turnLapsesIn, reply.TurnLapsesIn);
                }
            }

            foreach (var txn in batch.Txns)
            {
                Decide(txn, false, waitedForTurn: reply.Code == CommitReply.NotOurTurn);
            }

            return;
        }

        _turn = null;
        if (batch.HasWrites)
        {
            _committedHead = batch.Head;
            _committedId = batch.Id;
            _state!.DurableHead = _committedHead;
            _store.ObserveHead(Id, _committedHead, batch.Floor);
            foreach (var applied in batch.Applied)
            {
                _store.Publish(Id, applied.Events);
                if (applied.Events.Count > 0)
                {
                    _anchor = applied.Events[^1];
                }
            }

            _store.LowerTimerHint(Id, before: reply.TimerBefore, after: batch.NextTimer);
        }

        foreach (var txn in batch.Txns)
        {
            Decide(txn, true);
        }
    }

    private void Decide(PendingTxn txn, bool committed, Exception? error = null, bool waitedForTurn = false)
    {
        txn.Decide(committed, error, waitedForTurn);
        _decided.Add(txn);
    }

    /// <summary>Another instance waits for the workflow's turn, which this one held when it asked.</summary>
    public void OnTurnWanted()
    {
        lock (Gate)
        {
            _turnWanted = true;
            PassTurnIfIdle();
        }
    }

    /// <summary>
    /// A holder with batches to commit passes the turn in one of them once it has held it long enough; an idle
    /// one would keep it until it lapses, so it passes it when it stays idle for a moment. (Not at once: under
    /// load a holder is idle for a moment after each reply, until its callers' next calls arrive, and passing
    /// the turn then would cost the next holder a catch-up for every batch.) Goes through StackExchange.Redis,
    /// unordered with commits: a turn never decides what commits, only who waits.
    /// </summary>
    private void PassTurnIfIdle()
    {
        if (IdleAndWanted)
        {
            _ = PassTurnAsync();
        }
    }

    private bool IdleAndWanted => _turnWanted && _open is null && _inFlight.Count == 0 && _recovery is null && !Evicted;

    private async Task PassTurnAsync()
    {
        await Task.Delay(IdleBeforePassingTurn).ConfigureAwait(false);
        lock (Gate)
        {
            if (!IdleAndWanted)
            {
                return;
            }

            _turnWanted = false;
        }

        try
        {
            await _store.PassTurnAsync(Id).ConfigureAwait(false);
        }
        catch (Exception)
        {
            // The turn then lapses after its lease: a later wait, nothing lost.
        }
    }

    /// <summary>Another instance passed the workflow's turn to this one.</summary>
    public void OnTurnPassed()
    {
        lock (Gate)
        {
            // Before the refusal that makes this replica wait for it, too: the wait then ends at once.
            (_turn ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
        }
    }

    /// <summary>Takes the transactions decided so far (under the lock) to complete them after it.</summary>
    private List<PendingTxn>? TakeDecided()
    {
        if (_decided.Count == 0)
        {
            return null;
        }

        var decided = _decided;
        _decided = [];
        return decided;
    }

    private static void Complete(List<PendingTxn>? decided)
    {
        if (decided is not null)
        {
            foreach (var txn in decided)
            {
                txn.Complete();
            }
        }
    }

    private void BeginRecovery(bool broken)
    {
        _recovery ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _broken |= broken;
    }

    /// <param name="failure">Why the catch-up could not read the log: the callers waiting for the recovery hear it.</param>
    private void EndRecovery(BoardException? failure = null)
    {
        var recovery = _recovery;
        _recovery = null;
        _broken = false;
        if (failure is not null)
        {
            // Not tried again here: the next body or eager notice does, so an unavailable Redis is not read in a loop.
            recovery?.TrySetException(failure);
            _ = recovery?.Task.Exception;
            PassTurnIfIdle();
            return;
        }

        _catchUpsBehind = Behind ? _catchUpsBehind + 1 : 0;
        if (_state is not null && CatchUpAgain)
        {
            // Notified of a commit the catch-up may have read before it happened: read again.
            BeginRecovery(broken: false);
            _ = Task.Run(CatchUpAsync);
        }

        recovery?.TrySetResult();
        PassTurnIfIdle();
    }

    /// <summary>
    /// Nothing is in flight and something was refused or lost: undo every speculative change (the open
    /// batch, then the refused batches, newest first) so the replica is at its last commit, then catch up
    /// from the log; or drop the replica when undo cannot restore it or an outcome is unknown.
    /// </summary>
    private void Recover()
    {
        var state = _state!;
        var canUndo = !_broken;
        if (_open is { } open)
        {
            _open = null;
            canUndo = canUndo && UndoAll(state, open);
            foreach (var txn in open.Txns)
            {
                Decide(txn, false);
            }
        }

        for (var i = _refused.Count - 1; i >= 0 && canUndo; i--)
        {
            canUndo = UndoAll(state, _refused[i]);
        }

        _refused.Clear();
        _sentId = _committedId;
        if (!canUndo)
        {
            _state = null;
            _turn = null;
            EndRecovery();
            return;
        }

        _ = Task.Run(_turn is null ? CatchUpAsync : WaitForTurnThenCatchUpAsync);
    }

    /// <summary>
    /// Catches up once the turn is passed here, or once the other instance's turn lapses (it died, went idle
    /// or its notification was lost): only then can this instance's batches commit. Catching up before would
    /// read a log that the holder keeps extending.
    /// </summary>
    private async Task WaitForTurnThenCatchUpAsync()
    {
        Task passed;
        long lapsesIn;
        lock (Gate)
        {
            passed = _turn!.Task;
            lapsesIn = _turnLapsesIn;
        }

        // Redis's clock counts whole milliseconds: one more, so the retry does not come just before the lapse.
        await Task.WhenAny(passed, Task.Delay(TimeSpan.FromMilliseconds(lapsesIn + 1))).ConfigureAwait(false);
        lock (Gate)
        {
            _turn = null;
            _turnLapsesIn = 0;
        }

        await CatchUpAsync().ConfigureAwait(false);
    }

    private static bool UndoAll(WorkflowState state, CommitBatch batch)
    {
        for (var i = batch.Applied.Count - 1; i >= 0; i--)
        {
            if (!state.Undo(batch.Applied[i]))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// Reads the log after the last commit this replica knows and applies it, then lets bodies run again.
    /// A gap there (the workflow was deleted, or trimmed past us) or a failure drops the replica instead,
    /// and the next transaction loads it again.
    ///
    /// The read starts one event early, at the last one this replica committed or read, which must be in Redis
    /// unchanged. Why: after a failover to a node with another history (Sentinel's split brain: two primaries for a
    /// moment, each taking writes), Redis's head can be as high as ours while the revision we acknowledged holds
    /// another instance's write, say the same task claimed by someone else with the same fencing token. The head
    /// watermark cannot see that; this can, and the store then refuses with DATA_LOSS instead of going on.
    /// </summary>
    private async Task CatchUpAsync()
    {
        long notices;
        lock (Gate)
        {
            notices = _foreignNotices;
        }

        BoardException? failure = null;
        try
        {
            while (true)
            {
                long from;
                EventRecord? known;
                lock (Gate)
                {
                    from = _committedHead + 1;
                    known = _anchor is { } anchor && anchor.Revision == _committedHead ? anchor : null;
                }

                RedisStore.LogPage log;
                try
                {
                    log = await _store.ReadLogAsync(Id, known is null ? from : from - 1, 1000).ConfigureAwait(false);
                }
                catch (BoardException ex) when (ex.Error == BoardError.StoreUnavailable)
                {
                    // A failed read changed nothing: the replica is still at a commit of its own or read before, so it
                    // is kept, and caught up before it is used (_stale). Dropping it would cost a load of every record.
                    failure = ex;
                    lock (Gate)
                    {
                        _stale = true;
                    }

                    return;
                }
                if (log.Head < from - 1)
                {
                    throw _store.LoseData($"workflow '{Id}' is at revision {log.Head}, but this instance had committed up to {from - 1}");
                }

                IReadOnlyList<EventRecord> events = log.Events;
                if (known is not null)
                {
                    if (events.Count == 0 || events[0].Revision != from - 1)
                    {
                        // Trimmed past it (or deleted): nothing to compare with; loaded again, as for any gap.
                        lock (Gate)
                        {
                            _state = null;
                        }

                        return;
                    }

                    ExpectSameHistory(known, events[0]);
                    events = [.. events.Skip(1)];
                }

                lock (Gate)
                {
                    var state = _state!;
                    if (log.Head >= from && (events.Count == 0 || events[0].Revision != from))
                    {
                        _state = null;
                        return;
                    }

                    foreach (var e in events)
                    {
                        Replay(state, e);
                        _anchor = e;
                    }

                    state.Oldest = log.Oldest;
                    state.Recent.TrimBelow(log.Oldest);
                    _committedHead = state.Head;
                    state.DurableHead = _committedHead;
                    _store.Publish(Id, events);
                    if (state.Head == log.Head)
                    {
                        _stale = false;
                        _committedId = _sentId = log.BatchId;
                        _noticesCaughtUp = Math.Max(_noticesCaughtUp, notices);
                        return;
                    }
                }
            }
        }
        catch
        {
            lock (Gate)
            {
                _state = null;
            }
        }
        finally
        {
            lock (Gate)
            {
                EndRecovery(failure);
            }
        }
    }

    /// <summary>
    /// DATA_LOSS when Redis holds another change at the anchor's revision than the anchor: this replica committed or
    /// read the anchor there, so the history it acted on (and answered callers from) was replaced (<see cref="CatchUpAsync"/>).
    /// </summary>
    private void ExpectSameHistory(EventRecord anchor, EventRecord inRedis)
    {
        if (!RecordCodec.Encode(inRedis).AsSpan().SequenceEqual(RecordCodec.Encode(anchor)))
        {
            throw _store.LoseData($"workflow '{Id}' holds another change at revision {anchor.Revision} than the one this instance committed or read there (a failover to a node with another history?)");
        }
    }

    /// <summary>
    /// The same check for a replica loaded again (after a lost reply, say, or a failover that broke the connection): the
    /// anchor from before is read back from the log, unless it is beyond the head (the head watermark refuses that) or
    /// trimmed.
    /// </summary>
    private async Task ExpectSameHistoryAsync(EventRecord? anchor, long head)
    {
        if (anchor is null || anchor.Revision > head)
        {
            return;
        }

        var log = await _store.ReadLogAsync(Id, anchor.Revision, 1).ConfigureAwait(false);
        if (log.Events is [var inRedis, ..] && inRedis.Revision == anchor.Revision)
        {
            ExpectSameHistory(anchor, inRedis);
        }
    }

    /// <summary>
    /// Loads the workflow: where its log stands, then its tasks and notes in HSCAN steps (not atomic, so
    /// the log after that first position is replayed on top: each record ends at its last version up to
    /// the head of the last log read, which follows the scans).
    /// Every read says which node and history answered it (<see cref="Scripts.Lineage"/>), and the load starts over
    /// unless all name the one the first read did. A failover in between would otherwise mix two nodes: records scanned
    /// on the old primary, among them writes that no replica confirmed and the failover took back, kept under the new
    /// primary's log (and a scan cursor of one node used on another skips records). On one node, the last log read's
    /// WAIT covers everything the reads before it saw.
    /// </summary>
    private async Task LoadAsync()
    {
        _store.CountLoad();
        EventRecord? anchor;
        lock (Gate)
        {
            anchor = _anchor;
        }

        for (var attempt = 0; ; attempt++)
        {
            // Each read of the load checks the head it answers against the watermark from before it was sent, and
            // raises the watermark (ReadLogAsync): nothing to observe here afterwards.
            var start = await _store.ReadLogAsync(Id, long.MaxValue, 0, lineage: true).ConfigureAwait(false);
            var node = start.Lineage!;
            if (start.Head == 0)
            {
                // Nothing in Redis: a new workflow, unless Redis lost one (then a creation here would hand
                // out revisions and fencing tokens that were handed out before).
                await _store.ThrowIfLostAsync(Id).ConfigureAwait(false);
            }

            // The replica indexes its own timers: each commit tells Redis the earliest (the meta's nt), and the due
            // ones are read from this index (RedisStore.GetDueTimersAsync), not from a sorted set of every timer in Redis.
            WorkflowState? state = new WorkflowState(Id, _options.RecentEventsInMemory, new TimerIndex())
            {
                Head = start.Head,
                Oldest = start.Exists ? start.Oldest : start.Head + 1,
            };
            if (start.Exists)
            {
                if (await _store.ScanAsync(Id, "tasks", node).ConfigureAwait(false) is { } tasks
                    && await _store.ScanAsync(Id, "notes", node).ConfigureAwait(false) is { } notes
                    && await _store.ReadMetaForLoadAsync(Id).ConfigureAwait(false) is { } meta && meta.Lineage == node)
                {
                    foreach (var e in tasks.Concat(notes))
                    {
                        Replay(state, e, recordOnly: true);
                    }

                    state.Record = meta.Workflow;
                }
                else
                {
                    state = null;
                }
            }

            var from = start.Head + 1;
            while (state is not null)
            {
                var log = await _store.ReadLogAsync(Id, from, 1000, lineage: true).ConfigureAwait(false);
                if (log.Lineage != node)
                {
                    state = null;
                    break;
                }

                if (log.Head < start.Head)
                {
                    throw _store.LoseData($"workflow '{Id}' went back from revision {start.Head} to {log.Head} while it was loaded");
                }

                if (log.Head >= from && (log.Events.Count == 0 || log.Events[0].Revision != from))
                {
                    // Deleted or trimmed past the first position while we scanned: start over.
                    state = null;
                    break;
                }

                foreach (var e in log.Events)
                {
                    Replay(state, e);
                }

                if (log.Events.Count == 0 || log.Events[^1].Revision == log.Head)
                {
                    await ExpectSameHistoryAsync(anchor, log.Head).ConfigureAwait(false);
                    state.Head = log.Head;
                    state.Oldest = log.Exists ? log.Oldest : log.Head + 1;
                    state.DurableHead = state.Head;
                    lock (Gate)
                    {
                        _state = state;
                        _stale = false;
                        _anchor = log.Events.Count > 0 ? log.Events[^1] : anchor;
                        _noticesCaughtUp = _foreignNotices;
                        _committedHead = state.Head;
                        _committedId = _sentId = log.BatchId;
                    }

                    return;
                }

                from = log.Events[^1].Revision + 1;
            }

            if (attempt >= 10)
            {
                throw new BoardException(BoardError.StoreUnavailable, $"Workflow '{Id}' changed too fast, or moved between Redis nodes, while it was loaded; retry.");
            }
        }
    }

    /// <summary>
    /// Applies a committed event to the replica, unless the record already has that version or a newer
    /// one (a scanned record may be newer than the log position being replayed).
    /// </summary>
    private static void Replay(WorkflowState state, EventRecord e, bool recordOnly = false)
    {
        switch (e.Kind)
        {
            case EventKind.WorkflowCreated or EventKind.WorkflowUpdated:
                if (state.Record is null || state.Record.ModRevision < e.Revision)
                {
                    state.Record = e.Workflow;
                }

                break;
            case EventKind.WorkflowDeleted:
                state.Clear();
                state.Oldest = e.Revision + 1;
                break;
            case EventKind.NotePut:
                if (!state.Notes.TryGetValue(e.Note!.Key, out var note) || note.ModRevision < e.Revision)
                {
                    state.PutNote(e.Note);
                }

                break;
            case EventKind.NoteDeleted or EventKind.NoteExpired:
                if (state.Notes.TryGetValue(e.Note!.Key, out var old) && old.ModRevision < e.Revision)
                {
                    state.RemoveNote(e.Note.Key);
                }

                break;
            default:
                if (!state.Tasks.TryGetValue(e.Task!.Id, out var task) || task.ModRevision < e.Revision)
                {
                    state.PutTask(e.Task);
                }

                break;
        }

        if (recordOnly)
        {
            return;
        }

        if (e.Revision > state.Head)
        {
            state.Head = e.Revision;
        }

        if (e.Kind != EventKind.WorkflowDeleted)
        {
            if (state.Recent.Count > 0 && state.Recent.LastRevision + 1 != e.Revision)
            {
                state.Recent.Clear();
            }

            state.Recent.Add(e);
        }
    }
}
