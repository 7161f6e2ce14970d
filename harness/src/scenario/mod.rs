//! Scenarios: the data files in `scenarios/*.toml` and what the harness makes of them.
//!
//! Data flow: a TOML file is parsed into a [`ScenarioDef`] (validated once, while the plan is
//! built), resolved against a profile (`smoke`/`ci`/`scale`) into a [`ResolvedScenario`], and
//! handed to [`engine::run_scenario`], which builds a goose attack from it. The open-model arrival
//! schedule lives in [`schedule`]; per-request values (agent ids, certificate batches, ACME
//! certIDs) are filled into the request templates by [`template`].
//!
//! A scenario is data, not code: `bulk_renewal`, `acme_burst`, `agent_storm` and `api` differ
//! only in their files, so a new one like them needs no Rust. Where the next request depends on
//! the last answer (`agent_fleet`, `acme_enrollment`), a request names a [`flows`] flow — the
//! client-side logic — and the file declares the flow's `follow_up` labels. The per-scenario
//! knowledge that does need code (how a fleet id or an agent credential is formed) lives in
//! [`template`], next to the seed files that create the same ids.

pub mod engine;
pub mod flows;
pub mod schedule;
pub mod scheduler_throughput;
pub mod template;

pub use schedule::RateCurve;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Problems with a scenario file.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for a scenario.
    #[error("parsing {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The file parses but says something impossible.
    #[error("scenario {scenario}: {message}")]
    Invalid {
        /// The scenario name.
        scenario: String,
        /// What is wrong.
        message: String,
    },
    /// A scenario asked for on the command line does not exist.
    #[error("unknown scenario '{0}' (see `certctl-loadtest list`)")]
    Unknown(String),
    /// A profile the scenario does not define.
    #[error("scenario {scenario} has no profile '{profile}'")]
    NoProfile {
        /// The scenario name.
        scenario: String,
        /// The profile asked for.
        profile: String,
    },
}

/// One scenario file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioDef {
    /// Name; must match the file stem.
    pub name: String,
    /// What the scenario exercises, in a sentence or two.
    pub description: String,
    /// Seed files (`seeds/*.sql`) this scenario needs, by file name.
    #[serde(default)]
    pub fixtures: Vec<String>,
    /// How load is offered.
    pub load: LoadDef,
    /// The requests, each with its own label (none in a `[scheduler_throughput]` scenario).
    #[serde(default)]
    pub requests: Vec<RequestDef>,
    /// Seed thresholds and project targets.
    #[serde(default)]
    pub thresholds: Vec<ThresholdDef>,
    /// Counters read from the database before and after the load, reported as rates.
    #[serde(default)]
    pub db_metrics: Vec<DbMetricDef>,
    /// Fleet renewal rate sampled at 1 Hz during the load (see [`crate::metrics::fleet`]);
    /// enables the `_scenario` threshold metric `fleet_renewal_rate`.
    #[serde(default)]
    pub fleet_renewal: Option<FleetRenewalDef>,
    /// Instead of a goose load: one bulk renew of the whole fleet, timed until every job has
    /// ended (see [`scheduler_throughput`]); `load.duration_s` is then the time limit.
    #[serde(default)]
    pub scheduler_throughput: Option<scheduler_throughput::SchedulerThroughputDef>,
    /// Faults caused during the load (embedded mode; see [`crate::faults`]); `run --fault`
    /// adds more.
    #[serde(default)]
    pub faults: Vec<crate::faults::FaultDef>,
    /// Per-second bounds a second must meet to count as recovered after a fault, for every
    /// label (default: each label's `p99` and `error_rate` seed thresholds). For a fault whose
    /// whole-run latency thresholds must allow the fault itself (a stall).
    #[serde(default)]
    pub recovery: Option<crate::faults::RecoveryDef>,
    /// Per-profile overrides (`smoke`, `ci`, `scale`).
    #[serde(default)]
    pub profiles: BTreeMap<String, ProfileOverride>,
}

