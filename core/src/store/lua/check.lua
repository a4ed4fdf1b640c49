-- GrantFlow: decide one request atomically. Same steps as core/src/decision.rs.
-- Every key is derived from the tenant prefix `gf:{<tenant>}:`, so the script stays in one
-- cluster slot. KEYS[1] is the tenant's policy key (declared for routing).
--
-- Two calls share this script: a *touch* call sends ARGV 1-12 only, which is all a live
-- session needs (the common case: one round trip, ~200 bytes); when the request would create
-- a session (none live under its key, or one that the token's later sign-in replaces), the
-- touch call writes nothing for it and answers code 0, and the caller calls again with ARGV
-- 1-22 (the rare second round trip). Every rule runs again, atomically, in that second call.
--
-- ARGV: 1 prefix, 2 now ms, 3 default max age ms, 4 retention ms, 5 watermark retention ms,
--       6 auth_time ms ('' = none), 7 issued secs (iat, else auth_time; '' = unknown),
--       8 session key, 9 user, 10 publish command (PUBLISH | SPUBLISH), 11 touch interval ms,
--       12 the tenant's generation as this process knows it ('' = not known yet);
--       creation only: 13 display name, 14 anchor, 15 client ip, 16 user agent,
--       17 most live sessions per user,
--       18 an audit id, 19 now (RFC 3339), 20 audit retention ms, 21 audit cap, 22 tenant
--       (18-22 for the audit record of the tenant's session limit),
--       23 the client label ('' = none; derived from the whole user agent, which ARGV 16
--       has capped at 64 bytes so that the session hash stays a listpack)
-- Returns {code, started, generation, reset, audits}: code 0 create needed (a touch call
-- only; nothing of the session written), 1 allow, 2 allow (created), 3 expired,
-- 4 revoked, 5 reauthenticate, 6 too many sessions (nothing stored), 7 idle (started = the
-- idle timeout ms now, 0 = off since), 8 refused by the tenant's session limit (started = the
-- limit; nothing stored); generation is the tenant's marker when it is not the one the
-- caller knows (else ''); reset is 1 when this call found the tenant's data lost; audits are
-- the audit records (JSON) this call appended.
-- Code 9, locked, answers {9, lock until, generation, reset, lock message ('' = none)}.
--
-- audit.lua (append_audit) is prepended.
local audits = {}
local p = ARGV[1]
local now = tonumber(ARGV[2])
local retention = tonumber(ARGV[4])
local key, user = ARGV[8], ARGV[9]
local channel = p .. 'changes'
local publish = ARGV[10]
-- a touch call (ARGV 1-12) or a create call (ARGV 1-23)
local creating = #ARGV >= 23

-- 0. generation: the marker is written when the tenant's state begins (its id is the instant
-- it began). Gone while this caller knew one, or another one without a loss time (written by
-- a process that did not know the old one): the data was lost. L, the loss time, is then the
-- instant the present generation began; tokens issued before it are refused.
local gkey = p .. 'gen'
local gen = redis.call('HMGET', gkey, 'id', 'lost')
local known = ARGV[12]
local reset = 0
if not gen[1] then
  gen[1] = ARGV[2]
  redis.call('HSET', gkey, 'id', gen[1])
  if known ~= '' then
    gen[2] = gen[1]
    redis.call('HSET', gkey, 'lost', gen[2])
    reset = 1
  end
elseif known ~= '' and known ~= gen[1] and not gen[2] then
  gen[2] = gen[1]
  redis.call('HSET', gkey, 'lost', gen[2])
  reset = 1
end
local told = ''
if known ~= gen[1] then told = gen[1] end
if gen[2] then
  local issued = tonumber(ARGV[7])
  -- Whole seconds: a token issued in L's own second cannot prove it came after L.
  if issued == nil or issued * 1000 <= tonumber(gen[2]) then return {3, 0, told, reset, audits} end
end

local pol = redis.call('HMGET', KEYS[1], 'max_age_ms', 'idle_ms', 'max_per_user', 'on_limit')
local max_age = tonumber(pol[1] or ARGV[3])
-- the tenant's idle timeout ms and session limit (nil: off)
local idle = tonumber(pol[2])
local plimit = tonumber(pol[3])

