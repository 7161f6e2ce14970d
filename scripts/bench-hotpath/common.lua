-- Shared by the hot-path wrk scripts (scripts/bench-hotpath.py): every wrk thread gets its
-- own random sequence, and the fleet size comes from the environment.
agents = tonumber(os.getenv("BENCH_AGENTS") or "5000")
admin_key = os.getenv("BENCH_ADMIN_KEY") or "bench-admin-key"
local seed_base = tonumber(os.getenv("BENCH_SEED") or "1")
thread_no = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_no", threads)
end

function init(args)
  math.randomseed(seed_base * 1000 + thread_no)
end

-- Agent n of the seeded fleet (seeds/02_agent_fleet.sql): its id and its bearer credential.
function agent_path(n, tail)
  return string.format("/api/v1/agents/loadtest-agent-%05d/%s", n, tail)
end

function agent_headers(n)
  return { ["Authorization"] = "Bearer loadtest-agent-credential-" .. n,
           ["Content-Type"] = "application/json" }
end

-- A 2xx/3xx is what every hot path must answer; wrk counts others as "Non-2xx or 3xx".
