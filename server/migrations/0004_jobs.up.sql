-- Jobs: the work queue behind issuance, renewal and deployment.
-- Claimed with `FOR UPDATE SKIP LOCKED` by the job processor (and by agents polling for work).
CREATE TABLE jobs (
    id             TEXT PRIMARY KEY,
    type           TEXT NOT NULL CHECK (type IN ('Issuance', 'Renewal', 'Deployment')),
    certificate_id TEXT NOT NULL,
    agent_id       TEXT,
    status         TEXT NOT NULL DEFAULT 'Pending'
                   CHECK (status IN ('Pending', 'AwaitingCSR', 'AwaitingApproval', 'Running',
                                     'Completed', 'Failed', 'Cancelled')),
    attempts       INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts   INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 0),
    last_error     TEXT,
    scheduled_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at     TIMESTAMPTZ,
    completed_at   TIMESTAMPTZ,
    -- Instance id of the replica (or agent) that claimed the job, for the multi-replica checks.
    claimed_by     TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT jobs_certificate_id_fkey
        FOREIGN KEY (certificate_id) REFERENCES managed_certificates (id) ON DELETE CASCADE,
    CONSTRAINT jobs_agent_id_fkey FOREIGN KEY (agent_id) REFERENCES agents (id)
);
-- Job processor claim: Pending jobs due now, oldest first.
CREATE INDEX idx_jobs_status_scheduled_at ON jobs (status, scheduled_at);
-- Agent work poll: an agent's jobs by status.
CREATE INDEX idx_jobs_agent_status ON jobs (agent_id, status);
CREATE INDEX idx_jobs_certificate_id ON jobs (certificate_id);
CREATE INDEX idx_jobs_created_at_id ON jobs (created_at, id);
-- At most one open issuance/renewal job per certificate: bulk renew and the renewal check
-- can race across replicas, and this makes "one job per certificate" a database fact.
CREATE UNIQUE INDEX jobs_one_open_renewal_per_certificate ON jobs (certificate_id)
    WHERE type IN ('Issuance', 'Renewal') AND status IN ('Pending', 'AwaitingCSR', 'AwaitingApproval', 'Running');
