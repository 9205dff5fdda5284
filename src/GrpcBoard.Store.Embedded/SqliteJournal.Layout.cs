using System.Buffers.Binary;
using System.Globalization;
using GrpcBoard.Core.Model;
using GrpcBoard.Core.Storage;
using Microsoft.Data.Sqlite;

namespace GrpcBoard.Store.Embedded;

/// <summary>
/// What is on disk. A commit writes the log: for each workflow in the batch, one <c>log</c> row holding
/// all its new events, each of which carries the snapshot of what it changed. Record rows (<c>tasks</c>,
/// <c>notes</c>, <c>workflows</c>) are written by checkpoints, started at most every
/// <see cref="EmbeddedStoreOptions.CheckpointInterval"/> (or after <see cref="EmbeddedStoreOptions.CheckpointRecords"/>
/// changed records, or before history is trimmed): each changed record once with its last version, a few
/// per regular commit, and when all are written the workflow's <c>checkpoint</c> revision moves to the
/// head the checkpoint started at. Loading reads the record rows and replays the log after each
/// workflow's checkpoint. So a commit of a claim costs the bytes of its event, not a row per record and
/// per event; a task claimed and completed between two checkpoints has its row written once; and no
/// commit waits for a whole checkpoint.
/// </summary>
internal sealed partial class SqliteJournal
{
    /// <summary>PRAGMA user_version of this layout. 0 was a row per event plus a record row per change.</summary>
    private const int SchemaVersion = 2;

    /// <summary>Writer thread only: per workflow, what the log holds beyond its checkpoint and no run has taken yet.</summary>
    private Dictionary<string, Unchecked> _unchecked = new(StringComparer.Ordinal);

    /// <summary>Writer thread only: checkpoints in progress, oldest first, and by workflow.</summary>
    private readonly Queue<CheckpointRun> _runs = new();
    private readonly Dictionary<string, CheckpointRun> _runByWorkflow = new(StringComparer.Ordinal);
    private int _uncheckedRecords;
    private long _lastCheckpoint = Environment.TickCount64;


    /// <summary>
    /// Every workflow as of the last commit: the record rows, with the log after each workflow's checkpoint
    /// replayed on top (a record takes an event only if the event is newer). What was replayed is not
    /// checkpointed yet, so the writer starts again with it as its unchecked records.
    /// </summary>
    public List<LoadedWorkflow> Load()
    {
        var workflows = new Dictionary<string, (LoadedWorkflow Workflow, long Checkpoint, bool HasRow)>(StringComparer.Ordinal);
        using (var cmd = _connection.CreateCommand())
        {
            cmd.CommandText = "SELECT id, record, head, oldest, checkpoint FROM workflows";
            using var reader = cmd.ExecuteReader();
            while (reader.Read())
            {
                var id = reader.GetString(0);
                var record = reader.IsDBNull(1) ? null : RecordCodec.DecodeWorkflow((byte[])reader.GetValue(1));
                workflows[id] = (new LoadedWorkflow(id, record, reader.GetInt64(2), reader.GetInt64(3)), reader.GetInt64(4), true);
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
                    var task = RecordCodec.DecodeTask((byte[])reader.GetValue(1));
                    w.Workflow.Tasks[task.Id] = task;
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
                    var note = RecordCodec.DecodeNote((byte[])reader.GetValue(1));
                    w.Workflow.Notes[note.Key] = note;
                }
            }
        }

        _unchecked = new Dictionary<string, Unchecked>(StringComparer.Ordinal);
        _uncheckedRecords = 0;
        _runs.Clear();
        _runByWorkflow.Clear();
        using (var cmd = _connection.CreateCommand())
        {
            cmd.CommandText = """
                SELECT l.workflow_id, l.first_rev, l.events, COALESCE(w.checkpoint, 0)
                FROM log l LEFT JOIN workflows w ON w.id = l.workflow_id
                WHERE l.last_rev > COALESCE(w.checkpoint, 0)
                ORDER BY l.workflow_id, l.last_rev
                """;
            using var reader = cmd.ExecuteReader();
            while (reader.Read())
            {
                var id = reader.GetString(0);
                if (!workflows.TryGetValue(id, out var w))
                {
                    // Created after the last checkpoint, so it has no row yet: its log starts at its creation.
                    w = (new LoadedWorkflow(id, null, 0, reader.GetInt64(1)), 0, false);
                    workflows[id] = w;
                }

                var pending = UncheckedOf(id);
                foreach (var e in DecodeChunk((byte[])reader.GetValue(2)))
                {
                    if (e.Revision > w.Checkpoint)
                    {
                        Replay(w.Workflow, e, pending);
                    }
                }

                pending.Head = w.Workflow.Head;
                pending.Oldest = w.Workflow.Oldest;
                pending.HasRow = w.HasRow;
            }
        }

