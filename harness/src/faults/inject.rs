//! The fault injector: a driver that runs beside a trial's load and causes its faults.
//!
//! It waits for the load's time zero (the engine announces it on a watch channel), then for
//! each fault in `at_s` order sleeps until it is due and causes it against the target — the
//! embedded cluster and server processes, or (only `db_kill_connections`) an external
//! database. Faults run one after another; a fault due after the load ended is not caused and
//! is reported as not carried out. For `server_kill` it also reads, right after the SIGKILL,
//! the `Running` jobs the dead replica held, and polls until every one of them has left that
//! claim (reclaimed by a live replica through its lease, or ended): the reclaim time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::watch;

use super::{FaultDef, FaultEvent, FaultKind, Reclaim};
use crate::embedded::Embedded;

/// Allowance in the reclaim bound for the rest of the batch a live replica is running when
/// the dead replica's leases expire (the docs' bound has that term without a figure).
pub const BATCH_ALLOWANCE: Duration = Duration::from_secs(5);

/// What the injector acts on.
#[derive(Debug)]
pub enum FaultTarget<'a> {
    /// The embedded cluster and servers.
    Embedded(&'a mut Embedded),
    /// An external server's database (only connections can be killed).
    External {
        /// The database URL (`--database-url`).
        database_url: String,
    },
}

/// The server settings the fault figures depend on (from the servers' `CERTCTL_*` settings,
/// else the server's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// `CERTCTL_JOB_LEASE`.
    pub lease: Duration,
    /// `CERTCTL_JOB_PROCESSOR_INTERVAL`.
    pub processor_interval: Duration,
    /// `CERTCTL_AUDIT_FLUSH_INTERVAL`.
    pub audit_flush: Duration,
}

impl Bounds {
    /// Reads the settings (unparseable or absent ones take the server's defaults).
    pub fn from_settings(settings: &BTreeMap<String, String>) -> Self {
        let get = |k: &str, default: Duration| {
            settings.get(k).and_then(|v| humantime::parse_duration(v.trim()).ok()).unwrap_or(default)
        };
        Bounds {
            lease: get("CERTCTL_JOB_LEASE", Duration::from_secs(30)),
            processor_interval: get("CERTCTL_JOB_PROCESSOR_INTERVAL", Duration::from_secs(30)),
            audit_flush: get("CERTCTL_AUDIT_FLUSH_INTERVAL", Duration::from_millis(500)),
        }
    }

    /// The reclaim bound: lease + 1.1 × processor interval + [`BATCH_ALLOWANCE`].
    pub fn reclaim(&self) -> Duration {
        self.lease + self.processor_interval.mul_f64(1.1) + BATCH_ALLOWANCE
    }
}

/// The driver of one trial's faults.
#[derive(Debug)]
pub struct Injector<'a> {
    faults: Vec<FaultDef>,
    target: FaultTarget<'a>,
    pool: Option<PgPool>,
    instance_ids: Vec<String>,
    bounds: Bounds,
    cancel: Arc<AtomicBool>,
    /// When the fault being caused was over (set by [`Injector::cause`]; a `server_kill`'s
    /// reclaim is still being watched after it).
    ended: Option<Instant>,
}

/// What a caused fault reports: detail, which server, the reclaim.
type Caused = (String, Option<usize>, Option<Reclaim>);

impl<'a> Injector<'a> {
    /// An injector for `faults` (any order) against `target`; `pool` reads the killed
    /// replica's jobs.
    pub fn new(
        faults: &[FaultDef],
        target: FaultTarget<'a>,
        pool: Option<PgPool>,
        instance_ids: Vec<String>,
        bounds: Bounds,
        cancel: Arc<AtomicBool>,
    ) -> Self {
        let mut faults = faults.to_vec();
        faults.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        Injector { faults, target, pool, instance_ids, bounds, cancel, ended: None }
    }

    /// Every server's own URL (embedded; empty otherwise). The audit probe writes to these,
    /// not through a balancer, so it knows which replica acknowledged each write.
    pub fn server_urls(&self) -> Vec<String> {
        match &self.target {
            FaultTarget::Embedded(e) => e.base_urls.clone(),
            FaultTarget::External { .. } => Vec::new(),
        }
    }

