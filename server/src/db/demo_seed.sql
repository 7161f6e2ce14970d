-- Demo data set (CERTCTL_DEMO_SEED=true). Idempotent: every insert is ON CONFLICT DO NOTHING,
-- so every replica may run it on every boot. The load-test fixtures (seeds/) build on these ids.

INSERT INTO teams (id, name, description)
VALUES ('t-platform', 'Platform', 'Platform engineering')
ON CONFLICT DO NOTHING;

INSERT INTO owners (id, name, email, team_id)
VALUES ('o-alice', 'Alice', 'alice@example.com', 't-platform')
ON CONFLICT DO NOTHING;

INSERT INTO renewal_policies (id, name, renewal_window_days, auto_renew, max_retries, alert_thresholds_days)
VALUES ('rp-standard', 'Standard', 30, true, 3, '{30,14,7,0}')
ON CONFLICT DO NOTHING;

INSERT INTO issuers (id, name, type, config, validity_days)
VALUES ('iss-local', 'Local CA', 'GenericCA', '{"common_name": "certctl Local CA"}', 90)
ON CONFLICT DO NOTHING;

INSERT INTO certificate_profiles (id, name, description, issuer_id, allowed_key_algorithms,
                                  default_key_algorithm, validity_days, extended_key_usages,
                                  acme_enabled, acme_auth_mode)
VALUES ('prof-standard-tls', 'Standard TLS', 'TLS server certificates, 90 days', 'iss-local',
        '{ECDSA-P256,ECDSA-P384,RSA-2048,RSA-3072,RSA-4096}', 'ECDSA-P256', 90, '{serverAuth}',
        true, 'challenge'),
       ('prof-test', 'Test (ACME, trusted)', 'ACME enrolment without challenge validation', 'iss-local',
        '{ECDSA-P256,ECDSA-P384,RSA-2048,RSA-3072,RSA-4096,Ed25519}', 'ECDSA-P256', 90, '{serverAuth,clientAuth}',
        true, 'trust_authenticated')
ON CONFLICT DO NOTHING;

-- ACME certificates under the demo profiles belong to Alice / Platform / Standard policy.
UPDATE certificate_profiles
   SET acme_owner_id = 'o-alice', acme_team_id = 't-platform', acme_renewal_policy_id = 'rp-standard'
 WHERE id IN ('prof-standard-tls', 'prof-test') AND acme_owner_id IS NULL;

-- Demo agents: credentials are random and unknown (register a real agent through the API).
INSERT INTO agents (id, name, hostname, status, os, architecture, ip_address, version,
                    credential_hash, last_heartbeat_at)
VALUES ('agent-demo-web01', 'web01', 'web01.example.internal', 'Online', 'linux', 'amd64', '10.0.0.11',
        '2.0.0', encode(sha256(gen_random_uuid()::text::bytea), 'hex'), now()),
       ('agent-demo-db01', 'db01', 'db01.example.internal', 'Offline', 'linux', 'arm64', '10.0.0.12',
        '2.0.0', encode(sha256(gen_random_uuid()::text::bytea), 'hex'), now() - interval '1 day')
ON CONFLICT DO NOTHING;

INSERT INTO managed_certificates (id, name, common_name, sans, environment, owner_id, team_id,
                                  issuer_id, renewal_policy_id, certificate_profile_id, agent_id,
                                  status, expires_at)
VALUES ('mc-demo-api', 'api-example-com', 'api.example.com', '{api.example.com}', 'production',
        'o-alice', 't-platform', 'iss-local', 'rp-standard', 'prof-standard-tls', 'agent-demo-web01',
        'Active', now() + interval '60 days'),
       ('mc-demo-www', 'www-example-com', 'www.example.com', '{www.example.com,example.com}', 'production',
        'o-alice', 't-platform', 'iss-local', 'rp-standard', 'prof-standard-tls', 'agent-demo-web01',
        'Expiring', now() + interval '10 days'),
       ('mc-demo-db', 'db-internal', 'db.example.internal', '{db.example.internal}', 'staging',
        'o-alice', 't-platform', 'iss-local', 'rp-standard', 'prof-standard-tls', 'agent-demo-db01',
        'Pending', NULL)
ON CONFLICT DO NOTHING;
