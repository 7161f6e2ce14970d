-- Load-test fixture: work waiting for the agent fleet (agent_fleet scenario).
--
-- Every odd-numbered fleet agent n (half the fleet) owns one certificate
-- `loadtest-agentcert-NNNNN` (agent_id = `loadtest-agent-NNNNN`, profile prof-standard-tls,
-- status RenewalInProgress) with two jobs waiting for it:
-- - `loadtest-agentjob-renew-NNNNN`: a Renewal in `AwaitingCSR` — the state the job processor
--   puts an agent's renewal in under agent keygen mode — so the agent's work poll lists it and
--   its CSR completes it (the server signs the agent's key);
-- - `loadtest-agentjob-deploy-NNNNN`: a Deployment `Pending` for the agent — the poll claims it
--   (`Running`) and the agent reports it `Completed` after "deploying".
--
-- Why seeded rather than produced by the processor: the embedded server runs in server keygen
-- mode for bulk_renewal (one server per run), and under server keygen the processor issues
-- agents' renewals itself. Seeding the jobs in the state agent mode would leave them in keeps
-- the agent-facing path (poll → CSR → issuance → status) exactly what real agents exercise,
-- whatever the server's keygen mode; only the processor's hand-over is not exercised here.
--
-- Each job can be completed once: against a database where a run already consumed the work,
-- re-applying this file adds nothing (idempotent), so use a fresh database (embedded mode
-- always does).
--
-- Needs 02_agent_fleet.sql first (lexical order). Size: `certctl.agents`, as there.

WITH fleet AS (
    SELECT n FROM (SELECT coalesce(nullif(current_setting('certctl.agents', true), ''), '5000')::int AS total) AS p,
                  generate_series(1, p.total) AS n
     WHERE n % 2 = 1
)
INSERT INTO managed_certificates (id, name, common_name, sans, environment, owner_id, team_id,
                                  issuer_id, renewal_policy_id, certificate_profile_id, agent_id,
                                  status, source, expires_at, tags)
SELECT 'loadtest-agentcert-' || lpad(n::text, 5, '0'),
       'loadtest-agentcert-' || lpad(n::text, 5, '0'),
       'agentcert-' || n || '.loadtest.example',
       ARRAY['agentcert-' || n || '.loadtest.example'],
       'production',
       'o-alice', 't-platform', 'iss-local', 'rp-standard', 'prof-standard-tls',
       'loadtest-agent-' || lpad(n::text, 5, '0'),
       'RenewalInProgress', 'API',
       now() + interval '10 days',
       '{"loadtest": "agent_fleet"}'::jsonb
FROM fleet
ON CONFLICT DO NOTHING;

INSERT INTO jobs (id, type, certificate_id, agent_id, status, attempts, scheduled_at, started_at)
SELECT 'loadtest-agentjob-renew-' || lpad(n::text, 5, '0'), 'Renewal',
       'loadtest-agentcert-' || lpad(n::text, 5, '0'), 'loadtest-agent-' || lpad(n::text, 5, '0'),
       'AwaitingCSR', 1, now(), now()
FROM (SELECT coalesce(nullif(current_setting('certctl.agents', true), ''), '5000')::int AS total) AS p,
     generate_series(1, p.total) AS n
WHERE n % 2 = 1
ON CONFLICT DO NOTHING;

INSERT INTO jobs (id, type, certificate_id, agent_id, status, scheduled_at)
SELECT 'loadtest-agentjob-deploy-' || lpad(n::text, 5, '0'), 'Deployment',
       'loadtest-agentcert-' || lpad(n::text, 5, '0'), 'loadtest-agent-' || lpad(n::text, 5, '0'),
       'Pending', now()
FROM (SELECT coalesce(nullif(current_setting('certctl.agents', true), ''), '5000')::int AS total) AS p,
     generate_series(1, p.total) AS n
WHERE n % 2 = 1
ON CONFLICT DO NOTHING;
