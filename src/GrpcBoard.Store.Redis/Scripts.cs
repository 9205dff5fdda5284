namespace GrpcBoard.Store.Redis;

/// <summary>
/// The Lua scripts. StackExchange.Redis loads each once per server and calls it by SHA (EVALSHA, with EVAL
/// on NOSCRIPT). Every script gets the workflow's meta key as KEYS[1] (so the cluster routes it to the
/// workflow's slot) and derives the workflow's other keys from it; all share the {workflow} hash tag.
///
/// None of these scripts knows a coordination rule. The commit script is a generic "check what I read,
/// then write what I computed" step: the C# state machine decides every transition and every index
/// entry, the script makes it atomic and assigns revisions.
/// </summary>
internal static class Scripts
{
    /// <summary>
    /// ARGV: checks count, then (kind, id, expected) triples (kind w: the workflow's mod revision, t: a
    /// task's, n: a note's, d: the version of a task's dependents set, h: the head revision); changes count, then
    /// (op, id, record blob, event blob) quads; index-op count, then (op, key suffix, member, value) quads;
    /// max events, trim slack, channel. Returns {-1, kind, id} on a failed check, else {head, earliest timer after,
    /// earliest timer before (-1: none)}.
    /// </summary>
    public const string Commit = """
        local meta = KEYS[1]
        local base = string.sub(meta, 1, -5)
        local i = 1
        local checks = tonumber(ARGV[i]); i = i + 1
        for _ = 1, checks do
          local kind, id, expected = ARGV[i], ARGV[i + 1], ARGV[i + 2]; i = i + 3
          local current
          if kind == 'w' then current = redis.call('HGET', meta, 'wmod')
          elseif kind == 't' then current = redis.call('HGET', base .. 'trev', id)
          elseif kind == 'n' then current = redis.call('HGET', base .. 'nrev', id)
          elseif kind == 'd' then current = redis.call('HGET', base .. 'depver', id)
          else current = redis.call('HGET', meta, 'head') end
          if (current or '0') ~= expected then return {-1, kind, id} end
        end
        local changes = tonumber(ARGV[i]); i = i + 1
        if changes == 0 then return {tonumber(redis.call('HGET', meta, 'head') or '0'), -1} end
        local head = redis.call('HINCRBY', meta, 'head', changes)
        local first = head - changes + 1
        local published = {}
        for n = 0, changes - 1 do
          local op, id, rec, ev = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]; i = i + 4
          local rev = first + n
          if op == 'W' then
            if redis.call('HEXISTS', meta, 'rec') == 0 then
              redis.call('HSET', meta, 'oldest', rev)
            end
            redis.call('HSET', meta, 'rec', rec, 'wmod', rev)
          elseif op == 'D' then
            local queues = redis.call('HVALS', base .. 'readyq')
            for _, q in ipairs(queues) do redis.call('UNLINK', base .. q) end
            local deps = redis.call('SMEMBERS', base .. 'depkeys')
            for _, d in ipairs(deps) do redis.call('UNLINK', base .. 'deps:' .. d) end
            redis.call('UNLINK', base .. 'tasks', base .. 'trev', base .. 'tids', base .. 'notes', base .. 'nrev', base .. 'nkeys',
              base .. 'timers', base .. 'log', base .. 'readyq', base .. 'depkeys', base .. 'depver', base .. 'reserved')
            redis.call('HDEL', meta, 'rec', 'wmod', 'c1', 'c2', 'c3', 'c4', 'c5', 'c6', 'c7')
            redis.call('HSET', meta, 'oldest', rev + 1)
          elseif op == 'T' then
            redis.call('HSET', base .. 'tasks', id, rec)
            redis.call('HSET', base .. 'trev', id, rev)
            redis.call('ZADD', base .. 'tids', 0, id)
          elseif op == 'N' then
            redis.call('HSET', base .. 'notes', id, rec)
            redis.call('HSET', base .. 'nrev', id, rev)
            redis.call('ZADD', base .. 'nkeys', 0, id)
          elseif op == 'X' then
            redis.call('HDEL', base .. 'notes', id)
            redis.call('HDEL', base .. 'nrev', id)
            redis.call('ZREM', base .. 'nkeys', id)
          end
          if op ~= 'D' then
            redis.call('XADD', base .. 'log', rev .. '-0', 'e', ev)
          end
          published[#published + 1] = rev .. ':' .. string.len(ev) .. ':' .. ev
        end
        local before = redis.call('ZRANGE', base .. 'timers', 0, 0, 'WITHSCORES')
        local ops = tonumber(ARGV[i]); i = i + 1
        for _ = 1, ops do
          local op, key, member, value = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]; i = i + 4
          if op == 'za' then redis.call('ZADD', base .. key, value, member)
          elseif op == 'zr' then redis.call('ZREM', base .. key, member)
          elseif op == 'sa' then redis.call('SADD', base .. key, member)
          elseif op == 'ha' then redis.call('HSET', base .. key, member, value)
          elseif op == 'hi' then redis.call('HINCRBY', meta, member, value)
          elseif op == 'hk' then redis.call('HINCRBY', base .. key, member, value) end
        end
        local maxEvents, slack, channel = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), ARGV[i + 2]
        local oldest = tonumber(redis.call('HGET', meta, 'oldest') or '1')
        -- EventRetention.TrimTo, evaluated here because only this script knows the new head.
        if head - oldest + 1 > maxEvents + slack then
          oldest = head - maxEvents + 1
          redis.call('XTRIM', base .. 'log', 'MINID', oldest .. '-0')
          redis.call('HSET', meta, 'oldest', oldest)
        end
        redis.call('PUBLISH', channel, table.concat(published))
        local earliest = redis.call('ZRANGE', base .. 'timers', 0, 0, 'WITHSCORES')
        return {head, earliest[2] and tonumber(earliest[2]) or -1, before[2] and tonumber(before[2]) or -1}
        """;

