//! The environment a command drives: an embedded PostgreSQL + server(s), or an external server.
//!
//! Every command that runs load (`run`, `ceiling`) gets its [`Target`] from [`start`] and tears
//! it down on every path. In embedded mode a target can also save its seeded database as a
//! template and put it back before each trial ([`Target::snapshot`], [`Target::reset`]), so a
//! trial that creates rows (the `api` scenario's certificates) does not change the next one's
//! starting point.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::HarnessError;
use crate::cli::Mode;
use crate::embedded::{Embedded, EmbeddedError, EmbeddedOptions};
use crate::metrics::sampler::Procs;
use crate::report::summary::PostgresInfo;

/// How a target is started (the parts of a plan that concern it).
#[derive(Debug, Clone)]
pub struct TargetSpec {
    /// Embedded or external.
    pub mode: Mode,
    /// Where the servers' logs go.
    pub log_dir: std::path::PathBuf,
    /// Admin API key.
    pub api_key: Option<String>,
    /// `/ready` timeout.
    pub ready_timeout: Duration,
    /// Servers to start (embedded).
    pub replicas: usize,
    /// How the replicas are balanced (`--balancer`, resolved).
    pub balancer: crate::cli::BalancerArg,
    /// Some scenario has faults: start the servers with [`crate::embedded::FAULT_SETTINGS`].
    pub faults: bool,
    /// Settings given to the servers on top of the defaults (embedded).
    pub extra_env: Vec<(String, String)>,
}

/// The environment being driven.
#[derive(Debug)]
pub struct Target {
    /// Base URL of the first server.
    pub base_url: String,
    /// Database URL, when the harness has one (embedded, or external with `--database-url`).
    pub database_url: Option<String>,
    /// Every server's base URL (one unless `--replicas`).
    pub base_urls: Vec<String>,
    /// Instance ids of the replicas (empty unless `--replicas N`, N > 1).
    pub instance_ids: Vec<String>,
    /// The servers' own URLs (their `/metrics` say what each served).
    pub replica_urls: Vec<String>,
    /// Where the rate-limit probe goes: the replicas, or the balancer in front of them.
    pub probe_urls: Vec<String>,
    /// How the load reaches the servers (for the report).
    pub balancing: String,
    /// `--balancer haproxy`: stopped before the servers.
    pub haproxy: Option<crate::balancer::Haproxy>,
    /// What the summary says about PostgreSQL.
    pub postgres: Option<PostgresInfo>,
    /// The embedded environment.
    pub embedded: Option<Embedded>,
    /// `embedded` or `external`.
    pub mode: &'static str,
    /// `CERTCTL_*` settings of the servers (embedded).
    pub server_env: BTreeMap<String, String>,
}

impl Target {
    /// The processes to sample (none in external mode).
    pub fn procs(&self) -> Procs {
        match &self.embedded {
            Some(e) => Procs { server: e.pids.clone(), postgres: e.postgres_pid_file() },
            None => Procs::default(),
        }
    }

    /// Stops everything the harness started.
    pub fn teardown(&mut self) {
        if let Some(mut h) = self.haproxy.take() {
            h.stop();
        }
        if let Some(mut e) = self.embedded.take() {
            e.teardown();
        }
    }

    /// Whether [`Target::reset`] can put the database back (embedded mode only).
    pub fn can_reset(&self) -> bool {
        self.embedded.is_some()
    }

    /// Saves the current (seeded) database as the state [`Target::reset`] restores.
    pub async fn snapshot(&mut self, cancel: &Arc<AtomicBool>) -> Result<(), HarnessError> {
        match self.embedded.as_mut() {
            Some(e) => e.snapshot(|| cancel.load(Ordering::Relaxed)).await.map_err(embedded_error),
            None => Ok(()),
        }
    }

    /// Restores the [`Target::snapshot`] state (servers restarted on the same ports).
    pub async fn reset(&mut self, cancel: &Arc<AtomicBool>) -> Result<(), HarnessError> {
        match self.embedded.as_mut() {
            Some(e) => e.restore(|| cancel.load(Ordering::Relaxed)).await.map_err(embedded_error),
            None => Ok(()),
        }
    }
}

impl Target {
    /// [`Target::reset`] onto another server binary and settings (embedded mode); returns the
    /// fingerprint of the restored database taken before the servers started.
    pub async fn reset_as(
        &mut self,
        server_bin: &std::path::Path,
        extra_env: &[(String, String)],
        cancel: &Arc<AtomicBool>,
    ) -> Result<Option<String>, HarnessError> {
        match self.embedded.as_mut() {
            Some(e) => {
                let fp = e.restore_as(server_bin, extra_env, || cancel.load(Ordering::Relaxed)).await;
                let fp = fp.map_err(embedded_error)?;
                self.base_urls = e.base_urls.clone();
                Ok(Some(fp))
            }
            None => Ok(None),
        }
    }
}

