//! In-memory sliding-window log: one timestamp list per key, in this process only.
//!
//! Each replica has its own budget (N replicas admit up to N × max). The key count is bounded:
//! when a new key would exceed `max_keys`, keys whose windows are empty are dropped first, then
//! the least recently used key — so an attacker cycling keys costs memory proportional to
//! `max_keys`, never more.

use std::collections::HashMap;
use std::sync::Mutex;

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
        decide(&mut entry.log, self.limit, now).map_err(LimiterError::from)
    }

    fn limit(&self) -> Limit {
        self.limit
    }
}