    /// <summary>ARGV: task ids. Returns flat {blob or false, mod revision or false, ...} in the same order.</summary>
    public const string GetTasks = """
        local base = string.sub(KEYS[1], 1, -5)
        local result = {}
        for n = 1, #ARGV do
          result[#result + 1] = redis.call('HGET', base .. 'tasks', ARGV[n])
          result[#result + 1] = redis.call('HGET', base .. 'trev', ARGV[n])
        end
        return result
        """;

    /// <summary>ARGV: note key. Returns {blob or false, mod revision or false}.</summary>
    public const string GetNote = """
        local base = string.sub(KEYS[1], 1, -5)
        return {redis.call('HGET', base .. 'notes', ARGV[1]), redis.call('HGET', base .. 'nrev', ARGV[1])}
        """;

    /// <summary>
    /// Reserves the best ready task a worker may take: pops it from its ready queue into the reservation
    /// set (entry "queue|member|mod revision", scored by its expiry) and returns {entry, blob, rev}, or {}
    /// when nothing is ready. Only the reserving transaction tries to claim it, so concurrent claimers take
    /// successive tasks instead of racing for one. Expired reservations (a claimer that died) go back to
    /// their queue first, if the task did not change meanwhile. ARGV: now (ms), expiry (ms), skills...
    /// </summary>
    public const string Reserve = """
        local base = string.sub(KEYS[1], 1, -5)
        local now = tonumber(ARGV[1])
        for _, entry in ipairs(redis.call('ZRANGEBYSCORE', base .. 'reserved', '-inf', now, 'LIMIT', 0, 64)) do
          local q, member, rev = string.match(entry, '^([^|]+)|(.+)|(%d+)$')
          if redis.call('HGET', base .. 'trev', string.sub(member, 25)) == rev then redis.call('ZADD', base .. q, 0, member) end
          redis.call('ZREM', base .. 'reserved', entry)
        end
        local skills = {}
        for n = 3, #ARGV do skills[ARGV[n]] = true end
        local queues = redis.call('HGETALL', base .. 'readyq')
        local best, bestQueue
        for q = 1, #queues, 2 do
          local covered = true
          if queues[q] ~= '' then
            for skill in string.gmatch(queues[q], '[^\31]+') do
              if not skills[skill] then covered = false; break end
            end
          end
          if covered then
            local head = redis.call('ZRANGE', base .. queues[q + 1], 0, 0)[1]
            if head and (not best or head < best) then best, bestQueue = head, queues[q + 1] end
          end
        end
        if not best then return {} end
        local id = string.sub(best, 25)
        local rev = redis.call('HGET', base .. 'trev', id)
        local entry = bestQueue .. '|' .. best .. '|' .. rev
        redis.call('ZREM', base .. bestQueue, best)
        redis.call('ZADD', base .. 'reserved', now + tonumber(ARGV[2]), entry)
        return {entry, redis.call('HGET', base .. 'tasks', id), rev}
        """;

