-- ACME server state (RFC 8555). Nonces live here so every replica accepts every nonce once.
CREATE TABLE acme_accounts (
    id             TEXT PRIMARY KEY,
    profile_id     TEXT NOT NULL,
    -- RFC 7638 thumbprint of the account key: how `onlyReturnExisting` and `jwk` lookups find it.
    jwk_thumbprint TEXT NOT NULL,
    jwk            JSONB NOT NULL,
    contact        TEXT[] NOT NULL DEFAULT '{}',
    status         TEXT NOT NULL DEFAULT 'valid' CHECK (status IN ('valid', 'deactivated', 'revoked')),
    terms_agreed   BOOLEAN NOT NULL DEFAULT false,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT acme_accounts_profile_thumbprint_key UNIQUE (profile_id, jwk_thumbprint),
    CONSTRAINT acme_accounts_profile_id_fkey FOREIGN KEY (profile_id) REFERENCES certificate_profiles (id)
);

CREATE TABLE acme_orders (
    id                     TEXT PRIMARY KEY,
    account_id             TEXT NOT NULL,
    profile_id             TEXT NOT NULL,
    status                 TEXT NOT NULL DEFAULT 'pending'
                           CHECK (status IN ('pending', 'ready', 'processing', 'valid', 'invalid')),
    identifiers            JSONB NOT NULL,
    not_before             TIMESTAMPTZ,
    not_after              TIMESTAMPTZ,
    expires_at             TIMESTAMPTZ NOT NULL,
    error                  JSONB,
    csr_pem                TEXT,
    certificate_id         TEXT,
    certificate_version_id TEXT,
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT acme_orders_account_id_fkey FOREIGN KEY (account_id) REFERENCES acme_accounts (id) ON DELETE CASCADE,
    CONSTRAINT acme_orders_profile_id_fkey FOREIGN KEY (profile_id) REFERENCES certificate_profiles (id),
    CONSTRAINT acme_orders_certificate_id_fkey
        FOREIGN KEY (certificate_id) REFERENCES managed_certificates (id) ON DELETE SET NULL,
    CONSTRAINT acme_orders_certificate_version_id_fkey
        FOREIGN KEY (certificate_version_id) REFERENCES certificate_versions (id) ON DELETE SET NULL
);
-- Pending-order limit per account and the GC sweep.
CREATE INDEX idx_acme_orders_account_status ON acme_orders (account_id, status, created_at);
CREATE INDEX idx_acme_orders_expires_at ON acme_orders (expires_at);
CREATE INDEX idx_acme_orders_certificate_version_id ON acme_orders (certificate_version_id);

CREATE TABLE acme_authorizations (
    id               TEXT PRIMARY KEY,
    order_id         TEXT NOT NULL,
    account_id       TEXT NOT NULL,
    identifier_type  TEXT NOT NULL DEFAULT 'dns',
    identifier_value TEXT NOT NULL,
    wildcard         BOOLEAN NOT NULL DEFAULT false,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'valid', 'invalid', 'deactivated', 'expired', 'revoked')),
    expires_at       TIMESTAMPTZ NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT acme_authorizations_order_id_fkey FOREIGN KEY (order_id) REFERENCES acme_orders (id) ON DELETE CASCADE,
    CONSTRAINT acme_authorizations_account_id_fkey
        FOREIGN KEY (account_id) REFERENCES acme_accounts (id) ON DELETE CASCADE
);
CREATE INDEX idx_acme_authorizations_order_id ON acme_authorizations (order_id);
CREATE INDEX idx_acme_authorizations_expires_at ON acme_authorizations (expires_at);

CREATE TABLE acme_challenges (
    id               TEXT PRIMARY KEY,
    authorization_id TEXT NOT NULL,
    type             TEXT NOT NULL CHECK (type IN ('http-01', 'dns-01', 'tls-alpn-01')),
    token            TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'processing', 'valid', 'invalid')),
    validated_at     TIMESTAMPTZ,
    error            JSONB,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT acme_challenges_token_key UNIQUE (token),
    CONSTRAINT acme_challenges_authorization_id_fkey
        FOREIGN KEY (authorization_id) REFERENCES acme_authorizations (id) ON DELETE CASCADE
);
CREATE INDEX idx_acme_challenges_authorization_id ON acme_challenges (authorization_id);

CREATE TABLE acme_nonces (
    nonce      TEXT PRIMARY KEY,
    expires_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_acme_nonces_expires_at ON acme_nonces (expires_at);
