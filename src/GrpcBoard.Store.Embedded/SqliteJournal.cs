using Microsoft.Win32.SafeHandles;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Storage;
using Microsoft.Data.Sqlite;

namespace GrpcBoard.Store.Embedded;

/// <summary>
/// The durable half of the embedded store: one SQLite database in WAL mode, written by a single thread
/// that commits every queued transaction in one disk transaction (group commit). A transaction is
/// acknowledged only after the disk commit that holds it returns; with synchronous=FULL that commit has
/// been fsynced. One process owns a data directory at a time (an exclusive lock file).
/// </summary>
internal sealed class SqliteJournal : IDisposable
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

    /// <summary>
    /// (Re)opens a handle on the WAL for fsync. Closing SQLite's last connection may delete the WAL and the
    /// next open create a new file, so after a reopen the handle must follow; the syncer never uses a stale one.
    /// </summary>
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

    private void OpenWal()
    {
        lock (_walLock)
        {
            _wal?.Dispose();
            _wal = File.OpenHandle(DatabasePath + "-wal", FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        }
    }

    public List<LoadedWorkflow> Load()
    {
        var workflows = new Dictionary<string, LoadedWorkflow>(StringComparer.Ordinal);
        using (var cmd = _connection.CreateCommand())
        {
            cmd.CommandText = "SELECT id, record, head, oldest FROM workflows";
            using var reader = cmd.ExecuteReader();
            while (reader.Read())
            {
                var id = reader.GetString(0);
                var record = reader.IsDBNull(1) ? null : RecordCodec.DecodeWorkflow((byte[])reader.GetValue(1));
                workflows[id] = new LoadedWorkflow(id, record, reader.GetInt64(2), reader.GetInt64(3), [], []);
            }
        }

        using (var cmd = _connection.CreateCommand())
        {
            cmd.CommandText = "SELECT workflow_id, record FROM tasks";
            using var reader = cmd.ExecuteReader();
            while (reader.Read())
            {
                if (workflows.TryGetValue(reader.GetString(0), out var w))
                {
                    w.Tasks.Add(RecordCodec.DecodeTask((byte[])reader.GetValue(1)));
                }
            }
        }

        using (var cmd = _connection.CreateCommand())
        {
            cmd.CommandText = "SELECT workflow_id, record FROM notes";
            using var reader = cmd.ExecuteReader();
            while (reader.Read())
            {
                if (workflows.TryGetValue(reader.GetString(0), out var w))
                {
                    w.Notes.Add(RecordCodec.DecodeNote((byte[])reader.GetValue(1)));
                }
            }
        }

        return [.. workflows.Values];
    }

    /// <summary>Durable events of a workflow with from &lt;= revision &lt;= upTo, on a reader connection of its own (WAL lets it run beside the writer).</summary>
    public List<EventRecord> ReadEvents(string workflowId, long from, long upTo, int limit)
    {
        using var connection = new SqliteConnection(_connectionString);
        connection.Open();
        using var cmd = connection.CreateCommand();
        cmd.CommandText = "SELECT record FROM events WHERE workflow_id = $w AND revision >= $from AND revision <= $to ORDER BY revision LIMIT $limit";
        cmd.Parameters.AddWithValue("$w", workflowId);
        cmd.Parameters.AddWithValue("$from", from);
        cmd.Parameters.AddWithValue("$to", upTo);
        cmd.Parameters.AddWithValue("$limit", limit);
        var result = new List<EventRecord>();
        using var reader = cmd.ExecuteReader();
        while (reader.Read())
        {
            result.Add(RecordCodec.DecodeEvent((byte[])reader.GetValue(0)));
        }

        return result;
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

    private void Open()
    {
        _connection = new SqliteConnection(_connectionString);
        _connection.Open();
        Execute($"PRAGMA journal_mode=WAL; PRAGMA synchronous={(PipelinedSync ? "FULL" : _options.Synchronous)}; PRAGMA foreign_keys=OFF; PRAGMA temp_store=MEMORY;");
        Execute("""
            CREATE TABLE IF NOT EXISTS workflows(id TEXT PRIMARY KEY, record BLOB, head INTEGER NOT NULL, oldest INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS tasks(workflow_id TEXT NOT NULL, id TEXT NOT NULL, record BLOB NOT NULL, PRIMARY KEY(workflow_id, id));
            CREATE TABLE IF NOT EXISTS notes(workflow_id TEXT NOT NULL, key TEXT NOT NULL, record BLOB NOT NULL, PRIMARY KEY(workflow_id, key));
            CREATE TABLE IF NOT EXISTS events(workflow_id TEXT NOT NULL, revision INTEGER NOT NULL, record BLOB NOT NULL, PRIMARY KEY(workflow_id, revision));
            """);
        _statements = new Statements(_connection);
        if (PipelinedSync)
        {
            // One commit with SQLite's own FULL sync first: it also syncs the directory entry of a WAL file
            // created by this open, which our fsync of the WAL's contents alone would not. Then the hot path
            // commits without syncing, and the syncer makes each batch durable before it is acknowledged.
            Execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT); INSERT OR REPLACE INTO meta(key, value) VALUES('opened', datetime('now'));");
            Execute("PRAGMA synchronous=NORMAL;");
            OpenWal();
        }
    }

    private void Execute(string sql)
    {
        using var cmd = _connection.CreateCommand();
        cmd.CommandText = sql;
        cmd.ExecuteNonQuery();
    }

    private void WriterLoop()
    {
        var heads = new Dictionary<WorkflowState, JournalEntry>();
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

            heads.Clear();
            try
            {
                _options.BeforeCommit?.Invoke();
                using (var tx = _connection.BeginTransaction())
                {
                    _statements.Bind(tx);
                    foreach (var entry in batch)
                    {
                        Write(entry);
                        heads[entry.State] = entry;
                    }

                    // The head row changes with every transaction; write it once per workflow per commit.
                    foreach (var last in heads.Values)
                    {
                        _statements.SetHead(last.State.Id, last.Head, last.Oldest);
                    }

                    tx.Commit();
                }
            }
            catch (Exception ex)
            {
                _onFailed!(batch, ex);
                continue;
            }

            if (PipelinedSync)
            {
                _unsynced.TryAdd(batch);
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
                _fatal = ex;
                foreach (var entry in batches.SelectMany(b => b).Concat(_unsynced.TakeAll().SelectMany(b => b)))
                {
                    entry.MarkFailed(ex);
                }

                _onFatal!(ex);
                continue;
            }

            foreach (var batch in batches)
            {
                _onCommitted!(batch);
            }
        }
    }

    private void Write(JournalEntry entry)
    {
        var id = entry.State.Id;
        if (entry.DeleteContents)
        {
            _statements.DeleteContents(id);
        }

        if (entry.WorkflowChanged)
        {
            _statements.UpsertWorkflow(id, entry.WorkflowBlob, entry.Head, entry.Oldest);
        }

        foreach (var (taskId, blob) in entry.Tasks)
        {
            _statements.UpsertTask(id, taskId, blob);
        }

        foreach (var (key, blob) in entry.Notes)
        {
            if (blob is null)
            {
                _statements.DeleteNote(id, key);
            }
            else
            {
                _statements.UpsertNote(id, key, blob);
            }
        }

        foreach (var (revision, blob) in entry.Events)
        {
            _statements.InsertEvent(id, revision, blob);
        }

        if (entry.TrimBelow > 0)
        {
            _statements.TrimEvents(id, entry.TrimBelow);
        }
    }

    /// <summary>Prepared statements of the writer connection, reused for every commit.</summary>
    private sealed class Statements : IDisposable
    {
        private readonly SqliteCommand _upsertWorkflow;
        private readonly SqliteCommand _setHead;
        private readonly SqliteCommand _upsertTask;
        private readonly SqliteCommand _upsertNote;
        private readonly SqliteCommand _deleteNote;
        private readonly SqliteCommand _insertEvent;
        private readonly SqliteCommand _trimEvents;
        private readonly SqliteCommand[] _deleteContents;
        private readonly SqliteCommand[] _all;

        public Statements(SqliteConnection connection)
        {
            _upsertWorkflow = Create(connection, "INSERT INTO workflows(id, record, head, oldest) VALUES($a, $b, $c, $d) ON CONFLICT(id) DO UPDATE SET record = excluded.record, head = excluded.head, oldest = excluded.oldest", 4);
            _setHead = Create(connection, "UPDATE workflows SET head = $b, oldest = $c WHERE id = $a", 3);
            _upsertTask = Create(connection, "INSERT INTO tasks(workflow_id, id, record) VALUES($a, $b, $c) ON CONFLICT(workflow_id, id) DO UPDATE SET record = excluded.record", 3);
            _upsertNote = Create(connection, "INSERT INTO notes(workflow_id, key, record) VALUES($a, $b, $c) ON CONFLICT(workflow_id, key) DO UPDATE SET record = excluded.record", 3);
            _deleteNote = Create(connection, "DELETE FROM notes WHERE workflow_id = $a AND key = $b", 2);
            _insertEvent = Create(connection, "INSERT INTO events(workflow_id, revision, record) VALUES($a, $b, $c)", 3);
            _trimEvents = Create(connection, "DELETE FROM events WHERE workflow_id = $a AND revision < $b", 2);
            _deleteContents =
            [
                Create(connection, "DELETE FROM tasks WHERE workflow_id = $a", 1),
                Create(connection, "DELETE FROM notes WHERE workflow_id = $a", 1),
                Create(connection, "DELETE FROM events WHERE workflow_id = $a", 1),
            ];
            _all = [_upsertWorkflow, _setHead, _upsertTask, _upsertNote, _deleteNote, _insertEvent, _trimEvents, .. _deleteContents];
        }

        public void Bind(SqliteTransaction tx)
        {
            foreach (var cmd in _all)
            {
                cmd.Transaction = tx;
            }
        }

        public void UpsertWorkflow(string id, byte[]? blob, long head, long oldest) =>
            Run(_upsertWorkflow, id, (object?)blob ?? DBNull.Value, head, oldest);

        public void SetHead(string id, long head, long oldest) => Run(_setHead, id, head, oldest);

        public void UpsertTask(string workflowId, string id, byte[] blob) => Run(_upsertTask, workflowId, id, blob);

        public void UpsertNote(string workflowId, string key, byte[] blob) => Run(_upsertNote, workflowId, key, blob);

        public void DeleteNote(string workflowId, string key) => Run(_deleteNote, workflowId, key);

        public void InsertEvent(string workflowId, long revision, byte[] blob) => Run(_insertEvent, workflowId, revision, blob);

        public void TrimEvents(string workflowId, long below) => Run(_trimEvents, workflowId, below);

        public void DeleteContents(string workflowId)
        {
            foreach (var cmd in _deleteContents)
            {
                Run(cmd, workflowId);
            }
        }

        public void Dispose()
        {
            foreach (var cmd in _all)
            {
                cmd.Dispose();
            }
        }

        private static void Run(SqliteCommand cmd, params object[] values)
        {
            for (var i = 0; i < values.Length; i++)
            {
                cmd.Parameters[i].Value = values[i];
            }

            cmd.ExecuteNonQuery();
        }

        private static SqliteCommand Create(SqliteConnection connection, string sql, int parameters)
        {
            var cmd = connection.CreateCommand();
            cmd.CommandText = sql;
            for (var i = 0; i < parameters; i++)
            {
                cmd.Parameters.Add(new SqliteParameter("$" + (char)('a' + i), null));
            }

            cmd.Prepare();
            return cmd;
        }
    }
}

internal sealed record LoadedWorkflow(string Id, WorkflowRecord? Record, long Head, long Oldest, List<TaskRecord> Tasks, List<NoteRecord> Notes);