/// Open or closed load model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    /// Arrival rates: request *i* of a label is due at `start + i/rate`.
    Open,
    /// A fixed number of users, each running the request sequence then pausing.
    Closed,
}

/// The load model of a scenario.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoadDef {
    /// `open` (arrival rates per request) or `closed` (concurrent users).
    pub model: Model,
    /// Length of the run in seconds (the scale figure; profiles override it). With `stages`
    /// the run lasts the stages' total, and this may be left out.
    #[serde(default)]
    pub duration_s: f64,
    /// Open model: a ramped load instead of constant rates (k6's ramping-arrival-rate). The
    /// offered rate starts at `start_rate` and moves linearly to each stage's `rate` over the
    /// stage's `duration_s`; the requests' `rate`s then give only the mix between labels.
    #[serde(default)]
    pub stages: Vec<StageDef>,
    /// Open model with `stages`: the total rate at time zero (default 0).
    #[serde(default)]
    pub start_rate: f64,
    /// Concurrent goose users. Closed model: the users. Open model: the pool that serves the
    /// schedule per request label (default: two seconds' worth of arrivals, at least 8).
    #[serde(default)]
    pub users: Option<usize>,
    /// Closed model: pause after each iteration, in milliseconds.
    #[serde(default)]
    pub pause_ms: u64,
}

/// One stage of a ramped open-model load.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StageDef {
    /// Total arrivals per second (over every scheduled label, split in the file's mix) at the
    /// end of the stage.
    pub rate: f64,
    /// Seconds the ramp to `rate` takes.
    pub duration_s: f64,
}

/// HTTP methods a scenario may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// No HTTP at all: client-side work a flow times under its own label (key generation, CSR
    /// building, JWS signing), so it is never mixed into a server latency.
    Client,
}

/// Which credential a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Auth {
    /// No `Authorization` header.
    #[default]
    None,
    /// `Authorization: Bearer <api key>`.
    ApiKey,
    /// `Authorization: Bearer <credential of the agent named in the path>`.
    Agent,
}

/// One request of a scenario.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequestDef {
    /// Label: the unit of measurement, thresholds and comparison.
    pub label: String,
    /// HTTP method.
    pub method: Method,
    /// Path template (see [`template`]); empty for `method = "CLIENT"`.
    #[serde(default)]
    pub path: String,
    /// JSON body template, sent with `Content-Type: application/json`.
    #[serde(default)]
    pub body: Option<String>,
    /// Credential to send.
    #[serde(default)]
    pub auth: Auth,
    /// Statuses that count as success (none for `method = "CLIENT"`).
    #[serde(default)]
    pub expect: Vec<u16>,
    /// Open model: arrivals per second for this label.
    #[serde(default)]
    pub rate: Option<f64>,
    /// `{cert_batch}`: certificates per batch.
    #[serde(default)]
    pub batch: Option<usize>,
    /// Body check on an expected status: the JSON body must be an object with this field.
    #[serde(default)]
    pub check_json_field: Option<String>,
    /// Body check on an expected status: this response header must be present.
    #[serde(default)]
    pub check_header: Option<String>,
    /// Client-side logic ([`flows`]) that sends this request and acts on its answer, e.g.
    /// `agent_work` (CSR submit and status report for the jobs a work poll returns) or
    /// `acme_enrollment` (a whole RFC 8555 enrollment).
    #[serde(default)]
    pub flow: Option<String>,
    /// Sent (or timed) only by a flow, never by the schedule or the closed loop: a step whose
    /// arrival depends on an earlier answer. No `rate`.
    #[serde(default)]
    pub follow_up: bool,
}

/// Which set a threshold belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum ThresholdSet {
    /// Seed thresholds: regression guards; they decide the exit code.
    Seed,
    /// The project's own targets: evaluated and reported, not gating.
    Target,
}

impl ThresholdSet {
    /// Name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ThresholdSet::Seed => "seed",
            ThresholdSet::Target => "target",
        }
    }
}

