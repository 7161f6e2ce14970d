dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
-- GET /acme/renewal-info/{certID} for a random certificate the fleet renewal issued (every
-- answer is a 200 with a suggested window). BENCH_CERT_IDS names a file of certIDs, one a line.
local ids = {}
for line in io.lines(os.getenv("BENCH_CERT_IDS")) do ids[#ids + 1] = line end
request = function()
  return wrk.format("GET", "/acme/renewal-info/" .. ids[math.random(1, #ids)])
end
