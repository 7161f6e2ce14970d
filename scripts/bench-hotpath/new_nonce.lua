dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
-- GET /acme/new-nonce (204 with a fresh Replay-Nonce), default ACME profile.
request = function()
  return wrk.format("GET", "/acme/new-nonce")
end
