//! The job queue's loops: processor (claim-based), retry, timeout, agent health.
//!
//! A job's life: `Pending` (inserted by the REST API's renew / bulk-renew or by the renewal
//! check) → claimed by one replica's processor with `FOR UPDATE SKIP LOCKED` (`Running`,
//! `claimed_by`, `started_at`, `attempts + 1`) → issued and `Completed` in one transaction
//! with its `certificate_versions` row and the certificate update. In agent keygen mode a job
//! of a certificate with an agent goes to `AwaitingCSR` instead and is completed by
//! [`crate::issuance::complete_job_with_csr`]. Failures go to `Failed` with `last_error`; the
//! retry loop puts them back to `Pending` while `attempts < max_attempts`; a job failing with
//! no attempts left makes its certificate `Failed` and emits an `issuance_failed` event.
//!
//! Claim lease: a claim also sets `lease_expires_at = now() + CERTCTL_JOB_LEASE` (the
//! database's clock), and the claiming pass renews it every third of the lease while its jobs
//! run. A `Running` job whose lease has expired — its owner was killed or froze — is claimable
//! again by any replica's next pass (`attempts + 1`, new `claimed_by`). `(claimed_by, attempts)`
//! is the claim's fencing token: completion, failure and lease renewal all require it, so an
//! owner that lost its claim can neither complete nor fail the job, and `certificate_versions`'
//! unique `job_id` backs that up — a job yields at most one version. With no attempts left, an
//! expired job is failed by the timeout sweep instead of run again.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tokio::sync::Semaphore;

use crate::AppState;
use crate::config::KeygenMode;
use crate::issuance::{self, IssuanceError, NewVersion};

/// Why one job could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Issuance failed (recorded as the job's `last_error`).
    #[error(transparent)]
    Issuance(#[from] IssuanceError),
    /// Database failure.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The job is no longer ours (timed out and failed by the sweep while we worked).
    #[error("job {0} is no longer Running under this instance; result discarded")]
    Lost(String),
}

/// A job claimed by this instance.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedJob {
    /// Job id.
    pub id: String,
    /// The certificate to issue for.
    pub certificate_id: String,
    /// `attempts` after this claim: with `claimed_by`, the fencing token of the claim.
    pub attempts: i32,
    /// For a job taken over from an owner whose lease expired: that owner.
    pub reclaimed_from: Option<String>,
}

/// What one processor pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProcessStats {
    /// Jobs moved to `AwaitingCSR` (agent mode).
    pub awaiting_csr: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Jobs failed.
    pub failed: u64,
}

const OPEN_STATUSES: &str = "('Pending', 'AwaitingCSR', 'AwaitingApproval', 'Running')";

/// Agent mode: moves due `Pending` jobs of certificates that have an agent to `AwaitingCSR`
/// (the agent picks them up through `GET /agents/{id}/work` and posts a CSR).
pub async fn move_agent_jobs_to_awaiting_csr(state: &AppState, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "WITH picked AS ( \
            SELECT j.id, COALESCE(j.agent_id, c.agent_id) AS agent_id \
              FROM jobs j JOIN managed_certificates c ON c.id = j.certificate_id \
             WHERE j.status = 'Pending' AND j.type IN ('Issuance', 'Renewal') AND j.scheduled_at <= $1 \
               AND COALESCE(j.agent_id, c.agent_id) IS NOT NULL \
             ORDER BY j.scheduled_at, j.id LIMIT $2 \
             FOR UPDATE OF j SKIP LOCKED) \
         UPDATE jobs j SET status = 'AwaitingCSR', agent_id = picked.agent_id, claimed_by = $3, started_at = $1, \
                attempts = j.attempts + 1, updated_at = $1 \
           FROM picked WHERE j.id = picked.id",
    )
    .bind(now)
    .bind(i64::from(state.config.job_batch_size))
    .bind(&*state.instance_id)
    .execute(&state.pool)
    .await?;
    Ok(done.rows_affected())
}