    /// <summary>Gives back a reservation that was not used: the task returns to its queue if it did not change. ARGV: entry.</summary>
    public const string Unreserve = """
        local base = string.sub(KEYS[1], 1, -5)
        if redis.call('ZREM', base .. 'reserved', ARGV[1]) == 1 then
          local q, member, rev = string.match(ARGV[1], '^([^|]+)|(.+)|(%d+)$')
          if redis.call('HGET', base .. 'trev', string.sub(member, 25)) == rev then redis.call('ZADD', base .. q, 0, member) end
        end
        return 1
        """;

    /// <summary>ARGV: exclusive lower id ("" from the start), limit. Returns flat {id, blob, rev, ...} in id order.</summary>
    public const string ListTasks = """
        local base = string.sub(KEYS[1], 1, -5)
        local from = ARGV[1] == '' and '-' or ('(' .. ARGV[1])
        local ids = redis.call('ZRANGEBYLEX', base .. 'tids', from, '+', 'LIMIT', 0, tonumber(ARGV[2]))
        local result = {}
        for _, id in ipairs(ids) do
          result[#result + 1] = id
          result[#result + 1] = redis.call('HGET', base .. 'tasks', id)
          result[#result + 1] = redis.call('HGET', base .. 'trev', id)
        end
        return result
        """;

    /// <summary>ARGV: prefix, exclusive lower key ("" for none), limit. Returns flat {key, blob, rev, ...} in key order.</summary>
    public const string ListNotes = """
        local base = string.sub(KEYS[1], 1, -5)
        local prefix, after = ARGV[1], ARGV[2]
        local from = '[' .. prefix
        if after ~= '' and after >= prefix then from = '(' .. after end
        local to = prefix == '' and '+' or ('[' .. prefix .. '\255')
        local keys = redis.call('ZRANGEBYLEX', base .. 'nkeys', from, to, 'LIMIT', 0, tonumber(ARGV[3]))
        local result = {}
        for _, k in ipairs(keys) do
          result[#result + 1] = k
          result[#result + 1] = redis.call('HGET', base .. 'notes', k)
          result[#result + 1] = redis.call('HGET', base .. 'nrev', k)
        end
        return result
        """;

    /// <summary>ARGV: task id. Returns {version of the dependents set, dependent ids...}.</summary>
    public const string Dependents = """
        local base = string.sub(KEYS[1], 1, -5)
        local result = {redis.call('HGET', base .. 'depver', ARGV[1]) or '0'}
        for _, id in ipairs(redis.call('SMEMBERS', base .. 'deps:' .. ARGV[1])) do result[#result + 1] = id end
        return result
        """;

    /// <summary>ARGV: from revision, count. Returns {exists, head, oldest, rev1, blob1, ...}.</summary>
    public const string ReadEvents = """
        local meta = KEYS[1]
        local base = string.sub(meta, 1, -5)
        local exists = redis.call('HEXISTS', meta, 'rec')
        local head = tonumber(redis.call('HGET', meta, 'head') or '0')
        local oldest = tonumber(redis.call('HGET', meta, 'oldest') or '1')
        local result = {exists, head, oldest}
        if exists == 1 then
          local from = math.max(tonumber(ARGV[1]), oldest)
          for _, entry in ipairs(redis.call('XRANGE', base .. 'log', from .. '-0', '+', 'COUNT', tonumber(ARGV[2]))) do
            result[#result + 1] = string.match(entry[1], '^(%d+)')
            result[#result + 1] = entry[2][2]
          end
        end
        return result
        """;

    /// <summary>ARGV: now (ms), limit. Returns flat {member, score, ...} of due timers, and then the earliest timer of all as the last element (-1: none).</summary>
    public const string DueTimers = """
        local base = string.sub(KEYS[1], 1, -5)
        local result = redis.call('ZRANGEBYSCORE', base .. 'timers', '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
        local earliest = redis.call('ZRANGE', base .. 'timers', 0, 0, 'WITHSCORES')
        result[#result + 1] = earliest[2] or '-1'
        return result
        """;

    /// <summary>KEYS[1]: the hint set. ARGV: score, workflow, mode ("lt": lower only; "set": exact; "del").</summary>
    public const string Hint = """
        if ARGV[3] == 'del' then return redis.call('ZREM', KEYS[1], ARGV[2]) end
        if ARGV[3] == 'lt' then return redis.call('ZADD', KEYS[1], 'LT', ARGV[1], ARGV[2]) end
        return redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
        """;
}
