namespace GrpcBoard.Store.Redis;

/// <summary>
/// The Lua scripts. StackExchange.Redis loads each once per server and calls it by SHA (EVALSHA, with EVAL
/// on NOSCRIPT). Every script gets the workflow's meta key as KEYS[1] (so the cluster routes it to the
/// workflow's slot) and derives the workflow's other keys from it; all share the {workflow} hash tag. KEYS[2] is a
/// key never written, which keeps a script from running while a cluster moves the slot (<see cref="RedisKeys.ScriptKeys"/>).
///
/// None of these scripts knows a coordination rule: the C# state machine decides every transition on an
/// instance's replica of the workflow, and the commit script only makes a batch of decided changes
/// atomic, conditional on the workflow being exactly as that replica believes.
/// </summary>
internal static class Scripts
{
    /// <summary>
    /// Commits one batch of transactions, if the workflow's last committed batch is still the one the
    /// batch was built on (ARGV[1], "" for none): any commit by another instance in between changed the
    /// workflow's <c>lb</c>, and this batch is refused whole (its transactions re-run on fresh state).
    /// Batch ids are unique, so a batch built on a predecessor that never committed can never pass.
    ///
    /// Turns: the condition on <c>lb</c> alone keeps the workflow correct, but two instances that both keep
    /// a batch in flight refuse each other's batches over and over, and the one whose catch-up is slower can
    /// lose every race (measured: 64 in a row, then ABORTED). So one instance at a time holds the workflow's
    /// turn (<c>w</c>: who, <c>wt</c>: since, <c>we</c>: until, in Redis's clock, ms). A batch from another
    /// instance while the turn is held is refused with -2 without being looked at, and its instance joins
    /// the queue (<c>wq</c>) and waits. The holder renews the turn with every commit that writes, and once it
    /// has held it for ARGV[9] ms, its next such commit passes the turn to the first instance in the queue and
    /// tells it so (PUBLISH "holder|>|next"). An instance that joins the queue tells the holder (PUBLISH
    /// "waiter|&lt;|holder"), which passes the turn once it has had nothing to commit for a moment
    /// (<see cref="PassTurn"/>). A turn nobody renews lapses after ARGV[8] ms (an instance that died) and is
    /// free to take. Turns decide only who waits, never what commits: that stays the condition on <c>lb</c>.
    /// A batch of reads only neither takes nor renews the turn (it writes nothing): it passes whoever holds
    /// the turn if its replica is current, and otherwise waits like any other batch.
    ///
    /// ARGV: expected batch id, new batch id, new head, channel, notification, the changes as MessagePack (""
    /// for a batch of reads only), this instance's id, turn lease (ms), turn length (ms), whether to queue for
    /// the turn when refused for it ("0": no, its calls go to the holder instead), whether a batch of reads
    /// only is followed by WAIT ("1": it then PUBLISHes on a channel nobody listens to, which replicas receive:
    /// WAIT is documented to cover the writes of its own connection, and this one makes that everything the reads
    /// saw, other instances' writes included; Redis 7.0 measured here waits that far without it), and for a batch
    /// that writes, when the workflow's earliest timer is due once it commits (ms, -1: none; the meta's nt). The
    /// changes: [events, ops], events = [revision, blob, ...], each op an array [code, ...]: D (delete the workflow's
    /// contents), W (event index: the workflow record), T and N (id, event index, ...: task and note
    /// records), X (note keys to delete), E (append the events to the log), O (oldest retained revision: trims the
    /// log below it), C (count field, value, ...). Records are stored as the event that last wrote them.
    ///
    /// Timers are not indexed here one by one: a sorted set of every lease (a ZADD per claim and a ZREM per completion)
    /// cost Redis's one thread about 13% of its CPU per claim (measured: docs/benchmarks.md). The instance that builds a
    /// batch knows the workflow's earliest timer after it, as exactly as it knows the head, and nt records it with the
    /// commit; the due timers themselves are read from a replica (<see cref="RedisStore.GetDueTimersAsync"/>).
    /// Returns {-2, head, lb, ms until the turn lapses, holder} when another instance holds the turn; {-1, head, lb}
    /// when refused; {0, head} for reads only (nothing written, so no fsync either); else {1, head, earliest
    /// timer before (nt before the commit; -1: none)}.
    /// </summary>
    public const string Commit = """
        local meta = KEYS[1]
        local base = string.sub(meta, 1, -5)
        local me = ARGV[7]
        local clock = redis.call('TIME')
        local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
        local m = redis.call('HMGET', meta, 'lb', 'head', 'w', 'wt', 'we', 'nt')
        local lb = m[1] or ''
        local head = tonumber(m[2] or '0')
        local holder, since, lapses = m[3], tonumber(m[4] or '0'), tonumber(m[5] or '0')
        local queue = base .. 'wq'
        if holder and holder ~= me and lapses > now then
          if ARGV[6] == '' and lb == ARGV[1] then
            if ARGV[11] == '1' then redis.call('PUBLISH', base .. 'rw', '') end
            return {0, head}
          end
          if ARGV[10] ~= '0' and not redis.call('LPOS', queue, me) then
            redis.call('RPUSH', queue, me)
            redis.call('PUBLISH', ARGV[4], me .. '|<|' .. holder)
          end
          return {-2, head, lb, lapses - now, holder}
        end
        if lb ~= ARGV[1] then
          return {-1, head, lb}
        end
        if ARGV[6] == '' then
          if ARGV[11] == '1' then redis.call('PUBLISH', base .. 'rw', '') end
          return {0, head}
        end
        if holder ~= me or lapses <= now then
          since = now
          redis.call('LREM', queue, 0, me)
        end
        local batch = cmsgpack.unpack(ARGV[6])
        local events, ops = batch[1], batch[2]
        for _, op in ipairs(ops) do
          local code = op[1]
          if code == 'T' or code == 'N' then
            local args = {}
            for i = 2, #op, 2 do
              args[#args + 1] = op[i]
              args[#args + 1] = events[2 * op[i + 1]]
            end
            redis.call('HSET', base .. (code == 'T' and 'tasks' or 'notes'), unpack(args))
          elseif code == 'E' then
            local log = base .. 'log'
            for i = 1, #events, 2 do
              redis.call('XADD', log, events[i] .. '-0', 'e', events[i + 1])
            end
          elseif code == 'X' then
            redis.call('HDEL', base .. 'notes', unpack(op, 2))
          elseif code == 'W' then
            redis.call('HSET', meta, 'rec', events[2 * op[2]])
          elseif code == 'D' then
            -- timers: the sorted set of every timer that data written before nt may still hold.
            redis.call('UNLINK', base .. 'tasks', base .. 'notes', base .. 'log', base .. 'timers')
            redis.call('HDEL', meta, 'rec')
          elseif code == 'O' then
            redis.call('HSET', meta, 'oldest', op[2])
            redis.call('XTRIM', base .. 'log', 'MINID', op[2] .. '-0')
          elseif code == 'C' then
            redis.call('HSET', meta, unpack(op, 2))
          else
            return redis.error_reply('unknown op ' .. tostring(code))
          end
        end
        local nextHolder = false
        if now - since >= tonumber(ARGV[9]) then
          nextHolder = redis.call('LPOP', queue)
        end
        if nextHolder then
          redis.call('HSET', meta, 'head', ARGV[3], 'lb', ARGV[2], 'w', nextHolder, 'wt', now, 'we', now + tonumber(ARGV[8]), 'nt', ARGV[12])
        else
          redis.call('HSET', meta, 'head', ARGV[3], 'lb', ARGV[2], 'w', me, 'wt', since, 'we', now + tonumber(ARGV[8]), 'nt', ARGV[12])
        end
        if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
        if nextHolder then redis.call('PUBLISH', ARGV[4], me .. '|>|' .. nextHolder) end
        return {1, tonumber(ARGV[3]), tonumber(m[6] or '-1')}
        """;