/// Claims up to `CERTCTL_JOB_BATCH_SIZE` issuance/renewal jobs for server-side issuance: due
/// `Pending` ones, and `Running` ones whose claim lease expired with attempts left (their owner
/// is dead or frozen). In agent mode only jobs of certificates without an agent qualify (nobody
/// would ever post a CSR for them).
pub async fn claim_batch(state: &AppState, now: DateTime<Utc>) -> Result<Vec<ClaimedJob>, sqlx::Error> {
    let server_mode = state.config.keygen_mode == KeygenMode::Server;
    let jobs = sqlx::query_as::<_, ClaimedJob>(
        "WITH picked AS ( \
            SELECT j.id, CASE WHEN j.status = 'Running' THEN j.claimed_by END AS reclaimed_from FROM jobs j \
             WHERE j.type IN ('Issuance', 'Renewal') \
               AND ((j.status = 'Pending' AND j.scheduled_at <= $1) \
                    OR (j.status = 'Running' AND j.lease_expires_at < now() AND j.attempts < j.max_attempts)) \
               AND ($4 OR (j.agent_id IS NULL AND NOT EXISTS ( \
                    SELECT 1 FROM managed_certificates c WHERE c.id = j.certificate_id AND c.agent_id IS NOT NULL))) \
             ORDER BY j.scheduled_at, j.id LIMIT $2 \
             FOR UPDATE SKIP LOCKED) \
         UPDATE jobs j SET status = 'Running', claimed_by = $3, started_at = $1, attempts = j.attempts + 1, \
                lease_expires_at = now() + $5, updated_at = $1 \
           FROM picked WHERE j.id = picked.id \
         RETURNING j.id, j.certificate_id, j.attempts, picked.reclaimed_from",
    )
    .bind(now)
    .bind(i64::from(state.config.job_batch_size))
    .bind(&*state.instance_id)
    .bind(server_mode)
    .bind(lease_interval(state))
    .fetch_all(&state.pool)
    .await?;
    for job in jobs.iter().filter(|j| j.reclaimed_from.is_some()) {
        tracing::warn!(job = %job.id, from = ?job.reclaimed_from, attempt = job.attempts,
            "reclaimed a job whose claim lease expired (its owner stopped renewing it)");
        state.metrics.record_job_reclaimed();
    }
    Ok(jobs)
}

/// `CERTCTL_JOB_LEASE` as a PostgreSQL `interval`.
fn lease_interval(state: &AppState) -> sqlx::postgres::types::PgInterval {
    let micros = i64::try_from(state.config.job_lease.as_micros()).unwrap_or(i64::MAX);
    sqlx::postgres::types::PgInterval { months: 0, days: 0, microseconds: micros }
}

/// Extends the claim lease of the jobs of `claims` that are still `Running` under this claim
/// (fenced by `claimed_by` and `attempts`). Idempotent: run twice, it sets the same lease.
pub async fn renew_leases(state: &AppState, claims: &[(String, i32)]) -> Result<u64, sqlx::Error> {
    let (ids, attempts): (Vec<&str>, Vec<i32>) = claims.iter().map(|(id, a)| (id.as_str(), *a)).unzip();
    let lease = lease_interval(state);
    crate::db::retry_idempotent(|| {
        sqlx::query(
            "UPDATE jobs j SET lease_expires_at = now() + $4 \
               FROM UNNEST($1::text[], $2::int[]) AS t(id, attempts) \
              WHERE j.id = t.id AND j.attempts = t.attempts AND j.status = 'Running' AND j.claimed_by = $3",
        )
        .bind(&ids)
        .bind(&attempts)
        .bind(&*state.instance_id)
        .bind(lease)
        .execute(&state.pool)
    })
    .await
    .map(|r| r.rows_affected())
}

/// Jobs issued and stored together: one context read, one key-generation/signing task and one
/// storing transaction per chunk instead of per job (`docs/operator/scale.md`, fleet renewal).
pub const JOB_CHUNK: usize = 50;

