-- Load-test fixture: the agent fleet.
--
-- N agents `loadtest-agent-00001` … (id = name), status Online, last heartbeat staggered over
-- the last 60 s, OS mix 80 % linux / 10 % windows / 10 % darwin (by n mod 10).
--
-- Credentials: agent n authenticates with the bearer token `loadtest-agent-credential-<n>`
-- (n without padding). The server stores only hex(SHA-256(token)) in `credential_hash` and
-- compares the hash of the presented token, so the harness can compute every token while the
-- database holds none of them.
--
-- Size: the session setting `certctl.agents` (default 5000); with psql:
-- PGOPTIONS='-c certctl.agents=20000' psql -f this-file. Set-based and idempotent.

INSERT INTO agents (id, name, hostname, status, os, architecture, ip_address, version,
                    credential_hash, last_heartbeat_at)
SELECT 'loadtest-agent-' || lpad(n::text, 5, '0'),
       'loadtest-agent-' || lpad(n::text, 5, '0'),
       'agent-' || n || '.loadtest.example',
       'Online',
       CASE WHEN n % 10 = 8 THEN 'windows' WHEN n % 10 = 9 THEN 'darwin' ELSE 'linux' END,
       CASE WHEN n % 4 = 0 THEN 'arm64' ELSE 'amd64' END,
       '10.' || (n / 65536) % 256 || '.' || (n / 256) % 256 || '.' || n % 256,
       '2.0.0',
       encode(sha256(convert_to('loadtest-agent-credential-' || n, 'UTF8')), 'hex'),
       now() - (interval '60 seconds') * ((n % 60)::double precision / 60)
FROM (SELECT coalesce(nullif(current_setting('certctl.agents', true), ''), '5000')::int AS total) AS p,
     generate_series(1, p.total) AS n
ON CONFLICT DO NOTHING;