/// The label that names scenario-wide metrics (database counters) in thresholds.
pub const SCENARIO_LABEL: &str = "_scenario";

/// Metrics a threshold may name for a request label. Latencies are corrected (from the
/// intended start) unless prefixed `service_`.
pub const LABEL_METRICS: &[&str] = &[
    "p50",
    "p90",
    "p95",
    "p99",
    "p999",
    "max",
    "service_p50",
    "service_p95",
    "service_p99",
    "error_rate",
    "error_rate_5xx",
];

/// One threshold: `metric < max` or `metric >= min`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdDef {
    /// Seed threshold or project target.
    pub set: ThresholdSet,
    /// Request label, or `_scenario` for a database metric.
    pub label: String,
    /// One of [`LABEL_METRICS`] or a `db_metrics` name.
    pub metric: String,
    /// Upper bound (exclusive): milliseconds for latencies, a fraction for error rates.
    #[serde(default)]
    pub max: Option<f64>,
    /// Lower bound (inclusive), for rates.
    #[serde(default)]
    pub min: Option<f64>,
}

/// A counter read with one SQL query before and after the load; reported as a per-second rate.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DbMetricDef {
    /// Metric name (usable in thresholds with label `_scenario`).
    pub name: String,
    /// `SELECT` returning one `bigint`.
    pub counter_sql: String,
}

/// The `[fleet_renewal]` table: what to count, and the window of the judged moving average.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FleetRenewalDef {
    /// `SELECT` returning one `bigint`: the fleet's certificate versions so far.
    pub counter_sql: String,
    /// Window of the moving average judged as `fleet_renewal_rate`, seconds.
    #[serde(default = "default_fleet_window")]
    pub window_s: u32,
}

fn default_fleet_window() -> u32 {
    5
}

/// Profile overrides.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ProfileOverride {
    /// Run length in seconds.
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// Multiplies every open-model rate.
    #[serde(default)]
    pub rate_factor: Option<f64>,
    /// Concurrent users (closed model) or per-label pool (open model).
    #[serde(default)]
    pub users: Option<usize>,
}

/// A scenario with a profile applied: the numbers the engine runs with.
#[derive(Debug, Clone)]
pub struct ResolvedScenario {
    /// The definition.
    pub def: ScenarioDef,
    /// Profile name.
    pub profile: String,
    /// Run length.
    pub duration: Duration,
    /// Closed model: users. Open model: per-label pool override.
    pub users: Option<usize>,
    /// Open model: arrivals per second per request of the *whole* load (same order as
    /// `def.requests`); a shard runs its slice of this schedule (see [`Shard`]).
    pub rates: Vec<f64>,
    /// Which slice of the load this generator runs (1/1 unless `--shard`).
    pub shard: Shard,
    /// The shape of the open-model load over time, as a multiple of `rates`: 1 throughout for
    /// constant rates, the stages divided by the mix's total rate for a ramped load. Label *i*
    /// offers `shape × rates[i]` (see [`ResolvedScenario::curve`]).
    pub shape: RateCurve,
    /// A trial's warm-up: requests due before it are sent but not judged (0 for `run`).
    pub warmup: Duration,
}

/// `--shard I/N`: this generator runs the I-th of N slices of the load.
///
/// Open model: shard I takes the slots i ≡ I−1 (mod N) of the full-rate schedule, so each shard
/// offers rate/N and the N shards together offer exactly the one-generator arrival schedule
/// (same due times, no slot twice). Closed model: users/N each, the remainder going to the first
/// shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 1-based index I.
    pub index: u32,
    /// Number of shards N.
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 1, count: 1 }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("--shard must be I/N with 1 <= I <= N, got {s:?}");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// Residue class of this shard's slots (I−1).
    pub fn offset(&self) -> u64 {
        u64::from(self.index.saturating_sub(1))
    }

    /// How many of the slots `0..total` fall to this shard (those ≡ I−1 mod N).
    pub fn slots_of(&self, total: u64) -> u64 {
        let (r, n) = (self.offset(), u64::from(self.count.max(1)));
        if total <= r { 0 } else { (total - r).div_ceil(n) }
    }

    /// This shard's share of `users` closed-model users: users/N, plus one for the first
    /// users mod N shards.
    pub fn users_of(&self, users: usize) -> usize {
        let n = self.count.max(1) as usize;
        let i = self.index.saturating_sub(1) as usize;
        users / n + usize::from(i < users % n)
    }
}

