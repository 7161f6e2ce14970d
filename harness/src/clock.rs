//! Synchronized starts (`run --start-at`): the declared start and this generator's clock.
//!
//! Shards on several machines share one wall-clock instant as their schedule zero, so their
//! per-second intervals line up by index when `merge` adds them. How well they line up is as
//! good as the machines' clocks agree; where the run has a database connection, the harness
//! measures its own clock against the database server's (`clock_timestamp()`, the reading with
//! the shortest round trip of a few), which every shard of a distributed run shares. The
//! offsets of the shards then bound their misalignment: two shards with offsets a and b ms
//! started |a − b| ms apart in database time.

use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// Readings taken to measure the offset (the one with the shortest round trip counts).
const READINGS: usize = 5;

/// The declared start of a synchronized run and what is known of this generator's clock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SyncStart {
    /// The schedule's zero, RFC 3339 UTC with milliseconds.
    pub at: String,
    /// This generator's clock minus the reference clock, in ms (positive: ours is ahead);
    /// absent when no reference was reachable (and in a merged run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<f64>,
    /// The reference the offset was measured against, e.g. `database`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_reference: Option<String>,
    /// Round trip of the reading the offset comes from, in ms (the offset's uncertainty is
    /// at most half of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_rtt_ms: Option<f64>,
}

/// RFC 3339 UTC with milliseconds, the form `at` is declared in.
pub fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The error when the declared start passed before the load could begin.
pub fn start_passed(at: Option<SystemTime>) -> String {
    format!(
        "the synchronized start {} passed while the run was being set up (servers, seeding): pick a later \
         --start-at",
        at.map(rfc3339).unwrap_or_default()
    )
}

/// This machine's clock against the database server's: (offset ms, round trip ms), from the
/// reading with the shortest round trip; `None` when the database cannot be read.
pub async fn offset_to_database(pool: &PgPool) -> Option<(f64, f64)> {
    let mut best: Option<(f64, f64)> = None;
    for _ in 0..READINGS {
        let (sent, mono) = (SystemTime::now(), Instant::now());
        let theirs: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(pool).await.ok()?;
        let rtt = mono.elapsed();
        // Our clock at the moment the server read its own: halfway through the round trip.
        let ours = DateTime::<Utc>::from(sent + rtt / 2);
        let offset_ms = (ours - theirs).num_microseconds()? as f64 / 1000.0;
        let rtt_ms = rtt.as_secs_f64() * 1000.0;
        if best.is_none_or(|(_, r)| rtt_ms < r) {
            best = Some((offset_ms, rtt_ms));
        }
    }
    best
}

/// The summary's record of a run started at `at`.
pub async fn record(at: SystemTime, pool: Option<&PgPool>) -> SyncStart {
    let measured = match pool {
        Some(p) => offset_to_database(p).await,
        None => None,
    };
    SyncStart {
        at: rfc3339(at),
        clock_offset_ms: measured.map(|m| m.0),
        clock_reference: measured.map(|_| "database".to_string()),
        clock_rtt_ms: measured.map(|m| m.1),
    }
}

/// How far apart `merge` lets the starts of shards that declared none (their hlogs' start
/// times) be before it warns that their per-second intervals are smeared.
pub const UNSYNCED_TOLERANCE: Duration = Duration::from_secs(1);
/// How far apart `merge` lets the measured clock offsets of synchronized shards be before it
/// warns that they did not really start together.
pub const OFFSET_TOLERANCE_MS: f64 = 100.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declared_start_keeps_milliseconds_in_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_583_200_250);
        assert_eq!(rfc3339(t), "2025-12-01T10:00:00.250Z");
    }
}