/// One processor pass: (agent mode) hand agent jobs to their agents, then claim one batch and
/// run it in chunks of at most [`JOB_CHUNK`] jobs, `CERTCTL_RENEWAL_CONCURRENCY` chunks at once
/// (the batch is cut into that many chunks when it is small enough). A chunk signs its jobs one
/// after another on one blocking thread, so the setting bounds the signing threads, as it
/// bounded the jobs in flight when every job was its own task. Waits for the whole batch.
pub async fn process_batch(state: &AppState, now: DateTime<Utc>) -> Result<ProcessStats, sqlx::Error> {
    let mut stats = ProcessStats::default();
    if state.config.keygen_mode == KeygenMode::Agent {
        stats.awaiting_csr = move_agent_jobs_to_awaiting_csr(state, now).await?;
    }
    let jobs = claim_batch(state, now).await?;
    if jobs.is_empty() {
        return Ok(stats);
    }
    let concurrency = usize::try_from(state.config.renewal_concurrency).unwrap_or(1).max(1);
    let chunk = jobs.len().div_ceil(concurrency).clamp(1, JOB_CHUNK);
    let permits = Arc::new(Semaphore::new(concurrency));
    let claims: Vec<(String, i32)> = jobs.iter().map(|j| (j.id.clone(), j.attempts)).collect();
    let mut set = tokio::task::JoinSet::new();
    for part in jobs.chunks(chunk) {
        let state = state.clone();
        let permits = permits.clone();
        let part = part.to_vec();
        set.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else { return (0, part.len() as u64) };
            let limit = state.config.job_running_timeout;
            match tokio::time::timeout(limit, run_server_jobs(&state, &part)).await {
                Ok(outcomes) => settle(&state, &part, outcomes).await,
                // Leave them Running: their leases run out once this batch ends, and another
                // pass reclaims them (on their last attempt, the timeout sweep fails them).
                Err(_) => {
                    tracing::warn!(jobs = part.len(), "job results discarded (timed out)");
                    (0, part.len() as u64)
                }
            }
        });
    }
    let (completed, failed) = join_renewing_leases(state, set, &claims).await;
    stats.completed += completed;
    stats.failed += failed;
    Ok(stats)
}

/// Waits for a batch's chunk tasks — each (completed, failed) — while keeping the batch's claim
/// leases alive: a renewal every third of the lease, so one that fails (database away) is
/// retried twice before the lease can expire.
async fn join_renewing_leases(
    state: &AppState,
    mut set: tokio::task::JoinSet<(u64, u64)>,
    claims: &[(String, i32)],
) -> (u64, u64) {
    let (mut completed, mut failed) = (0, 0);
    let period = (state.config.job_lease / 3).max(std::time::Duration::from_millis(10));
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = set.join_next() => match r {
                None => break,
                Some(Ok((c, f))) => {
                    completed += c;
                    failed += f;
                }
                Some(Err(e)) => tracing::error!(error = %e, "a job chunk task panicked or was cancelled"),
            },
            _ = renew.tick() => {
                match tokio::time::timeout(period, renew_leases(state, claims)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "could not renew job claim leases"),
                    Err(_) => tracing::warn!(?period, "renewing job claim leases did not answer in time"),
                }
            }
        }
    }
    (completed, failed)
}

/// Records the outcome of each job of a chunk: failures are written to the job while the claim
/// is still ours (`fail_claimed_job`), lost jobs only logged. Returns (completed, failed).
async fn settle(state: &AppState, jobs: &[ClaimedJob], outcomes: Vec<Result<(), JobError>>) -> (u64, u64) {
    let (mut completed, mut failed) = (0, 0);
    for (job, outcome) in jobs.iter().zip(outcomes) {
        match outcome {
            Ok(()) => completed += 1,
            Err(JobError::Lost(id)) => {
                tracing::warn!(job = %id, "job result discarded (timed out or taken over)");
                failed += 1;
            }
            Err(e) => {
                tracing::warn!(job = %job.id, certificate = %job.certificate_id, error = %e, "job failed");
                if let Err(db) = fail_claimed_job(state, job, &e.to_string(), Utc::now()).await {
                    tracing::error!(job = %job.id, error = %db, "could not record the job failure");
                }
                failed += 1;
            }
        }
    }
    (completed, failed)
}

/// A job whose certificate was issued and awaits storing.
struct Issued {
    ctx: issuance::CertContext,
    signed: issuance::SignedCertificate,
    stored_key: String,
    algorithm: String,
}

