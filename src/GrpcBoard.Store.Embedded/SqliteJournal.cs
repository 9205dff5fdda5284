using Microsoft.Win32.SafeHandles;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Storage;
using Microsoft.Data.Sqlite;

namespace GrpcBoard.Store.Embedded;

/// <summary>
/// The durable half of the embedded store: one SQLite database in WAL mode, written by a single thread
/// that commits every queued transaction in one disk transaction (group commit). A transaction is
/// acknowledged only after the disk commit that holds it returns; with synchronous=FULL that commit has
/// been fsynced. One process owns a data directory at a time (an exclusive lock file). What a commit
/// writes, and how the store is loaded back, is in SqliteJournal.Layout.cs.
/// </summary>
internal sealed partial class SqliteJournal : IDisposable
{
    public const string DatabaseFileName = "board.db";
    private const string LockFileName = "board.lock";

    private readonly EmbeddedStoreOptions _options;
    private readonly string _connectionString;
    private readonly FileStream _lockFile;
    private readonly WorkQueue<JournalEntry> _queue = new();
    private readonly WorkQueue<List<JournalEntry>> _unsynced = new();
    private readonly Thread _writer;
    private readonly Thread? _syncer;
    private readonly object _walLock = new();
    private SafeFileHandle? _wal;
    private SqliteConnection _connection = null!;
    private Statements _statements = null!;
    private Action<List<JournalEntry>>? _onCommitted;
    private Action<List<JournalEntry>, Exception>? _onFailed;
    private Action<Exception>? _onFatal;
    private volatile Exception? _fatal;

    public SqliteJournal(EmbeddedStoreOptions options)
    {
        _options = options;
        var directory = Path.GetFullPath(options.DataDirectory!);
        Directory.CreateDirectory(directory);
        try
        {
            // Two processes on one directory would each believe they own every lease: refuse the second.
            _lockFile = new FileStream(Path.Combine(directory, LockFileName), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException ex)
        {
            throw new InvalidOperationException($"The data directory '{directory}' is in use by another GrpcBoard process.", ex);
        }

        _connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = Path.Combine(directory, DatabaseFileName),
            Mode = SqliteOpenMode.ReadWriteCreate,
            Cache = SqliteCacheMode.Private,
            Pooling = true,
        }.ToString();
        Open();
        _writer = new Thread(WriterLoop) { IsBackground = true, Name = "grpcboard-journal" };
        if (PipelinedSync)
        {
            _syncer = new Thread(SyncerLoop) { IsBackground = true, Name = "grpcboard-journal-sync" };
        }
    }

    /// <summary>
    /// FULL durability, pipelined: SQLite commits without syncing (synchronous=NORMAL, still crash-safe in
    /// WAL mode) and a second thread fsyncs the WAL, acknowledging each batch only after an fsync that
    /// started after its commit. The writer meanwhile commits the next batch, so the disk's sync latency no
    /// longer stalls the queue. Every acknowledged transaction is as durable as with SQLite's own FULL: its
    /// frames are in the WAL and the WAL is on disk (or a checkpoint, which SQLite syncs, moved them into
    /// the database file).
    /// </summary>
    private bool PipelinedSync => _options.Synchronous == "FULL";

    public string DatabasePath => Path.Combine(Path.GetFullPath(_options.DataDirectory!), DatabaseFileName);

    /// <summary>
    /// Starts the writer. <paramref name="onCommitted"/> runs in commit order once batches are durable;
    /// <paramref name="onFailed"/> on the writer thread when a commit fails (the store may reload);
    /// <paramref name="onFatal"/> once if the WAL cannot be synced (the journal then refuses everything).
    /// </summary>
    public void Start(Action<List<JournalEntry>> onCommitted, Action<List<JournalEntry>, Exception> onFailed, Action<Exception> onFatal)
    {
        _onCommitted = onCommitted;
        _onFailed = onFailed;
        _onFatal = onFatal;
        _writer.Start();
        _syncer?.Start();
    }

    public void Enqueue(JournalEntry entry)
    {
        if (!_queue.TryAdd(entry))
        {
            entry.MarkFailed(new ObjectDisposedException(nameof(SqliteJournal)));
        }
    }

    /// <summary>Takes every queued entry off the queue without writing it (after a failed commit).</summary>
    public List<JournalEntry> Drain() => _queue.TakeAll();