impl ResolvedScenario {
    /// Goose users serving request `i` in the open model: two seconds' worth of arrivals at the
    /// curve's peak (so a one-second stall of the target does not starve the schedule), at
    /// least 8; none for a follow-up.
    pub fn open_users(&self, i: usize) -> usize {
        // A follow-up is sent by the users of the request whose flow it belongs to.
        if self.def.requests.get(i).is_some_and(|r| r.follow_up) {
            return 0;
        }
        if let Some(u) = self.users {
            return u.max(1);
        }
        let peak = self.curve(i).peak() / f64::from(self.shard.count.max(1));
        ((peak.max(1e-9) * 2.0).ceil() as usize).clamp(8, 2000)
    }

    /// The arrival-rate curve of request `i` for the whole (all-shard) load (open model).
    pub fn curve(&self, i: usize) -> RateCurve {
        self.shape.scaled(self.rates.get(i).copied().unwrap_or(0.0))
    }

    /// Slots of the whole (all-shard) schedule for request `i` (open model).
    pub fn planned_all(&self, i: usize) -> u64 {
        self.curve(i).slots()
    }

    /// Requests this shard's schedule plans for request `i` (open model).
    pub fn planned(&self, i: usize) -> u64 {
        self.shard.slots_of(self.planned_all(i))
    }

    /// This shard's mean arrival rate for request `i` (open model): rate/N.
    pub fn shard_rate(&self, i: usize) -> f64 {
        self.curve(i).mean() / f64::from(self.shard.count.max(1))
    }

    /// The load as a constant-rate trial: every rate × `factor`, `warmup` then `measure` long.
    pub fn steady_trial(&self, factor: f64, warmup: Duration, measure: Duration) -> Self {
        let duration = warmup + measure;
        ResolvedScenario {
            rates: self.rates.iter().map(|r| r * factor).collect(),
            shape: RateCurve::constant(1.0, duration),
            duration,
            warmup,
            ..self.clone()
        }
    }

    /// Total offered rate over the scheduled labels (the mean of the whole load, all shards).
    pub fn offered_rate(&self) -> f64 {
        (0..self.rates.len()).filter(|&i| !self.def.requests[i].follow_up).map(|i| self.curve(i).mean()).sum()
    }

    /// Closed-model users this shard runs.
    pub fn shard_users(&self) -> usize {
        self.shard.users_of(self.users.unwrap_or(1))
    }
}

