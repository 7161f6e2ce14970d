dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")
-- POST /api/v1/certificates: a new certificate per request (unique name), demo-seed references.
local counter = 0
local run = os.getenv("BENCH_RUN") or "0"
request = function()
  counter = counter + 1
  local name = string.format("bench-%s-%d-%d", run, thread_no, counter)
  local body = string.format(
    '{"name":"%s","common_name":"%s.bench.example","owner_id":"o-alice","team_id":"t-platform",' ..
    '"issuer_id":"iss-local","renewal_policy_id":"rp-standard"}', name, name)
  return wrk.format("POST", "/api/v1/certificates",
    { ["Authorization"] = "Bearer " .. admin_key, ["Content-Type"] = "application/json" }, body)
end
