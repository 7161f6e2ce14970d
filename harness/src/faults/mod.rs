//! Faults: the database restarts, stalls and killed servers a trial can suffer while its load
//! runs, and what the harness measures about them.
//!
//! Data flow: a scenario's `[[faults]]` (and `run --fault KIND@SECONDS[:DURATION]`) are parsed
//! into [`FaultDef`]s and validated with the plan. [`trial::run`](crate::trial::run) gives a
//! trial with faults an [`inject::Injector`]: a driver that runs beside the load, waits for the
//! load's time zero, causes each fault at its `at_s` against the embedded target and records
//! what it did ([`FaultEvent`]: when it really started and ended, the jobs a killed replica
//! held and how long their reclaim took). After the load, [`invariants`] checks the database
//! (renewals ended exactly once, notifications delivered, audit rows of acknowledged requests)
//! and [`analysis`] reads the recorder's per-second histograms and error marks: each fault's
//! error window, its errors by class, its recovery time, and the accounting of every planned
//! request. The result is the scenario's `faults` section of `summary.json`.

pub mod analysis;
pub mod audit_probe;
pub mod inject;
pub mod invariants;
pub mod webhook;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::metrics::ErrorCounts;
use crate::report::summary::Invariant;

/// What the harness does to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Fast restart of the throw-away PostgreSQL (down for `duration_s` when given).
    DbRestart,
    /// SIGSTOP the postmaster and its backends for `duration_s`, then SIGCONT.
    DbStall,
    /// `pg_terminate_backend` on every connection to the server's database.
    DbKillConnections,
    /// SIGKILL one server process, then start it again (with replicas: the one holding the
    /// most claimed jobs at that moment, else the last).
    ServerKill,
    /// SIGTERM one server process (the last), wait for its graceful exit, then start it again.
    ServerRestart,
}

/// Every kind, in the order `--help` and errors list them.
pub const KINDS: &[(&str, FaultKind)] = &[
    ("db_restart", FaultKind::DbRestart),
    ("db_stall", FaultKind::DbStall),
    ("db_kill_connections", FaultKind::DbKillConnections),
    ("server_kill", FaultKind::ServerKill),
    ("server_restart", FaultKind::ServerRestart),
];

impl FaultKind {
    /// The name used in files and reports.
    pub fn as_str(self) -> &'static str {
        KINDS.iter().find(|(_, k)| *k == self).map_or("?", |(n, _)| n)
    }

    /// Whether the harness can cause it against an external server (with `--database-url`):
    /// only killing connections needs nothing but SQL.
    pub fn external_ok(self) -> bool {
        self == FaultKind::DbKillConnections
    }
}

/// One `[[faults]]` entry.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultDef {
    /// What to do.
    pub kind: FaultKind,
    /// When, in seconds from the load's time zero.
    pub at_s: f64,
    /// `db_stall`: how long the database stays stopped (required). `db_restart`,
    /// `server_kill`, `server_restart`: how long it stays down before it is started again
    /// (default 0: at once). Not for `db_kill_connections`.
    #[serde(default)]
    pub duration_s: Option<f64>,
}

impl FaultDef {
    /// Parses `KIND@SECONDS[:DURATION]` (`--fault db_stall@5:3`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("--fault {s:?}: {why} (expected KIND@SECONDS[:DURATION], e.g. db_stall@5:3)");
        let (kind, when) = s.split_once('@').ok_or_else(|| bad("no @"))?;
        let kind = KINDS.iter().find(|(n, _)| *n == kind.trim()).map(|(_, k)| *k).ok_or_else(|| {
            bad(&format!("unknown kind (known: {})", KINDS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")))
        })?;
        let (at, dur) = match when.split_once(':') {
            Some((a, d)) => (a, Some(d)),
            None => (when, None),
        };
        let num = |v: &str| v.trim().parse::<f64>().map_err(|_| bad(&format!("{v:?} is not a number of seconds")));
        let def = FaultDef { kind, at_s: num(at)?, duration_s: dur.map(num).transpose()? };
        def.validate().map_err(|e| bad(&e))?;
        Ok(def)
    }

    /// Checks the numbers against the kind.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.at_s.is_finite() && self.at_s >= 0.0) {
            return Err(format!("{}: at_s must be >= 0", self.kind.as_str()));
        }
        match (self.kind, self.duration_s) {
            (_, Some(d)) if !(d.is_finite() && d >= 0.0) => {
                Err(format!("{}: duration_s must be >= 0", self.kind.as_str()))
            }
            (FaultKind::DbStall, d) if d.is_none_or(|d| d <= 0.0) => {
                Err("db_stall needs duration_s > 0 (how long the database stays stopped)".into())
            }
            (FaultKind::DbKillConnections, Some(d)) if d > 0.0 => {
                Err("db_kill_connections is instantaneous: no duration_s".into())
            }
            _ => Ok(()),
        }
    }

    /// The planned length (0 when the fault has none of its own).
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s.unwrap_or(0.0))
    }
}

/// `[recovery]`: the per-second bounds of a recovered second (see [`analysis`]).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecoveryDef {
    /// Corrected p99 of the second below this, ms.
    #[serde(default)]
    pub p99_ms: Option<f64>,
    /// Errors / requests of the second below this (0: no error).
    #[serde(default)]
    pub error_rate: Option<f64>,
}

