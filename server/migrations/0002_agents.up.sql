-- Agents: processes on fleet hosts that heartbeat, poll for work and submit CSRs.
-- `credential_hash` is the SHA-256 (hex) of the credential returned once at registration.
-- A retired agent keeps its row (history) but `retired_at` is set; its heartbeat answers 410.
CREATE TABLE agents (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    hostname          TEXT NOT NULL DEFAULT '',
    status            TEXT NOT NULL DEFAULT 'Offline'
                      CHECK (status IN ('Online', 'Offline', 'Degraded')),
    os                TEXT NOT NULL DEFAULT '',
    architecture      TEXT NOT NULL DEFAULT '',
    ip_address        TEXT NOT NULL DEFAULT '',
    version           TEXT NOT NULL DEFAULT '',
    credential_hash   TEXT NOT NULL,
    last_heartbeat_at TIMESTAMPTZ,
    registered_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    retired_at        TIMESTAMPTZ,
    retired_reason    TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT agents_name_key UNIQUE (name)
);
-- Agent-health sweep: online agents whose heartbeat went stale.
CREATE INDEX idx_agents_status_heartbeat ON agents (status, last_heartbeat_at);
-- Stable list order for offset pagination.
CREATE INDEX idx_agents_created_at_id ON agents (created_at, id);