    /// <summary>Closes and reopens the connection: after a failed commit, what is on disk is the truth.</summary>
    public void Reopen()
    {
        _statements.Dispose();
        _connection.Dispose();
        SqliteConnection.ClearPool(_connection);
        Open();
    }

    /// <summary>A small durable write, to learn whether the disk takes commits again before the store resumes.</summary>
    public void Probe()
    {
        _options.BeforeCommit?.Invoke();
        Execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT); INSERT OR REPLACE INTO meta(key, value) VALUES('probe', datetime('now'));");
        if (PipelinedSync)
        {
            lock (_walLock)
            {
                RandomAccess.FlushToDisk(_wal!);
            }
        }
    }

    /// <summary>
    /// (Re)opens a handle on the WAL for fsync. Closing SQLite's last connection may delete the WAL and the
    /// next open create a new file, so after a reopen the handle must follow; the syncer never uses a stale one.
    /// </summary>
    private void OpenWal()
    {
        lock (_walLock)
        {
            _wal?.Dispose();
            _wal = File.OpenHandle(DatabasePath + "-wal", FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        }
    }

    public void Dispose()
    {
        _queue.Complete();
        if (_writer.IsAlive)
        {
            _writer.Join();
        }

        _unsynced.Complete();
        if (_syncer is { IsAlive: true })
        {
            _syncer.Join();
        }

        foreach (var entry in Drain())
        {
            entry.MarkFailed(new ObjectDisposedException(nameof(SqliteJournal)));
        }

        _wal?.Dispose();
        _statements.Dispose();
        _connection.Dispose();
        SqliteConnection.ClearPool(_connection);
        _lockFile.Dispose();
    }

    private void Execute(string sql)
    {
        using var cmd = _connection.CreateCommand();
        cmd.CommandText = sql;
        cmd.ExecuteNonQuery();
    }

    private void WriterLoop()
    {
        while (_queue.TakeAll(wait: true, max: _options.MaxTransactionsPerCommit) is { Count: > 0 } batch)
        {
            if (_fatal is { } fatal)
            {
                foreach (var entry in batch)
                {
                    entry.MarkFailed(fatal);
                }

                continue;
            }

            try
            {
                _options.BeforeCommit?.Invoke();
                using (var tx = _connection.BeginTransaction())
                {
                    _statements.Bind(tx);
                    WriteBatch(batch);
                    tx.Commit();
                }
            }
            catch (Exception ex)
            {
                // The store reloads from disk (Load), which also rebuilds what is not checkpointed.
                _onFailed!(batch, ex);
                continue;
            }

            if (PipelinedSync)
            {
                _unsynced.TryAdd(batch);
                // Commit again only once the syncer took this batch: a commit is durable only at an fsync, so
                // committing more often than the disk syncs buys nothing and splits the queue into small
                // batches (measured: five SQLite commits per fsync). Meanwhile the queue gathers the next batch.
                _unsynced.WaitUntilEmpty();
            }
            else
            {
                _onCommitted!(batch);
            }
        }
    }

    /// <summary>Makes committed batches durable with one WAL fsync for all of them, then acknowledges them in order.</summary>
    private void SyncerLoop()
    {
        while (_unsynced.TakeAll(wait: true) is { Count: > 0 } batches)
        {
            try
            {
                _options.BeforeSync?.Invoke();
                lock (_walLock)
                {
                    RandomAccess.FlushToDisk(_wal!);
                }
            }
            catch (Exception ex)
            {
                // Whether these commits reached the disk is unknown, and a later fsync may falsely succeed
                // after the kernel dropped the pages (PostgreSQL's "fsyncgate"). Refuse them and everything
                // after: the process must restart and recover from what is durable.
                // The store refuses first, then the callers hear of it: one that learns its write failed must find
                // the store down (a test saw the store healthy right after its call failed, once in .ci/run).
                _fatal = ex;
                _onFatal!(ex);
                foreach (var entry in batches.SelectMany(b => b).Concat(_unsynced.TakeAll().SelectMany(b => b)))
                {
                    entry.MarkFailed(ex);
                }

                continue;
            }

            foreach (var batch in batches)
            {
                _onCommitted!(batch);
            }
        }
    }
}
