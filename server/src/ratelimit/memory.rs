//! In-memory sliding-window log: one timestamp list per key, in this process only.
//!
//! Each replica has its own budget (N replicas admit up to N × max). The key count is bounded:
//! when a new key would exceed `max_keys`, keys whose windows are empty are dropped first, then
//! the least recently used key — so an attacker cycling keys costs memory proportional to
//! `max_keys`, never more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use chrono::{DateTime, Utc};

use super::{Limit, Limiter, LimiterError, bypass, decide};

/// Default bound on distinct keys held by one in-memory limiter.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

#[derive(Debug, Default)]
struct Entry {
    log: Vec<DateTime<Utc>>,
    last_used: DateTime<Utc>,
}

/// Per-process sliding-window limiter with a bounded key count.
#[derive(Debug)]
pub struct MemoryLimiter {
    namespace: String,
    limit: Limit,
    max_keys: usize,
    keys: Mutex<HashMap<String, Entry>>,
}

impl MemoryLimiter {
    /// A limiter enforcing `limit`, holding at most `max_keys` keys (at least 1).
    pub fn new(namespace: &str, limit: Limit, max_keys: usize) -> Self {
        Self { namespace: namespace.to_string(), limit, max_keys: max_keys.max(1), keys: Mutex::new(HashMap::new()) }
    }

    /// Number of keys currently held (for tests and diagnostics).
    pub fn key_count(&self) -> usize {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Admits (and records) one call for `key` at `now`, or says how long to wait: the
    /// [`Limiter::allow`] decision, callable without `await` (it never does I/O).
    pub fn allow_now(&self, key: &str, now: DateTime<Utc>) -> Result<(), super::RateLimited> {
        if bypass(self.limit, key) {
            return Ok(());
        }
        let full_key = format!("{}:{key}", self.namespace);
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if !keys.contains_key(&full_key) && keys.len() >= self.max_keys {
            // Make room: first the keys with nothing left in their window, then the LRU key.
            let window = chrono::Duration::from_std(self.limit.window).unwrap_or(chrono::Duration::MAX);
            keys.retain(|_, e| e.log.iter().any(|t| *t + window > now));
            if keys.len() >= self.max_keys
                && let Some(lru) = keys.iter().min_by_key(|(_, e)| e.last_used).map(|(k, _)| k.clone())
            {
                keys.remove(&lru);
            }
        }
        let entry = keys.entry(full_key).or_default();
        entry.last_used = entry.last_used.max(now);
        decide(&mut entry.log, self.limit, now)
    }

    /// Whether a call for `key` at `now` would be admitted, without recording anything (for
    /// callers that count only some outcomes, e.g. failed authentications).
    pub fn peek(&self, key: &str, now: DateTime<Utc>) -> Result<(), super::RateLimited> {
        if bypass(self.limit, key) {
            return Ok(());
        }
        let full_key = format!("{}:{key}", self.namespace);
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = keys.get(&full_key) else { return Ok(()) };
        // The log holds at most `max` entries: deciding on a copy is cheap and shares the rule.
        let mut log = entry.log.clone();
        drop(keys);
        decide(&mut log, self.limit, now)
    }

    /// Drops every key whose window is empty at `now`; returns how many were dropped.
    pub fn sweep(&self, now: DateTime<Utc>) -> usize {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let before = keys.len();
        let window = chrono::Duration::from_std(self.limit.window).unwrap_or(chrono::Duration::MAX);
        keys.retain(|_, e| e.log.iter().any(|t| *t + window > now));
        before - keys.len()
    }
}

#[async_trait::async_trait]
impl Limiter for MemoryLimiter {
    async fn allow(&self, key: &str, now: DateTime<Utc>) -> Result<(), LimiterError> {
        self.allow_now(key, now).map_err(LimiterError::from)
    }

    fn limit(&self) -> Limit {
        self.limit
    }
}

/// In-memory limiters built by `ratelimit::build`, so the janitor loop can sweep them. Weak:
/// a limiter dropped by its owner is forgotten at the next sweep.
static REGISTRY: Mutex<Vec<Weak<MemoryLimiter>>> = Mutex::new(Vec::new());

/// Registers `limiter` for janitor sweeps.
pub(crate) fn register(limiter: &Arc<MemoryLimiter>) {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::downgrade(limiter));
}

/// Sweeps every registered, still-alive limiter; returns the keys dropped.
pub(crate) fn sweep_registered(now: DateTime<Utc>) -> usize {
    let alive: Vec<Arc<MemoryLimiter>> = {
        let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
        reg.retain(|w| w.strong_count() > 0);
        reg.iter().filter_map(Weak::upgrade).collect()
    };
    alive.iter().map(|l| l.sweep(now)).sum()
}
