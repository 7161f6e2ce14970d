dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
-- GET /acme/directory, default ACME profile.
request = function()
  return wrk.format("GET", "/acme/directory")
end
