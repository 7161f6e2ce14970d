//! Command line: clap types, and the plan they are turned into before any I/O happens.
//!
//! Everything the user can get wrong (unknown scenario, missing profile, missing server binary,
//! a baseline without `summary.json`) is found while building the [`RunPlan`], so a bad
//! invocation exits 2 with one line before a database or a server is started.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::HarnessError;
use crate::embedded;
use crate::gate::NoiseFloor;
use crate::scenario::template::Fleet;
use crate::scenario::{self, ResolvedScenario};

/// certctl-loadtest: seed a fleet, drive certctl's hot paths, judge and record the result.
#[derive(Debug, Parser)]
#[command(name = "certctl-loadtest", version, about, long_about = None, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run scenarios (embedded server by default, or --target) and write a run directory.
    Run(Box<RunArgs>),
    /// Find a scenario's capacity: the highest open-model rate at which a steady trial meets
    /// every criterion (exit 0 found, 1 the seed rate already fails, 2 could not run).
    Ceiling(Box<CeilingArgs>),
    /// Regression gate of two builds in one job: paired rounds of one A and one B trial in
    /// random order, compared round by round (exit 0 nothing regressed, 1 a regression, 2
    /// could not run).
    Ab(Box<AbArgs>),
    /// Apply the fixtures (seeds/*.sql) to a database.
    Seed(SeedArgs),
    /// Trend record: compare a run with a baseline recorded earlier (the gate is `ab`); exit 1
    /// on a change beyond the noise floors.
    Compare(CompareArgs),
    /// Merge shard runs (--shard I/N) from several generators into one run directory.
    Merge(MergeArgs),
    /// Re-render report.md, report.html, junit.xml and charts of a run (or a ceiling or ab) directory.
    Report(ReportArgs),
    /// Trends across run directories: p50/p99, throughput and ceilings by commit, with change points.
    Trend(TrendArgs),
    /// List scenarios, profiles and thresholds.
    List(ListArgs),
}

/// Profiles every scenario defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// ≈15 s per scenario (CI smoke).
    Smoke,
    /// ≈60 s per scenario.
    Ci,
    /// The scale figures (5 min per scenario).
    Scale,
}

impl Profile {
    /// The name used in scenario files.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Smoke => "smoke",
            Profile::Ci => "ci",
            Profile::Scale => "scale",
        }
    }
}

/// PostgreSQL settings of the embedded cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// fsync, synchronous_commit and full_page_writes off (faster; data lost on a crash).
    Fast,
    /// PostgreSQL's durable defaults.
    Durable,
}

/// How requests reach the servers of a `--replicas N` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BalancerArg {
    /// haproxy when it is installed, else round-robin.
    Auto,
    /// Debian's haproxy in front of the servers.
    Haproxy,
    /// The harness addresses the servers in turn itself.
    RoundRobin,
}

/// Options shared by commands that read scenario and seed files.
#[derive(Debug, Clone, Args)]
pub struct FilesArgs {
    /// Directory of scenario files (default: ./scenarios, else the source tree's).
    #[arg(long, value_name = "DIR")]
    pub scenarios_dir: Option<PathBuf>,
    /// Directory of seed files (default: ./seeds, else the source tree's).
    #[arg(long, value_name = "DIR")]
    pub seeds_dir: Option<PathBuf>,
}

