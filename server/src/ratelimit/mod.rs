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