/// Issues for claimed jobs with server-generated keys, one outcome per job in order: the
/// contexts in one read, keys and signatures in one blocking task, then versions, certificates,
/// jobs and notifications in one transaction ([`store_issued`]).
pub async fn run_server_jobs(state: &AppState, jobs: &[ClaimedJob]) -> Vec<Result<(), JobError>> {
    let started = Instant::now();
    let ids: Vec<&str> = jobs.iter().map(|j| j.certificate_id.as_str()).collect();
    let contexts = match issuance::load_cert_contexts(&state.pool, &ids).await {
        Ok(c) => c,
        Err(e) => return jobs.iter().map(|_| Err(JobError::Db(clone_db_error(&e)))).collect(),
    };
    let mut planned: Vec<Result<(issuance::CertContext, Arc<issuance::ca::LocalCa>), JobError>> = Vec::new();
    for job in jobs {
        planned.push(plan_job(state, job, contexts.get(&job.certificate_id).cloned()).await);
    }
    let secret = state.config.config_encryption_key.clone();
    let signed = tokio::task::spawn_blocking(move || {
        planned.into_iter().map(|p| p.and_then(|(ctx, ca)| sign(ctx, &ca, secret.as_deref()))).collect::<Vec<_>>()
    })
    .await;
    let mut outcomes: Vec<Result<Issued, JobError>> = match signed {
        Ok(v) => v,
        Err(e) => return jobs.iter().map(|_| Err(IssuanceError::Ca(format!("signing task: {e}")).into())).collect(),
    };
    for (job, o) in jobs.iter().zip(&outcomes) {
        if let Err(e) = o
            && !matches!(e, JobError::Lost(_))
        {
            let issuer_type = contexts.get(&job.certificate_id).map_or("unknown", |c| c.issuer_type.as_str());
            state.metrics.record_issuance(issuer_type, "failure", started.elapsed());
        }
    }
    let ready: Vec<(&ClaimedJob, &Issued)> =
        jobs.iter().zip(&outcomes).filter_map(|(j, o)| o.as_ref().ok().map(|i| (j, i))).collect();
    let stored = store_issued(state, &ready).await;
    let mut result = Vec::with_capacity(jobs.len());
    for (job, o) in jobs.iter().zip(outcomes.drain(..)) {
        result.push(match (o, &stored) {
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(JobError::Db(clone_db_error(e))),
            (Ok(issued), Ok(ours)) if ours.contains(&job.id) => {
                state.metrics.record_issuance(&issued.ctx.issuer_type, "success", started.elapsed());
                state.metrics.record_job(true);
                Ok(())
            }
            (Ok(_), Ok(_)) => Err(JobError::Lost(job.id.clone())),
        });
    }
    result
}

/// `sqlx::Error` is not `Clone`: one failed statement fails every job of the chunk with its text.
fn clone_db_error(e: &sqlx::Error) -> sqlx::Error {
    sqlx::Error::Protocol(e.to_string())
}

/// The context and CA of one job, or why it cannot be issued.
async fn plan_job(
    state: &AppState,
    job: &ClaimedJob,
    ctx: Option<issuance::CertContext>,
) -> Result<(issuance::CertContext, Arc<issuance::ca::LocalCa>), JobError> {
    let ctx = ctx.ok_or_else(|| IssuanceError::NotFound(format!("certificate '{}' not found", job.certificate_id)))?;
    if matches!(ctx.status.as_str(), "Archived" | "Revoked") {
        return Err(IssuanceError::Conflict(format!("certificate is {}", ctx.status)).into());
    }
    let ca = issuance::local_ca(state, &ctx.issuer()).await?;
    Ok((ctx, ca))
}

/// Key generation and signing for one job: CPU work, run on a blocking thread (RSA keygen
/// takes seconds).
fn sign(ctx: issuance::CertContext, ca: &issuance::ca::LocalCa, secret: Option<&str>) -> Result<Issued, JobError> {
    let algorithm =
        ctx.profile().map_or_else(|| issuance::DEFAULT_KEY_ALGORITHM.to_string(), |p| p.default_key_algorithm);
    let key = issuance::generate_key(&algorithm)?;
    let signed = ca.issue(&ctx.leaf_request()?, &key, Utc::now())?;
    let (stored_key, _) =
        issuance::crypto::seal_optional(secret, &key.serialize_pem()).map_err(|e| IssuanceError::Ca(e.to_string()))?;
    Ok(Issued { ctx, signed, stored_key, algorithm })
}

