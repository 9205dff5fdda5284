        local meta = KEYS[1]
        local base = string.sub(meta, 1, -5)
        local me = ARGV[7]
        local clock = redis.call('TIME')
        local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
        local m = redis.call('HMGET', meta, 'lb', 'head', 'w', 'wt', 'we')
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
        local timers = base .. 'timers'
        local before = redis.call('ZRANGE', timers, 0, 0, 'WITHSCORES')
        local counts = false
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
          elseif code == 'Z' then
            redis.call('ZADD', timers, unpack(op, 2))
          elseif code == 'R' then
            redis.call('ZREM', timers, unpack(op, 2))
          elseif code == 'X' then
            redis.call('HDEL', base .. 'notes', unpack(op, 2))
          elseif code == 'W' then
            redis.call('HSET', meta, 'rec', events[2 * op[2]])
          elseif code == 'D' then
            redis.call('UNLINK', base .. 'tasks', base .. 'notes', base .. 'log', timers)
            redis.call('HDEL', meta, 'rec')
          elseif code == 'O' then
            redis.call('HSET', meta, 'oldest', op[2])
            redis.call('XTRIM', base .. 'log', 'MINID', op[2] .. '-0')
          elseif code == 'C' then
            counts = op
          else
            return redis.error_reply('unknown op ' .. tostring(code))
          end
        end
        local nextHolder = false
        if now - since >= tonumber(ARGV[9]) then
          nextHolder = redis.call('LPOP', queue)
        end
        if nextHolder then
          redis.call('HSET', meta, 'head', ARGV[3], 'lb', ARGV[2], 'w', nextHolder, 'wt', now, 'we', now + tonumber(ARGV[8]))
        else
          if counts then
            redis.call('HSET', meta, 'head', ARGV[3], 'lb', ARGV[2], 'w', me, 'wt', since, 'we', now + tonumber(ARGV[8]), unpack(counts, 2))
          else
            redis.call('HSET', meta, 'head', ARGV[3], 'lb', ARGV[2], 'w', me, 'wt', since, 'we', now + tonumber(ARGV[8]))
          end
        end
        if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
        if nextHolder then redis.call('PUBLISH', ARGV[4], me .. '|>|' .. nextHolder) end
        local after = redis.call('ZRANGE', timers, 0, 0, 'WITHSCORES')
        return {1, tonumber(ARGV[3]), before[2] and tonumber(before[2]) or -1, after[2] and tonumber(after[2]) or -1}