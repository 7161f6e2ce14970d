//! The scheduler (contract §6): background loops on jittered tickers, plus leader election.
//!
//! Every loop runs in its own task: sleep a jittered interval (±10 %), run one tick, repeat.
//! - **Overlap guard:** a loop's ticks run one after another inside its single task, so a tick
//!   can never start while the previous one still runs; a tick that overruns its interval
//!   delays the next one instead of stacking up.
//! - **Per-tick timeout:** each tick is bounded by `CERTCTL_SCHEDULER_TICK_TIMEOUT` (the job
//!   processor instead bounds each job by `CERTCTL_JOB_RUNNING_TIMEOUT` and stops claiming new
//!   batches once a tick has used half the tick timeout, so it never abandons a half-done job).
//! - **Drain:** on `state.shutdown` a loop finishes its running tick and exits; `finish()` in
//!   `lib.rs` waits for all of them ([`drain`]) before closing the pool, and the leader releases
//!   its lock only after leader-only ticks have finished.
//! - **HA classes** ([`HaClass`]): claim-based loops are safe on every replica by row locks;
//!   leader-only loops (outside side effects: notifications, CRL signing, expiry warnings) run
//!   only on the elected leader ([`leader`]); idempotent loops run anywhere.
//!
//! Tests drive single ticks with [`run_tick`] and an injected `now`.

pub mod jobs;
pub mod leader;
pub mod sweeps;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_util::task::TaskTracker;

use crate::AppState;
use crate::config::Config;

/// How a loop stays correct with several replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaClass {
    /// Every replica runs it; rows are claimed with `FOR UPDATE SKIP LOCKED`.
    ClaimBased,
    /// Only the elected leader runs it (outside side effects).
    LeaderOnly,
    /// Every replica runs it; running it twice is harmless (set-based, idempotent updates).
    Anywhere,
}

/// The scheduler's loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoopKind {
    /// Creates renewal jobs and expiry warnings.
    RenewalCheck,
    /// Claims and runs `Pending` jobs.
    JobProcessor,
    /// Requeues `Failed` jobs with attempts left.
    JobRetry,
    /// Fails stuck `Running` / `AwaitingCSR` jobs.
    JobTimeout,
    /// Marks silent agents `Offline`, reaps their `AwaitingCSR` jobs.
    AgentHealth,
    /// Sends `pending` notifications.
    NotificationProcess,
    /// Resends due `failed` notifications.
    NotificationRetry,
    /// Marks certificates past `expires_at` `Expired`.
    ShortLivedExpiry,
    /// Deletes expired nonces, expires stale orders/authorizations.
    AcmeGc,
    /// Deletes idle rate-limit buckets.
    RateLimitJanitor,
    /// Re-signs each local issuer's CRL.
    Crl,
    /// Re-signs the CRL of issuers with new revocations (coalesced per tick).
    CrlRefresh,
}

impl LoopKind {
    /// Every loop.
    pub const ALL: [LoopKind; 12] = [
        LoopKind::RenewalCheck,
        LoopKind::JobProcessor,
        LoopKind::JobRetry,
        LoopKind::JobTimeout,
        LoopKind::AgentHealth,
        LoopKind::NotificationProcess,
        LoopKind::NotificationRetry,
        LoopKind::ShortLivedExpiry,
        LoopKind::AcmeGc,
        LoopKind::RateLimitJanitor,
        LoopKind::Crl,
        LoopKind::CrlRefresh,
    ];

    /// Name used in logs.
    pub fn name(self) -> &'static str {
        match self {
            LoopKind::RenewalCheck => "renewal_check",
            LoopKind::JobProcessor => "job_processor",
            LoopKind::JobRetry => "job_retry",
            LoopKind::JobTimeout => "job_timeout",
            LoopKind::AgentHealth => "agent_health",
            LoopKind::NotificationProcess => "notification_process",
            LoopKind::NotificationRetry => "notification_retry",
            LoopKind::ShortLivedExpiry => "short_lived_expiry",
            LoopKind::AcmeGc => "acme_gc",
            LoopKind::RateLimitJanitor => "ratelimit_janitor",
            LoopKind::Crl => "crl",
            LoopKind::CrlRefresh => "crl_refresh",
        }
    }

    /// The loop's `CERTCTL_*` interval.
    pub fn interval(self, c: &Config) -> Duration {
        match self {
            LoopKind::RenewalCheck => c.renewal_check_interval,
            LoopKind::JobProcessor => c.job_processor_interval,
            LoopKind::JobRetry => c.job_retry_interval,
            LoopKind::JobTimeout => c.job_timeout_interval,
            LoopKind::AgentHealth => c.agent_health_interval,
            LoopKind::NotificationProcess => c.notification_process_interval,
            LoopKind::NotificationRetry => c.notification_retry_interval,
            LoopKind::ShortLivedExpiry => c.short_lived_expiry_interval,
            LoopKind::AcmeGc => c.acme_gc_interval,
            LoopKind::RateLimitJanitor => c.ratelimit_janitor_interval,
            LoopKind::Crl => c.crl_interval,
            LoopKind::CrlRefresh => c.crl_refresh_interval,
        }
    }

    /// The loop's HA class (see `docs/operator/scheduler-ha.md`).
    pub fn class(self) -> HaClass {
        match self {
            LoopKind::JobProcessor => HaClass::ClaimBased,
            LoopKind::RenewalCheck
            | LoopKind::NotificationProcess
            | LoopKind::NotificationRetry
            | LoopKind::Crl
            | LoopKind::CrlRefresh => HaClass::LeaderOnly,
            LoopKind::JobRetry
            | LoopKind::JobTimeout
            | LoopKind::AgentHealth
            | LoopKind::ShortLivedExpiry
            | LoopKind::AcmeGc
            | LoopKind::RateLimitJanitor => HaClass::Anywhere,
        }
    }
}