/// Stores issued jobs in one transaction and returns the ids of the jobs that were still ours.
/// The completing UPDATE is guarded by `status = 'Running'` and the claim's fencing token, so
/// only the jobs it returns get a version, a certificate update and a notification.
async fn store_issued(state: &AppState, ready: &[(&ClaimedJob, &Issued)]) -> Result<Vec<String>, sqlx::Error> {
    if ready.is_empty() {
        return Ok(Vec::new());
    }
    let now = Utc::now();
    let mut tx = state.pool.begin().await?;
    let job_ids: Vec<&str> = ready.iter().map(|(j, _)| j.id.as_str()).collect();
    let attempts: Vec<i32> = ready.iter().map(|(j, _)| j.attempts).collect();
    // Fenced by this claim: `claimed_by = me AND attempts = ours`, so a job the timeout sweep
    // or another replica (after our lease expired) took away meanwhile is never completed twice.
    let ours: Vec<String> = sqlx::query_scalar(
        "UPDATE jobs j SET status = 'Completed', completed_at = $3, last_error = NULL, lease_expires_at = NULL, \
                updated_at = $3 \
           FROM UNNEST($1::text[], $4::int[]) AS t(id, attempts) \
          WHERE j.id = t.id AND j.attempts = t.attempts AND j.status = 'Running' AND j.claimed_by = $2 \
         RETURNING j.id",
    )
    .bind(&job_ids)
    .bind(&*state.instance_id)
    .bind(now)
    .bind(&attempts)
    .fetch_all(&mut *tx)
    .await?;
    let kept: Vec<&(&ClaimedJob, &Issued)> = ready.iter().filter(|(j, _)| ours.contains(&j.id)).collect();
    let versions: Vec<NewVersion> = kept
        .iter()
        .map(|(j, i)| NewVersion {
            certificate_id: &j.certificate_id,
            issuer_id: &i.ctx.issuer_id,
            signed: &i.signed,
            csr_pem: None,
            key_algorithm: &i.algorithm,
            private_key_pem: Some(&i.stored_key),
            job_id: Some(&j.id),
        })
        .collect();
    issuance::store_versions(&mut tx, &versions, now).await?;
    let events: Vec<crate::notify::NewEvent> = kept
        .iter()
        .map(|(j, i)| crate::notify::NewEvent {
            certificate_id: Some(j.certificate_id.clone()),
            subject: format!("Certificate {} renewed", i.ctx.common_name),
            message: format!(
                "Certificate {} ({}) was issued, serial {}, valid until {}.",
                j.certificate_id, i.ctx.common_name, i.signed.serial_hex, i.signed.not_after
            ),
        })
        .collect();
    crate::notify::enqueue_many(&mut tx, crate::notify::EVENT_ISSUED, &events, now).await?;
    tx.commit().await?;
    Ok(ours)
}

/// A failed job, as returned by the failing UPDATE.
#[derive(Debug, sqlx::FromRow)]
struct FailedRow {
    id: String,
    certificate_id: String,
    attempts: i32,
    max_attempts: i32,
}

/// Fails a job an agent reported failed (`POST …/jobs/{id}/status`): agent-driven jobs carry no
/// server claim, so only the state is checked. Server-claimed jobs use [`fail_claimed_job`].
pub async fn fail_job(state: &AppState, job_id: &str, error: &str, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let mut tx = state.pool.begin().await?;
    let rows = sqlx::query_as::<_, FailedRow>(
        "UPDATE jobs SET status = 'Failed', last_error = $2, completed_at = $3, lease_expires_at = NULL, updated_at = $3 \
          WHERE id = $1 AND status IN ('Running', 'AwaitingCSR') \
         RETURNING id, certificate_id, attempts, max_attempts",
    )
    .bind(job_id)
    .bind(error)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    after_failures(state, &mut tx, &rows, error, now).await?;
    tx.commit().await
}

