-- Organisation: who owns certificates, how they renew, who issues them and with which profile.
-- IDs are application-generated TEXT (e.g. `t-platform`, `o-alice`) as in the Go reference.
-- Every unique and foreign-key constraint is named so the API can map violations
-- (duplicate name -> 409, unknown reference -> 422).

CREATE TABLE teams (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT teams_name_key UNIQUE (name)
);

CREATE TABLE owners (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    email      TEXT NOT NULL DEFAULT '',
    team_id    TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT owners_name_key UNIQUE (name),
    CONSTRAINT owners_team_id_fkey FOREIGN KEY (team_id) REFERENCES teams (id)
);
CREATE INDEX idx_owners_team_id ON owners (team_id);

-- A renewal policy: how long before expiry renewal starts and how hard it retries.
CREATE TABLE renewal_policies (
    id                     TEXT PRIMARY KEY,
    name                   TEXT NOT NULL,
    renewal_window_days    INTEGER NOT NULL DEFAULT 30 CHECK (renewal_window_days >= 0),
    auto_renew             BOOLEAN NOT NULL DEFAULT true,
    max_retries            INTEGER NOT NULL DEFAULT 3 CHECK (max_retries >= 0),
    retry_interval_seconds INTEGER NOT NULL DEFAULT 3600 CHECK (retry_interval_seconds >= 0),
    alert_thresholds_days  INTEGER[] NOT NULL DEFAULT '{30,14,7,0}',
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT renewal_policies_name_key UNIQUE (name)
);

-- An issuer: `GenericCA` is the built-in local CA; `config` holds type-specific settings.
CREATE TABLE issuers (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    type          TEXT NOT NULL,
    config        JSONB NOT NULL DEFAULT '{}',
    enabled       BOOLEAN NOT NULL DEFAULT true,
    validity_days INTEGER NOT NULL DEFAULT 90 CHECK (validity_days > 0),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT issuers_name_key UNIQUE (name)
);

-- A certificate profile: what a certificate issued under it looks like, and how ACME
-- enrolment through it behaves (auth mode, and the owner/team/policy given to ACME
-- certificates so finalize never violates a foreign key).
CREATE TABLE certificate_profiles (
    id                     TEXT PRIMARY KEY,
    name                   TEXT NOT NULL,
    description            TEXT NOT NULL DEFAULT '',
    issuer_id              TEXT,
    allowed_key_algorithms TEXT[] NOT NULL DEFAULT '{ECDSA-P256,RSA-2048}',
    default_key_algorithm  TEXT NOT NULL DEFAULT 'ECDSA-P256',
    validity_days          INTEGER NOT NULL DEFAULT 90 CHECK (validity_days > 0),
    extended_key_usages    TEXT[] NOT NULL DEFAULT '{serverAuth}',
    max_sans               INTEGER NOT NULL DEFAULT 100 CHECK (max_sans > 0),
    acme_enabled           BOOLEAN NOT NULL DEFAULT false,
    acme_auth_mode         TEXT NOT NULL DEFAULT 'challenge'
                           CHECK (acme_auth_mode IN ('challenge', 'trust_authenticated')),
    acme_owner_id          TEXT,
    acme_team_id           TEXT,
    acme_renewal_policy_id TEXT,
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT certificate_profiles_name_key UNIQUE (name),
    CONSTRAINT certificate_profiles_issuer_id_fkey FOREIGN KEY (issuer_id) REFERENCES issuers (id),
    CONSTRAINT certificate_profiles_acme_owner_id_fkey FOREIGN KEY (acme_owner_id) REFERENCES owners (id),
    CONSTRAINT certificate_profiles_acme_team_id_fkey FOREIGN KEY (acme_team_id) REFERENCES teams (id),
    CONSTRAINT certificate_profiles_acme_renewal_policy_id_fkey
        FOREIGN KEY (acme_renewal_policy_id) REFERENCES renewal_policies (id)
);