-- The token's auth_time in ms, or nil. Only it proves when the user signed in: a silent
-- refresh keeps it, while `iat` moves with every refresh.
local auth_time = tonumber(ARGV[6])

-- 2. user lock / watermark (the watermark holds for the watermark retention)
local marks = redis.call('HMGET', p .. 'u:' .. user, 'nb', 'lock', 'msg')
if marks[2] and tonumber(marks[2]) > now then return {9, tonumber(marks[2]), told, reset, marks[3] or ''} end
if marks[1] then
  local nb = tonumber(marks[1])
  if now - nb < tonumber(ARGV[5]) then
    if auth_time == nil then return {5, 0, told, reset, audits} end
    if auth_time <= nb then return {4, 0, told, reset, audits} end
  end
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
    if ended == 'expired' then return {3, 0, told, reset, audits} end
    if ended == 'idle' then return {7, idle or 0, told, reset, audits} end
    return {4, 0, told, reset, audits}
  end
  -- removed only when the new session is created (step 6)
end

local skey = p .. 's:' .. key
local replaces, replaces_reason = nil, nil
local session = redis.call('HMGET', skey, 'started', 'seen', 'user')
if session[1] then
  -- A session belongs to one user; another user's token naming it is refused.
  if session[3] ~= user then return {4, 0, told, reset, audits} end
  local started = tonumber(session[1])
  local expires = started + max_age
  -- unused longer than the idle timeout (before it reached the max age): it ended then
  local idle_ends = nil
  if idle then idle_ends = tonumber(session[2]) + idle end
  local reason, ended_at = 'expired', expires
  if idle_ends and now >= idle_ends and idle_ends < expires then
    reason, ended_at = 'idle', idle_ends
  elseif now < expires then
    -- 5. live: touch at most once per interval (the idle timeout counts from this touch)
    if now - tonumber(session[2]) >= tonumber(ARGV[11]) then
      redis.call('HSET', skey, 'seen', ARGV[2])
    end
    return {1, started, told, reset, audits}
  end
  -- 4. too old or idle: it ended then; end and tombstone. When the token signed in after
  -- that, a new session replaces it: a touch call leaves all of it to the create call.
  if not creating and auth_time and auth_time > ended_at then return {0, 0, told, reset, audits} end
  redis.call('DEL', skey)
  redis.call('ZREM', p .. 'live', key)
  redis.call('SREM', p .. 'us:' .. session[3], key)
  redis.call(publish, channel, cjson.encode({t = 'ended', key = key, user = session[3], reason = reason}))
  if not (auth_time and auth_time > ended_at) then
    redis.call('HSET', p .. 'end:' .. key, 'reason', reason, 'at', string.format('%d', ended_at), 'user', session[3])
    redis.call('PEXPIRE', p .. 'end:' .. key, retention)
    if reason == 'idle' then return {7, idle, told, reset, audits} end
    return {3, started, told, reset, audits}
  end
  -- signed in again since: a new session under the same key (step 6)
  replaces, replaces_reason = ended_at, reason
end

-- 6. new session; its start is auth_time when the token has it
local started = now
if auth_time then started = math.min(auth_time, now) end
if now - started >= max_age then
  redis.call('HSET', p .. 'end:' .. key, 'reason', 'expired', 'at', string.format('%d', started + max_age),
    'user', user)
  redis.call('PEXPIRE', p .. 'end:' .. key, retention)
  return {3, started, told, reset, audits}
end
-- A touch call stops here: creating needs the arguments only a create call sends.
if not creating then return {0, 0, told, reset, audits} end
-- ... unless the user already holds the most live sessions: refuse, store nothing. The set
-- may name sessions that ended (their hash gone: dropped here) or reached the max age and are
-- not swept yet (not counted); it is read only when it is at the limit, and it stays near it
-- (nothing is added while the user is at the limit), so the work is bounded.
local usk = p .. 'us:' .. user

-- The audit record of the tenant's session limit (the fields of core/src/session_limit.rs).
local function limit_record(action, session, detail, revoked)
  local record = {id = ARGV[18], time = ARGV[19], tenant = ARGV[22],
    actor = {kind = 'system', id = 'grantflow-extauthz'}, action = action,
    target = {user = user, session = session}, reason = 'session limit', source = 'system',
    sessionsRevoked = revoked, detail = detail}
  local json = cjson.encode(record)
  append_audit(p .. 'audit', now, tonumber(ARGV[20]), tonumber(ARGV[21]), ARGV[18], json)
  table.insert(audits, json)
