//! Scheduler throughput: how long the server takes to renew the whole fleet end to end.
//!
//! A scenario with a `[scheduler_throughput]` table (`scenarios/fleet_renewal.toml`) offers no
//! goose load. Instead [`run`]:
//!
//! 1. waits until the job processor's queue is empty (no `Pending` or `Running` job) and no
//!    selected certificate has an open issuance/renewal job: `bulk_renewal` leaves a backlog,
//!    which the processor would work off first (oldest first) and so count into our seconds,
//!    and bulk renew skips certificates with an open job, so the call would not select the
//!    whole fleet;
//! 2. reads the database clock, then sends **one** `POST /api/v1/certificates/bulk-renew` naming
//!    the first `certs` fleet certificates by `certificate_ids` — the fleet and the demo
//!    certificates share owner `o-alice`, so an explicit id list is the only selector that
//!    matches exactly the fleet;
//! 3. polls the enqueued jobs (by the ids the call returned) once a second until each is
//!    `Completed` or ended otherwise (`Failed`, `Cancelled`), or the profile's `duration_s`
//!    — the time limit here — runs out;
//! 4. reads the per-second completion series and the last completion from `jobs.completed_at`,
//!    so the figures come from the database's clock, not from the 1-Hz polling.
//!
//! The call itself is recorded as label `bulk_renew_fleet`, so the latency of enqueueing the
//! fleet appears in the baseline table and the hlog like any request.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::ResolvedScenario;
use super::engine::{EngineConfig, ScenarioRun, ScheduleCounts};
use super::template;
use crate::metrics::fleet::FleetPoint;
use crate::metrics::{Outcome, Recorder};

/// Label of the one bulk-renew call.
pub const CALL_LABEL: &str = "bulk_renew_fleet";
/// Scenario metric: completed certificates per second, call to last completion.
pub const RATE: &str = "scheduler_certs_per_s";
/// Scenario metric: selected certificates not renewed (skipped, failed, cancelled or unfinished).
pub const NOT_COMPLETED: &str = "scheduler_not_completed";
/// Scenario metric: jobs that ended `Failed`.
pub const FAILED: &str = "scheduler_failed";
/// Every scenario metric this module provides, for threshold validation.
pub const METRICS: &[&str] = &[RATE, NOT_COMPLETED, FAILED];

/// The `[scheduler_throughput]` table of a scenario file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerThroughputDef {
    /// Fleet certificates to renew (the first N of the seeded fleet; capped by `--certs`).
    #[serde(default = "default_certs")]
    pub certs: u64,
    /// Per-profile fleet size, overriding `certs` (e.g. a smaller fleet for `smoke`).
    #[serde(default)]
    pub profile_certs: BTreeMap<String, u64>,
}

fn default_certs() -> u64 {
    10_000
}

impl SchedulerThroughputDef {
    /// Certificates selected under `profile` with `seeded` fleet certificates.
    pub fn certs_for(&self, profile: &str, seeded: u64) -> u64 {
        self.profile_certs.get(profile).copied().unwrap_or(self.certs).min(seeded)
    }
}

/// What `summary.json` records of a scheduler-throughput scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerThroughput {
    /// `measured`, `timed out` (some jobs still open at the limit), `interrupted`, or
    /// `unavailable: <why>`.
    pub status: String,
    /// Certificates named in the call.
    pub selected: u64,
    /// Certificates the call matched.
    pub matched: u64,
    /// Renewal jobs the call created.
    pub enqueued: u64,
    /// Matched but not enqueued (an open job, or a status that cannot renew).
    pub skipped: u64,
    /// Jobs `Completed`.
    pub completed: u64,
    /// Jobs `Failed`.
    pub failed: u64,
    /// Jobs `Cancelled`.
    pub cancelled: u64,
    /// Seconds spent waiting for earlier work (open jobs) to finish before the call.
    pub quiesce_s: f64,
    /// Latency of the bulk-renew call, milliseconds.
    pub call_ms: f64,
    /// Seconds from just before the call to the last completion (database clock).
    pub seconds: f64,
    /// `completed / seconds`: the judged `scheduler_certs_per_s`.
    pub certs_per_s: f64,
    /// Completions per second since the call (from `jobs.completed_at`).
    pub series: Vec<FleetPoint>,
}

impl SchedulerThroughput {
    fn unavailable(why: &str) -> Self {
        SchedulerThroughput {
            status: format!("unavailable: {why}"),
            selected: 0,
            matched: 0,
            enqueued: 0,
            skipped: 0,
            completed: 0,
            failed: 0,
            cancelled: 0,
            quiesce_s: 0.0,
            call_ms: 0.0,
            seconds: 0.0,
            certs_per_s: 0.0,
            series: Vec::new(),
        }
    }

