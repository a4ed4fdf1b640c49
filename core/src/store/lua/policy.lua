-- GrantFlow: set (or clear) a tenant's policy, append an optional audit record, publish.
-- KEYS[1] policy hash, KEYS[2] audit stream.
-- ARGV: 1 prefix, 2 max age ms ('' = clear), 3 source JSON, 4 audit record JSON ('' = none),
--       5 publish command, 6 audit cap, 7 default max age ms, 8 now ms, 9 audit retention ms,
--       10 idle timeout ms ('' = off), 11 max sessions per user ('' = off), 12 on limit
--       (RefuseNew | EndOldest)
-- Returns how many old audit entries the cap dropped (audit.lua, prepended).
local channel = ARGV[1] .. 'changes'
-- The tenant's state begins here if it had none (see check.lua, step 0).
redis.call('HSETNX', ARGV[1] .. 'gen', 'id', ARGV[8])
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  redis.call(ARGV[5], channel, cjson.encode({t = 'policy', max_age_ms = ARGV[7], source = '{"kind":"default"}'}))
else
  redis.call('HSET', KEYS[1], 'max_age_ms', ARGV[2], 'source', ARGV[3], 'on_limit', ARGV[12])
  if ARGV[10] == '' then redis.call('HDEL', KEYS[1], 'idle_ms')
  else redis.call('HSET', KEYS[1], 'idle_ms', ARGV[10]) end
  if ARGV[11] == '' then redis.call('HDEL', KEYS[1], 'max_per_user')
  else redis.call('HSET', KEYS[1], 'max_per_user', ARGV[11]) end
  redis.call(ARGV[5], channel, cjson.encode({t = 'policy', max_age_ms = ARGV[2], source = ARGV[3],
    idle_ms = ARGV[10], max_per_user = ARGV[11], on_limit = ARGV[12]}))
end
if ARGV[4] ~= '' then
  local record = cjson.decode(ARGV[4])
  return append_audit(KEYS[2], tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[6]), record.id,
    ARGV[4])
end
return 0