/// `run` options.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Scenario to run (repeatable; default: every scenario without [[faults]]).
    #[arg(long = "scenario", value_name = "NAME")]
    pub scenarios: Vec<String>,
    /// Load profile.
    #[arg(long, value_enum, default_value_t = Profile::Smoke)]
    pub profile: Profile,
    /// Run directory (default: artifacts/runs/<UTC time>-<git sha>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Also run the regression gate against this baseline run directory.
    #[arg(long, value_name = "DIR")]
    pub baseline: Option<PathBuf>,
    /// Run the I-th of N slices of the load (open model: rate/N, interleaved slots; closed:
    /// users/N); combine the N run directories with `merge`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Synchronized start: the scenario's schedule zero is this wall-clock instant (RFC 3339,
    /// e.g. 2026-12-01T10:00:00Z), so shards on several machines line up second by second.
    /// One scenario per run; the instant must be in the future.
    #[arg(long, value_name = "RFC3339", conflicts_with = "start_in")]
    pub start_at: Option<String>,
    /// Synchronized start in SECONDS from now (the same as --start-at now+SECONDS).
    #[arg(long, value_name = "SECONDS")]
    pub start_in: Option<u64>,
    /// Cause a fault during every scenario's load, SECONDS after its start (repeatable; adds
    /// to the files' [[faults]]). KIND: db_restart, db_stall (DURATION required), db_kill_connections,
    /// server_kill (with --replicas N: the replica holding the most claimed jobs), server_restart
    /// (the last replica). DURATION: how long it
    /// lasts or stays down. Embedded mode; an external target allows only db_kill_connections
    /// (with --database-url).
    #[arg(long = "fault", value_name = "KIND@SECONDS[:DURATION]")]
    pub faults: Vec<String>,
    /// Target, fleet and schedule options (shared with `ceiling`).
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Options of every command that drives load: the target, the fleet, the schedule's tolerances.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Drive an already-running server at URL instead of starting one (external mode).
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// External mode: database of the target, for seeding and database metrics.
    #[arg(long, value_name = "URL", env = "CERTCTL_LOADTEST_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// External mode: admin API key of the target.
    #[arg(long, value_name = "KEY", env = "CERTCTL_LOADTEST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// certctl-server binary for embedded mode (default: next to this executable).
    #[arg(long, value_name = "PATH", env = "CERTCTL_SERVER_BIN")]
    pub server_bin: Option<PathBuf>,
    /// Embedded PostgreSQL settings.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Fast)]
    pub durability: DurabilityArg,
    /// Fleet certificates to seed (and rotate over).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub certs: u64,
    /// Fleet agents to seed (and rotate over).
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub agents: u64,
    /// Do not apply fixtures (they are already in the database).
    #[arg(long)]
    pub no_seed: bool,
    /// A start later than this after its due time counts as late (ms).
    #[arg(long, default_value_t = 25)]
    pub late_tolerance_ms: u64,
    /// Per-request timeout (s).
    #[arg(long, default_value_t = 30)]
    pub request_timeout_s: u64,
    /// How long after a schedule's end overdue slots may still start (s); later ones are dropped.
    #[arg(long, default_value_t = 5)]
    pub drain_s: u64,
    /// Seconds to wait for the embedded server's /ready.
    #[arg(long, default_value_t = 120)]
    pub ready_timeout_s: u64,
    /// No progress lines.
    #[arg(long, short)]
    pub quiet: bool,
    /// Embedded mode: start N servers on the one database (distinct instance ids, shared
    /// postgres rate limiter), spread requests over them (see --balancer), and check the
    /// multi-replica invariants after the run.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub replicas: u64,
    /// Live metrics.
    #[command(flatten)]
    pub live: LiveArgs,
    /// With --replicas N: how requests reach the servers. haproxy: Debian's haproxy on a
    /// loopback port in front of them (round-robin, health checks on /ready); round-robin: the
    /// harness addresses the servers in turn itself; auto: haproxy when installed.
    #[arg(long, value_enum, default_value_t = BalancerArg::Auto)]
    pub balancer: BalancerArg,
    /// Scenario and seed directories.
    #[command(flatten)]
    pub files: FilesArgs,
}

