-- What POST /api/v1/agents/{id}/heartbeat runs per request (pg_stat_statements): one UPDATE
-- that verifies the credential hash and records the heartbeat (server/src/http/agents.rs
-- HEARTBEAT_SQL). The hash is computed in SQL here; the server binds it.
\set n random(1, :agents)
WITH before AS (SELECT version, hostname, os, architecture, ip_address FROM agents
                 WHERE id = 'loadtest-agent-' || lpad(:n::text, 5, '0'))
UPDATE agents SET last_heartbeat_at = now(), status = 'Online', updated_at = now(),
        version = COALESCE('2.0.0', version), hostname = COALESCE(NULL::text, hostname), os = COALESCE(NULL::text, os),
        architecture = COALESCE(NULL::text, architecture), ip_address = COALESCE(NULL::text, ip_address)
  WHERE id = 'loadtest-agent-' || lpad(:n::text, 5, '0') AND retired_at IS NULL
    AND lower(credential_hash) = encode(sha256(convert_to('loadtest-agent-credential-' || :n, 'UTF8')), 'hex')
  RETURNING (SELECT (b.version, b.hostname, b.os, b.architecture, b.ip_address)
                    IS DISTINCT FROM (agents.version, agents.hostname, agents.os, agents.architecture, agents.ip_address)
               FROM before b);