/// Fails a job this instance claimed, if the claim is still ours (`claimed_by`, `attempts`):
/// an owner whose lease expired must not fail the job another replica now runs.
pub async fn fail_claimed_job(
    state: &AppState,
    job: &ClaimedJob,
    error: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut tx = state.pool.begin().await?;
    let rows = sqlx::query_as::<_, FailedRow>(
        "UPDATE jobs SET status = 'Failed', last_error = $2, completed_at = $3, lease_expires_at = NULL, updated_at = $3 \
          WHERE id = $1 AND status = 'Running' AND claimed_by = $4 AND attempts = $5 \
         RETURNING id, certificate_id, attempts, max_attempts",
    )
    .bind(&job.id)
    .bind(error)
    .bind(now)
    .bind(&*state.instance_id)
    .bind(job.attempts)
    .fetch_all(&mut *tx)
    .await?;
    after_failures(state, &mut tx, &rows, error, now).await?;
    tx.commit().await
}

/// For failed jobs with no attempts left: the certificate becomes `Failed` (unless archived or
/// revoked meanwhile) and an `issuance_failed` event is queued.
async fn after_failures(
    state: &AppState,
    conn: &mut PgConnection,
    rows: &[FailedRow],
    error: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    for row in rows.iter().filter(|r| r.attempts >= r.max_attempts) {
        sqlx::query(
            "UPDATE managed_certificates SET status = 'Failed', updated_at = $2 \
              WHERE id = $1 AND status NOT IN ('Archived', 'Revoked')",
        )
        .bind(&row.certificate_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        crate::notify::enqueue(
            conn,
            crate::notify::EVENT_ISSUANCE_FAILED,
            Some(&row.certificate_id),
            &format!("Issuance failed for certificate {}", row.certificate_id),
            &format!("Job {} failed after {} attempt(s): {error}", row.id, row.attempts),
            now,
        )
        .await?;
        state.metrics.record_job(false);
    }
    Ok(())
}

/// Retry loop: `Failed` issuance/renewal jobs with attempts left go back to `Pending`, unless
/// another open job now exists for the certificate (the one-open-job index would refuse it).
pub async fn retry_failed(pool: &sqlx::PgPool, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let sql = format!(
        "UPDATE jobs j SET status = 'Pending', scheduled_at = $1, claimed_by = NULL, started_at = NULL, \
                completed_at = NULL, updated_at = $1 \
          WHERE j.status = 'Failed' AND j.attempts < j.max_attempts AND j.type IN ('Issuance', 'Renewal') \
            AND NOT EXISTS (SELECT 1 FROM jobs o WHERE o.certificate_id = j.certificate_id AND o.id <> j.id \
                             AND o.type IN ('Issuance', 'Renewal') AND o.status IN {OPEN_STATUSES}) \
            AND NOT EXISTS (SELECT 1 FROM managed_certificates c WHERE c.id = j.certificate_id \
                             AND c.status IN ('Archived', 'Revoked'))"
    );
    // Built from constants only.
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).execute(pool).await?.rows_affected())
}