fn embedded_error(e: EmbeddedError) -> HarnessError {
    match e {
        EmbeddedError::Interrupted => HarnessError::Interrupted,
        e => HarnessError::Embedded(e),
    }
}

/// Starts (embedded) or checks (external) the target.
pub async fn start(spec: &TargetSpec, cancel: &Arc<AtomicBool>) -> Result<Target, HarnessError> {
    match &spec.mode {
        Mode::Embedded { server_bin, durability } => {
            eprintln!("certctl-loadtest: starting PostgreSQL and {}", server_bin.display());
            let opts = EmbeddedOptions {
                server_bin: server_bin.clone(),
                durability: *durability,
                log_dir: spec.log_dir.clone(),
                api_key: spec.api_key.clone().unwrap_or_default(),
                ready_timeout: spec.ready_timeout,
                replicas: spec.replicas,
                fault_settings: spec.faults,
                extra_env: spec.extra_env.clone(),
            };
            let c = cancel.clone();
            let env = Embedded::start(&opts, move || c.load(Ordering::Relaxed)).await.map_err(embedded_error)?;
            eprintln!(
                "certctl-loadtest: {} ready at {} (pid {}), {}",
                if env.base_urls.len() > 1 { "servers" } else { "server" },
                env.base_urls.join(", "),
                env.pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
                env.pg_version
            );
            let haproxy = match spec.balancer {
                crate::cli::BalancerArg::Haproxy => Some(
                    crate::balancer::Haproxy::start(&env.base_urls, &spec.log_dir, spec.ready_timeout)
                        .await
                        .map_err(|e| HarnessError::Target(e.to_string()))?,
                ),
                _ => None,
            };
            // Through haproxy every request (and the probe) goes to its one address.
            let (base_url, base_urls, balancing) = match &haproxy {
                Some(h) => {
                    eprintln!("certctl-loadtest: {} balancing at {}", h.version, h.url);
                    (h.url.clone(), vec![h.url.clone()], h.describe(&env.base_urls))
                }
                None => {
                    (env.base_url.clone(), env.base_urls.clone(), crate::balancer::describe_round_robin(&env.base_urls))
                }
            };
            Ok(Target {
                base_url,
                database_url: Some(env.database_url.clone()),
                probe_urls: base_urls.clone(),
                base_urls,
                replica_urls: env.base_urls.clone(),
                balancing,
                haproxy,
                instance_ids: env.instance_ids.clone(),
                postgres: Some(PostgresInfo {
                    version: env.pg_version.clone(),
                    durability: env.durability.as_str().to_string(),
                    pg_stat_statements: env.pg_stat_statements,
                }),
                server_env: env.server_env.clone(),
                embedded: Some(env),
                mode: "embedded",
            })
        }
        Mode::External { target, database_url } => {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| HarnessError::Target(e.to_string()))?;
            // One request before anything else: an unreachable target is a run that cannot be
            // carried out (exit 2), not a run full of transport errors (exit 1).
            let url = format!("{target}/health");
            client.get(&url).send().await.map_err(|e| HarnessError::Target(format!("{target} unreachable: {e}")))?;
            Ok(Target {
                base_url: target.clone(),
                database_url: database_url.clone(),
                base_urls: vec![target.clone()],
                replica_urls: vec![target.clone()],
                probe_urls: vec![target.clone()],
                balancing: String::new(),
                haproxy: None,
                instance_ids: Vec::new(),
                postgres: None,
                embedded: None,
                mode: "external",
                server_env: BTreeMap::new(),
            })
        }
    }
}

/// A small pool on the target's database, for seeding and observers.
pub async fn connect(url: &str) -> Result<PgPool, HarnessError> {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(|e| HarnessError::Database(e.to_string()))
}

/// Opens the harness's pool and records what it can learn about an external database.
pub async fn open_database(target: &mut Target) -> Result<Option<PgPool>, HarnessError> {
    let Some(url) = &target.database_url else { return Ok(None) };
    let pool = connect(url).await?;
    if target.postgres.is_none() {
        let version: String =
            sqlx::query_scalar("SHOW server_version").fetch_one(&pool).await.unwrap_or_else(|_| "unknown".into());
        let fsync: String = sqlx::query_scalar("SHOW fsync").fetch_one(&pool).await.unwrap_or_default();
        let sc: String = sqlx::query_scalar("SHOW synchronous_commit").fetch_one(&pool).await.unwrap_or_default();
        target.postgres = Some(PostgresInfo {
            version: format!("PostgreSQL {version}"),
            durability: format!("fsync={fsync}, synchronous_commit={sc}"),
            pg_stat_statements: false,
        });
    }
    Ok(Some(pool))
}