/// `ceiling` options.
#[derive(Debug, Clone, Args)]
pub struct CeilingArgs {
    /// Scenario to search (open-model scenarios, or a closed one run as open arrivals).
    #[arg(long, value_name = "NAME")]
    pub scenario: String,
    /// Search this label alone (its flow's follow-ups come along); default: every label,
    /// keeping the file's request mix.
    #[arg(long, value_name = "LABEL")]
    pub label: Option<String>,
    /// The p99 SLO for every label, in ms (default: each label's p99 project target, else its
    /// p99 seed threshold).
    #[arg(long, value_name = "MS")]
    pub slo_p99_ms: Option<f64>,
    /// Largest error rate a passing trial may have (a fraction).
    #[arg(long, default_value_t = 0.001)]
    pub max_error_rate: f64,
    /// Warm-up of every trial, seconds (sent, not judged).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub warmup_s: u64,
    /// Measured seconds of each search trial.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub trial_s: u64,
    /// Measured seconds of each confirmation trial.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub confirm_s: u64,
    /// Confirmation trials that must pass at the answer.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=20))]
    pub confirmations: u64,
    /// Bracket width to reach, as a fraction (0.05 = [last pass, first fail] within 5 %).
    #[arg(long, default_value_t = 0.05)]
    pub precision: f64,
    /// The most trials the search may run.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(2..=500))]
    pub max_trials: u64,
    /// Do not put the database back between trials (embedded mode resets it by default).
    #[arg(long)]
    pub no_reset: bool,
    /// Run directory (default: artifacts/runs/<UTC time>-<git sha>-ceiling-<scenario>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Target, fleet and schedule options (as for `run`).
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `ab` options.
#[derive(Debug, Clone, Args)]
pub struct AbArgs {
    /// Server binary of side A (the reference build). Embedded mode: one throw-away PostgreSQL,
    /// seeded once; every trial runs on a fresh clone of the seeded template.
    #[arg(long, value_name = "PATH", required_unless_present = "a_url", conflicts_with = "a_url")]
    pub a_bin: Option<PathBuf>,
    /// Server binary of side B (the candidate).
    #[arg(long, value_name = "PATH", required_unless_present = "b_url", conflicts_with = "b_url")]
    pub b_bin: Option<PathBuf>,
    /// External mode: base URL of an already-running side A (no seeding, no state reset).
    #[arg(long, value_name = "URL", requires = "b_url")]
    pub a_url: Option<String>,
    /// External mode: base URL of side B.
    #[arg(long, value_name = "URL", requires = "a_url")]
    pub b_url: Option<String>,
    /// A setting for side A's server, KEY=VALUE (repeatable; wins over the defaults).
    #[arg(long, value_name = "KEY=VALUE")]
    pub a_env: Vec<String>,
    /// A setting for side B's server, KEY=VALUE (repeatable), e.g.
    /// CERTCTL_RENEWAL_CONCURRENCY=1 to check that the gate sees a known regression.
    #[arg(long, value_name = "KEY=VALUE")]
    pub b_env: Vec<String>,
    /// Scenario to compare on (open-model, a closed one run as open arrivals, or a drain).
    #[arg(long, value_name = "NAME")]
    pub scenario: String,
    /// Profile whose rates (open model) or fleet size (drains) the trials use.
    #[arg(long, value_enum, default_value_t = Profile::Scale)]
    pub profile: Profile,
    /// Rounds (one A and one B trial each, in random order). At least 6: fewer cannot give a
    /// signed-rank p-value below 0.05.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(6..=200))]
    pub rounds: u64,
    /// Adaptive rounds: while any verdict is inconclusive, add rounds up to this many
    /// (default: --rounds, no adaptive rounds).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(6..=200))]
    pub max_rounds: Option<u64>,
    /// Measured seconds of each trial (open model; a drain runs until the fleet is renewed).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub trial_s: u64,
    /// Warm-up of each trial, seconds (sent, not measured).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub warmup_s: u64,
    /// Total offered rate of each trial, per second (default: the profile's rates).
    #[arg(long, value_name = "PER_S", conflicts_with = "rate_fraction")]
    pub rate: Option<f64>,
    /// Offer this fraction of A's ceiling, measured first by the `ceiling` search on A with
    /// these --warmup-s and --trial-s (confirmations twice as long); its directory: ceiling/ in
    /// the output.
    #[arg(long, value_name = "F")]
    pub rate_fraction: Option<f64>,
    /// Minimum effect for p50, relative (0.10: B/A beyond ×1.10 regresses, within ×1/1.10…×1.10
    /// is no change).
    #[arg(long, default_value_t = MinEffects::default().p50)]
    pub min_effect_p50: f64,
    /// Minimum effect for p95, relative.
    #[arg(long, default_value_t = MinEffects::default().p95)]
    pub min_effect_p95: f64,
    /// Minimum effect for p99, relative.
    #[arg(long, default_value_t = MinEffects::default().p99)]
    pub min_effect_p99: f64,
    /// Minimum effect for the error rate, relative, on (rate + 0.1 %) so that zero errors on
    /// both sides is a ratio of 1 (1.0: errors must at least double that).
    #[arg(long, default_value_t = MinEffects::default().error_rate)]
    pub min_effect_errors: f64,
    /// Minimum effect for throughput (certificates/s of the fleet scenarios), relative; a drop
    /// beyond it regresses.
    #[arg(long, default_value_t = MinEffects::default().throughput)]
    pub min_effect_throughput: f64,
    /// Level of the bootstrap confidence interval of the median ratio.
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    /// Signed-rank p-value at or below which an interval beyond the minimum effect counts.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Seed of the round order and the bootstrap (default: random; recorded in ab.json).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Fail (exit 1) on an inconclusive verdict too.
    #[arg(long)]
    pub strict: bool,
    /// Output directory (default: artifacts/runs/<UTC time>-<git sha>-ab-<scenario>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Fleet, schedule and file options (as for `run`; --target and --server-bin are
    /// replaced by --a-url/--b-url and --a-bin/--b-bin).
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Minimum effects of `ab`, relative (the defaults; see docs/operator/scale.md).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MinEffects {
    /// p50.
    pub p50: f64,
    /// p95.
    pub p95: f64,
    /// p99.
    pub p99: f64,
    /// Error rate (on rate + 0.1 %).
    pub error_rate: f64,
    /// Throughput.
    pub throughput: f64,
}

impl Default for MinEffects {
    fn default() -> Self {
        MinEffects { p50: 0.10, p95: 0.15, p99: 0.30, error_rate: 1.0, throughput: 0.10 }
    }
}

/// `merge` options.
#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// Run directories of the shards (or of whole runs) to merge.
    #[arg(required = true, num_args = 1.., value_name = "RUN_DIR")]
    pub runs: Vec<PathBuf>,
    /// Directory to write the merged run to.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `seed` options.
#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// Database to seed (migrated, with the demo seed).
    #[arg(long, value_name = "URL", env = "CERTCTL_LOADTEST_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Fleet certificates.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub certs: u64,
    /// Fleet agents.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub agents: u64,
    /// Scenario and seed directories.
    #[command(flatten)]
    pub files: FilesArgs,
}

/// `compare` options.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Baseline run directory.
    pub baseline: PathBuf,
    /// Run directory to judge (compare.json is written here).
    pub run: PathBuf,
    /// Relative noise floor for p50 (0.60 = a rise beyond ×1.6 regresses, a fall beyond ÷1.6
    /// improves). The defaults are calibrated from same-code runs on a shared 2-core machine;
    /// tighten them on quiet, dedicated hardware.
    #[arg(long, default_value_t = NoiseFloor::default().rel)]
    pub rel_floor: f64,
    /// Relative noise floor for p95.
    #[arg(long, default_value_t = NoiseFloor::default().rel_p95)]
    pub rel_floor_p95: f64,
    /// Relative noise floor for p99.
    #[arg(long, default_value_t = NoiseFloor::default().rel_p99)]
    pub rel_floor_p99: f64,
    /// Absolute noise floor for p50 latencies (ms).
    #[arg(long, default_value_t = NoiseFloor::default().abs_ms)]
    pub abs_floor_ms: f64,
    /// Absolute noise floor for p95 latencies (ms).
    #[arg(long, default_value_t = NoiseFloor::default().abs_ms_p95)]
    pub abs_floor_p95_ms: f64,
    /// Absolute noise floor for p99 latencies (ms).
    #[arg(long, default_value_t = NoiseFloor::default().abs_ms_p99)]
    pub abs_floor_p99_ms: f64,
    /// Relative noise floor for fleet_renewal's certificates/s (a drop beyond it regresses).
    #[arg(long, default_value_t = NoiseFloor::default().rel_throughput)]
    pub rel_floor_throughput: f64,
    /// Significance level of the Mann-Whitney test.
    #[arg(long, default_value_t = NoiseFloor::default().alpha)]
    pub alpha: f64,
}

