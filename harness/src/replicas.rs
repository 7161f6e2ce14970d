//! The multi-replica invariants of `run --replicas N`, checked against the database after
//! the load (contract §7: each job processed once, shared rate limits exact).
//!
//! - `job_processed_once`: no `certificate_versions.job_id` appears twice; every Issuance/
//!   Renewal job completed during the run has exactly one version; no version belongs to a job
//!   that is not `Completed`; every such job was claimed by one of the run's replicas (the
//!   detail shows how the work spread over them).
//! - `renewed_once_per_job`: the versions created by the jobs completed during the run equal
//!   the number of those jobs, and no certificate got two versions from one job. (Counted
//!   through the job join rather than by `created_at`, so a transaction straddling the window's
//!   edge cannot make the counts differ by one.)
//! - `replicas_share_the_limiter`: every server process runs with
//!   `CERTCTL_RATELIMIT_BACKEND=postgres` and its own `CERTCTL_INSTANCE_ID` (read from
//!   `/proc/<pid>/environ`).
//! - `shared_rate_limit_exact`: an active probe of the shared budget. The limits on the
//!   postgres backend are the ACME per-account ones (orders, key changes, challenges), which
//!   need JWS-signed requests from a registered account that the harness cannot yet make; so
//!   the probe drives the server's own [`PgLimiter`] code directly: N limiter instances, each
//!   with its own connection pool as each replica process has, fire 100 concurrent calls at
//!   one fresh key with a cap of 10 in an hour, and exactly 10 must be admitted and exactly 10
//!   timestamps stored in `rate_limit_buckets`.

use std::time::Duration;

use certctl_server::ratelimit::{Limit, Limiter, LimiterError, PgLimiter};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::HarnessError;
use crate::report::summary::{Invariant, Replicas};

/// Calls the rate-limit probe fires.
pub const PROBE_CALLS: usize = 100;
/// The probe's cap.
pub const PROBE_CAP: i64 = 10;

fn db(e: sqlx::Error) -> HarnessError {
    HarnessError::Database(e.to_string())
}

/// The database's clock (the invariants' window is measured on it, as the servers' rows are).
pub async fn db_now(pool: &PgPool) -> Result<DateTime<Utc>, HarnessError> {
    sqlx::query_scalar("SELECT now()").fetch_one(pool).await.map_err(db)
}

/// Checks every invariant for the window from `from` until now.
pub async fn check(
    pool: &PgPool,
    database_url: &str,
    from: DateTime<Utc>,
    instance_ids: &[String],
    pids: &[u32],
) -> Result<Replicas, HarnessError> {
    let to = db_now(pool).await?;
    let invariants = vec![
        job_processed_once(pool, from, to, instance_ids).await?,
        renewed_once_per_job(pool, from, to).await?,
        replicas_share_the_limiter(pids),
        shared_rate_limit_exact(database_url, instance_ids.len().max(2)).await?,
    ];
    Ok(Replicas { count: instance_ids.len().max(pids.len()), invariants })
}

/// Jobs that produced more than one certificate version (whole table; 0 unless a job ran twice).
pub(crate) async fn jobs_with_two_versions(pool: &PgPool) -> Result<i64, HarnessError> {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT job_id FROM certificate_versions WHERE job_id IS NOT NULL \
         GROUP BY job_id HAVING count(*) > 1) d",
    )
    .fetch_one(pool)
    .await
    .map_err(db)
}

async fn job_processed_once(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    instance_ids: &[String],
) -> Result<Invariant, HarnessError> {
    let dup_job_ids = jobs_with_two_versions(pool).await?;
    let not_one_version: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs j WHERE j.type IN ('Issuance', 'Renewal') AND j.status = 'Completed' \
           AND j.completed_at BETWEEN $1 AND $2 \
           AND (SELECT count(*) FROM certificate_versions v WHERE v.job_id = j.id) <> 1",
    )
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await
    .map_err(db)?;
    let orphan_versions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM certificate_versions v JOIN jobs j ON j.id = v.job_id \
         WHERE v.created_at BETWEEN $1 AND $2 AND j.status <> 'Completed'",
    )
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await
    .map_err(db)?;
    let by: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT claimed_by, count(*) FROM jobs WHERE type IN ('Issuance', 'Renewal') AND status = 'Completed' \
           AND completed_at BETWEEN $1 AND $2 GROUP BY claimed_by ORDER BY claimed_by",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let foreign: i64 =
        by.iter().filter(|(c, _)| c.as_ref().is_none_or(|c| !instance_ids.contains(c))).map(|(_, n)| n).sum();
    let spread =
        by.iter().map(|(c, n)| format!("{}: {n}", c.as_deref().unwrap_or("unclaimed"))).collect::<Vec<_>>().join(", ");
    let held = dup_job_ids == 0 && not_one_version == 0 && orphan_versions == 0 && foreign == 0;
    Ok(Invariant {
        name: "job_processed_once".into(),
        held,
        detail: format!(
            "job ids with two versions: {dup_job_ids}; completed jobs without exactly one version: \
             {not_one_version}; versions of jobs not completed: {orphan_versions}; completed jobs \
             claimed outside the replicas: {foreign}; completed by [{}]",
            if spread.is_empty() { "none".to_string() } else { spread }
        ),
    })
}