    /// The settings the figures depend on.
    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    /// Causes every fault on the load's clock: `t0` announces time zero, `done` turns true
    /// when the load has ended.
    pub async fn drive(
        mut self,
        mut t0: watch::Receiver<Option<Instant>>,
        mut done: watch::Receiver<bool>,
    ) -> Vec<FaultEvent> {
        let zero = tokio::select! {
            v = t0.wait_for(Option::is_some) => match v {
                Ok(v) => v.unwrap_or_else(Instant::now),
                Err(_) => return Vec::new(),
            },
            // The load ended (or failed) before it started: nothing to do.
            _ = done.wait_for(|d| *d) => return Vec::new(),
        };
        let secs = |at: Instant| at.saturating_duration_since(zero).as_secs_f64();
        let mut events = Vec::new();
        for def in self.faults.clone() {
            let due = zero + Duration::from_secs_f64(def.at_s);
            let ended_early = tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => false,
                r = done.wait_for(|d| *d) => r.is_ok(),
            };
            let started = Instant::now();
            let mut ev = FaultEvent {
                def,
                started_s: secs(started),
                started_at: chrono::Utc::now(),
                ended_s: secs(started),
                ended_at: chrono::Utc::now(),
                detail: String::new(),
                server: None,
                reclaim: None,
                failed: None,
            };
            if ended_early || self.cancel.load(Ordering::Relaxed) {
                ev.failed = Some(format!("the load ended at {:.1} s, before the fault was due", secs(started)));
                events.push(ev);
                continue;
            }
            eprintln!("certctl-loadtest: fault {} at {:.1} s", def.kind.as_str(), ev.started_s);
            match self.cause(def, started).await {
                Ok((detail, server, reclaim)) => {
                    ev.detail = detail;
                    ev.server = server;
                    ev.reclaim = reclaim;
                }
                Err(why) => ev.failed = Some(why),
            }
            let ended = self.ended.take().unwrap_or_else(Instant::now);
            ev.ended_s = secs(ended).max(ev.started_s);
            ev.ended_at = chrono::Utc::now() - chrono::Duration::from_std(ended.elapsed()).unwrap_or_default();
            events.push(ev);
        }
        events
    }

    /// Causes one fault; returns what was done.
    async fn cause(&mut self, def: FaultDef, started: Instant) -> Result<Caused, String> {
        let down = def.duration();
        let err = |e: crate::embedded::EmbeddedError| e.to_string();
        match (&mut self.target, def.kind) {
            (FaultTarget::Embedded(e), FaultKind::DbRestart) => {
                e.restart_database(down).await.map_err(err)?;
                self.ended = Some(Instant::now());
                let how = if down.is_zero() {
                    "fast restart (pg_ctl restart -m fast)".to_string()
                } else {
                    format!("fast stop, {:.1} s down, start", down.as_secs_f64())
                };
                Ok((
                    format!("PostgreSQL {how}: answering again after {:.2} s", started.elapsed().as_secs_f64()),
                    None,
                    None,
                ))
            }
            (FaultTarget::Embedded(e), FaultKind::DbStall) => {
                let frozen = e.freeze_database().map_err(err)?;
                let n = frozen.pids().len();
                // Mid-stall, the liveness probe must still answer (it never touches the database).
                tokio::time::sleep(down / 2).await;
                let health = probe_health(&e.base_url).await;
                tokio::time::sleep_until((started + down).into()).await;
                frozen.thaw().map_err(|e| e.to_string())?;
                self.ended = Some(Instant::now());
                let what = format!(
                    "SIGSTOP of the postmaster and {} backends for {:.1} s, then SIGCONT",
                    n - 1,
                    down.as_secs_f64()
                );
                Ok((format!("{what}; /health mid-stall: {health}"), None, None))
            }
            (FaultTarget::Embedded(e), FaultKind::DbKillConnections) => {
                let n = e.kill_connections().await.map_err(err)?;
                self.ended = Some(Instant::now());
                Ok((format!("pg_terminate_backend on {n} connections to the server's database"), None, None))
            }
            (FaultTarget::External { database_url }, FaultKind::DbKillConnections) => {
                let db = database_url.rsplit('/').next().and_then(|d| d.split('?').next()).unwrap_or("").to_string();
                let n = certctl_pg_embedded::terminate_connections(database_url, &db)
                    .await
                    .map_err(|e| format!("pg_terminate_backend: {e}"))?;
                self.ended = Some(Instant::now());
                Ok((format!("pg_terminate_backend on {n} connections to database {db}"), None, None))
            }
            (FaultTarget::Embedded(_), FaultKind::ServerKill | FaultKind::ServerRestart) => {
                self.cycle_server(def.kind == FaultKind::ServerRestart, down, started).await
            }
            (FaultTarget::External { .. }, k) => Err(format!("{} needs embedded mode", k.as_str())),
        }
    }

    /// Stops the last server (SIGKILL, or SIGTERM and its graceful exit), keeps it down for
    /// `down`, starts it again; for a SIGKILL, watches its claimed jobs' reclaim meanwhile.
    async fn cycle_server(&mut self, graceful: bool, down: Duration, started: Instant) -> Result<Caused, String> {
        let FaultTarget::Embedded(e) = &mut self.target else { return Err("needs embedded mode".into()) };
        let mut i = e.base_urls.len().saturating_sub(1);
        if let (Some(p), false) = (&self.pool, graceful)
            && let Ok(Some(busiest)) = busiest_replica(p).await
            && let Some(at) = self.instance_ids.iter().position(|id| *id == busiest)
        {
            i = at;
        }
        let pid = e.stop_server(i, graceful).await.map_err(|e| e.to_string())?;
        let killed_at = Instant::now();
        let owner = self.instance_ids.get(i).cloned();
        let held = match (&self.pool, graceful) {
            (Some(p), false) => held_claims(p, owner.as_deref()).await.unwrap_or_default(),
            _ => Vec::new(),
        };
        let stopped_in = killed_at.saturating_duration_since(started).as_secs_f64();
        let cancel = self.cancel.clone();
        let restart = async {
            tokio::time::sleep(down).await;
            let r = e.start_server(i, || cancel.load(Ordering::Relaxed)).await;
            (r, Instant::now())
        };
        let bound = self.bounds.reclaim();
        let watch = async {
            match (&self.pool, graceful) {
                (Some(p), false) => Some(watch_reclaim(p, owner.as_deref(), &held, killed_at, bound).await),
                _ => None,
            }
        };
        let ((restarted, ready_at), reclaim_s) = tokio::join!(restart, watch);
        self.ended = Some(ready_at);
        restarted.map_err(|e| format!("restarting server {}: {e}", i + 1))?;
        let how = if graceful { format!("SIGTERM, graceful exit after {stopped_in:.2} s") } else { "SIGKILL".into() };
        let reclaim =
            reclaim_s.map(|r| Reclaim { jobs: held.len() as u64, reclaim_s: r, bound_s: bound.as_secs_f64() });
        let held_note = if graceful { String::new() } else { format!("; it held {} claimed jobs", held.len()) };
        Ok((
            format!(
                "server {} of {} (pid {pid}{}): {how}; ready again {:.2} s after the fault began{held_note}",
                i + 1,
                e.base_urls.len(),
                owner.map(|o| format!(", {o}")).unwrap_or_default(),
                ready_at.saturating_duration_since(started).as_secs_f64()
            ),
            Some(i),
            reclaim,
        ))
    }
}

