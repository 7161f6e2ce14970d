dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
-- GET /api/v1/agents/{id}/work with the agent's own credential, random agent per request.
request = function()
  local n = math.random(1, agents)
  return wrk.format("GET", agent_path(n, "work"), agent_headers(n))
end
