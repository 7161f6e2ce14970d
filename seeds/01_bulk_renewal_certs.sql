-- Load-test fixture: the bulk-renewal fleet.
--
-- N managed certificates `loadtest-bulk-00001` … (id = name), linked to the demo seed's
-- issuer `iss-local`, owner `o-alice`, team `t-platform` and policy `rp-standard`, status
-- Active, expiries spread evenly over the next 30 days.
--
-- Size: the session setting `certctl.certs` (default 10000). certctl-loadtest sets it with
-- `SET certctl.certs = '…'`; with psql: PGOPTIONS='-c certctl.certs=20000' psql -f this-file.
-- Set-based (one INSERT … SELECT over generate_series) and idempotent (ON CONFLICT DO NOTHING),
-- so it can be re-run against a database that already has (part of) the fleet.

INSERT INTO managed_certificates (id, name, common_name, sans, environment, owner_id, team_id,
                                  issuer_id, renewal_policy_id, certificate_profile_id,
                                  status, source, expires_at, tags)
SELECT 'loadtest-bulk-' || lpad(n::text, 5, '0'),
       'loadtest-bulk-' || lpad(n::text, 5, '0'),
       'bulk-' || n || '.loadtest.example',
       ARRAY['bulk-' || n || '.loadtest.example'],
       'production',
       'o-alice', 't-platform', 'iss-local', 'rp-standard', 'prof-standard-tls',
       'Active', 'API',
       -- Evenly over (now, now + 30 days].
       now() + (interval '30 days') * (n::double precision / total),
       '{"loadtest": "bulk_renewal"}'::jsonb
FROM (SELECT coalesce(nullif(current_setting('certctl.certs', true), ''), '10000')::int AS total) AS p,
     generate_series(1, p.total) AS n
ON CONFLICT DO NOTHING;