/// Timeout loop: fails `Running` jobs started before `now - CERTCTL_JOB_RUNNING_TIMEOUT`,
/// `AwaitingCSR` jobs waiting since before `now - CERTCTL_JOB_AWAITING_CSR_TIMEOUT`, and
/// `Running` jobs on their last attempt whose claim lease expired.
pub async fn timeout_sweep(state: &AppState, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let running = chrono::Duration::from_std(state.config.job_running_timeout).unwrap_or(chrono::Duration::MAX);
    let awaiting = chrono::Duration::from_std(state.config.job_awaiting_csr_timeout).unwrap_or(chrono::Duration::MAX);
    let mut tx = state.pool.begin().await?;
    let mut total = 0;
    for (status, limit, label) in [
        ("Running", running, humanize(state.config.job_running_timeout)),
        ("AwaitingCSR", awaiting, humanize(state.config.job_awaiting_csr_timeout)),
    ] {
        let cutoff = now.checked_sub_signed(limit).unwrap_or(DateTime::<Utc>::MIN_UTC);
        let error = format!("timed out: {status} for longer than {label}");
        let rows = sqlx::query_as::<_, FailedRow>(
            "UPDATE jobs SET status = 'Failed', last_error = $3 || COALESCE(' (claimed by ' || claimed_by || ')', ''), \
                    completed_at = $4, updated_at = $4 \
              WHERE status = $1 AND COALESCE(started_at, updated_at) < $2 \
             RETURNING id, certificate_id, attempts, max_attempts",
        )
        .bind(status)
        .bind(cutoff)
        .bind(&error)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        total += rows.len() as u64;
        after_failures(state, &mut tx, &rows, &error, now).await?;
    }
    // A job whose owner stopped renewing its claim lease on its last attempt is not reclaimed
    // (a job that kills every replica running it must not cycle through them forever): it is
    // failed here, without waiting out the running timeout.
    let error = "claim lease expired on the last attempt: the claiming replica stopped (killed or frozen)";
    let rows = sqlx::query_as::<_, FailedRow>(
        "UPDATE jobs SET status = 'Failed', last_error = $1 || COALESCE(' (claimed by ' || claimed_by || ')', ''), \
                completed_at = $2, lease_expires_at = NULL, updated_at = $2 \
          WHERE status = 'Running' AND lease_expires_at < now() AND attempts >= max_attempts \
         RETURNING id, certificate_id, attempts, max_attempts",
    )
    .bind(error)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    total += rows.len() as u64;
    after_failures(state, &mut tx, &rows, error, now).await?;
    tx.commit().await?;
    Ok(total)
}

/// Agent-health loop: agents without a heartbeat for `CERTCTL_AGENT_OFFLINE_AFTER` become
/// `Offline`; then the offline-agent reaper fails `AwaitingCSR` jobs of agents that have been
/// silent for longer than `CERTCTL_JOB_AWAITING_CSR_TIMEOUT` (no CSR can come from them, so
/// the job should not sit out a further full CSR timeout). Returns (agents marked, jobs failed).
pub async fn agent_health(state: &AppState, now: DateTime<Utc>) -> Result<(u64, u64), sqlx::Error> {
    let offline_after = chrono::Duration::from_std(state.config.agent_offline_after).unwrap_or(chrono::Duration::MAX);
    let csr_timeout =
        chrono::Duration::from_std(state.config.job_awaiting_csr_timeout).unwrap_or(chrono::Duration::MAX);
    let cutoff = now.checked_sub_signed(offline_after).unwrap_or(DateTime::<Utc>::MIN_UTC);
    let marked = sqlx::query(
        "UPDATE agents SET status = 'Offline', updated_at = $2 \
          WHERE status IN ('Online', 'Degraded') AND retired_at IS NULL \
            AND (last_heartbeat_at IS NULL OR last_heartbeat_at < $1)",
    )
    .bind(cutoff)
    .bind(now)
    .execute(&state.pool)
    .await?
    .rows_affected();
    let reap_cutoff = now.checked_sub_signed(csr_timeout).unwrap_or(DateTime::<Utc>::MIN_UTC);
    let mut tx = state.pool.begin().await?;
    let error = format!(
        "agent offline for longer than {}: no CSR will arrive",
        humanize(state.config.job_awaiting_csr_timeout)
    );
    let rows = sqlx::query_as::<_, FailedRow>(
        "UPDATE jobs j SET status = 'Failed', last_error = $3 || ' (agent ' || a.id || ')', completed_at = $2, updated_at = $2 \
           FROM agents a \
          WHERE j.status = 'AwaitingCSR' AND a.id = j.agent_id AND a.status = 'Offline' \
            AND (a.last_heartbeat_at IS NULL OR a.last_heartbeat_at < $1) \
         RETURNING j.id, j.certificate_id, j.attempts, j.max_attempts",
    )
    .bind(reap_cutoff)
    .bind(now)
    .bind(&error)
    .fetch_all(&mut *tx)
    .await?;
    after_failures(state, &mut tx, &rows, &error, now).await?;
    tx.commit().await?;
    Ok((marked, rows.len() as u64))
}

/// `600s` → `10m`, for error messages in the configuration's own units.
fn humanize(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s > 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s > 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else if d.subsec_millis() == 0 {
        format!("{s}s")
    } else {
        format!("{}ms", d.as_millis())
    }
}
