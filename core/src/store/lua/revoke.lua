-- GrantFlow: apply one revocation atomically, append its audit record, publish the ended
-- sessions. KEYS[1] is the tenant's audit stream (declared for routing).
--
-- ARGV: 1 prefix, 2 now ms, 3 retention ms, 4 kind (session | user), 5 target key or user,
--       6 lock until ms ('' = none), 7 audit record JSON (sessionsRevoked and target.user
--       are filled in here), 8 idempotency key ('' = none), 9 publish command,
--       10 audit capacity
-- Returns {sessions revoked, audit id, replayed (0|1)}.
local p = ARGV[1]
local now = tonumber(ARGV[2])
local retention = tonumber(ARGV[3])
local channel = p .. 'changes'

if ARGV[8] ~= '' then
  local previous = redis.call('HMGET', p .. 'idem:' .. ARGV[8], 'count', 'audit')
  if previous[1] then return {tonumber(previous[1]), previous[2], 1} end
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
  local keep = retention
  if ARGV[6] ~= '' then
    redis.call('HSET', marks, 'lock', ARGV[6])
    keep = math.max(retention, tonumber(ARGV[6]) - now + retention)
  end
  redis.call('PEXPIRE', marks, keep)
end

record.sessionsRevoked = count
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[10], '*', 'id', record.id, 'record', cjson.encode(record))
if ARGV[8] ~= '' then
  redis.call('HSET', p .. 'idem:' .. ARGV[8], 'count', count, 'audit', record.id)
  redis.call('PEXPIRE', p .. 'idem:' .. ARGV[8], retention)
end
return {count, record.id, 0}
