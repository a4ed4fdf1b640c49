-- GrantFlow: apply one revocation atomically, append its audit record, publish the ended
-- sessions. KEYS[1] is the tenant's audit stream (declared for routing).
--
-- ARGV: 1 prefix, 2 now ms, 3 retention ms, 4 kind (session | user), 5 target key or user,
--       6 lock until ms ('' = none), 7 audit record JSON (sessionsRevoked and target.user
--       are filled in here), 8 idempotency key ('' = none), 9 publish command,
--       10 audit cap, 11 the request's fingerprint, 12 idempotency TTL ms,
--       13 watermark retention ms, 14 audit retention ms, 15 lock message ('' = none; a new
--       lock replaces the message of an earlier one)
-- Returns {sessions revoked, audit id, replayed, record, capped}: replayed 0 applied now, 1 the
-- stored answer of the same request under this idempotency key, 2 the key was used for another
-- request (nothing changed); record is the audit record JSON as stored ('' unless applied now);
-- capped is how many old audit entries the cap dropped (audit.lua).
--
-- audit.lua (append_audit) is prepended.
local p = ARGV[1]
local now = tonumber(ARGV[2])
local retention = tonumber(ARGV[3])
local channel = p .. 'changes'

-- The tenant's state begins here if it had none (see check.lua, step 0).
redis.call('HSETNX', p .. 'gen', 'id', ARGV[2])

if ARGV[8] ~= '' then
  local previous = redis.call('HMGET', p .. 'idem:' .. ARGV[8], 'count', 'audit', 'fp')
  if previous[1] then
    if previous[3] ~= ARGV[11] then return {0, '', 2, '', 0} end
    return {tonumber(previous[1]), previous[2], 1, '', 0}
  end
end

local function finish(key, user)
  redis.call('DEL', p .. 's:' .. key)
  redis.call('ZREM', p .. 'live', key)
  redis.call('HSET', p .. 'end:' .. key, 'reason', 'revoked', 'at', ARGV[2], 'user', user)
  redis.call('PEXPIRE', p .. 'end:' .. key, retention)
  redis.call(ARGV[9], channel, cjson.encode({t = 'ended', key = key, user = user, reason = 'revoked'}))
end

local count = 0
local record = cjson.decode(ARGV[7])
if ARGV[4] == 'session' then
  local key = ARGV[5]
  local user = redis.call('HGET', p .. 's:' .. key, 'user')
  if user then
    redis.call('SREM', p .. 'us:' .. user, key)
    finish(key, user)
    count = 1
    record.target.user = user
  else
    -- Not live (never seen, or already ended): tombstone it anyway, keeping a known user.
    local known = redis.call('HGET', p .. 'end:' .. key, 'user') or ''
    redis.call('HSET', p .. 'end:' .. key, 'reason', 'revoked', 'at', ARGV[2], 'user', known)
    redis.call('PEXPIRE', p .. 'end:' .. key, retention)
  end
else
  local user = ARGV[5]
  for _, key in ipairs(redis.call('SMEMBERS', p .. 'us:' .. user)) do
    if redis.call('EXISTS', p .. 's:' .. key) == 1 then
      finish(key, user)
      count = count + 1
    end
  end
  redis.call('DEL', p .. 'us:' .. user)
  local marks = p .. 'u:' .. user
  redis.call('HSET', marks, 'nb', ARGV[2])
  local watermark = tonumber(ARGV[13])
  local holds = now + watermark
  if ARGV[6] ~= '' then
    redis.call('HSET', marks, 'lock', ARGV[6])
    if ARGV[15] ~= '' then
      redis.call('HSET', marks, 'msg', ARGV[15])
    else
      redis.call('HDEL', marks, 'msg')
    end
    holds = math.max(holds, tonumber(ARGV[6]))
  else
    local lock = tonumber(redis.call('HGET', marks, 'lock') or '0')
    holds = math.max(holds, lock)
  end
  redis.call('PEXPIRE', marks, holds - now)
  -- The tenant's blocked users, by the instant their marks stop keeping them out.
  redis.call('ZADD', p .. 'blocked', holds, user)
  redis.call('ZREMRANGEBYSCORE', p .. 'blocked', '-inf', now)
  redis.call(ARGV[9], channel, cjson.encode({t = 'blocks', user = user}))
end

record.sessionsRevoked = count
local stored = cjson.encode(record)
local capped = append_audit(KEYS[1], now, tonumber(ARGV[14]), tonumber(ARGV[10]), record.id, stored)
if ARGV[8] ~= '' then
  redis.call('HSET', p .. 'idem:' .. ARGV[8], 'count', count, 'audit', record.id, 'fp', ARGV[11])
  redis.call('PEXPIRE', p .. 'idem:' .. ARGV[8], tonumber(ARGV[12]))
end
return {count, record.id, 0, stored, capped}
