-- What POST /api/v1/agents/{id}/heartbeat runs per request (pg_stat_statements, main at 10ae332):
-- the agent-credential lookup of the auth layer, then the heartbeat UPDATE. (The batched audit
-- INSERT, ~1/500 per request, is left out.)
\set n random(1, :agents)
SELECT credential_hash FROM agents WHERE id = 'loadtest-agent-' || lpad(:n::text, 5, '0');
UPDATE agents SET last_heartbeat_at = now(), status = 'Online', updated_at = now(),
        version = COALESCE('2.0.0', version), hostname = COALESCE(NULL::text, hostname), os = COALESCE(NULL::text, os),
        architecture = COALESCE(NULL::text, architecture), ip_address = COALESCE(NULL::text, ip_address)
  WHERE id = 'loadtest-agent-' || lpad(:n::text, 5, '0') AND retired_at IS NULL;