    /// The scenario metrics thresholds judge; all `None` when nothing was measured.
    pub fn metrics(&self) -> BTreeMap<String, Option<f64>> {
        let measured = !self.status.starts_with("unavailable");
        let v = |x: f64| measured.then_some(x);
        BTreeMap::from([
            (RATE.to_string(), v(self.certs_per_s).filter(|_| self.completed > 0)),
            (NOT_COMPLETED.to_string(), v(self.selected.saturating_sub(self.completed) as f64)),
            (FAILED.to_string(), v(self.failed as f64)),
        ])
    }
}

/// Problems that stop the measurement (the run exits 2).
#[derive(Debug, thiserror::Error)]
pub enum ThroughputError {
    /// A query failed.
    #[error("scheduler throughput: database: {0}")]
    Database(#[from] sqlx::Error),
    /// The call failed or answered something unexpected.
    #[error("scheduler throughput: bulk-renew: {0}")]
    Call(String),
}

/// Per-second completion counts into cumulative points (`t_s` = end of the second).
pub fn completion_series(buckets: &[(i64, i64)]) -> Vec<FleetPoint> {
    let Some(last) = buckets.iter().map(|b| b.0).max() else { return Vec::new() };
    let by_second: BTreeMap<i64, i64> = buckets.iter().copied().collect();
    let mut total = 0u64;
    (0..=last.max(0))
        .map(|s| {
            let n = by_second.get(&s).copied().unwrap_or(0).max(0) as u64;
            total += n;
            FleetPoint { t_s: (s + 1) as f64, versions: total, per_s: n as f64 }
        })
        .collect()
}

/// Issuance and renewal jobs the processor still has to work on, plus open jobs of selected
/// certificates (jobs waiting for an agent's CSR or an approval are not the processor's work,
/// but would make bulk renew skip their certificate). Deployment jobs are agents' work: an
/// earlier agent_fleet scenario leaves undelivered ones behind, and nothing on the server
/// would ever end them.
const BUSY_JOBS: &str = "SELECT count(*) FROM jobs WHERE (type IN ('Issuance', 'Renewal') \
     AND status IN ('Pending', 'Running')) \
     OR (certificate_id = ANY($1) AND type IN ('Issuance', 'Renewal') \
         AND status IN ('Pending', 'AwaitingCSR', 'AwaitingApproval', 'Running'))";

async fn busy_jobs(pool: &PgPool, ids: &[String]) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(BUSY_JOBS).bind(ids).fetch_one(pool).await
}

/// (completed, failed, cancelled) among `jobs`.
async fn job_counts(pool: &PgPool, jobs: &[String]) -> Result<(i64, i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'Completed'), count(*) FILTER (WHERE status = 'Failed'), \
                count(*) FILTER (WHERE status = 'Cancelled') FROM jobs WHERE id = ANY($1)",
    )
    .bind(jobs)
    .fetch_one(pool)
    .await
}