    /// <summary>
    /// The holder of the workflow's turn, idle, passes it to the first instance in the queue (see
    /// <see cref="Commit"/>). ARGV: this instance's id, turn lease (ms), channel. Returns 1 if it passed the turn.
    /// </summary>
    public const string PassTurn = """
        local meta = KEYS[1]
        local base = string.sub(meta, 1, -5)
        if redis.call('HGET', meta, 'w') ~= ARGV[1] then return 0 end
        local nextHolder = redis.call('LPOP', base .. 'wq')
        if not nextHolder then return 0 end
        local clock = redis.call('TIME')
        local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
        redis.call('HSET', meta, 'w', nextHolder, 'wt', now, 'we', now + tonumber(ARGV[2]))
        redis.call('PUBLISH', ARGV[3], ARGV[1] .. '|>|' .. nextHolder)
        return 1
        """;

    /// <summary>
    /// The workflow's log from a revision, with the meta it belongs to, read atomically. ARGV: from revision,
    /// count, whether a WAIT follows ("1": PUBLISH a notice nobody listens to first, as <see cref="Commit"/> does for
    /// reads), whether to add the node's lineage ("1", see <see cref="Lineage"/>). Returns {head, lb, oldest, exists,
    /// rev1, blob1, ...}, then the lineage if asked: events only when from is retained.
    /// </summary>
    public const string ReadLog = """
        local meta = KEYS[1]
        local base = string.sub(meta, 1, -5)
        if ARGV[3] == '1' then redis.call('PUBLISH', base .. 'rw', '') end
        """ + "\n" + Lineage + "\n" + """
        local m = redis.call('HMGET', meta, 'head', 'lb', 'oldest', 'rec')
        local head = tonumber(m[1] or '0')
        local oldest = tonumber(m[3] or '1')
        local exists = m[4] and 1 or 0
        local result = {head, m[2] or '', oldest, exists}
        local from = tonumber(ARGV[1])
        if exists == 1 and from >= oldest and from <= head then
          for _, entry in ipairs(redis.call('XRANGE', base .. 'log', from .. '-0', '+', 'COUNT', tonumber(ARGV[2]))) do
            result[#result + 1] = string.match(entry[1], '^(%d+)')
            result[#result + 1] = entry[2][2]
          end
        end
        if ARGV[4] == '1' then result[#result + 1] = lineage() end
        return result
        """;

