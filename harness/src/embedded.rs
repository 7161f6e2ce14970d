//! Embedded mode: a throw-away PostgreSQL and `certctl-server` as a separate process.
//!
//! Flow: [`find_server_bin`] (flag / `CERTCTL_SERVER_BIN`, else next to our own executable) →
//! [`Embedded::start`]: `pg_embedded::Cluster::start` (with `pg_stat_statements` preloaded when
//! the machine has it) → `create_database` → spawn the server on a free loopback port with the
//! `CERTCTL_*` settings below (it migrates and applies the demo seed at boot) → poll `/ready`.
//! Teardown — [`Embedded::shutdown`] on every path, and [`Drop`] as the backstop on panics —
//! sends SIGTERM to the server, waits up to 10 s, then SIGKILL; dropping the cluster stops
//! PostgreSQL and deletes its files (its watchdog covers a harness killed outright).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use certctl_server::pg_embedded::{self, Cluster, ClusterOptions, Durability};

/// Problems starting the embedded environment (all exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No server binary.
    #[error(
        "certctl-server binary not found (looked at {0}); run `cargo build --workspace` first or pass --server-bin"
    )]
    ServerBinMissing(String),
    /// PostgreSQL could not be started.
    #[error("throw-away PostgreSQL: {0}")]
    Postgres(String),
    /// The server process could not be spawned.
    #[error("starting {bin}: {source}")]
    Spawn {
        /// The binary.
        bin: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The server exited or never answered `/ready`.
    #[error("certctl-server never became ready: {0}")]
    NotReady(String),
    /// Ctrl-C while starting.
    #[error("interrupted")]
    Interrupted,
}

/// Server settings of the embedded mode (each overridable from the environment).
pub const SERVER_DEFAULTS: &[(&str, &str)] = &[
    // The per-key limiter would otherwise dominate what we measure.
    ("CERTCTL_RATE_LIMIT_ENABLED", "false"),
    ("CERTCTL_KEYGEN_MODE", "server"),
    ("CERTCTL_DEMO_SEED", "true"),
    // bulk_renewal measures renewal throughput: process jobs every second, in batches large
    // enough that the batch size does not cap the rate (200 per 1-s tick would).
    ("CERTCTL_JOB_PROCESSOR_INTERVAL", "1s"),
    ("CERTCTL_JOB_BATCH_SIZE", "1000"),
    ("CERTCTL_LOG_LEVEL", "warn"),
    ("CERTCTL_LOG_FORMAT", "json"),
];

/// Finds the `certctl-server` binary: `explicit` (flag or `CERTCTL_SERVER_BIN`), else next to
/// the current executable, else one directory up (test binaries live in `target/*/deps/`).
pub fn find_server_bin(explicit: Option<&Path>) -> Result<PathBuf, EmbeddedError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(EmbeddedError::ServerBinMissing(p.display().to_string()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| EmbeddedError::ServerBinMissing(e.to_string()))?;
    let mut tried = Vec::new();
    let mut dir = exe.parent().map(Path::to_path_buf);
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let cand = d.join("certctl-server");
        if cand.is_file() {
            return Ok(cand);
        }
        tried.push(cand.display().to_string());
        dir = d.parent().map(Path::to_path_buf);
    }
    Err(EmbeddedError::ServerBinMissing(tried.join(", ")))
}

/// How to start the embedded environment.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// The server binary.
    pub server_bin: PathBuf,
    /// PostgreSQL durability.
    pub durability: Durability,
    /// Where `server.log` goes.
    pub log_dir: PathBuf,
    /// The admin API key the harness uses.
    pub api_key: String,
    /// How long to wait for `/ready`.
    pub ready_timeout: Duration,
}

/// A running cluster + server.
#[derive(Debug)]
pub struct Embedded {
    cluster: Option<Cluster>,
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// URL of the server's database.
    pub database_url: String,
    /// Server pid (for /proc sampling).
    pub pid: u32,
    /// `postgres --version`.
    pub pg_version: String,
    /// Whether pg_stat_statements is preloaded.
    pub pg_stat_statements: bool,
    /// Durability the cluster runs with.
    pub durability: Durability,
    /// `CERTCTL_*` settings the server runs with (secrets excluded).
    pub server_env: std::collections::BTreeMap<String, String>,
    log_path: PathBuf,
}