async fn renewed_once_per_job(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Invariant, HarnessError> {
    let (jobs, versions): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT j.id), count(v.id) FROM jobs j LEFT JOIN certificate_versions v ON v.job_id = j.id \
         WHERE j.type IN ('Issuance', 'Renewal') AND j.status = 'Completed' AND j.completed_at BETWEEN $1 AND $2",
    )
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await
    .map_err(db)?;
    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT certificate_id, job_id FROM certificate_versions WHERE job_id IS NOT NULL \
         GROUP BY certificate_id, job_id HAVING count(*) > 1) d",
    )
    .fetch_one(pool)
    .await
    .map_err(db)?;
    Ok(Invariant {
        name: "renewed_once_per_job".into(),
        held: jobs == versions && twice == 0,
        detail: format!(
            "jobs completed during the run: {jobs}; versions they created: {versions}; certificates with two \
             versions from one job: {twice}"
        ),
    })
}

fn replicas_share_the_limiter(pids: &[u32]) -> Invariant {
    let mut bad = Vec::new();
    let mut ids = Vec::new();
    for pid in pids {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let vars: Vec<String> = env.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
        if !vars.iter().any(|v| v == "CERTCTL_RATELIMIT_BACKEND=postgres") {
            bad.push(pid.to_string());
        }
        if let Some(id) = vars.iter().find_map(|v| v.strip_prefix("CERTCTL_INSTANCE_ID=")) {
            ids.push(id.to_string());
        }
    }
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    let held = bad.is_empty() && distinct.len() == pids.len();
    Invariant {
        name: "replicas_share_the_limiter".into(),
        held,
        detail: format!(
            "{} servers; without the postgres limiter backend: [{}]; distinct instance ids: {} ({})",
            pids.len(),
            bad.join(", "),
            distinct.len(),
            ids.join(", ")
        ),
    }
}

async fn shared_rate_limit_exact(database_url: &str, replicas: usize) -> Result<Invariant, HarnessError> {
    let limit = Limit { max: PROBE_CAP, window: Duration::from_secs(3600) };
    let mut limiters = Vec::new();
    for _ in 0..replicas {
        // One pool per limiter: separate processes share nothing but the database.
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect(database_url)
            .await
            .map_err(db)?;
        limiters.push(PgLimiter::new(pool, "loadtest-probe", limit));
    }
    let key = format!("probe-{:016x}", rand::random::<u64>());
    let calls = (0..PROBE_CALLS).map(|i| {
        let limiter = limiters.get(i % limiters.len()).cloned();
        let key = key.clone();
        async move {
            match limiter {
                Some(l) => l.allow(&key, Utc::now()).await,
                None => Err(LimiterError::Backend("no limiter".into())),
            }
        }
    });
    let results = futures::future::join_all(calls).await;
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    let limited = results.iter().filter(|r| matches!(r, Err(LimiterError::Limited(_)))).count();
    let failed = results.len() - admitted - limited;
    let stored: Option<i64> = match limiters.first() {
        Some(_) => {
            let pool = PgPoolOptions::new().max_connections(1).connect(database_url).await.map_err(db)?;
            sqlx::query_scalar("SELECT cardinality(timestamps)::bigint FROM rate_limit_buckets WHERE bucket_key = $1")
                .bind(format!("loadtest-probe:{key}"))
                .fetch_optional(&pool)
                .await
                .map_err(db)?
        }
        None => None,
    };
    let held = admitted as i64 == PROBE_CAP && failed == 0 && stored == Some(PROBE_CAP);
    Ok(Invariant {
        name: "shared_rate_limit_exact".into(),
        held,
        detail: format!(
            "{PROBE_CALLS} concurrent calls through {replicas} postgres limiters (one pool each) at one key, cap \
             {PROBE_CAP}/h: admitted {admitted}, limited {limited}, backend errors {failed}, timestamps stored {}",
            stored.map(|n| n.to_string()).unwrap_or_else(|| "none".into())
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_without_the_postgres_backend_breaks_the_shared_limiter_invariant() {
        // This test process runs with neither the backend setting nor an instance id.
        let inv = replicas_share_the_limiter(&[std::process::id()]);
        assert!(!inv.held, "{}", inv.detail);
        assert!(inv.detail.contains(&std::process::id().to_string()));
    }
}