impl ScenarioDef {
    /// Parses and validates one scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ScenarioError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    /// Parses and validates scenario text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ScenarioError> {
        let def: ScenarioDef = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim().to_string(),
        })?;
        def.validate()?;
        Ok(def)
    }

    fn invalid(&self, message: impl Into<String>) -> ScenarioError {
        ScenarioError::Invalid { scenario: self.name.clone(), message: message.into() }
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        match (self.requests.is_empty(), self.scheduler_throughput.is_some()) {
            (true, false) => return Err(self.invalid("no [[requests]]")),
            (false, true) => return Err(self.invalid("[scheduler_throughput] makes its own call: no [[requests]]")),
            _ => {}
        }
        if self.load.stages.is_empty() && !positive(self.load.duration_s) {
            return Err(self.invalid("load.duration_s must be > 0"));
        }
        self.validate_stages()?;
        let mut labels = BTreeSet::new();
        for r in &self.requests {
            if r.label.is_empty() || r.label.contains([' ', ',', '\n', '\r']) || r.label == SCENARIO_LABEL {
                // Labels become hlog tags, which may not contain spaces or commas.
                return Err(self.invalid(format!("bad label '{}'", r.label)));
            }
            if !labels.insert(r.label.as_str()) {
                return Err(self.invalid(format!("label '{}' used twice", r.label)));
            }
            if r.method == Method::Client && !r.follow_up {
                return Err(
                    self.invalid(format!("label {}: CLIENT labels are timed by a flow: set follow_up", r.label))
                );
            }
            if r.expect.is_empty() && r.method != Method::Client {
                return Err(self.invalid(format!("label {}: expect is empty", r.label)));
            }
            if let Some(flow) = &r.flow
                && !flows::FLOWS.contains(&flow.as_str())
            {
                return Err(self.invalid(format!(
                    "label {}: unknown flow '{flow}' (known: {:?})",
                    r.label,
                    flows::FLOWS
                )));
            }
            if r.follow_up {
                if r.rate.is_some() || r.flow.is_some() {
                    return Err(self.invalid(format!("label {}: a follow_up has neither rate nor flow", r.label)));
                }
                continue;
            }
            match (self.load.model, r.rate) {
                (Model::Open, Some(rate)) if rate > 0.0 => {}
                (Model::Open, _) => return Err(self.invalid(format!("label {}: open model needs rate > 0", r.label))),
                (Model::Closed, Some(_)) => {
                    return Err(self.invalid(format!("label {}: rate is for the open model", r.label)));
                }
                (Model::Closed, None) => {}
            }
        }
        for r in self.requests.iter().filter(|r| r.flow.is_some()) {
            for needed in r.flow.as_deref().map(flows::follow_ups).unwrap_or_default() {
                if !self.requests.iter().any(|q| q.follow_up && q.label == *needed) {
                    return Err(
                        self.invalid(format!("flow of label {} needs a follow_up request labelled {needed}", r.label))
                    );
                }
            }
        }
        if self.load.model == Model::Closed && self.load.users.unwrap_or(0) == 0 {
            return Err(self.invalid("closed model needs load.users > 0"));
        }
        let db_names: BTreeSet<&str> = self.db_metrics.iter().map(|m| m.name.as_str()).collect();
        for t in &self.thresholds {
            if t.max.is_none() == t.min.is_none() {
                return Err(self.invalid(format!("threshold {} {}: give exactly one of max/min", t.label, t.metric)));
            }
            let ok = if t.label == SCENARIO_LABEL {
                db_names.contains(t.metric.as_str())
                    || (self.fleet_renewal.is_some() && t.metric == crate::metrics::fleet::FLEET_RENEWAL_RATE)
                    || (self.scheduler_throughput.is_some()
                        && scheduler_throughput::METRICS.contains(&t.metric.as_str()))
                    || crate::faults::METRICS.contains(&t.metric.as_str())
            } else {
                labels.contains(t.label.as_str()) && LABEL_METRICS.contains(&t.metric.as_str())
            };
            if !ok {
                return Err(self.invalid(format!("threshold names unknown label/metric {} {}", t.label, t.metric)));
            }
        }
        for f in &self.faults {
            f.validate().map_err(|e| self.invalid(format!("[[faults]] {e}")))?;
        }
        if self.fleet_renewal.as_ref().is_some_and(|f| f.window_s == 0) {
            return Err(self.invalid("fleet_renewal.window_s must be > 0"));
        }
        for (name, p) in &self.profiles {
            if p.duration_s.is_some_and(|d| !positive(d)) || p.rate_factor.is_some_and(|f| !positive(f)) {
                return Err(self.invalid(format!("profile {name}: durations and factors must be > 0")));
            }
        }
        Ok(())
    }

    /// `[[load.stages]]`: open model only, positive durations, non-negative rates, and a
    /// `duration_s` (if given) equal to the stages' total.
    fn validate_stages(&self) -> Result<(), ScenarioError> {
        if self.load.stages.is_empty() {
            return Ok(());
        }
        if self.load.model != Model::Open || self.scheduler_throughput.is_some() {
            return Err(self.invalid("load.stages ramp arrival rates: only for the open model"));
        }
        if self.load.stages.iter().any(|st| !(positive(st.duration_s) && st.rate.is_finite() && st.rate >= 0.0))
            || !(self.load.start_rate.is_finite() && self.load.start_rate >= 0.0)
        {
            return Err(self.invalid("load.stages: every duration_s must be > 0 and every rate >= 0"));
        }
        let total: f64 = self.load.stages.iter().map(|st| st.duration_s).sum();
        if self.load.duration_s != 0.0 && (self.load.duration_s - total).abs() > 1e-6 {
            return Err(self.invalid(format!(
                "load.duration_s = {} but the stages last {total} s: leave duration_s out",
                self.load.duration_s
            )));
        }
        Ok(())
    }

    /// Applies a profile; `None` runs the file's own (scale) figures.
    pub fn resolve(&self, profile: &str) -> Result<ResolvedScenario, ScenarioError> {
        let o = match self.profiles.get(profile) {
            Some(o) => o.clone(),
            None if profile == "scale" => ProfileOverride::default(),
            None => return Err(ScenarioError::NoProfile { scenario: self.name.clone(), profile: profile.into() }),
        };
        let factor = o.rate_factor.unwrap_or(1.0);
        let rates: Vec<f64> = self.requests.iter().map(|r| r.rate.unwrap_or(0.0) * factor).collect();
        let (duration, shape) = self.shape(o.duration_s, factor, &rates);
        Ok(ResolvedScenario {
            def: self.clone(),
            profile: profile.to_string(),
            duration,
            users: o.users.or(self.load.users),
            rates,
            shard: Shard::default(),
            shape,
            warmup: Duration::ZERO,
        })
    }

    /// The run's length and load shape (see [`ResolvedScenario::shape`]). A profile's
    /// `duration_s` stretches the stages in time; its `rate_factor` scales their rates as it
    /// scales the labels' (so the ratio, the shape, is unchanged by the factor).
    fn shape(&self, profile_duration: Option<f64>, factor: f64, rates: &[f64]) -> (Duration, RateCurve) {
        if self.load.stages.is_empty() {
            let d = Duration::from_secs_f64(profile_duration.unwrap_or(self.load.duration_s));
            return (d, RateCurve::constant(1.0, d));
        }
        let mix: f64 = rates.iter().zip(&self.requests).filter(|(_, r)| !r.follow_up).map(|(x, _)| x).sum();
        let own: f64 = self.load.stages.iter().map(|st| st.duration_s).sum();
        let stretch = profile_duration.map_or(1.0, |d| d / own);
        let unit = |rate: f64| if mix > 0.0 { rate * factor / mix } else { 0.0 };
        let stages: Vec<(f64, Duration)> = self
            .load
            .stages
            .iter()
            .map(|st| (unit(st.rate), Duration::from_secs_f64(st.duration_s * stretch)))
            .collect();
        let shape = RateCurve::ramp(unit(self.load.start_rate), &stages);
        (shape.span(), shape)
    }
}

