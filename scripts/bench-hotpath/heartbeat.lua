dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
-- POST /api/v1/agents/{id}/heartbeat with the agent's own credential, random agent per request.
local body = '{"version":"2.0.0"}'
request = function()
  local n = math.random(1, agents)
  return wrk.format("POST", agent_path(n, "heartbeat"), agent_headers(n), body)
end
