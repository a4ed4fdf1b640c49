-- GrantFlow: append an audit record to a tenant's stream. Prepended to every script that
-- writes audit records (revoke.lua, unblock.lua, policy.lua, append.lua); defines only this
-- function.
--
-- The entry id is the store's time, `<now ms>-<seq>` from the clock the caller passes (never
-- below the stream's last id, which Redis requires), so the trail is kept by the same clock
-- as the rest of the store: entries older than the audit retention are trimmed here
-- (`MINID ~`: whole nodes only, cheap) and exactly by housekeeping (sweep.lua). The cap is a
-- memory bound only (`XTRIM MAXLEN ~`); it returns how many entries the cap dropped.
local function append_audit(stream, now, retention, cap, id, json)
  local ms, seq = now, 0
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  if last then
    local last_ms, last_seq = string.match(last[1], '^(%d+)-(%d+)$')
    last_ms, last_seq = tonumber(last_ms), tonumber(last_seq)
    if last_ms and last_ms >= ms then
      ms, seq = last_ms, last_seq + 1
    end
  end
  local oldest = math.max(0, now - retention + 1)
  redis.call('XADD', stream, 'MINID', '~', string.format('%d', oldest),
    string.format('%d-%d', ms, seq), 'id', id, 'record', json)
  return redis.call('XTRIM', stream, 'MAXLEN', '~', cap)
end