/// `report` options.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Run directory.
    pub run_dir: PathBuf,
}

/// `trend` options.
#[derive(Debug, Clone, Args)]
pub struct TrendArgs {
    /// Run directories (a summary.json, or ceiling.json here or one level down); others are skipped.
    #[arg(required = true, num_args = 1.., value_name = "RUN_DIR")]
    pub runs: Vec<PathBuf>,
    /// Directory to write trend.json, report.html and the charts to.
    #[arg(long, value_name = "DIR", default_value = "artifacts/trend")]
    pub out: PathBuf,
    /// Significance level of the change-point permutation test.
    #[arg(long, default_value_t = crate::trend::edivisive::Params::default().alpha)]
    pub alpha: f64,
    /// Shuffles per permutation test.
    #[arg(long, default_value_t = crate::trend::edivisive::Params::default().permutations)]
    pub permutations: usize,
    /// Fewest runs on each side of a change point (one noisy run is never a shift).
    #[arg(long, default_value_t = crate::trend::edivisive::Params::default().min_segment, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub min_segment: usize,
}

/// Live metrics of the commands that drive load.
#[derive(Debug, Clone, Args)]
pub struct LiveArgs {
    /// Serve the run's metrics as Prometheus text while it runs at ADDR (e.g. 127.0.0.1:9464):
    /// GET /metrics, and GET /targets (HTTP service discovery of the servers driven).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// `list` options.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Scenario and seed directories.
    #[command(flatten)]
    pub files: FilesArgs,
}

