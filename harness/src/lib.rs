//! # certctl-loadtest
//!
//! The load-testing and scale-baseline harness for certctl: *how does certctl behave at fleet
//! scale, and did this commit make it worse?*
//!
//! Data flow of `run`:
//!
//! 1. [`cli`] parses the options once into a [`cli::RunPlan`] (scenario files read and
//!    validated, profile applied, server binary found) — nothing is started before that;
//! 2. [`embedded`] starts a throw-away PostgreSQL and `certctl-server` (or external mode checks
//!    `--target`), with [`balancer`]'s haproxy in front of `--replicas N`; [`seed`] applies the
//!    fixtures; with `--start-at`, [`clock`] records the declared start and the clock offset;
//! 3. per scenario, [`scenario::engine`] builds a goose attack whose users follow the
//!    open-model [`scenario::schedule`] (or a closed loop) and record every request into the
//!    HDR histograms of [`metrics`]; [`metrics::sampler`] samples server RSS/CPU and database
//!    connections alongside, and [`metrics::fleet`] the fleet renewal rate where a scenario asks
//!    for it. A `[scheduler_throughput]` scenario replaces the goose attack with
//!    [`scenario::scheduler_throughput`]: one bulk renew of the fleet, polled until every job ended;
//! 4. [`gate`] evaluates thresholds (and compares with a baseline); [`report`] writes
//!    `summary.json` and the `.hlog`s, then renders `report.md`, `junit.xml` and the charts from
//!    those files alone.
//!
//! `trend` ([`trend`]) reads many run directories and flags persistent shifts across commits;
//! `run --metrics-listen ADDR` serves live Prometheus metrics ([`metrics::live`]).
//! `ceiling` ([`ceiling`]) and `ab` ([`ab`]) are composed of the same [`trial`]s: a search of
//! rising rates, and paired rounds of two server builds compared round by round.
//!
//! `merge` ([`merge`]) adds the histograms of several generators' run directories (`run --shard
//! I/N`, synchronized by one `--start-at`) and writes one run directory through the same
//! [`report`] code. After a `--replicas N` run, [`replicas`] checks the multi-replica
//! invariants against the database and over HTTP. The harness reaches the server only over HTTP
//! and SQL; its throw-away PostgreSQL is the `certctl-pg-embedded` crate.
//!
//! [`run`] maps every outcome to an exit code: 0 all seed thresholds held, 1 a threshold or the
//! regression gate failed, 2 the run could not be carried out.

pub mod ab;
pub mod balancer;
pub mod ceiling;
pub mod cli;
pub mod clock;
pub mod embedded;
pub mod faults;
pub mod gate;
pub mod host;
pub mod merge;
pub mod metrics;
pub mod replicas;
pub mod report;
mod runner;
pub mod scenario;
pub mod seed;
pub mod stats;
pub mod target;
pub mod trend;
pub mod trial;

use std::path::{Path, PathBuf};

pub use runner::{cancel_flag, verdict};

/// Anything that stops the harness from doing its job (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// Bad options or files.
    #[error("{0}")]
    Config(String),
    /// File trouble.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A scenario file.
    #[error(transparent)]
    Scenario(#[from] scenario::ScenarioError),
    /// Embedded PostgreSQL or server.
    #[error(transparent)]
    Embedded(#[from] embedded::EmbeddedError),
    /// Fixtures.
    #[error(transparent)]
    Seed(#[from] seed::SeedError),
    /// The target.
    #[error("target {0}")]
    Target(String),
    /// Database of the target.
    #[error("database: {0}")]
    Database(String),
    /// The engine.
    #[error(transparent)]
    Engine(#[from] scenario::engine::EngineError),
    /// Comparison inputs.
    #[error(transparent)]
    Compare(#[from] gate::CompareError),
    /// Ctrl-C.
    #[error("interrupted (Ctrl-C); the server and database were torn down")]
    Interrupted,
}

impl HarnessError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        HarnessError::Io { path: path.to_path_buf(), source }
    }
}

/// What a command ended with.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Process exit code.
    pub code: i32,
    /// One line saying why.
    pub message: String,
    /// The run directory, when one was written.
    pub run_dir: Option<PathBuf>,
}

impl Outcome {
    fn failed(e: HarnessError) -> Self {
        Outcome { code: 2, message: e.to_string(), run_dir: None }
    }
}

/// Runs a parsed command line.
pub async fn run(cli: cli::Cli) -> Outcome {
    use cli::Command;
    match cli.command {
        Command::Run(args) => match cli::RunPlan::from_args(&args) {
            Ok(plan) => runner::run(plan).await,
            Err(e) => Outcome::failed(e),
        },
        Command::Ceiling(args) => match ceiling::CeilingPlan::from_args(&args) {
            Ok(plan) => ceiling::run(plan).await,
            Err(e) => Outcome::failed(e),
        },
        Command::Ab(args) => match ab::AbPlan::from_args(&args) {
            Ok(plan) => ab::run(plan).await,
            Err(e) => Outcome::failed(e),
        },
        Command::Seed(args) => runner::seed_only(&args).await.unwrap_or_else(Outcome::failed),
        Command::Compare(args) => runner::compare(&args).unwrap_or_else(Outcome::failed),
        Command::Merge(args) => merge::merge(&args).unwrap_or_else(Outcome::failed),
        Command::Report(args) => match report::render_any(&args.run_dir) {
            Ok(()) => Outcome {
                code: 0,
                message: format!("re-rendered {}", args.run_dir.display()),
                run_dir: Some(args.run_dir),
            },
            Err(e) => Outcome::failed(e),
        },
        Command::Trend(args) => trend::trend(&args).unwrap_or_else(Outcome::failed),
        Command::List(args) => runner::list(&args).unwrap_or_else(Outcome::failed),
    }
}

/// Parses `args` (the first is the program name) and runs them; for tests and embedding.
pub async fn run_args<I, T>(args: I) -> Outcome
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::Parser;
    match cli::Cli::try_parse_from(args) {
        Ok(c) => run(c).await,
        Err(e) => {
            Outcome { code: 2, message: e.to_string().lines().next().unwrap_or_default().to_string(), run_dir: None }
        }
    }
}
