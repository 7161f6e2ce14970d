dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
-- GET /api/v1/certificates (first page, 50 rows, with the total) with an admin key.
request = function()
  return wrk.format("GET", "/api/v1/certificates", { ["Authorization"] = "Bearer " .. admin_key })
end