impl Embedded {
    /// Starts PostgreSQL and the server and waits until `/ready` answers 200.
    pub async fn start(opts: &EmbeddedOptions, cancelled: impl Fn() -> bool) -> Result<Self, EmbeddedError> {
        let copts = ClusterOptions {
            durability: opts.durability,
            max_connections: 400,
            shared_buffers: "256MB".into(),
            pg_stat_statements: true,
        };
        let cluster = tokio::task::spawn_blocking(move || Cluster::start(&copts))
            .await
            .map_err(|e| EmbeddedError::Postgres(e.to_string()))?
            .map_err(|e| EmbeddedError::Postgres(e.to_string()))?;
        let database_url = pg_embedded::create_database(&cluster.url("postgres"), "certctl")
            .await
            .map_err(|e| EmbeddedError::Postgres(format!("creating the database: {e}")))?;
        let port = pg_embedded::free_port().map_err(|e| EmbeddedError::Postgres(e.to_string()))?;
        let log_path = opts.log_dir.join("server.log");
        let log = File::create(&log_path).map_err(|source| EmbeddedError::Spawn { bin: log_path.clone(), source })?;
        let log2 = log.try_clone().map_err(|source| EmbeddedError::Spawn { bin: log_path.clone(), source })?;
        let mut cmd = Command::new(&opts.server_bin);
        cmd.env("CERTCTL_DATABASE_URL", &database_url)
            .env("CERTCTL_SERVER_HOST", "127.0.0.1")
            .env("CERTCTL_SERVER_PORT", port.to_string())
            .env("CERTCTL_API_KEYS_NAMED", format!("loadtest:{}:admin", opts.api_key));
        let mut server_env = std::collections::BTreeMap::new();
        for (k, v) in SERVER_DEFAULTS {
            // Defaults only: a CERTCTL_* variable in the harness's environment wins, so the
            // server can be tuned for an experiment without a code change.
            if std::env::var_os(k).is_none() {
                cmd.env(k, v);
            }
        }
        // Record every setting the server sees (secrets excluded) for the summary.
        for (k, v) in std::env::vars().filter(|(k, _)| k.starts_with("CERTCTL_")) {
            server_env.insert(k, v);
        }
        for (k, v) in SERVER_DEFAULTS {
            server_env.entry(k.to_string()).or_insert_with(|| v.to_string());
        }
        server_env.retain(|k, _| {
            !matches!(
                k.as_str(),
                "CERTCTL_DATABASE_URL"
                    | "CERTCTL_API_KEYS_NAMED"
                    | "CERTCTL_AUTH_SECRET"
                    | "CERTCTL_CONFIG_ENCRYPTION_KEY"
                    | "CERTCTL_SERVER_BIN"
            )
        });
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|source| EmbeddedError::Spawn { bin: opts.server_bin.clone(), source })?;
        let mut env = Embedded {
            pid: child.id(),
            pg_version: cluster.version().to_string(),
            pg_stat_statements: cluster.pg_stat_statements(),
            durability: cluster.durability(),
            cluster: Some(cluster),
            child: Some(child),
            base_url: format!("http://127.0.0.1:{port}"),
            database_url,
            server_env,
            log_path,
        };
        match env.wait_ready(opts.ready_timeout, &cancelled).await {
            Ok(()) => Ok(env),
            Err(e) => {
                env.teardown();
                Err(e)
            }
        }
    }

    async fn wait_ready(&mut self, timeout: Duration, cancelled: &impl Fn() -> bool) -> Result<(), EmbeddedError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| EmbeddedError::NotReady(e.to_string()))?;
        let url = format!("{}/ready", self.base_url);
        let deadline = Instant::now() + timeout;
        loop {
            if cancelled() {
                return Err(EmbeddedError::Interrupted);
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(EmbeddedError::NotReady(format!(
                    "server exited ({status}); last log: {}",
                    self.log_tail()
                )));
            }
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(EmbeddedError::NotReady(format!(
                    "no 200 from /ready within {} s; last log: {}",
                    timeout.as_secs(),
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_tail(&self) -> String {
        std::fs::read_to_string(&self.log_path)
            .map(|s| s.lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | "))
            .unwrap_or_default()
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s) and the cluster.
    pub fn teardown(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM through kill(1): the workspace forbids the `unsafe` a libc call needs.
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        if let Some(cluster) = self.cluster.take()
            && let Err(e) = cluster.stop()
        {
            eprintln!("certctl-loadtest: stopping PostgreSQL: {e}");
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.teardown();
    }
}
