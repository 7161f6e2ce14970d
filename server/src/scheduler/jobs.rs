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

/// Claims up to `CERTCTL_JOB_BATCH_SIZE` due `Pending` issuance/renewal jobs for server-side
/// issuance. In agent mode only jobs of certificates without an agent qualify (nobody would
/// ever post a CSR for them).
pub async fn claim_batch(state: &AppState, now: DateTime<Utc>) -> Result<Vec<ClaimedJob>, sqlx::Error> {
    let server_mode = state.config.keygen_mode == KeygenMode::Server;
    sqlx::query_as::<_, ClaimedJob>(
        "WITH picked AS ( \
            SELECT j.id FROM jobs j \
             WHERE j.status = 'Pending' AND j.type IN ('Issuance', 'Renewal') AND j.scheduled_at <= $1 \
               AND ($4 OR (j.agent_id IS NULL AND NOT EXISTS ( \
                    SELECT 1 FROM managed_certificates c WHERE c.id = j.certificate_id AND c.agent_id IS NOT NULL))) \
             ORDER BY j.scheduled_at, j.id LIMIT $2 \
             FOR UPDATE SKIP LOCKED) \
         UPDATE jobs j SET status = 'Running', claimed_by = $3, started_at = $1, attempts = j.attempts + 1, updated_at = $1 \
           FROM picked WHERE j.id = picked.id \
         RETURNING j.id, j.certificate_id",
    )
    .bind(now)
    .bind(i64::from(state.config.job_batch_size))
    .bind(&*state.instance_id)
    .bind(server_mode)
    .fetch_all(&state.pool)
    .await
}

/// One processor pass: (agent mode) hand agent jobs to their agents, then claim one batch and
/// run it under a semaphore of `CERTCTL_RENEWAL_CONCURRENCY`. Waits for the whole batch.
pub async fn process_batch(state: &AppState, now: DateTime<Utc>) -> Result<ProcessStats, sqlx::Error> {
    let mut stats = ProcessStats::default();
    if state.config.keygen_mode == KeygenMode::Agent {
        stats.awaiting_csr = move_agent_jobs_to_awaiting_csr(state, now).await?;
    }
    let jobs = claim_batch(state, now).await?;
    if jobs.is_empty() {
        return Ok(stats);
    }
    let permits = Arc::new(Semaphore::new(usize::try_from(state.config.renewal_concurrency).unwrap_or(1).max(1)));
    let mut set = tokio::task::JoinSet::new();
    for job in jobs {
        let state = state.clone();
        let permits = permits.clone();
        set.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else { return false };
            let limit = state.config.job_running_timeout;
            let outcome = match tokio::time::timeout(limit, run_server_job(&state, &job)).await {
                Ok(r) => r,
                // Leave it Running: the timeout sweep fails it and the retry loop requeues it.
                Err(_) => Err(JobError::Lost(job.id.clone())),
            };
            match outcome {
                Ok(()) => true,
                Err(JobError::Lost(id)) => {
                    tracing::warn!(job = %id, "job result discarded (timed out or taken over)");
                    false
                }
                Err(e) => {
                    tracing::warn!(job = %job.id, certificate = %job.certificate_id, error = %e, "job failed");
                    if let Err(db) = fail_job(&state, &job.id, &e.to_string(), Utc::now()).await {
                        tracing::error!(job = %job.id, error = %db, "could not record the job failure");
                    }
                    false
                }
            }
        });
    }
    while let Some(r) = set.join_next().await {
        match r {
            Ok(true) => stats.completed += 1,
            _ => stats.failed += 1,
        }
    }
    Ok(stats)
}

