-- What GET /api/v1/agents/{id}/work runs per request (pg_stat_statements): the agent-credential
-- lookup of the auth layer, then the work poll's one statement (server/src/http/agents.rs
-- WORK_SQL).
\set n random(1, :agents)
SELECT credential_hash FROM agents WHERE id = 'loadtest-agent-' || lpad(:n::text, 5, '0');
WITH agent AS (SELECT retired_at IS NULL AS active FROM agents WHERE id = 'loadtest-agent-' || lpad(:n::text, 5, '0')),
claimed AS (
    UPDATE jobs j
       SET status = 'Running', started_at = now(), claimed_by = 'agent:' || ('loadtest-agent-' || lpad(:n::text, 5, '0')),
           attempts = j.attempts + 1, updated_at = now()
      FROM managed_certificates c
     WHERE c.id = j.certificate_id
       AND (SELECT active FROM agent)
       AND j.id IN (SELECT id FROM jobs
                     WHERE agent_id = 'loadtest-agent-' || lpad(:n::text, 5, '0') AND type = 'Deployment'
                       AND status = 'Pending' AND scheduled_at <= now()
                     ORDER BY scheduled_at, id
                     LIMIT 50
                     FOR UPDATE SKIP LOCKED)
    RETURNING 0 AS kind, j.id, j.type, j.certificate_id, j.status, j.attempts, c.common_name, c.sans, j.created_at),
csr AS (
    SELECT 1 AS kind, j.id, j.type, j.certificate_id, j.status, j.attempts, c.common_name, c.sans, j.created_at
      FROM jobs j JOIN managed_certificates c ON c.id = j.certificate_id
     WHERE (SELECT active FROM agent)
       AND j.agent_id = 'loadtest-agent-' || lpad(:n::text, 5, '0') AND j.type IN ('Issuance', 'Renewal')
       AND j.status = 'AwaitingCSR'
     ORDER BY j.created_at, j.id
     LIMIT 50
     FOR UPDATE OF j SKIP LOCKED)
SELECT a.active, w.id, w.type, w.certificate_id, w.status, w.attempts, w.common_name, w.sans, w.created_at
  FROM agent a
  LEFT JOIN (SELECT * FROM claimed UNION ALL SELECT * FROM csr) w ON true
 ORDER BY w.kind, w.created_at, w.id;