end

-- The tenant's own limit (at most the store's bound, checked next): the user's live
-- sessions (younger than the max age, used within the idle timeout), read only when the set
-- of the user's session keys is at the limit.
if plimit and redis.call('SCARD', usk) >= plimit then
  local live = {}
  for _, other in ipairs(redis.call('SMEMBERS', usk)) do
    local o = redis.call('HMGET', p .. 's:' .. other, 'started', 'seen')
    if not o[1] then
      redis.call('SREM', usk, other)
    else
      local began, seen = tonumber(o[1]), tonumber(o[2])
      if now < began + max_age and (not idle or now < seen + idle) then
        table.insert(live, {began, other})
      end
    end
  end
  if #live >= plimit then
    if pol[4] == 'EndOldest' then
      -- oldest first (by start, then key); enough of them that the new one makes the limit
      table.sort(live, function(a, b)
        if a[1] ~= b[1] then return a[1] < b[1] end
        return a[2] < b[2]
      end)
      local gone = {}
      for i = 1, #live - plimit + 1 do
        local old = live[i][2]
        redis.call('DEL', p .. 's:' .. old)
        redis.call('ZREM', p .. 'live', old)
        redis.call('SREM', usk, old)
        redis.call('HSET', p .. 'end:' .. old, 'reason', 'revoked', 'at', ARGV[2], 'user', user)
        redis.call('PEXPIRE', p .. 'end:' .. old, retention)
        redis.call(publish, channel, cjson.encode({t = 'ended', key = old, user = user, reason = 'revoked'}))
        table.insert(gone, old)
      end
      limit_record('session.revoke', gone[1], string.format(
        'ended to make room for session %s (maxSessionsPerUser %d, onLimit EndOldest): %s',
        key, plimit, table.concat(gone, ', ')), #gone)
    else
      if replaces then
        -- this key's session ended above (max age, idle)
        redis.call('HSET', p .. 'end:' .. key, 'reason', replaces_reason, 'at', string.format('%d', replaces), 'user', user)
        redis.call('PEXPIRE', p .. 'end:' .. key, retention)
      end
      limit_record('session.refuse', key, string.format(
        'new session refused: the user already holds %d active sessions (maxSessionsPerUser %d, onLimit RefuseNew)',
        plimit, plimit), nil)
      return {8, plimit, told, reset, audits}
    end
  end
end

local limit = tonumber(ARGV[17])
if redis.call('SCARD', usk) >= limit then
  local live = 0
  for _, other in ipairs(redis.call('SMEMBERS', usk)) do
    local o = redis.call('HMGET', p .. 's:' .. other, 'started', 'seen')
    if not o[1] then
      redis.call('SREM', usk, other)
    elseif now < tonumber(o[1]) + max_age and (not idle or now < tonumber(o[2]) + idle) then
      live = live + 1
    end
  end
  if live >= limit then
    if replaces then
      -- this key's session reached its max age above: it ended
      redis.call('HSET', p .. 'end:' .. key, 'reason', replaces_reason, 'at', string.format('%d', replaces), 'user', user)
      redis.call('PEXPIRE', p .. 'end:' .. key, retention)
    end
    return {6, 0, told, reset, audits}
  end
end
if ended then redis.call('DEL', p .. 'end:' .. key) end
local started_s = string.format('%d', started)
redis.call('HSET', skey, 'user', user, 'dn', ARGV[13], 'anchor', ARGV[14], 'started', started_s,
  'seen', ARGV[2], 'ip', ARGV[15], 'ua', ARGV[16], 'cl', ARGV[23])
local keep = started + max_age + retention - now
redis.call('PEXPIRE', skey, keep)
redis.call('ZADD', p .. 'live', started_s, key)
redis.call('PEXPIRE', p .. 'live', max_age + retention)
redis.call('SADD', usk, key)
redis.call('PEXPIRE', usk, max_age + retention)
redis.call(publish, channel, cjson.encode({t = 'created', key = key, user = user, dn = ARGV[13],
  anchor = ARGV[14], started = started_s, seen = ARGV[2], ip = ARGV[15], ua = ARGV[16], cl = ARGV[23]}))
return {2, started, told, reset, audits}