/// Finite and > 0 (NaN is not).
fn positive(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

/// Loads every `*.toml` in `dir`, sorted by name.
pub fn load_dir(dir: &Path) -> Result<Vec<ScenarioDef>, ScenarioError> {
    let rd = std::fs::read_dir(dir).map_err(|source| ScenarioError::Read { path: dir.to_path_buf(), source })?;
    let mut paths: Vec<PathBuf> =
        rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let def = ScenarioDef::load(&p)?;
        let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if stem != def.name {
            return Err(def.invalid(format!("file {} must be named {}.toml", p.display(), def.name)));
        }
        out.push(def);
    }
    Ok(out)
}

/// Picks the scenarios named, in the order given; when `names` is empty, every scenario
/// without `[[faults]]` (a fault scenario restarts and kills things: it runs only when named).
pub fn select(all: &[ScenarioDef], names: &[String]) -> Result<Vec<ScenarioDef>, ScenarioError> {
    if names.is_empty() {
        return Ok(all.iter().filter(|d| d.faults.is_empty()).cloned().collect());
    }
    names
        .iter()
        .map(|n| all.iter().find(|d| &d.name == n).cloned().ok_or_else(|| ScenarioError::Unknown(n.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_users_are_split_with_the_remainder_on_the_first_shards() {
        let split = |n: u32| (1..=n).map(|index| Shard { index, count: n }.users_of(200)).collect::<Vec<_>>();
        assert_eq!(split(3), vec![67, 67, 66]);
        assert_eq!(split(1), vec![200]);
        assert_eq!((1..=7).map(|index| Shard { index, count: 7 }.users_of(200)).sum::<usize>(), 200);
    }

    #[test]
    fn a_shard_parses_only_as_i_over_n_with_i_in_1_to_n() {
        assert_eq!("2/3".parse::<Shard>(), Ok(Shard { index: 2, count: 3 }));
        for bad in ["0/2", "3/2", "x/y", "1", "1/0", "-1/2", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_eq!(Shard { index: 1, count: 2 }.slots_of(5), 3);
        assert_eq!(Shard { index: 2, count: 2 }.slots_of(5), 2);
        assert_eq!(Shard { index: 3, count: 3 }.slots_of(2), 0);
    }

    const MINIMAL: &str = r#"
name = "t"
description = "d"
[load]
model = "open"
duration_s = 10
[[requests]]
label = "a"
method = "GET"
path = "/health"
expect = [200]
rate = 10
[[thresholds]]
set = "seed"
label = "a"
metric = "p99"
max = 100
[profiles.smoke]
duration_s = 2
rate_factor = 0.5
"#;

    #[test]
    fn a_profile_overrides_duration_and_scales_rates() {
        let def = ScenarioDef::parse(MINIMAL, Path::new("t.toml")).unwrap();
        let r = def.resolve("smoke").unwrap();
        assert_eq!(r.duration, Duration::from_secs(2));
        assert_eq!(r.rates, vec![5.0]);
        assert_eq!(r.planned(0), 10);
        assert!(def.resolve("ci").is_err());
        assert_eq!(def.resolve("scale").unwrap().duration, Duration::from_secs(10));
    }

    #[test]
    fn a_threshold_on_an_unknown_label_is_rejected() {
        let bad = MINIMAL.replace("label = \"a\"\nmetric", "label = \"b\"\nmetric");
        assert!(ScenarioDef::parse(&bad, Path::new("t.toml")).is_err());
    }

    #[test]
    fn fleet_renewal_rate_is_a_threshold_metric_only_with_a_fleet_renewal_table() {
        let with_threshold = format!(
            "{MINIMAL}[[thresholds]]\nset = \"target\"\nlabel = \"_scenario\"\nmetric = \"fleet_renewal_rate\"\nmin = 500\n"
        );
        assert!(ScenarioDef::parse(&with_threshold, Path::new("t.toml")).is_err());
        let with_table = format!("{with_threshold}[fleet_renewal]\ncounter_sql = \"SELECT 1::bigint\"\n");
        let def = ScenarioDef::parse(&with_table, Path::new("t.toml")).unwrap();
        assert_eq!(def.fleet_renewal.map(|f| f.window_s), Some(5));
    }

    #[test]
    fn a_scheduler_throughput_scenario_has_no_requests_of_its_own() {
        let drain = "name = \"t\"\ndescription = \"d\"\n[load]\nmodel = \"open\"\nduration_s = 60\n\
                     [scheduler_throughput]\ncerts = 100\n[[thresholds]]\nset = \"seed\"\nlabel = \"_scenario\"\n\
                     metric = \"scheduler_failed\"\nmax = 0\n";
        let def = ScenarioDef::parse(drain, Path::new("t.toml")).unwrap();
        assert!(def.requests.is_empty());
        let with_request = MINIMAL.replace("[profiles.smoke]", "[scheduler_throughput]\n[profiles.smoke]");
        assert!(ScenarioDef::parse(&with_request, Path::new("t.toml")).is_err());
    }

    #[test]
    fn a_flow_needs_its_follow_ups_and_client_labels_must_be_follow_ups() {
        let poll = MINIMAL.replace("rate = 10\n", "rate = 10\nflow = \"agent_work\"\n");
        let err = ScenarioDef::parse(&poll, Path::new("t.toml")).unwrap_err().to_string();
        assert!(err.contains("needs a follow_up request labelled csr_generate"), "{err}");
        let mut ok = poll.clone();
        for (label, method) in [("csr_generate", "CLIENT"), ("csr_submit", "POST"), ("status_report", "POST")] {
            ok.push_str(&format!(
                "[[requests]]\nlabel = \"{label}\"\nmethod = \"{method}\"\npath = \"/x\"\nexpect = [200]\nfollow_up = true\n"
            ));
        }
        let def = ScenarioDef::parse(&ok, Path::new("t.toml")).unwrap();
        let r = def.resolve("smoke").unwrap();
        // Follow-ups get no users and no schedule of their own.
        assert_eq!(r.open_users(1), 0);
        assert!(r.open_users(0) > 0);
        let stray = format!("{MINIMAL}[[requests]]\nlabel = \"sign\"\nmethod = \"CLIENT\"\nrate = 1\n");
        assert!(ScenarioDef::parse(&stray, Path::new("t.toml")).is_err());
    }

    #[test]
    fn the_shipped_scenarios_parse_and_have_every_profile() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let all = load_dir(&dir).unwrap();
        let names: Vec<&str> = all.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "acme_burst",
                "acme_enrollment",
                "agent_fleet",
                "agent_storm",
                "api",
                "bulk_renewal",
                "faults_db_restart",
                "faults_db_stall",
                "faults_replica_kill",
                "fleet_renewal"
            ]
        );
        let default: Vec<String> = select(&all, &[]).unwrap().into_iter().map(|d| d.name).collect();
        assert!(default.iter().all(|n| !n.starts_with("faults_")) && default.len() == 7, "{default:?}");
        for d in &all {
            for p in ["smoke", "ci", "scale"] {
                d.resolve(p).unwrap();
            }
            assert!(d.thresholds.iter().any(|t| t.set == ThresholdSet::Seed), "{}", d.name);
            assert!(d.thresholds.iter().any(|t| t.set == ThresholdSet::Target), "{}", d.name);
        }
    }

    #[test]
    fn stages_ramp_the_total_rate_in_the_files_mix() {
        let two = MINIMAL.to_string()
            + "[[requests]]\nlabel = \"b\"\nmethod = \"GET\"\npath = \"/x\"\nexpect = [200]\nrate = 30\n";
        let staged = two.replace(
            "duration_s = 10\n[[requests]]",
            "[[load.stages]]\nrate = 400\nduration_s = 5\n[[load.stages]]\nrate = 400\nduration_s = 5\n[[requests]]",
        );
        let def = ScenarioDef::parse(&staged, Path::new("t.toml")).unwrap();
        let r = def.resolve("scale").unwrap();
        assert_eq!(r.duration, Duration::from_secs(10));
        // 0 → 400/s over 5 s then 400/s for 5 s: 1,000 + 2,000 arrivals, a : b = 1 : 3.
        assert_eq!(r.planned(0), 750);
        assert_eq!(r.planned(1), 2250);
        assert!((r.curve(1).peak() - 300.0).abs() < 1e-9);
        // The smoke profile halves the rates and shortens the stages to 2 s in all.
        let smoke = def.resolve("smoke").unwrap();
        assert_eq!(smoke.duration, Duration::from_secs(2));
        assert_eq!(smoke.planned(0) + smoke.planned(1), 300);
        let clash = staged.replacen("[[load.stages]]", "duration_s = 7\n[[load.stages]]", 1);
        assert!(ScenarioDef::parse(&clash, Path::new("t.toml")).unwrap_err().to_string().contains("stages last"));
    }
}