/// Where the target comes from.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Start PostgreSQL and the server.
    Embedded {
        /// The server binary.
        server_bin: PathBuf,
        /// PostgreSQL settings.
        durability: certctl_pg_embedded::Durability,
    },
    /// Drive `target`.
    External {
        /// Base URL.
        target: String,
        /// Database for seeding and metrics.
        database_url: Option<String>,
    },
}

/// A validated `run`.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Scenarios with the profile applied, in run order.
    pub scenarios: Vec<ResolvedScenario>,
    /// Profile name.
    pub profile: String,
    /// Run directory.
    pub out_dir: PathBuf,
    /// Embedded or external.
    pub mode: Mode,
    /// Admin key to send (generated in embedded mode).
    pub api_key: Option<String>,
    /// Fleet sizes.
    pub fleet: Fleet,
    /// Seed files directory.
    pub seeds_dir: PathBuf,
    /// Fixtures the scenarios need, in lexical order; empty with `--no-seed`.
    pub fixtures: Vec<String>,
    /// Baseline directory.
    pub baseline: Option<PathBuf>,
    /// Late-start tolerance.
    pub late_tolerance: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Drain after a schedule's end.
    pub drain: Duration,
    /// /ready timeout.
    pub ready_timeout: Duration,
    /// Progress lines.
    pub progress: bool,
    /// `--shard`, when given.
    pub shard: Option<scenario::Shard>,
    /// `--replicas` (embedded mode).
    pub replicas: usize,
    /// `--metrics-listen`.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// How the replicas are balanced (`Auto` resolved; round-robin for one server).
    pub balancer: BalancerArg,
    /// `--start-at` / `--start-in`: the schedule's zero on the wall clock.
    pub start_at: Option<std::time::SystemTime>,
}

/// The instant of `--start-at TEXT` or `--start-in SECONDS` (relative to `now`); an instant
/// not after `now` is an error.
pub fn start_instant(
    start_at: Option<&str>,
    start_in: Option<u64>,
    now: std::time::SystemTime,
) -> Result<Option<std::time::SystemTime>, HarnessError> {
    let at = match (start_at, start_in) {
        (Some(t), _) => {
            let parsed = chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| HarnessError::Config(format!("--start-at {t}: not an RFC 3339 instant ({e})")))?;
            std::time::SystemTime::from(parsed.with_timezone(&chrono::Utc))
        }
        (None, Some(secs)) => now + Duration::from_secs(secs),
        (None, None) => return Ok(None),
    };
    if at <= now {
        let fmt = |t: std::time::SystemTime| {
            chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        return Err(HarnessError::Config(format!(
            "the synchronized start {} is not in the future (now {}): pick a later --start-at",
            fmt(at),
            fmt(now)
        )));
    }
    Ok(Some(at))
}

