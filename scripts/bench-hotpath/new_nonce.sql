-- One nonce stored on its own: what GET /acme/new-nonce needs per request. (The server stores
-- concurrent nonces in groups, one INSERT … UNNEST for several requests; the "statements/req"
-- column of the report shows how many.)
\set r random(1, 9000000000000000000)
INSERT INTO acme_nonces (nonce, expires_at) VALUES ('pgb' || :r, now() + make_interval(secs => 3600000::float8 / 1000));