/// What the injector did for one fault (times in seconds from the load's time zero).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultEvent {
    /// The fault as planned.
    pub def: FaultDef,
    /// When the harness began causing it.
    pub started_s: f64,
    /// Wall clock of `started_s`.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// When it was over: the database answered again / the server was ready again / SIGCONT
    /// was sent / the connections were killed.
    pub ended_s: f64,
    /// Wall clock of `ended_s` (the invariants' window is on the database's clock, which in
    /// embedded mode is this machine's).
    pub ended_at: chrono::DateTime<chrono::Utc>,
    /// What exactly was done, in a sentence.
    pub detail: String,
    /// Which server was stopped (index into the base URLs), for server faults.
    pub server: Option<usize>,
    /// `server_kill`: the claimed jobs the killed replica held and how long their reclaim took.
    pub reclaim: Option<Reclaim>,
    /// Why the fault could not be carried out, if it could not.
    pub failed: Option<String>,
}

/// The reclaim of a SIGKILLed replica's claimed jobs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reclaim {
    /// `Running` jobs claimed by the replica at the moment it was killed.
    pub jobs: u64,
    /// Seconds from the kill until none of them was still held by the dead claim (another
    /// claim took it over, or it ended); `null` if that did not happen before the harness
    /// stopped looking.
    pub reclaim_s: Option<f64>,
    /// The documented bound: `CERTCTL_JOB_LEASE` + 1.1 × `CERTCTL_JOB_PROCESSOR_INTERVAL`
    /// (+ [`inject::BATCH_ALLOWANCE`] for the rest of a live replica's batch).
    pub bound_s: f64,
}

/// One fault in `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultReport {
    /// `db_restart`, `db_stall`, …
    pub kind: String,
    /// Planned start, seconds from time zero.
    pub at_s: f64,
    /// Planned length (`db_stall`; the down time of the others), seconds.
    pub duration_s: f64,
    /// When it really started and ended (see [`FaultEvent`]).
    pub started_s: f64,
    /// End of the fault.
    pub ended_s: f64,
    /// What was done.
    pub detail: String,
    /// First and last failing request attributed to this fault (their ends, seconds from time
    /// zero); `null` without errors.
    pub error_window: Option<[f64; 2]>,
    /// Errors attributed to this fault, by class.
    pub errors: ErrorCounts,
    /// Seconds from the end of the fault to the first second whose p99 and error rate are back
    /// within the scenario's seed thresholds; `null` when that never happened (or the trial has
    /// no request load to judge).
    pub recovery_s: Option<f64>,
    /// How `recovery_s` was judged, or why it was not.
    pub recovery: String,
    /// `server_kill`: the reclaim of the killed replica's jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaim: Option<Reclaim>,
    /// Why the harness could not cause the fault (the run then exits 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// Every planned request's end: answered, counted as an error, never started, or unaccounted.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Accounting {
    /// Slots the open-model schedule planned (closed model: requests started).
    pub planned: u64,
    /// Requests started.
    pub issued: u64,
    /// Requests recorded with an HTTP answer (any status).
    pub answered: u64,
    /// Requests recorded as errors (every class, HTTP answers with a bad status included).
    pub failed: u64,
    /// Slots never started (counted as dropped starts).
    pub dropped: u64,
    /// Started requests that were never recorded: the harness lost them (must be 0).
    pub unaccounted: u64,
}

/// The faults section of a scenario in `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultsSummary {
    /// Each fault, in order.
    pub faults: Vec<FaultReport>,
    /// Errors outside every fault's window (before the first fault, or after a fault's
    /// recovery second).
    pub errors_outside: u64,
    /// Every planned request's end, over the scheduled labels.
    pub accounting: Accounting,
    /// The database invariants checked after the trial.
    pub invariants: Vec<Invariant>,
}

impl FaultsSummary {
    /// Why this trial's faults fail the run (exit 1), if they do: a violated invariant, a
    /// fault that never recovered, or an unaccounted request.
    pub fn failure(&self) -> Option<String> {
        if let Some(i) = self.invariants.iter().find(|i| !i.held) {
            return Some(format!("fault invariant violated: {} ({})", i.name, i.detail));
        }
        if self.accounting.unaccounted > 0 {
            return Some(format!("{} started requests were never recorded", self.accounting.unaccounted));
        }
        self.faults
            .iter()
            .find(|f| f.recovery_s.is_none() && f.recovery.starts_with("never"))
            .map(|f| format!("{} at {:.1} s: {}", f.kind, f.at_s, f.recovery))
    }

    /// Why a fault could not be caused (exit 2), if one could not.
    pub fn not_carried_out(&self) -> Option<String> {
        self.faults.iter().find_map(|f| f.failed.as_ref().map(|why| format!("{} at {:.1} s: {why}", f.kind, f.at_s)))
    }
}

/// The `_scenario` threshold metrics faults add.
pub const METRICS: &[&str] = &["recovery_s", "reclaim_s"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_flag_parses_kind_time_and_duration_and_refuses_nonsense() {
        assert_eq!(
            FaultDef::parse("db_stall@5:3").unwrap(),
            FaultDef { kind: FaultKind::DbStall, at_s: 5.0, duration_s: Some(3.0) }
        );
        assert_eq!(FaultDef::parse("server_kill@2.5").unwrap().duration_s, None);
        for bad in ["db_stall@5", "db_restart", "nap@3", "db_restart@-1", "db_kill_connections@1:2", "db_restart@x"] {
            let e = FaultDef::parse(bad).unwrap_err();
            assert!(e.contains("--fault") && !e.contains('\n'), "{bad}: {e}");
        }
    }
}
