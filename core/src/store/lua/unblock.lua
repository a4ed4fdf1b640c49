-- GrantFlow: lift a user's revoke-all watermark and lock, and append the audit record when
-- they still kept the user out. KEYS[1] is the tenant's audit stream (declared for routing).
--
-- ARGV: 1 prefix, 2 now ms, 3 user, 4 audit record JSON, 5 audit cap,
--       6 watermark retention ms, 7 audit retention ms, 8 publish command
-- Returns {lifted, capped}: lifted 1 when the user was blocked (and is no more), else 0;
-- capped is how many old audit entries the cap dropped (audit.lua, prepended).
local p = ARGV[1]
local now = tonumber(ARGV[2])
local marks = p .. 'u:' .. ARGV[3]
local m = redis.call('HMGET', marks, 'nb', 'lock')
local blocked = (m[2] and tonumber(m[2]) > now)
  or (m[1] and now - tonumber(m[1]) < tonumber(ARGV[6]))
redis.call('DEL', marks)
redis.call('ZREM', p .. 'blocked', ARGV[3])
if not blocked then return {0, 0} end
redis.call(ARGV[8], p .. 'changes', cjson.encode({t = 'blocks', user = ARGV[3]}))
local record = cjson.decode(ARGV[4])
return {1, append_audit(KEYS[1], now, tonumber(ARGV[7]), tonumber(ARGV[5]), record.id, ARGV[4])}
