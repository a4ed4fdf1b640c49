-- GrantFlow: expire a tenant's live sessions past its max age or idle timeout (tombstone +
-- publish) and drop
-- index entries whose session key has gone, and forget audit entries older than the audit
-- retention (exactly: ids are the store's time, see audit.lua). KEYS[1] the tenant's policy
-- hash, KEYS[2] its audit stream.
-- ARGV: 1 prefix, 2 now ms, 3 default max age ms, 4 retention ms, 5 publish command,
--       6 audit retention ms
-- Returns the number of sessions expired.
local p = ARGV[1]
local now = tonumber(ARGV[2])
local max_age = tonumber(redis.call('HGET', KEYS[1], 'max_age_ms') or ARGV[3])
local expired = 0
local old = redis.call('ZRANGEBYSCORE', p .. 'live', '-inf', string.format('%d', now - max_age),
  'WITHSCORES', 'LIMIT', 0, 1000)
for i = 1, #old, 2 do
  local key = old[i]
  -- It ended when it reached the max age (the score is its start).
  local ended_at = string.format('%d', math.min(tonumber(old[i + 1]) + max_age, now))
  local user = redis.call('HGET', p .. 's:' .. key, 'user')
  redis.call('ZREM', p .. 'live', key)
  if user then
    redis.call('DEL', p .. 's:' .. key)
    redis.call('SREM', p .. 'us:' .. user, key)
    redis.call('HSET', p .. 'end:' .. key, 'reason', 'expired', 'at', ended_at, 'user', user)
    redis.call('PEXPIRE', p .. 'end:' .. key, tonumber(ARGV[4]))
    redis.call(ARGV[5], p .. 'changes', cjson.encode({t = 'ended', key = key, user = user, reason = 'expired'}))
    expired = expired + 1
  end
end
-- Sessions unused past the tenant's idle timeout (when it has one) end as idle, as check.lua
-- would end them at their next request: the 1000 oldest live sessions by start are looked at
-- per run (a bound on the work; the rest end at their next request, and listings leave them
-- out meanwhile).
local idle = tonumber(redis.call('HGET', KEYS[1], 'idle_ms'))
if idle then
  local live = redis.call('ZRANGE', p .. 'live', 0, 999, 'WITHSCORES')
  for i = 1, #live, 2 do
    local key = live[i]
    local s = redis.call('HMGET', p .. 's:' .. key, 'seen', 'user')
    if s[1] then
      local ends = tonumber(s[1]) + idle
      if now >= ends and ends < tonumber(live[i + 1]) + max_age then
        redis.call('ZREM', p .. 'live', key)
        redis.call('DEL', p .. 's:' .. key)
        redis.call('SREM', p .. 'us:' .. s[2], key)
        redis.call('HSET', p .. 'end:' .. key, 'reason', 'idle', 'at', string.format('%d', ends), 'user', s[2])
        redis.call('PEXPIRE', p .. 'end:' .. key, tonumber(ARGV[4]))
        redis.call(ARGV[5], p .. 'changes', cjson.encode({t = 'ended', key = key, user = s[2], reason = 'idle'}))
        expired = expired + 1
      end
    end
  end
end
redis.call('XTRIM', KEYS[2], 'MINID', string.format('%d', math.max(0, now - tonumber(ARGV[6]) + 1)))
return expired
