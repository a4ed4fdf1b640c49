-- GrantFlow: append one audit record (the store.reset record). KEYS[1] the tenant's audit
-- stream. ARGV: 1 now ms, 2 audit retention ms, 3 audit cap, 4 audit id, 5 record JSON.
-- Returns how many entries the cap dropped.
return append_audit(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5])