/// Runs the measurement. Without a database there is nothing to poll: the summary says
/// `unavailable` and the thresholds are not measured.
pub async fn run(
    sc: &ResolvedScenario,
    def: &SchedulerThroughputDef,
    cfg: &EngineConfig,
    pool: Option<&PgPool>,
) -> Result<(ScenarioRun, SchedulerThroughput), ThroughputError> {
    let recorder = Recorder::new(&[CALL_LABEL.to_string()]);
    let started_at = SystemTime::now();
    let t0 = Instant::now();
    recorder.set_t0(t0);
    if let Some(tx) = &cfg.started {
        tx.send_replace(Some(t0));
    }
    let finish = |recorder: &Recorder, cancelled: bool| ScenarioRun {
        labels: recorder.snapshot(),
        schedule: vec![ScheduleCounts::default()],
        started_at,
        elapsed: t0.elapsed(),
        t0,
        cancelled,
    };
    let Some(pool) = pool else {
        let st = SchedulerThroughput::unavailable("no database connection (give --database-url)");
        return Ok((finish(&recorder, false), st));
    };
    let name = &sc.def.name;
    let limit = sc.duration;
    let n = def.certs_for(&sc.profile, cfg.fleet.certs);
    let ids: Vec<String> = (1..=n).map(template::cert_id).collect();
    let cancelled = || cfg.cancel.load(Ordering::Relaxed);

    // 1. Quiesce.
    let q0 = Instant::now();
    loop {
        let open = busy_jobs(pool, &ids).await?;
        if open == 0 || cancelled() {
            break;
        }
        if q0.elapsed() >= limit {
            let st = SchedulerThroughput::unavailable(&format!(
                "{open} jobs from earlier work still open after {:.0} s",
                limit.as_secs_f64()
            ));
            return Ok((finish(&recorder, false), st));
        }
        if cfg.progress {
            eprintln!("[{name}] waiting for {open} open jobs from earlier work to finish");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let quiesce_s = q0.elapsed().as_secs_f64();

    // 2. The call, timed from the database clock so it compares with jobs.completed_at.
    let t_call: f64 =
        sqlx::query_scalar("SELECT extract(epoch FROM clock_timestamp())::float8").fetch_one(pool).await?;
    let client = reqwest::Client::builder()
        .timeout(limit.max(cfg.request_timeout))
        .build()
        .map_err(|e| ThroughputError::Call(e.to_string()))?;
    let mut req = client
        .post(format!("{}/api/v1/certificates/bulk-renew", cfg.base_url))
        .json(&serde_json::json!({ "certificate_ids": ids }));
    if let Some(k) = &cfg.api_key {
        req = req.bearer_auth(k);
    }
    let start = Instant::now();
    let resp = req.send().await;
    let end = Instant::now();
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            recorder.record(0, start, start, end, Outcome::Transport, false);
            return Err(ThroughputError::Call(e.to_string()));
        }
    };
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if status != 200 {
        return Err(ThroughputError::Call(format!("answered {status}: {body}")));
    }
    recorder.record(0, start, start, end, Outcome::Ok(status), false);
    let count = |k: &str| body.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    let jobs: Vec<String> = body
        .get("enqueued_jobs")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|j| j.get("job_id").and_then(|x| x.as_str()).map(String::from)).collect())
        .unwrap_or_default();
    let mut st = SchedulerThroughput {
        status: "measured".into(),
        selected: n,
        matched: count("total_matched"),
        enqueued: jobs.len() as u64,
        skipped: count("total_skipped"),
        quiesce_s,
        call_ms: end.duration_since(start).as_secs_f64() * 1000.0,
        ..SchedulerThroughput::unavailable("")
    };

    // 3. Poll until every enqueued job has ended.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (c, f, x) = job_counts(pool, &jobs).await?;
        (st.completed, st.failed, st.cancelled) = (c as u64, f as u64, x as u64);
        let ended = st.completed + st.failed + st.cancelled;
        if cfg.progress {
            eprintln!(
                "[{name}] {:>4.0} s: {}/{} renewed, {} failed",
                start.elapsed().as_secs_f64(),
                st.completed,
                st.enqueued,
                st.failed
            );
        }
        if ended >= st.enqueued {
            break;
        }
        if cancelled() {
            st.status = "interrupted".into();
            break;
        }
        if start.elapsed() >= limit {
            st.status = "timed out".into();
            break;
        }
    }

    // 4. Figures from the database clock.
    let buckets: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT floor(extract(epoch FROM completed_at) - $2)::bigint AS s, count(*) FROM jobs \
         WHERE id = ANY($1) AND status = 'Completed' AND completed_at IS NOT NULL GROUP BY 1 ORDER BY 1",
    )
    .bind(&jobs)
    .bind(t_call)
    .fetch_all(pool)
    .await?;
    let last: Option<f64> = sqlx::query_scalar(
        "SELECT max(extract(epoch FROM completed_at))::float8 - $2 FROM jobs WHERE id = ANY($1) AND status = 'Completed'",
    )
    .bind(&jobs)
    .bind(t_call)
    .fetch_one(pool)
    .await?;
    st.series = completion_series(&buckets);
    st.seconds = last.unwrap_or(0.0).max(0.0);
    st.certs_per_s = if st.seconds > 0.0 { st.completed as f64 / st.seconds } else { 0.0 };
    let interrupted = st.status == "interrupted";
    Ok((finish(&recorder, interrupted), st))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_series_fills_empty_seconds_and_accumulates() {
        let s = completion_series(&[(0, 10), (2, 30), (3, 5)]);
        let per: Vec<f64> = s.iter().map(|p| p.per_s).collect();
        let cum: Vec<u64> = s.iter().map(|p| p.versions).collect();
        assert_eq!(per, [10.0, 0.0, 30.0, 5.0]);
        assert_eq!(cum, [10, 10, 40, 45]);
        assert_eq!(s[3].t_s, 4.0);
        assert!(completion_series(&[]).is_empty());
    }

    #[test]
    fn certs_for_takes_the_profile_size_capped_by_the_seeded_fleet() {
        let d = SchedulerThroughputDef { certs: 10_000, profile_certs: BTreeMap::from([("smoke".into(), 2_000)]) };
        assert_eq!(d.certs_for("smoke", 10_000), 2_000);
        assert_eq!(d.certs_for("scale", 10_000), 10_000);
        assert_eq!(d.certs_for("smoke", 300), 300);
    }

    #[test]
    fn metrics_count_every_selected_certificate_not_renewed() {
        let mut st = SchedulerThroughput::unavailable("x");
        assert!(st.metrics().values().all(Option::is_none));
        st.status = "measured".into();
        (st.selected, st.enqueued, st.completed, st.failed, st.seconds, st.certs_per_s) = (100, 98, 97, 1, 2.0, 48.5);
        let m = st.metrics();
        assert_eq!(m[NOT_COMPLETED], Some(3.0));
        assert_eq!(m[FAILED], Some(1.0));
        assert_eq!(m[RATE], Some(48.5));
    }
}