/// Issues for one claimed job with a server-generated key; version + certificate + job in one
/// transaction. The completing UPDATE is guarded by `status = 'Running' AND claimed_by = me`,
/// so a job the timeout sweep took away in the meantime is never completed twice.
pub async fn run_server_job(state: &AppState, job: &ClaimedJob) -> Result<(), JobError> {
    let started = Instant::now();
    let mut conn = state.pool.acquire().await?;
    let ctx = issuance::load_cert_context(&mut conn, &job.certificate_id)
        .await?
        .ok_or_else(|| IssuanceError::NotFound(format!("certificate '{}' not found", job.certificate_id)))?;
    drop(conn);
    let result = async {
        if matches!(ctx.status.as_str(), "Archived" | "Revoked") {
            return Err(IssuanceError::Conflict(format!("certificate is {}", ctx.status)));
        }
        let ca = issuance::local_ca(state, &ctx.issuer()).await?;
        let algorithm =
            ctx.profile().map_or_else(|| issuance::DEFAULT_KEY_ALGORITHM.to_string(), |p| p.default_key_algorithm);
        let req = ctx.leaf_request()?;
        let alg = algorithm.clone();
        // Key generation and signing are CPU work (RSA keygen takes seconds): keep them off the
        // async workers.
        let (signed, key_pem) = tokio::task::spawn_blocking(move || {
            let key = issuance::generate_key(&alg)?;
            let signed = ca.issue(&req, &key, Utc::now())?;
            Ok::<_, IssuanceError>((signed, key.serialize_pem()))
        })
        .await
        .map_err(|e| IssuanceError::Ca(format!("signing task: {e}")))??;
        let (stored_key, _) = issuance::crypto::seal_optional(state.config.config_encryption_key.as_deref(), &key_pem)
            .map_err(|e| IssuanceError::Ca(e.to_string()))?;
        Ok((signed, stored_key, algorithm))
    }
    .await;
    let (signed, stored_key, algorithm) = match result {
        Ok(v) => v,
        Err(e) => {
            state.metrics.record_issuance(&ctx.issuer_type, "failure", started.elapsed());
            return Err(e.into());
        }
    };
    let now = Utc::now();
    let mut tx = state.pool.begin().await?;
    let ours = sqlx::query(
        "UPDATE jobs SET status = 'Completed', completed_at = $3, last_error = NULL, updated_at = $3 \
          WHERE id = $1 AND status = 'Running' AND claimed_by = $2",
    )
    .bind(&job.id)
    .bind(&*state.instance_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if ours.rows_affected() != 1 {
        return Err(JobError::Lost(job.id.clone()));
    }
    let version = NewVersion {
        certificate_id: &job.certificate_id,
        issuer_id: &ctx.issuer_id,
        signed: &signed,
        csr_pem: None,
        key_algorithm: &algorithm,
        private_key_pem: Some(&stored_key),
        job_id: Some(&job.id),
    };
    issuance::store_version(&mut tx, &version, now).await?;
    crate::notify::enqueue(
        &mut tx,
        crate::notify::EVENT_ISSUED,
        Some(&job.certificate_id),
        &format!("Certificate {} renewed", ctx.common_name),
        &format!(
            "Certificate {} ({}) was issued, serial {}, valid until {}.",
            job.certificate_id, ctx.common_name, signed.serial_hex, signed.not_after
        ),
        now,
    )
    .await?;
    tx.commit().await?;
    state.metrics.record_issuance(&ctx.issuer_type, "success", started.elapsed());
    state.metrics.record_job(true);
    Ok(())
}

/// A failed job, as returned by the failing UPDATE.
#[derive(Debug, sqlx::FromRow)]
struct FailedRow {
    id: String,
    certificate_id: String,
    attempts: i32,
    max_attempts: i32,
}

/// Fails one `Running`/`AwaitingCSR` job with `error` (kept in full).
pub async fn fail_job(state: &AppState, job_id: &str, error: &str, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let mut tx = state.pool.begin().await?;
    let rows = sqlx::query_as::<_, FailedRow>(
        "UPDATE jobs SET status = 'Failed', last_error = $2, completed_at = $3, updated_at = $3 \
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

/// Timeout loop: fails `Running` jobs started before `now - CERTCTL_JOB_RUNNING_TIMEOUT` and
/// `AwaitingCSR` jobs waiting since before `now - CERTCTL_JOB_AWAITING_CSR_TIMEOUT`.
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