/// The directory `name` next to the working directory, else in the source tree.
pub fn default_dir(explicit: Option<&Path>, name: &str) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    let local = PathBuf::from(name);
    if local.is_dir() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)
}

impl RunPlan {
    /// Validates `args` into a plan (reads scenario files; starts nothing).
    pub fn from_args(args: &RunArgs) -> Result<Self, HarnessError> {
        let dir = default_dir(args.common.files.scenarios_dir.as_deref(), "scenarios");
        let all = scenario::load_dir(&dir)?;
        let selected = scenario::select(&all, &args.scenarios)?;
        if selected.is_empty() {
            return Err(HarnessError::Config(format!("no scenarios in {}", dir.display())));
        }
        let shard = match &args.shard {
            Some(s) => Some(s.parse::<scenario::Shard>().map_err(HarnessError::Config)?),
            None => None,
        };
        let profile = args.profile.as_str();
        let mut scenarios = selected.iter().map(|d| d.resolve(profile)).collect::<Result<Vec<_>, _>>()?;
        if let Some(sh) = shard {
            for sc in &mut scenarios {
                sc.shard = sh;
                // A shard with nothing to do would measure nothing: say so before starting.
                if sc.def.load.model == scenario::Model::Closed && sc.shard_users() == 0 {
                    return Err(HarnessError::Config(format!(
                        "--shard {sh}: scenario {} has only {} users, none left for this shard",
                        sc.def.name,
                        sc.users.unwrap_or(1)
                    )));
                }
            }
        }
        let mode = match &args.common.target {
            Some(t) => {
                let t = t.trim_end_matches('/').to_string();
                if !(t.starts_with("http://") || t.starts_with("https://")) {
                    return Err(HarnessError::Config(format!("--target must be an http(s) URL, got {t}")));
                }
                Mode::External { target: t, database_url: args.common.database_url.clone() }
            }
            None => Mode::Embedded {
                server_bin: embedded::find_server_bin(args.common.server_bin.as_deref())?,
                durability: match args.common.durability {
                    DurabilityArg::Fast => certctl_pg_embedded::Durability::Fast,
                    DurabilityArg::Durable => certctl_pg_embedded::Durability::Durable,
                },
            },
        };
        add_faults(&mut scenarios, &args.faults, &mode)?;
        if args.common.replicas > 1 && matches!(mode, Mode::External { .. }) {
            return Err(HarnessError::Config(
                "--replicas starts servers, so it needs embedded mode: drop --target".into(),
            ));
        }
        let balancer = match (args.common.replicas > 1, args.common.balancer) {
            (false, _) => BalancerArg::RoundRobin,
            (true, BalancerArg::Auto) => {
                if crate::balancer::find_haproxy().is_some() {
                    BalancerArg::Haproxy
                } else {
                    BalancerArg::RoundRobin
                }
            }
            (true, BalancerArg::Haproxy) => {
                crate::balancer::find_haproxy().ok_or_else(|| {
                    HarnessError::Config(
                        "--balancer haproxy: haproxy is not installed (apt-get install -y haproxy, or \
                         scripts/ensure-haproxy.sh)"
                            .into(),
                    )
                })?;
                BalancerArg::Haproxy
            }
            (true, b) => b,
        };
        let start_at = start_instant(args.start_at.as_deref(), args.start_in, std::time::SystemTime::now())?;
        if start_at.is_some() {
            // One schedule zero per run: a second scenario would start whenever the first
            // ended, which the other shards cannot know.
            if scenarios.len() != 1 {
                return Err(HarnessError::Config(format!(
                    "--start-at synchronizes one scenario, but {} are selected: pass one --scenario",
                    scenarios.len()
                )));
            }
            if let Some(sc) = scenarios.iter().find(|s| s.def.scheduler_throughput.is_some()) {
                return Err(HarnessError::Config(format!(
                    "--start-at: scenario {} is one timed drain, not a schedule to synchronize",
                    sc.def.name
                )));
            }
        }
        if let Some(b) = &args.baseline
            && !b.join(crate::report::summary::FILE).is_file()
        {
            return Err(HarnessError::Config(format!("baseline {} has no summary.json", b.display())));
        }
        let api_key = match (&mode, &args.common.api_key) {
            (_, Some(k)) => Some(k.clone()),
            (Mode::Embedded { .. }, None) => Some(format!("loadtest-{:032x}", rand::random::<u128>())),
            (Mode::External { .. }, None) => None,
        };
        // A scenario that authenticates with the admin key cannot run without one: say so now
        // rather than measure a run full of 401s.
        if api_key.is_none()
            && let Some(sc) =
                scenarios.iter().find(|s| s.def.requests.iter().any(|r| r.auth == crate::scenario::Auth::ApiKey))
        {
            return Err(HarnessError::Config(format!(
                "scenario {} needs an admin API key in external mode: pass --api-key (or CERTCTL_LOADTEST_API_KEY)",
                sc.def.name
            )));
        }
        let mut fixtures: Vec<String> = if args.common.no_seed {
            Vec::new()
        } else {
            scenarios.iter().flat_map(|s| s.def.fixtures.iter().cloned()).collect()
        };
        fixtures.sort();
        fixtures.dedup();
        let out_dir = match &args.out {
            Some(o) => o.clone(),
            None => PathBuf::from("artifacts/runs").join(format!(
                "{}-{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
                crate::host::git_commit()
            )),
        };
        Ok(RunPlan {
            scenarios,
            profile: profile.to_string(),
            out_dir,
            mode,
            api_key,
            fleet: Fleet { certs: args.common.certs, agents: args.common.agents },
            seeds_dir: default_dir(args.common.files.seeds_dir.as_deref(), "seeds"),
            fixtures,
            baseline: args.baseline.clone(),
            late_tolerance: Duration::from_millis(args.common.late_tolerance_ms),
            request_timeout: Duration::from_secs(args.common.request_timeout_s.max(1)),
            drain: Duration::from_secs(args.common.drain_s),
            ready_timeout: Duration::from_secs(args.common.ready_timeout_s.max(1)),
            progress: !args.common.quiet,
            shard,
            replicas: args.common.replicas as usize,
            metrics_listen: args.common.live.metrics_listen,
            balancer,
            start_at,
        })
    }
}

