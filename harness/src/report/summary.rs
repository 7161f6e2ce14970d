//! `summary.json`: the versioned, machine-readable record of a run.
//!
//! The schema is committed as `harness/schema/summary.schema.json`; a test validates every
//! summary the harness writes against it. Bump [`SCHEMA_VERSION`] on any incompatible change.
//! Latencies are milliseconds; error rates are fractions of the label's requests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::gate::{Comparison, ThresholdResult};
use crate::host::HostInfo;
use crate::metrics::sampler::{Peaks, Sample};
use crate::metrics::{ErrorCounts, Percentiles};
use crate::seed::SeedReport;

/// Version of the summary format.
pub const SCHEMA_VERSION: u32 = 1;

/// File name of the summary in a run directory.
pub const FILE: &str = "summary.json";

/// The whole run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `certctl-loadtest <version>`.
    pub tool: String,
    /// Git commit of the working tree (`-dirty` when modified).
    pub commit: String,
    /// Start, RFC 3339 UTC.
    pub started_at: String,
    /// End, RFC 3339 UTC.
    pub finished_at: String,
    /// Profile name.
    pub profile: String,
    /// `embedded` or `external`.
    pub mode: String,
    /// Base URL driven.
    pub target: String,
    /// `CERTCTL_*` settings of the embedded server (secrets excluded); empty in external mode.
    pub server_settings: BTreeMap<String, String>,
    /// The machine.
    pub host: HostInfo,
    /// The database, when known.
    pub postgres: Option<PostgresInfo>,
    /// Fixture seeding, when done.
    pub seeding: Option<SeedReport>,
    /// The scenarios, in run order.
    pub scenarios: Vec<ScenarioSummary>,
    /// Overall verdicts.
    pub verdict: Verdict,
    /// Regression comparison against `--baseline`, when asked for.
    pub comparison: Option<Comparison>,
    /// `--shard I/N` of this generator; absent for a whole run. (Optional fields are left
    /// out rather than `null`, so summaries written before them stay valid.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::scenario::Shard>,
    /// The runs `merge` built this one from; absent for a run made by `run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<Vec<MergedRun>>,
    /// `--replicas N`: the servers and the multi-replica invariants checked after the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Replicas>,
    /// `--start-at`: the declared schedule zero and this generator's clock offset (a merged
    /// run: the shards' common start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<crate::clock::SyncStart>,
}

/// Multi-replica facts of a `--replicas N` run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Replicas {
    /// Servers started on the one database.
    pub count: usize,
    /// Every invariant checked, held or not.
    pub invariants: Vec<Invariant>,
    /// How requests were spread over the servers (`--balancer`), e.g. haproxy's version and
    /// algorithm; absent in summaries written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balancer: Option<String>,
    /// Requests each server answered (its `/metrics`, without health checks), in start
    /// order; `null` where it could not be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub served_requests: Vec<Option<u64>>,
}

/// One multi-replica invariant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Invariant {
    /// Short name, e.g. `job_processed_once`.
    pub name: String,
    /// Whether it held.
    pub held: bool,
    /// What was counted.
    pub detail: String,
}

/// One input of a merged run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MergedRun {
    /// The run directory as given to `merge`.
    pub dir: String,
    /// Its shard, if it was one.
    pub shard: Option<crate::scenario::Shard>,
    /// Its commit.
    pub commit: String,
    /// Its start, RFC 3339 UTC.
    pub started_at: String,
    /// Its host's CPU model and core count, e.g. `AMD EPYC (2 cores)`.
    pub host: String,
    /// Its declared `--start-at`, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
    /// Its generator's measured clock offset (ms), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<f64>,
}

/// PostgreSQL facts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PostgresInfo {
    /// `postgres --version` or `SHOW server_version`.
    pub version: String,
    /// Durability settings (e.g. `fast (fsync=off, …)`), or `unknown` in external mode.
    pub durability: String,
    /// Whether a pg_stat_statements diff was taken.
    pub pg_stat_statements: bool,
}