/// Why a tick failed (logged; the loop carries on at the next tick).
#[derive(Debug, thiserror::Error)]
pub enum TickError {
    /// Database failure.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// CA failure (CRL loop).
    #[error(transparent)]
    Issuance(#[from] crate::issuance::IssuanceError),
    /// The tick ran past `CERTCTL_SCHEDULER_TICK_TIMEOUT`.
    #[error("tick exceeded its timeout of {0:?}")]
    Timeout(Duration),
}

/// Scheduler state shared through `AppState::scheduler`.
#[derive(Debug, Default)]
pub struct SchedulerStatus {
    /// Leader election state; [`SchedulerStatus::is_leader`] reads it.
    pub leadership: leader::Leadership,
    tracker: TaskTracker,
    leader_ticks_running: AtomicUsize,
    ticks: Mutex<HashMap<&'static str, u64>>,
    ticks_ok: Mutex<HashMap<&'static str, u64>>,
}

impl SchedulerStatus {
    /// True while this instance is the scheduler leader.
    pub fn is_leader(&self) -> bool {
        self.leadership.is_leader()
    }

    /// Completed ticks of `kind` in this process (for tests and diagnostics).
    pub fn ticks(&self, kind: LoopKind) -> u64 {
        self.ticks.lock().unwrap_or_else(|p| p.into_inner()).get(kind.name()).copied().unwrap_or(0)
    }

    /// Ticks of `kind` in this process that finished without an error — what shows a loop has
    /// resumed after a database fault (failed ticks count in [`SchedulerStatus::ticks`] only).
    pub fn ticks_ok(&self, kind: LoopKind) -> u64 {
        self.ticks_ok.lock().unwrap_or_else(|p| p.into_inner()).get(kind.name()).copied().unwrap_or(0)
    }

    fn count_tick(&self, kind: LoopKind, ok: bool) {
        *self.ticks.lock().unwrap_or_else(|p| p.into_inner()).entry(kind.name()).or_default() += 1;
        if ok {
            *self.ticks_ok.lock().unwrap_or_else(|p| p.into_inner()).entry(kind.name()).or_default() += 1;
        }
    }
}

/// `d` scaled by a uniform factor in [0.9, 1.1], so replicas' loops drift apart instead of
/// hitting the database in lock-step.
pub fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.9..=1.1))
}

/// Starts leader election and every loop (called by `serve()` when
/// `CERTCTL_SCHEDULER_ENABLED`).
pub fn start(state: &AppState) {
    let tracker = &state.scheduler.tracker;
    tracker.spawn(leader::run(state.clone()));
    for kind in LoopKind::ALL {
        tracker.spawn(run_loop(state.clone(), kind));
    }
    tracing::info!(instance = %state.instance_id, "scheduler started");
}

/// Waits (up to `timeout`) for every loop to finish its running tick and exit; call after
/// `state.shutdown` is cancelled.
pub async fn drain(state: &AppState, timeout: Duration) {
    let tracker = &state.scheduler.tracker;
    tracker.close();
    if tokio::time::timeout(timeout, tracker.wait()).await.is_err() {
        tracing::warn!(?timeout, "scheduler ticks still running after the shutdown timeout");
    }
}