/// `GET /health` with a 1-s timeout: `200 in 3.1 ms`, or what went wrong.
async fn probe_health(base_url: &str) -> String {
    let t = Instant::now();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build();
    let r = match client {
        Ok(c) => c.get(format!("{base_url}/health")).send().await,
        Err(e) => return format!("no client: {e}"),
    };
    match r {
        Ok(resp) => format!("{} in {:.1} ms", resp.status().as_u16(), t.elapsed().as_secs_f64() * 1000.0),
        Err(e) => format!("no answer ({e})"),
    }
}

/// The replica holding the most leased `Running` jobs right now (the one whose SIGKILL strands
/// the most work), if any holds one.
async fn busiest_replica(pool: &PgPool) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT claimed_by FROM jobs WHERE status = 'Running' AND lease_expires_at IS NOT NULL \
           AND claimed_by IS NOT NULL GROUP BY claimed_by ORDER BY count(*) DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await
}

/// `Running` jobs with a lease held by `owner` (every leased one when the owner is not known:
/// a single server holds them all), as their claim tokens `(id, attempts)`.
async fn held_claims(pool: &PgPool, owner: Option<&str>) -> Result<Vec<(String, i32)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, attempts FROM jobs WHERE status = 'Running' AND lease_expires_at IS NOT NULL \
           AND ($1::text IS NULL OR claimed_by = $1)",
    )
    .bind(owner)
    .fetch_all(pool)
    .await
}

/// Polls every 100 ms until none of `held` is still `Running` under its dead claim; the
/// seconds from `killed_at`, or `None` past `bound` + 10 s.
async fn watch_reclaim(
    pool: &PgPool,
    owner: Option<&str>,
    held: &[(String, i32)],
    killed_at: Instant,
    bound: Duration,
) -> Option<f64> {
    if held.is_empty() {
        return Some(0.0);
    }
    let ids: Vec<String> = held.iter().map(|(id, _)| id.clone()).collect();
    let attempts: Vec<i32> = held.iter().map(|(_, a)| *a).collect();
    let deadline = killed_at + bound + Duration::from_secs(10);
    while Instant::now() < deadline {
        let still: Result<i64, _> = sqlx::query_scalar(
            "SELECT count(*) FROM jobs j JOIN unnest($1::text[], $2::int[]) AS h(id, attempts) \
               ON j.id = h.id AND j.attempts = h.attempts \
             WHERE j.status = 'Running' AND ($3::text IS NULL OR j.claimed_by = $3)",
        )
        .bind(&ids)
        .bind(&attempts)
        .bind(owner)
        .fetch_one(pool)
        .await;
        if still.is_ok_and(|n| n == 0) {
            return Some(killed_at.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}
