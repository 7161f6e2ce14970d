-- What POST /api/v1/certificates runs per request: one INSERT … RETURNING (the batched audit
-- INSERT, ~1/500 per request, is left out). Ids are random, as the server's are.
\set r random(1, 9000000000000000000)
INSERT INTO managed_certificates (id, name, common_name, sans, environment, owner_id, team_id, issuer_id,
                                  renewal_policy_id, certificate_profile_id, agent_id, status, tags)
VALUES ('mc-pgb-' || :r, 'pgb-' || :r, 'pgb-' || :r || '.bench.example', '{}'::text[], COALESCE(NULL::text, 'production'),
        'o-alice', 't-platform', 'iss-local', 'rp-standard', NULL, NULL, 'Pending', COALESCE(NULL::jsonb, '{}'::jsonb))
RETURNING id, name, common_name, sans, environment, owner_id, team_id, issuer_id, renewal_policy_id,
          certificate_profile_id, agent_id, status, source, expires_at, last_renewal_at, last_deployed_at, revoked_at,
          revocation_reason, tags, created_at, updated_at;
