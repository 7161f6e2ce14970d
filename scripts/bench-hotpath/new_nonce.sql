-- What GET /acme/new-nonce runs per request: one INSERT of a random nonce.
\set r random(1, 9000000000000000000)
INSERT INTO acme_nonces (nonce, expires_at) VALUES ('pgb' || :r, now() + make_interval(secs => 3600000::float8 / 1000));