/// One scenario.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScenarioSummary {
    /// Name.
    pub name: String,
    /// Description from the scenario file.
    pub description: String,
    /// `open` or `closed`.
    pub model: String,
    /// Planned length in seconds.
    pub duration_s: f64,
    /// Measured length (time zero to the last request's end).
    pub elapsed_s: f64,
    /// Closed model users / open model pool size in total.
    pub users: usize,
    /// Whether Ctrl-C cut the scenario short.
    pub cancelled: bool,
    /// The interval log's file name.
    pub hlog: String,
    /// Per-label results.
    pub labels: Vec<LabelSummary>,
    /// Database counter rates (`db_metrics`), per second; `null` when not measured.
    pub db_metrics: BTreeMap<String, Option<f64>>,
    /// Every threshold's verdict.
    pub thresholds: Vec<ThresholdResult>,
    /// Server and database resources.
    pub resources: Resources,
    /// Top statements by time during the scenario.
    pub pg_stat_statements: PgStatStatements,
    /// Fleet renewal rate, for scenarios that declare `[fleet_renewal]` (absent otherwise and
    /// in summaries written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_renewal: Option<crate::metrics::fleet::FleetRenewal>,
    /// Scheduler throughput, for `[scheduler_throughput]` scenarios (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_throughput: Option<crate::scenario::scheduler_throughput::SchedulerThroughput>,
    /// A trial with faults: each fault's error window, errors, recovery and reclaim, the
    /// request accounting and the fault invariants (absent without faults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faults: Option<crate::faults::FaultsSummary>,
}

/// One request label.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LabelSummary {
    /// Label.
    pub label: String,
    /// Requests completed.
    pub count: u64,
    /// Planned arrival rate (open model), per second.
    pub target_rate: Option<f64>,
    /// Completed requests per second of the planned duration.
    pub achieved_rate: f64,
    /// Latency from the intended start (coordinated-omission-free).
    pub corrected: Percentiles,
    /// Latency from the actual start.
    pub service: Percentiles,
    /// Errors by class.
    pub errors: ErrorCounts,
    /// All errors / count.
    pub error_rate: f64,
    /// 5xx / count.
    pub error_rate_5xx: f64,
    /// Responses by status code.
    pub status_counts: BTreeMap<String, u64>,
    /// 429s carrying an ACME `rateLimited` problem document.
    pub rate_limited_429: u64,
    /// Slots planned by the open-model schedule (0 for closed).
    pub planned: u64,
    /// Starts later than the tolerance.
    pub late_starts: u64,
    /// Slots never started.
    pub dropped_starts: u64,
    /// Per-second series: requests, errors, p50/p99 (corrected).
    pub intervals: Vec<IntervalSummary>,
}

/// One second of one label.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct IntervalSummary {
    /// Second since the scenario's time zero.
    pub t_s: u64,
    /// Requests completed.
    pub count: u64,
    /// Errors among them.
    pub errors: u64,
    /// Corrected p50 in ms.
    pub p50: f64,
    /// Corrected p99 in ms.
    pub p99: f64,
}

/// Resource samples and peaks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Resources {
    /// Peaks.
    pub peaks: Peaks,
    /// 1-Hz samples.
    pub samples: Vec<Sample>,
}

/// pg_stat_statements diff.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct PgStatStatements {
    /// `available`, or why not (`unavailable: …`).
    pub status: String,
    /// Top statements by total execution time during the scenario.
    pub top: Vec<StatementDelta>,
}

/// One statement's change over a scenario.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatementDelta {
    /// Normalised query text (truncated).
    pub query: String,
    /// Calls during the scenario.
    pub calls: i64,
    /// Total execution time during the scenario, ms.
    pub total_ms: f64,
    /// Mean per call, ms.
    pub mean_ms: f64,
}

/// Overall verdicts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    /// Every seed threshold held.
    pub seed_thresholds_held: bool,
    /// Every project target held.
    pub targets_held: bool,
    /// The regression gate passed (`null` without a baseline).
    pub gate_passed: Option<bool>,
    /// The process exit code.
    pub exit_code: i32,
    /// One line saying why.
    pub reason: String,
}

/// Reads `summary.json` from a run directory.
pub fn read(dir: &std::path::Path) -> Result<Summary, crate::HarnessError> {
    let path = dir.join(FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| crate::HarnessError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| crate::HarnessError::Config(format!("{}: {e}", path.display())))
}

/// Writes `summary.json` into a run directory.
pub fn write(dir: &std::path::Path, s: &Summary) -> Result<(), crate::HarnessError> {
    let path = dir.join(FILE);
    let text = serde_json::to_string_pretty(s).map_err(|e| crate::HarnessError::Config(e.to_string()))?;
    std::fs::write(&path, text + "\n").map_err(|e| crate::HarnessError::io(&path, e))
}