/// Waits until no tick of `class` runs (used by the leader before it releases the lock).
pub(crate) async fn wait_for_ticks(state: &AppState, class: HaClass) {
    if class != HaClass::LeaderOnly {
        return;
    }
    state.scheduler.leadership_stepping_down();
    let deadline = Instant::now() + state.config.shutdown_timeout;
    while state.scheduler.leader_ticks_running.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl SchedulerStatus {
    fn leadership_stepping_down(&self) {
        // Stop new leader-only ticks first; the ones already counted finish before unlocking.
        self.leadership.step_down();
    }
}

async fn run_loop(state: AppState, kind: LoopKind) {
    let interval = kind.interval(&state.config);
    // First tick soon after boot (a restart should not wait a full hour for the renewal
    // check), spread so replicas and loops do not all fire at once.
    let mut wait = interval.min(Duration::from_secs(5)).mul_f64(rand::random_range(0.0..=1.0));
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = jittered(interval);
        let leader_only = kind.class() == HaClass::LeaderOnly;
        if leader_only {
            // Count first, then check: the leader task clears the flag before waiting for the
            // count to reach zero, so a tick is either counted or never started.
            state.scheduler.leader_ticks_running.fetch_add(1, Ordering::SeqCst);
            if !state.scheduler.is_leader() || state.shutdown.is_cancelled() {
                state.scheduler.leader_ticks_running.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
        }
        let started = Instant::now();
        let result = run_tick_bounded(&state, kind).await;
        if leader_only {
            state.scheduler.leader_ticks_running.fetch_sub(1, Ordering::SeqCst);
        }
        state.scheduler.count_tick(kind, result.is_ok());
        match result {
            Ok(summary) if !summary.is_empty() => {
                tracing::debug!(task = kind.name(), took_ms = started.elapsed().as_millis() as u64, %summary, "tick")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(task = kind.name(), error = %e, "scheduler tick failed"),
        }
    }
}

async fn run_tick_bounded(state: &AppState, kind: LoopKind) -> Result<String, TickError> {
    let limit = state.config.scheduler_tick_timeout;
    if kind == LoopKind::JobProcessor {
        return process_until_idle(state, limit / 2).await;
    }
    match tokio::time::timeout(limit, run_tick(state, kind, Utc::now())).await {
        Ok(r) => r,
        Err(_) => Err(TickError::Timeout(limit)),
    }
}

/// The processor tick: claims batch after batch while batches come back full, until `budget`
/// is used or shutdown begins — a backlog drains at full speed instead of one batch per interval.
async fn process_until_idle(state: &AppState, budget: Duration) -> Result<String, TickError> {
    let started = Instant::now();
    let mut total = jobs::ProcessStats::default();
    loop {
        let s = jobs::process_batch(state, Utc::now()).await?;
        total.awaiting_csr += s.awaiting_csr;
        total.completed += s.completed;
        total.failed += s.failed;
        let claimed = s.awaiting_csr + s.completed + s.failed;
        if claimed < u64::from(state.config.job_batch_size)
            || started.elapsed() >= budget
            || state.shutdown.is_cancelled()
        {
            break;
        }
    }
    Ok(if total == jobs::ProcessStats::default() { String::new() } else { format!("{total:?}") })
}

/// Runs one tick of `kind` at `now` (no leader check, no timeout): what the loops call, and
/// what tests call to drive time explicitly. Returns a short summary for the logs.
pub async fn run_tick(state: &AppState, kind: LoopKind, now: DateTime<Utc>) -> Result<String, TickError> {
    let pool = &state.pool;
    Ok(match kind {
        LoopKind::RenewalCheck => format!("{:?}", sweeps::renewal_check(pool, now).await?),
        LoopKind::JobProcessor => format!("{:?}", jobs::process_batch(state, now).await?),
        LoopKind::JobRetry => format!("requeued={}", jobs::retry_failed(pool, now).await?),
        LoopKind::JobTimeout => format!("timed_out={}", jobs::timeout_sweep(state, now).await?),
        LoopKind::AgentHealth => {
            let (agents, jobs) = jobs::agent_health(state, now).await?;
            format!("agents_offline={agents} jobs_reaped={jobs}")
        }
        LoopKind::NotificationProcess => format!("{:?}", crate::notify::process_pending(state, now).await?),
        LoopKind::NotificationRetry => format!("{:?}", crate::notify::process_retries(state, now).await?),
        LoopKind::ShortLivedExpiry => format!("expired={}", sweeps::expire_short_lived(pool, now).await?),
        LoopKind::AcmeGc => format!("{:?}", crate::acme::gc(pool, now).await?),
        LoopKind::RateLimitJanitor => format!("buckets_deleted={}", crate::ratelimit::janitor_sweep(pool, now).await?),
        LoopKind::Crl => format!("crls={}", crate::issuance::generate_all_crls(state, now).await?),
        LoopKind::CrlRefresh => match crate::issuance::refresh_requested_crls(state, now).await? {
            0 => String::new(),
            n => format!("crls_refreshed={n}"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        let d = Duration::from_secs(100);
        for _ in 0..1000 {
            let j = jittered(d);
            assert!(j >= Duration::from_secs(90) && j <= Duration::from_secs(110), "{j:?}");
        }
    }
}
