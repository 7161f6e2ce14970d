-- Local CA material and the scheduler's leadership record.

-- The local CA of a `GenericCA` issuer: created once by whichever replica gets there first
-- (INSERT ... ON CONFLICT DO NOTHING, then read back), so every replica signs with one key
-- and earlier leaves keep chaining after restarts.
CREATE TABLE issuer_ca_keys (
    issuer_id     TEXT PRIMARY KEY,
    cert_pem      TEXT NOT NULL,
    -- PKCS#8 PEM, or `enc:v1:` + base64(nonce || AES-256-GCM ciphertext) when
    -- CERTCTL_CONFIG_ENCRYPTION_KEY is set.
    key_pem       TEXT NOT NULL,
    key_encrypted BOOLEAN NOT NULL DEFAULT false,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT issuer_ca_keys_issuer_id_fkey FOREIGN KEY (issuer_id) REFERENCES issuers (id) ON DELETE CASCADE
);

-- The latest signed CRL per issuer, served at /.well-known/pki/crl/{issuer_id}.
CREATE TABLE issuer_crls (
    issuer_id   TEXT PRIMARY KEY,
    crl_number  BIGINT NOT NULL,
    crl_der     BYTEA NOT NULL,
    this_update TIMESTAMPTZ NOT NULL,
    next_update TIMESTAMPTZ NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT issuer_crls_issuer_id_fkey FOREIGN KEY (issuer_id) REFERENCES issuers (id) ON DELETE CASCADE
);

-- Observability for leader election: the lock itself is a session advisory lock; this row
-- says which instance holds it and since when.
CREATE TABLE scheduler_leaders (
    role        TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    renewed_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