/// Adds `--fault` flags to every scenario and checks every scenario's faults against its run
/// length and the mode: the harness must be able to cause each one.
fn add_faults(scenarios: &mut [ResolvedScenario], flags: &[String], mode: &Mode) -> Result<(), HarnessError> {
    let extra = flags.iter().map(|f| crate::faults::FaultDef::parse(f)).collect::<Result<Vec<_>, _>>();
    let extra = extra.map_err(HarnessError::Config)?;
    for sc in scenarios.iter_mut() {
        sc.def.faults.extend(extra.iter().copied());
        for f in &sc.def.faults {
            let name = &sc.def.name;
            if f.at_s >= sc.duration.as_secs_f64() {
                return Err(HarnessError::Config(format!(
                    "scenario {name}: fault {} at {} s is not within its {} s run",
                    f.kind.as_str(),
                    f.at_s,
                    sc.duration.as_secs_f64()
                )));
            }
            if let Mode::External { database_url, .. } = mode
                && !(f.kind.external_ok() && database_url.is_some())
            {
                let why = if f.kind.external_ok() { "without --database-url" } else { "against an external server" };
                return Err(HarnessError::Config(format!(
                    "scenario {name}: the harness cannot cause {} {why} (embedded mode only; drop --target)",
                    f.kind.as_str()
                )));
            }
        }
    }
    Ok(())
}