    /// <summary>
    /// The workflow's meta hash (its record, task counts and head). ARGV: whether a WAIT follows ("1": PUBLISH a notice
    /// nobody listens to first, as <see cref="ReadLog"/> does), whether to add the node's lineage ("1", see
    /// <see cref="Lineage"/>). Returns HGETALL's {field1, value1, ...}, then the lineage if asked.
    /// </summary>
    public const string ReadMeta = """
        if ARGV[1] == '1' then redis.call('PUBLISH', string.sub(KEYS[1], 1, -5) .. 'rw', '') end
        """ + "\n" + Lineage + "\n" + """
        local result = redis.call('HGETALL', KEYS[1])
        if ARGV[2] == '1' then result[#result + 1] = lineage() end
        return result
        """;

    /// <summary>
    /// One HSCAN step of the workflow's tasks or notes, with the node's lineage (<see cref="Lineage"/>: a cursor means
    /// nothing on another node). ARGV: "tasks" or "notes", cursor, count. Returns {cursor, lineage, field1, value1, ...}.
    /// </summary>
    public const string Scan = """
        local base = string.sub(KEYS[1], 1, -5)
        """ + "\n" + Lineage + "\n" + """
        local r = redis.call('HSCAN', base .. ARGV[1], ARGV[2], 'COUNT', tonumber(ARGV[3]))
        local result = {r[1], lineage()}
        for _, x in ipairs(r[2]) do result[#result + 1] = x end
        return result
        """;

    /// <summary>
    /// A Lua function, lineage(), for the scripts above: which Redis process answers (its run id) and which history it
    /// holds (its replication id, new whenever a replica is promoted). Reads with the same lineage ran on one node, one
    /// after the other, so a WAIT after the last covers what all of them saw (<c>WorkflowReplica.LoadAsync</c>).
    /// </summary>
    internal const string Lineage = """
        local function lineage()
          local server = redis.call('INFO', 'server')
          local replication = redis.call('INFO', 'replication')
          return string.match(server, 'run_id:(%x+)') .. ':' .. string.match(replication, 'master_replid:(%x+)')
        end
        """;

    /// <summary>
    /// Registers a workflow id before its creation commits: in the registry (for listing) and in the
    /// creating set, atomically. KEYS: registry, creating (one slot). ARGV: workflow id.
    /// </summary>
    public const string Register = """
        redis.call('SADD', KEYS[2], ARGV[1])
        return redis.call('ZADD', KEYS[1], 0, ARGV[1])
        """;

    /// <summary>KEYS[1]: the hint set. ARGV: score, workflow, mode ("lt": lower only; "set": exact; "del").</summary>
    public const string Hint = """
        if ARGV[3] == 'del' then return redis.call('ZREM', KEYS[1], ARGV[2]) end
        if ARGV[3] == 'lt' then return redis.call('ZADD', KEYS[1], 'LT', ARGV[1], ARGV[2]) end
        return redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
        """;
}
