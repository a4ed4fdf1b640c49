-- GrantFlow: decide one request atomically (DESIGN §3). Same steps as core/src/decision.rs.
-- Every key is derived from the tenant prefix `gf:{<tenant>}:`, so the script stays in one
-- cluster slot. KEYS[1] is the tenant's policy key (declared for routing).
--
-- ARGV: 1 prefix, 2 now ms, 3 default max age ms, 4 retention ms,
--       5 auth instant ms ('' = unknown), 6 auth_time ms ('' = none),
--       7 session key, 8 user, 9 display name, 10 anchor, 11 client ip, 12 user agent,
--       13 publish command (PUBLISH | SPUBLISH), 14 touch interval ms
-- Returns {code, started}: 1 allow, 2 allow (created), 3 expired, 4 revoked.
local p = ARGV[1]
local now = tonumber(ARGV[2])
local retention = tonumber(ARGV[4])
local key, user = ARGV[7], ARGV[8]
local channel = p .. 'changes'

local max_age = tonumber(redis.call('HGET', KEYS[1], 'max_age_ms') or ARGV[3])

-- The token's auth_time in ms, or nil. Only it proves when the user signed in: a silent
-- refresh keeps it, while `iat` moves with every refresh.
local auth_time = tonumber(ARGV[6])

-- 2. user lock / watermark
local marks = redis.call('HMGET', p .. 'u:' .. user, 'nb', 'lock')
if marks[2] and tonumber(marks[2]) > now then return {4, 0} end
if marks[1] then
  local auth = tonumber(ARGV[5])
  if auth == nil or auth < tonumber(marks[1]) then return {4, 0} end
end

-- 3. tombstone, unless the token proves a sign-in after the end (auth_time later than the
-- end, same user): then the new session replaces it (step 6)
-- (The hot path reads one field of a key that does not exist; the rest only when it does.)
local ended = redis.call('HGET', p .. 'end:' .. key, 'reason')
if ended then
  local tomb = redis.call('HMGET', p .. 'end:' .. key, 'at', 'user')
  local ended_at = tonumber(tomb[1])
  local fresh = auth_time and ended_at and auth_time > ended_at
    and (tomb[2] == false or tomb[2] == '' or tomb[2] == user)
  if not fresh then
    if ended == 'expired' then return {3, 0} end
    return {4, 0}
  end
  redis.call('DEL', p .. 'end:' .. key)
end

local skey = p .. 's:' .. key
local session = redis.call('HMGET', skey, 'started', 'seen', 'user')
if session[1] then
  -- A session belongs to one user; another user's token naming it is refused.
  if session[3] ~= user then return {4, 0} end
  local started = tonumber(session[1])
  local expires = started + max_age
  -- 5. live: touch at most once per interval
  if now < expires then
    if now - tonumber(session[2]) >= tonumber(ARGV[14]) then
      redis.call('HSET', skey, 'seen', ARGV[2])
    end
    return {1, started}
  end
  -- 4. too old: it ended when it reached the max age; expire and tombstone
  redis.call('DEL', skey)
  redis.call('ZREM', p .. 'live', key)
  redis.call('SREM', p .. 'us:' .. session[3], key)
  redis.call(ARGV[13], channel, cjson.encode({t = 'ended', key = key, user = session[3], reason = 'expired'}))
  if not (auth_time and auth_time > expires) then
    redis.call('HSET', p .. 'end:' .. key, 'reason', 'expired', 'at', string.format('%d', expires), 'user', session[3])
    redis.call('PEXPIRE', p .. 'end:' .. key, retention)
    return {3, started}
  end
  -- signed in again since: a new session under the same key (step 6)
end

-- 6. new session; its start is auth_time when the token has it
local started = now
if auth_time then started = math.min(auth_time, now) end
if now - started >= max_age then
  redis.call('HSET', p .. 'end:' .. key, 'reason', 'expired', 'at', string.format('%d', started + max_age),
    'user', user)
  redis.call('PEXPIRE', p .. 'end:' .. key, retention)
  return {3, started}
end
local started_s = string.format('%d', started)
redis.call('HSET', skey, 'user', user, 'dn', ARGV[9], 'anchor', ARGV[10], 'started', started_s,
  'seen', ARGV[2], 'ip', ARGV[11], 'ua', ARGV[12])
local keep = started + max_age + retention - now
redis.call('PEXPIRE', skey, keep)
redis.call('ZADD', p .. 'live', started_s, key)
redis.call('PEXPIRE', p .. 'live', max_age + retention)
redis.call('SADD', p .. 'us:' .. user, key)
redis.call('PEXPIRE', p .. 'us:' .. user, max_age + retention)
redis.call(ARGV[13], channel, cjson.encode({t = 'created', key = key, user = user, dn = ARGV[9],
  anchor = ARGV[10], started = started_s, seen = ARGV[2], ip = ARGV[11], ua = ARGV[12]}))
return {2, started}