        return [.. workflows.Values.Select(w => w.Workflow)];
    }

    /// <summary>Durable events of a workflow with from &lt;= revision &lt;= upTo, on a reader connection of its own (WAL lets it run beside the writer).</summary>
    public List<EventRecord> ReadEvents(string workflowId, long from, long upTo, int limit)
    {
        using var connection = new SqliteConnection(_connectionString);
        connection.Open();
        using var cmd = connection.CreateCommand();
        cmd.CommandText = "SELECT events FROM log WHERE workflow_id = $w AND last_rev >= $from AND first_rev <= $to ORDER BY last_rev";
        cmd.Parameters.AddWithValue("$w", workflowId);
        cmd.Parameters.AddWithValue("$from", from);
        cmd.Parameters.AddWithValue("$to", upTo);
        var result = new List<EventRecord>();
        using var reader = cmd.ExecuteReader();
        while (result.Count < limit && reader.Read())
        {
            foreach (var e in DecodeChunk((byte[])reader.GetValue(0)))
            {
                if (e.Revision >= from && e.Revision <= upTo && result.Count < limit)
                {
                    result.Add(e);
                }
            }
        }

        return result;
    }

    private void Open()
    {
        _connection = new SqliteConnection(_connectionString);
        _connection.Open();
        Execute($"PRAGMA journal_mode=WAL; PRAGMA synchronous={(PipelinedSync ? "FULL" : _options.Synchronous)}; PRAGMA foreign_keys=OFF; PRAGMA temp_store=MEMORY;");
        var version = Convert.ToInt32(Scalar("PRAGMA user_version"), CultureInfo.InvariantCulture);
        var hasEventRows = Convert.ToInt64(Scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'events'"), CultureInfo.InvariantCulture) > 0;
        if (version > SchemaVersion)
        {
            throw new InvalidOperationException($"The data directory was written by a newer GrpcBoard (layout {version}; this one reads {SchemaVersion}).");
        }

        Execute("""
            CREATE TABLE IF NOT EXISTS workflows(id TEXT PRIMARY KEY, record BLOB, head INTEGER NOT NULL, oldest INTEGER NOT NULL, checkpoint INTEGER NOT NULL DEFAULT 0);
            CREATE TABLE IF NOT EXISTS tasks(workflow_id TEXT NOT NULL, id TEXT NOT NULL, record BLOB NOT NULL, PRIMARY KEY(workflow_id, id));
            CREATE TABLE IF NOT EXISTS notes(workflow_id TEXT NOT NULL, key TEXT NOT NULL, record BLOB NOT NULL, PRIMARY KEY(workflow_id, key));
            CREATE TABLE IF NOT EXISTS log(workflow_id TEXT NOT NULL, last_rev INTEGER NOT NULL, first_rev INTEGER NOT NULL, events BLOB NOT NULL, PRIMARY KEY(workflow_id, last_rev));
            """);
        if (hasEventRows)
        {
            MigrateFromEventRows();
        }

        Execute($"PRAGMA user_version = {SchemaVersion}");
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

    /// <summary>
    /// A data directory of the first layout (a row per event; record rows written by every commit, so all
    /// current) becomes this one in one transaction: its events into log rows, checkpoints at the heads.
    /// </summary>
    private void MigrateFromEventRows()
    {
        using var tx = _connection.BeginTransaction();
        SqliteCommand Command(string sql)
        {
            var cmd = _connection.CreateCommand();
            cmd.Transaction = tx;
            cmd.CommandText = sql;
            return cmd;
        }

        using (var columns = Command("SELECT count(*) FROM pragma_table_info('workflows') WHERE name = 'checkpoint'"))
        {
            if (Convert.ToInt64(columns.ExecuteScalar(), CultureInfo.InvariantCulture) == 0)
            {
                using var add = Command("ALTER TABLE workflows ADD COLUMN checkpoint INTEGER NOT NULL DEFAULT 0");
                add.ExecuteNonQuery();
            }
        }

        using (var checkpoints = Command("UPDATE workflows SET checkpoint = head"))
        {
            checkpoints.ExecuteNonQuery();
        }

        using (var read = Command("SELECT workflow_id, revision, record FROM events ORDER BY workflow_id, revision"))
        using (var insert = Command("INSERT INTO log(workflow_id, last_rev, first_rev, events) VALUES($w, $last, $first, $events)"))
        {
            var chunk = new List<(long Revision, byte[] Blob)>();
            string? current = null;
            void Flush()
            {
                if (chunk.Count > 0)
                {
                    insert.Parameters.Clear();
                    insert.Parameters.AddWithValue("$w", current);
                    insert.Parameters.AddWithValue("$last", chunk[^1].Revision);
                    insert.Parameters.AddWithValue("$first", chunk[0].Revision);
                    insert.Parameters.AddWithValue("$events", EncodeChunk(chunk));
                    insert.ExecuteNonQuery();
                    chunk.Clear();
                }
            }

            using (var reader = read.ExecuteReader())
            {
                while (reader.Read())
                {
                    var id = reader.GetString(0);
                    if (id != current || chunk.Count == 256)
                    {
                        Flush();
                        current = id;
                    }

                    chunk.Add((reader.GetInt64(1), (byte[])reader.GetValue(2)));
                }
            }

            Flush();
        }

        using (var drop = Command("DROP TABLE events"))
        {
            drop.ExecuteNonQuery();
        }

        tx.Commit();
    }

    private object? Scalar(string sql)
    {
        using var cmd = _connection.CreateCommand();
        cmd.CommandText = sql;
        return cmd.ExecuteScalar();
    }

    /// <summary>
    /// Writes one batch inside the open transaction: per workflow, one log row with all its new events. Then
    /// checkpoints advance: a few records per commit (<see cref="Advance"/>), so that none stalls the commit
    /// pipeline; a checkpoint starts for every workflow with changes when the last start is old enough or
    /// too many records are unchecked, and for a workflow whose history is to be trimmed (the trimmed
    /// events may hold a record's only copy, so the trim waits for its checkpoint).
    /// </summary>
    private void WriteBatch(List<JournalEntry> batch)
    {
        var chunks = new Dictionary<string, List<(long Revision, byte[] Blob)>>(StringComparer.Ordinal);
        var trimming = new HashSet<string>(StringComparer.Ordinal);
        foreach (var entry in batch)
        {
            var id = entry.State.Id;
            var pending = UncheckedOf(id);
            if (entry.DeleteContents)
            {
                // Everything of the workflow so far goes, and its row says so at once: what follows the
                // deletion is in the log after it, and in the unchecked records.
                chunks.Remove(id);
                if (_runByWorkflow.Remove(id, out var run))
                {
                    run.Cancelled = true;
                }

                _statements.DeleteContents(id);
                _uncheckedRecords -= pending.Count;
                pending.Clear();
                _statements.UpsertWorkflow(id, null, entry.DeletedAt, entry.DeletedAt + 1);
                pending.HasRow = true;
                pending.WorkflowChanged = false;
            }

            if (entry.Workflow is { } workflow)
            {
                pending.Workflow = workflow;
                pending.WorkflowChanged = true;
            }

            foreach (var task in entry.Tasks)
            {
                _uncheckedRecords += pending.Tasks.TryAdd(task.Id, task) ? 1 : 0;
                pending.Tasks[task.Id] = task;
            }

            foreach (var (key, note) in entry.Notes)
            {
                _uncheckedRecords += pending.Notes.TryAdd(key, note) ? 1 : 0;
                pending.Notes[key] = note;
            }

            if (entry.Events.Count > 0)
            {
                if (!chunks.TryGetValue(id, out var chunk))
                {
                    chunks[id] = chunk = [];
                }

                chunk.AddRange(entry.Events);
            }

            pending.Head = entry.Head;
            pending.Oldest = entry.Oldest;
            if (entry.TrimBelow > 0)
            {
                pending.TrimBelow = Math.Max(pending.TrimBelow, entry.TrimBelow);
                trimming.Add(id);
            }
        }

        foreach (var (id, chunk) in chunks)
        {
            _statements.InsertLog(id, chunk[^1].Revision, chunk[0].Revision, EncodeChunk(chunk));
        }

        if (_uncheckedRecords >= _options.CheckpointRecords
            || Environment.TickCount64 - _lastCheckpoint >= _options.CheckpointInterval.TotalMilliseconds)
        {
            foreach (var id in _unchecked.Keys.ToArray())
            {
                StartCheckpoint(id);
            }

            _lastCheckpoint = Environment.TickCount64;
        }
        else
        {
            foreach (var id in trimming)
            {
                StartCheckpoint(id);
            }
        }

        // Enough to keep up with the records a busy commit changes, and to work off a backlog.
        Advance(Math.Max(_options.CheckpointRecordsPerCommit, 4 * batch.Count));
    }

    /// <summary>
    /// Starts a checkpoint of a workflow: its unchecked records, as of its head now, move into a run that
    /// later commits write. One run per workflow at a time; records changed meanwhile wait for the next.
    /// </summary>
    private void StartCheckpoint(string id)
    {
        if (_runByWorkflow.ContainsKey(id) || !_unchecked.Remove(id, out var pending))
        {
            return;
        }

        _uncheckedRecords -= pending.Count;
        var run = new CheckpointRun(id, pending);
        _runs.Enqueue(run);
        _runByWorkflow[id] = run;
    }

    /// <summary>Writes up to <paramref name="budget"/> records of the runs in progress, oldest run first, and completes the runs written out.</summary>
    private void Advance(int budget)
    {
        while (_runs.TryPeek(out var run))
        {
            if (run.Cancelled)
            {
                _runs.Dequeue();
                continue;
            }

            while (budget > 0 && run.Tasks.TryDequeue(out var task))
            {
                _statements.UpsertTask(run.Id, task.Id, RecordCodec.Encode(task));
                budget--;
            }

            while (budget > 0 && run.Notes.TryDequeue(out var n))
            {
                if (n.Note is null)
                {
                    _statements.DeleteNote(run.Id, n.Key);
                }
                else
                {
                    _statements.UpsertNote(run.Id, n.Key, RecordCodec.Encode(n.Note));
                }

                budget--;
            }

            if (run.Tasks.Count > 0 || run.Notes.Count > 0)
            {
                return;
            }

            // Every record as of the run's head is in its row: the checkpoint moves there.
            var p = run.Pending;
            if (p.WorkflowChanged || !p.HasRow)
            {
                _statements.UpsertWorkflow(run.Id, p.Workflow is null ? null : RecordCodec.Encode(p.Workflow), p.Head, p.Oldest);
            }
            else
            {
                _statements.SetCheckpoint(run.Id, p.Head, p.Oldest);
            }

            // Below the checkpoint, the rows hold every record's last version; above it, the log does.
            if (Math.Min(p.TrimBelow, p.Head + 1) is var trimBelow and > 0)
            {
                _statements.TrimLog(run.Id, trimBelow);
            }

            _runs.Dequeue();
            _runByWorkflow.Remove(run.Id);
            if (_unchecked.TryGetValue(run.Id, out var next) && next.TrimBelow > 0)
            {
                // A trim came while this run was under way: the next run makes it possible.
                StartCheckpoint(run.Id);
            }
        }
    }

    /// <summary>A checkpoint in progress: the records of one workflow as of <see cref="Unchecked.Head"/>, a few written per commit.</summary>
    private sealed class CheckpointRun(string id, Unchecked pending)
    {
        public string Id { get; } = id;

        public Unchecked Pending { get; } = pending;

        public Queue<TaskRecord> Tasks { get; } = new(pending.Tasks.Values);

        public Queue<(string Key, NoteRecord? Note)> Notes { get; } = new(pending.Notes.Select(n => (n.Key, n.Value)));

        /// <summary>The workflow was deleted meanwhile: its records are gone, and so is this run.</summary>
        public bool Cancelled { get; set; }
    }

    private Unchecked UncheckedOf(string workflowId)
    {
        if (!_unchecked.TryGetValue(workflowId, out var pending))
        {
            // A workflow with a row that was checkpointed before keeps its record there; a new one is created
            // with its first checkpoint. Either way the row of an existing workflow is only updated.
            _unchecked[workflowId] = pending = new Unchecked { HasRow = true };
        }

        return pending;
    }

    /// <summary>Applies a logged event to a loaded workflow if it is newer than what the record rows hold.</summary>
    private void Replay(LoadedWorkflow w, EventRecord e, Unchecked pending)
    {
        w.Head = Math.Max(w.Head, e.Revision);
        switch (e.Kind)
        {
            case EventKind.WorkflowCreated or EventKind.WorkflowUpdated:
                if (w.Record is null || w.Record.ModRevision < e.Revision)
                {
                    w.Record = e.Workflow;
                    pending.Workflow = e.Workflow;
                    pending.WorkflowChanged = true;
                }

                break;
            case EventKind.NotePut:
                if (!w.Notes.TryGetValue(e.Note!.Key, out var note) || note.ModRevision < e.Revision)
                {
                    w.Notes[e.Note.Key] = e.Note;
                    _uncheckedRecords += pending.Notes.TryAdd(e.Note.Key, e.Note) ? 1 : 0;
                    pending.Notes[e.Note.Key] = e.Note;
                }

                break;
            case EventKind.NoteDeleted or EventKind.NoteExpired:
                if (w.Notes.TryGetValue(e.Note!.Key, out var old) && old.ModRevision < e.Revision)
                {
                    w.Notes.Remove(e.Note.Key);
                    _uncheckedRecords += pending.Notes.TryAdd(e.Note.Key, null) ? 1 : 0;
                    pending.Notes[e.Note.Key] = null;
                }

                break;
            default:
                if (!w.Tasks.TryGetValue(e.Task!.Id, out var task) || task.ModRevision < e.Revision)
                {
                    w.Tasks[e.Task.Id] = e.Task;
                    _uncheckedRecords += pending.Tasks.TryAdd(e.Task.Id, e.Task) ? 1 : 0;
                    pending.Tasks[e.Task.Id] = e.Task;
                }

                break;
        }
    }

    /// <summary>A log row's events: each as a 4-byte little-endian length, then the event's blob.</summary>
    private static byte[] EncodeChunk(List<(long Revision, byte[] Blob)> events)
    {
        var length = 0;
        foreach (var (_, blob) in events)
        {
            length += 4 + blob.Length;
        }

        var chunk = new byte[length];
        var at = 0;
        foreach (var (_, blob) in events)
        {
            BinaryPrimitives.WriteInt32LittleEndian(chunk.AsSpan(at), blob.Length);
            blob.CopyTo(chunk, at + 4);
            at += 4 + blob.Length;
        }

        return chunk;
    }

    private static IEnumerable<EventRecord> DecodeChunk(byte[] chunk)
    {
        var at = 0;
        while (at < chunk.Length)
        {
            var length = BinaryPrimitives.ReadInt32LittleEndian(chunk.AsSpan(at));
            yield return RecordCodec.DecodeEvent(new ReadOnlyMemory<byte>(chunk, at + 4, length));
            at += 4 + length;
        }
    }

    /// <summary>What the log holds of one workflow beyond its checkpoint: the last version of each record.</summary>
    private sealed class Unchecked
    {
        public Dictionary<string, TaskRecord> Tasks { get; } = new(StringComparer.Ordinal);

        /// <summary>Null: deleted.</summary>
        public Dictionary<string, NoteRecord?> Notes { get; } = new(StringComparer.Ordinal);

        public WorkflowRecord? Workflow { get; set; }

        /// <summary>The workflow record changed (created, updated or deleted): the checkpoint rewrites the whole row.</summary>
        public bool WorkflowChanged { get; set; }

        /// <summary>False for a workflow loaded from the log alone: its first checkpoint creates its row.</summary>
        public bool HasRow { get; set; }

        public long Head { get; set; }

        public long Oldest { get; set; }

        public long TrimBelow { get; set; }

        public int Count => Tasks.Count + Notes.Count;

        public void Clear()
        {
            Tasks.Clear();
            Notes.Clear();
            Workflow = null;
            TrimBelow = 0;
        }
    }

    /// <summary>Prepared statements of the writer connection, reused for every commit.</summary>
    private sealed class Statements : IDisposable
    {
        private readonly SqliteCommand _upsertWorkflow;
        private readonly SqliteCommand _setCheckpoint;
        private readonly SqliteCommand _upsertTask;
        private readonly SqliteCommand _upsertNote;
        private readonly SqliteCommand _deleteNote;
        private readonly SqliteCommand _insertLog;
        private readonly SqliteCommand _trimLog;
        private readonly SqliteCommand[] _deleteContents;
        private readonly SqliteCommand[] _all;

        public Statements(SqliteConnection connection)
        {
            _upsertWorkflow = Create(connection, "INSERT INTO workflows(id, record, head, oldest, checkpoint) VALUES($a, $b, $c, $d, $c) ON CONFLICT(id) DO UPDATE SET record = excluded.record, head = excluded.head, oldest = excluded.oldest, checkpoint = excluded.checkpoint", 4);
            _setCheckpoint = Create(connection, "UPDATE workflows SET head = $b, checkpoint = $b, oldest = $c WHERE id = $a", 3);
            _upsertTask = Create(connection, "INSERT INTO tasks(workflow_id, id, record) VALUES($a, $b, $c) ON CONFLICT(workflow_id, id) DO UPDATE SET record = excluded.record", 3);
            _upsertNote = Create(connection, "INSERT INTO notes(workflow_id, key, record) VALUES($a, $b, $c) ON CONFLICT(workflow_id, key) DO UPDATE SET record = excluded.record", 3);
            _deleteNote = Create(connection, "DELETE FROM notes WHERE workflow_id = $a AND key = $b", 2);
            _insertLog = Create(connection, "INSERT INTO log(workflow_id, last_rev, first_rev, events) VALUES($a, $b, $c, $d)", 4);
            _trimLog = Create(connection, "DELETE FROM log WHERE workflow_id = $a AND last_rev < $b", 2);
            _deleteContents =
            [
                Create(connection, "DELETE FROM tasks WHERE workflow_id = $a", 1),
                Create(connection, "DELETE FROM notes WHERE workflow_id = $a", 1),
                Create(connection, "DELETE FROM log WHERE workflow_id = $a", 1),
            ];
            _all = [_upsertWorkflow, _setCheckpoint, _upsertTask, _upsertNote, _deleteNote, _insertLog, _trimLog, .. _deleteContents];
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

        public void SetCheckpoint(string id, long head, long oldest) => Run(_setCheckpoint, id, head, oldest);

        public void UpsertTask(string workflowId, string id, byte[] blob) => Run(_upsertTask, workflowId, id, blob);

        public void UpsertNote(string workflowId, string key, byte[] blob) => Run(_upsertNote, workflowId, key, blob);

        public void DeleteNote(string workflowId, string key) => Run(_deleteNote, workflowId, key);

        public void InsertLog(string workflowId, long lastRevision, long firstRevision, byte[] events) => Run(_insertLog, workflowId, lastRevision, firstRevision, events);

        public void TrimLog(string workflowId, long below) => Run(_trimLog, workflowId, below);

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

/// <summary>A workflow as loaded: its record rows with its log replayed on top.</summary>
internal sealed class LoadedWorkflow(string id, WorkflowRecord? record, long head, long oldest)
{
    public string Id { get; } = id;

    public WorkflowRecord? Record { get; set; } = record;

    public long Head { get; set; } = head;

    public long Oldest { get; set; } = oldest;

    public Dictionary<string, TaskRecord> Tasks { get; } = new(StringComparer.Ordinal);

    public SortedDictionary<string, NoteRecord> Notes { get; } = new(StringComparer.Ordinal);
}
