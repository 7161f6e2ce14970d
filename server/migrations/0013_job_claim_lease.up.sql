-- Claim leases for server-side jobs: a replica that dies mid-job must not strand its jobs in
-- `Running` until the (long) running timeout.
--
-- The job processor sets `lease_expires_at = now() + CERTCTL_JOB_LEASE` when it claims a job
-- and renews it every third of the lease while the job is in flight. Once the lease has expired
-- (the owner stopped renewing it: killed, partitioned, frozen) any replica's next claim takes
-- the job over — `claimed_by` and `attempts + 1` change, and the completing UPDATE of the old
-- owner is fenced by both, so it can no longer complete it. Times are the database's clock
-- (`now()`), so replicas with skewed clocks agree on expiry.
-- NULL for everything not claimed by a server-side processor (agent deployments, AwaitingCSR,
-- finished jobs): those keep their own timeouts.
ALTER TABLE jobs ADD COLUMN lease_expires_at TIMESTAMPTZ;

-- The reclaim half of the claim query: expired leases of Running jobs, oldest first.
CREATE INDEX idx_jobs_running_lease ON jobs (lease_expires_at) WHERE status = 'Running' AND lease_expires_at IS NOT NULL;
