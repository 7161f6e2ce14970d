//! Sliding-window rate limiters (contract §8).
//!
//! [`Limiter::allow`] admits a call for `key` at `now` when fewer than `max` calls were admitted
//! in the preceding `window`. `max <= 0` disables the limiter; an empty key is never limited.
//! Backends: in-memory (per process) and PostgreSQL (`rate_limit_buckets`, shared by replicas),
//! chosen by `CERTCTL_RATELIMIT_BACKEND`.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A refused call: how long until the oldest admitted call leaves the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited; retry after {retry_after:?}")]
pub struct RateLimited {
    /// Time until a call would be admitted.
    pub retry_after: Duration,
}

/// Why a limiter could not decide (backend failure). Callers choose to fail open or closed.
#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    /// The call is over the limit.
    #[error(transparent)]
    Limited(#[from] RateLimited),
    /// The backend failed.
    #[error("rate limiter backend: {0}")]
    Backend(String),
}

/// A sliding-window limit: at most `max` calls per `window` per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Calls allowed per window; `<= 0` disables.
    pub max: i64,
    /// The window length.
    pub window: Duration,
}

/// A sliding-window limiter over keys.
#[async_trait::async_trait]
pub trait Limiter: Send + Sync + std::fmt::Debug {
    /// Admits (and records) one call for `key` at `now`, or says how long to wait.
    async fn allow(&self, key: &str, now: DateTime<Utc>) -> Result<(), LimiterError>;

    /// The limit this limiter enforces.
    fn limit(&self) -> Limit;
}

pub mod memory;
pub mod postgres;

use std::sync::Arc;

use sqlx::PgPool;

pub use memory::MemoryLimiter;
pub use postgres::PgLimiter;

use crate::config::RateLimitBackend;

/// Builds the limiter for `limit` on the configured backend (`CERTCTL_RATELIMIT_BACKEND`).
///
/// `namespace` prefixes every key (`"{namespace}:{key}"`), so limiters that share the
/// `rate_limit_buckets` table (ACME orders/hour, pending orders, key changes, challenge
/// responses) never count each other's calls. The in-memory backend ignores `pool`.
pub fn build(backend: RateLimitBackend, pool: &PgPool, namespace: &str, limit: Limit) -> Arc<dyn Limiter> {
    match backend {
        RateLimitBackend::Memory => Arc::new(MemoryLimiter::new(namespace, limit, memory::DEFAULT_MAX_KEYS)),
        RateLimitBackend::Postgres => Arc::new(PgLimiter::new(pool.clone(), namespace, limit)),
    }
}

/// How long a `rate_limit_buckets` row may sit untouched before the janitor deletes it. Longer
/// than any window in use (the longest ACME window is one hour), so a deleted row never held a
/// timestamp that still counted.
pub const JANITOR_IDLE_AFTER: Duration = Duration::from_secs(2 * 3600);

/// The janitor's sweep: deletes buckets idle since before `now - JANITOR_IDLE_AFTER`.
/// Uses `idx_rate_limit_buckets_updated_at`. Returns the number of rows deleted.
pub async fn janitor_sweep(pool: &PgPool, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let cutoff = now - chrono::Duration::from_std(JANITOR_IDLE_AFTER).unwrap_or(chrono::Duration::hours(2));
    let done = sqlx::query("DELETE FROM rate_limit_buckets WHERE updated_at < $1").bind(cutoff).execute(pool).await?;
    Ok(done.rows_affected())
}

/// The sliding-window decision shared by both backends, so they cannot drift apart.
///
/// `log` holds the admitted calls (oldest first, possibly stale). Drops entries at or before
/// `now - window`, then admits (appending `now`) when fewer than `max` remain; otherwise returns
/// the time until the oldest entry leaves the window.
pub(crate) fn decide(log: &mut Vec<DateTime<Utc>>, limit: Limit, now: DateTime<Utc>) -> Result<(), RateLimited> {
    let window = chrono::Duration::from_std(limit.window).unwrap_or(chrono::Duration::MAX);
    let start = now.checked_sub_signed(window).unwrap_or(DateTime::<Utc>::MIN_UTC);
    log.retain(|t| *t > start);
    log.sort_unstable();
    // `max` is positive here (callers short-circuit `max <= 0`); clamp for 32-bit usize safety.
    let max = usize::try_from(limit.max).unwrap_or(usize::MAX);
    if log.len() < max {
        log.push(now);
        return Ok(());
    }
    // Full: the call is admitted again once the entry that makes the count reach `max` expires.
    let idx = log.len() - max;
    let frees_at = log[idx] + window;
    let retry_after = (frees_at - now).to_std().unwrap_or(Duration::ZERO);
    Err(RateLimited { retry_after })
}

/// True when `limit`/`key` bypass limiting entirely (`max <= 0`, or an empty key).
pub(crate) fn bypass(limit: Limit, key: &str) -> bool {
    limit.max <= 0 || key.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap_or_default()
    }

    #[test]
    fn the_window_slides_and_retry_after_points_at_the_oldest_call() {
        let limit = Limit { max: 2, window: Duration::from_secs(60) };
        let mut log = Vec::new();
        assert!(decide(&mut log, limit, at(0)).is_ok());
        assert!(decide(&mut log, limit, at(10)).is_ok());
        assert_eq!(decide(&mut log, limit, at(20)), Err(RateLimited { retry_after: Duration::from_secs(40) }));
        // At exactly t=60 the first call has left the window (the window is (now-60, now]).
        assert!(decide(&mut log, limit, at(60)).is_ok());
        assert_eq!(log.len(), 2);
    }
}
