-- Managed certificates, their issued versions, revocations and deployment targets.

CREATE TABLE managed_certificates (
    id                     TEXT PRIMARY KEY,
    name                   TEXT NOT NULL,
    common_name            TEXT NOT NULL,
    sans                   TEXT[] NOT NULL DEFAULT '{}',
    environment            TEXT NOT NULL DEFAULT 'production',
    owner_id               TEXT NOT NULL,
    team_id                TEXT NOT NULL,
    issuer_id              TEXT NOT NULL,
    renewal_policy_id      TEXT NOT NULL,
    certificate_profile_id TEXT,
    -- The agent that deploys this certificate (bulk-renew can select by it).
    agent_id               TEXT,
    status                 TEXT NOT NULL DEFAULT 'Pending'
                           CHECK (status IN ('Pending', 'Active', 'Expiring', 'Expired',
                                             'RenewalInProgress', 'Failed', 'Revoked', 'Archived')),
    source                 TEXT NOT NULL DEFAULT 'API',
    expires_at             TIMESTAMPTZ,
    last_renewal_at        TIMESTAMPTZ,
    last_deployed_at       TIMESTAMPTZ,
    revoked_at             TIMESTAMPTZ,
    revocation_reason      TEXT,
    tags                   JSONB NOT NULL DEFAULT '{}',
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT managed_certificates_name_key UNIQUE (name),
    CONSTRAINT managed_certificates_owner_id_fkey FOREIGN KEY (owner_id) REFERENCES owners (id),
    CONSTRAINT managed_certificates_team_id_fkey FOREIGN KEY (team_id) REFERENCES teams (id),
    CONSTRAINT managed_certificates_issuer_id_fkey FOREIGN KEY (issuer_id) REFERENCES issuers (id),
    CONSTRAINT managed_certificates_renewal_policy_id_fkey
        FOREIGN KEY (renewal_policy_id) REFERENCES renewal_policies (id),
    CONSTRAINT managed_certificates_certificate_profile_id_fkey
        FOREIGN KEY (certificate_profile_id) REFERENCES certificate_profiles (id),
    CONSTRAINT managed_certificates_agent_id_fkey FOREIGN KEY (agent_id) REFERENCES agents (id)
);
-- List filters and sorts (GET /api/v1/certificates) and the bulk-renew selectors.
CREATE INDEX idx_managed_certificates_status ON managed_certificates (status, expires_at);
CREATE INDEX idx_managed_certificates_expires_at ON managed_certificates (expires_at);
CREATE INDEX idx_managed_certificates_owner_id ON managed_certificates (owner_id);
CREATE INDEX idx_managed_certificates_team_id ON managed_certificates (team_id);
CREATE INDEX idx_managed_certificates_issuer_id ON managed_certificates (issuer_id);
CREATE INDEX idx_managed_certificates_profile_id ON managed_certificates (certificate_profile_id);
CREATE INDEX idx_managed_certificates_agent_id ON managed_certificates (agent_id);
CREATE INDEX idx_managed_certificates_environment ON managed_certificates (environment);
-- Default list order and the keyset cursor: (created_at, id).
CREATE INDEX idx_managed_certificates_created_at_id ON managed_certificates (created_at, id);
CREATE INDEX idx_managed_certificates_updated_at ON managed_certificates (updated_at);

-- One row per issued certificate (every renewal adds one).
CREATE TABLE certificate_versions (
    id                 TEXT PRIMARY KEY,
    certificate_id     TEXT NOT NULL,
    issuer_id          TEXT NOT NULL,
    serial_number      TEXT NOT NULL,
    not_before         TIMESTAMPTZ NOT NULL,
    not_after          TIMESTAMPTZ NOT NULL,
    fingerprint_sha256 TEXT NOT NULL,
    pem_chain          TEXT NOT NULL,
    csr_pem            TEXT,
    key_algorithm      TEXT NOT NULL DEFAULT '',
    -- Server-generated private key (PEM, encrypted when CERTCTL_CONFIG_ENCRYPTION_KEY is set).
    private_key_pem    TEXT,
    -- Issuing-job id: lets the multi-replica checks prove one version per job.
    job_id             TEXT,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT certificate_versions_issuer_serial_key UNIQUE (issuer_id, serial_number),
    CONSTRAINT certificate_versions_job_id_key UNIQUE (job_id),
    CONSTRAINT certificate_versions_certificate_id_fkey
        FOREIGN KEY (certificate_id) REFERENCES managed_certificates (id) ON DELETE CASCADE,
    CONSTRAINT certificate_versions_issuer_id_fkey FOREIGN KEY (issuer_id) REFERENCES issuers (id)
);
CREATE INDEX idx_certificate_versions_certificate_id ON certificate_versions (certificate_id, created_at);

CREATE TABLE certificate_revocations (
    id             TEXT PRIMARY KEY,
    certificate_id TEXT NOT NULL,
    issuer_id      TEXT NOT NULL,
    serial_number  TEXT NOT NULL,
    reason         TEXT NOT NULL DEFAULT 'unspecified',
    reason_code    INTEGER NOT NULL DEFAULT 0,
    revoked_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT certificate_revocations_issuer_serial_key UNIQUE (issuer_id, serial_number),
    CONSTRAINT certificate_revocations_certificate_id_fkey
        FOREIGN KEY (certificate_id) REFERENCES managed_certificates (id) ON DELETE CASCADE,
    CONSTRAINT certificate_revocations_issuer_id_fkey FOREIGN KEY (issuer_id) REFERENCES issuers (id)
);
-- CRL generation reads one issuer's revocations.
CREATE INDEX idx_certificate_revocations_issuer ON certificate_revocations (issuer_id, revoked_at);

CREATE TABLE deployment_targets (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    type       TEXT NOT NULL,
    agent_id   TEXT,
    config     JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT deployment_targets_name_key UNIQUE (name),
    CONSTRAINT deployment_targets_agent_id_fkey FOREIGN KEY (agent_id) REFERENCES agents (id)
);
CREATE INDEX idx_deployment_targets_agent_id ON deployment_targets (agent_id);

CREATE TABLE certificate_target_mappings (
    certificate_id TEXT NOT NULL,
    target_id      TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT certificate_target_mappings_pkey PRIMARY KEY (certificate_id, target_id),
    CONSTRAINT certificate_target_mappings_certificate_id_fkey
        FOREIGN KEY (certificate_id) REFERENCES managed_certificates (id) ON DELETE CASCADE,
    CONSTRAINT certificate_target_mappings_target_id_fkey
        FOREIGN KEY (target_id) REFERENCES deployment_targets (id) ON DELETE CASCADE
);
CREATE INDEX idx_certificate_target_mappings_target_id ON certificate_target_mappings (target_id);
