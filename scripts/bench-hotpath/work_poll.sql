-- What GET /api/v1/agents/{id}/work runs per request: the agent-credential lookup, then one
-- transaction with the retired check, the deployment claim and the CSR-work listing.
\set n random(1, :agents)
SELECT credential_hash FROM agents WHERE id = 'loadtest-agent-' || lpad(:n::text, 5, '0');
BEGIN;
SELECT retired_at IS NULL FROM agents WHERE id = 'loadtest-agent-' || lpad(:n::text, 5, '0');
UPDATE jobs j
   SET status = 'Running', started_at = now(), claimed_by = 'agent:' || ('loadtest-agent-' || lpad(:n::text, 5, '0')), attempts = j.attempts + 1,
       updated_at = now()
  FROM managed_certificates c
 WHERE c.id = j.certificate_id
   AND j.id IN (SELECT id FROM jobs
                 WHERE agent_id = 'loadtest-agent-' || lpad(:n::text, 5, '0') AND type = 'Deployment' AND status = 'Pending' AND scheduled_at <= now()
                 ORDER BY scheduled_at, id
                 LIMIT 50
                 FOR UPDATE SKIP LOCKED)
 RETURNING j.id, j.type, j.certificate_id, j.status, j.attempts, c.common_name, c.sans, j.created_at;
SELECT j.id, j.type, j.certificate_id, j.status, j.attempts, c.common_name, c.sans, j.created_at
  FROM jobs j JOIN managed_certificates c ON c.id = j.certificate_id
 WHERE j.agent_id = 'loadtest-agent-' || lpad(:n::text, 5, '0') AND j.type IN ('Issuance', 'Renewal') AND j.status = 'AwaitingCSR'
 ORDER BY j.created_at, j.id
 LIMIT 50
 FOR UPDATE OF j SKIP LOCKED;
COMMIT;
