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

use certctl_pg_embedded::{self as pg_embedded, Cluster, ClusterOptions, Durability};

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

/// Settings every server of a `--replicas N` run gets (N > 1): the ACME limiters' shared
/// PostgreSQL backend, so all replicas draw on one budget per account.
pub const REPLICA_SETTINGS: &[(&str, &str)] = &[("CERTCTL_RATELIMIT_BACKEND", "postgres")];

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

/// Server settings of a run with faults (each overridable from the environment): a claim lease
/// short enough that a SIGKILLed replica's jobs are reclaimed within a smoke run, and
/// notifications sent every second, so the notification invariant sees them delivered.
/// Claims come in batches of 200 rather than [`SERVER_DEFAULTS`]' 1,000, so a renewal wave is
/// spread over the replicas and a killed one holds part of it rather than all or nothing.
pub const FAULT_SETTINGS: &[(&str, &str)] =
    &[("CERTCTL_JOB_LEASE", "3s"), ("CERTCTL_NOTIFICATION_PROCESS_INTERVAL", "1s"), ("CERTCTL_JOB_BATCH_SIZE", "200")];

/// Sets `v[i]` (a restarted server keeps its slot) or appends it.
fn put<T>(v: &mut Vec<T>, i: usize, x: T) {
    match v.get_mut(i) {
        Some(slot) => *slot = x,
        None => v.push(x),
    }
}

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
    /// Servers to start on the one database (`--replicas`; 1 normally).
    pub replicas: usize,
    /// Start the servers with [`FAULT_SETTINGS`] (a run with faults).
    pub fault_settings: bool,
    /// Settings given to the servers on top of the defaults and the environment (`ab`'s
    /// `--a-env`/`--b-env`); they win over both.
    pub extra_env: Vec<(String, String)>,
}

/// A running cluster + server.
#[derive(Debug)]
pub struct Embedded {
    cluster: Option<Cluster>,
    children: Vec<Child>,
    /// `http://127.0.0.1:<port>` of the first server.
    pub base_url: String,
    /// Base URLs of every server (one per replica, in start order).
    pub base_urls: Vec<String>,
    /// Pids of every server.
    pub pids: Vec<u32>,
    /// `CERTCTL_INSTANCE_ID` of every server.
    pub instance_ids: Vec<String>,
    /// URL of the server's database.
    pub database_url: String,
    /// First server's pid (for /proc sampling).
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
    /// Loopback port of every server (kept across restarts, so `base_urls` stay valid).
    ports: Vec<u16>,
    /// How the servers were started (for restarts).
    opts: EmbeddedOptions,
    /// Restarts so far (names the logs of restarted servers).
    restarts: usize,
}

/// The template database [`Embedded::snapshot`] saves the seeded state in.
const TEMPLATE_DB: &str = "certctl_trial_template";

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
        let replicas = opts.replicas.max(1);
        let mut server_env = std::collections::BTreeMap::new();
        // Record every setting the servers see (secrets excluded) for the summary.
        for (k, v) in std::env::vars().filter(|(k, _)| k.starts_with("CERTCTL_")) {
            server_env.insert(k, v);
        }
        for (k, v) in SERVER_DEFAULTS {
            server_env.entry(k.to_string()).or_insert_with(|| v.to_string());
        }
        if opts.fault_settings {
            for (k, v) in FAULT_SETTINGS.iter().filter(|(k, _)| std::env::var_os(k).is_none()) {
                server_env.insert(k.to_string(), v.to_string());
            }
        }
        if replicas > 1 {
            for (k, v) in REPLICA_SETTINGS {
                server_env.insert(k.to_string(), v.to_string());
            }
        }
        server_env.retain(|k, _| {
            !matches!(
                k.as_str(),
                "CERTCTL_DATABASE_URL"
                    | "CERTCTL_API_KEYS_NAMED"
                    | "CERTCTL_AUTH_SECRET"
                    | "CERTCTL_CONFIG_ENCRYPTION_KEY"
                    | "CERTCTL_SERVER_BIN"
                    | "CERTCTL_INSTANCE_ID"
            )
        });
        let mut env = Embedded {
            pid: 0,
            pg_version: cluster.version().to_string(),
            pg_stat_statements: cluster.pg_stat_statements(),
            durability: cluster.durability(),
            cluster: Some(cluster),
            children: Vec::new(),
            base_url: String::new(),
            base_urls: Vec::new(),
            pids: Vec::new(),
            instance_ids: Vec::new(),
            database_url,
            server_env,
            log_path: opts.log_dir.join("server.log"),
            ports: Vec::new(),
            opts: opts.clone(),
            restarts: 0,
        };
        // One at a time: the first server migrates and seeds the database, the others then
        // boot on a migrated schema instead of racing each other's migrations.
        for i in 0..replicas {
            let started = match env.spawn_server(opts, i, replicas) {
                Ok(()) => env.wait_ready(i, opts.ready_timeout, &cancelled).await,
                Err(e) => Err(e),
            };
            if let Err(e) = started {
                env.teardown();
                return Err(e);
            }
        }
        Ok(env)
    }

    /// Spawns server `i` of `replicas` on a free port (log: `server.log`, then `server-2.log`…).
    fn spawn_server(&mut self, opts: &EmbeddedOptions, i: usize, replicas: usize) -> Result<(), EmbeddedError> {
        let port = match self.ports.get(i) {
            Some(p) => *p,
            None => pg_embedded::free_port().map_err(|e| EmbeddedError::Postgres(e.to_string()))?,
        };
        let stem = if i == 0 { "server".to_string() } else { format!("server-{}", i + 1) };
        let log_path = match self.restarts {
            0 => opts.log_dir.join(format!("{stem}.log")),
            n => opts.log_dir.join(format!("{stem}.restart-{n}.log")),
        };
        let log = File::create(&log_path).map_err(|source| EmbeddedError::Spawn { bin: log_path.clone(), source })?;
        let log2 = log.try_clone().map_err(|source| EmbeddedError::Spawn { bin: log_path.clone(), source })?;
        let mut cmd = Command::new(&opts.server_bin);
        cmd.env("CERTCTL_DATABASE_URL", &self.database_url)
            .env("CERTCTL_SERVER_HOST", "127.0.0.1")
            .env("CERTCTL_SERVER_PORT", port.to_string())
            .env("CERTCTL_API_KEYS_NAMED", format!("loadtest:{}:admin", opts.api_key));
        for (k, v) in SERVER_DEFAULTS {
            // Defaults only: a CERTCTL_* variable in the harness's environment wins, so the
            // server can be tuned for an experiment without a code change.
            if std::env::var_os(k).is_none() {
                cmd.env(k, v);
            }
        }
        if opts.fault_settings {
            for (k, v) in FAULT_SETTINGS {
                if std::env::var_os(k).is_none() {
                    cmd.env(k, v);
                }
            }
        }
        for (k, v) in &opts.extra_env {
            cmd.env(k, v);
        }
        if replicas > 1 {
            // Not overridable: the multi-replica invariants are only meaningful with distinct
            // instance ids and the shared limiter backend.
            let id = format!("loadtest-replica-{}", i + 1);
            cmd.env("CERTCTL_INSTANCE_ID", &id);
            for (k, v) in REPLICA_SETTINGS {
                cmd.env(k, v);
            }
            put(&mut self.instance_ids, i, id);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|source| EmbeddedError::Spawn { bin: opts.server_bin.clone(), source })?;
        let url = format!("http://127.0.0.1:{port}");
        if i == 0 {
            self.pid = child.id();
            self.base_url = url.clone();
        }
        if self.ports.len() <= i {
            self.ports.push(port);
            self.base_urls.push(url);
        }
        put(&mut self.pids, i, child.id());
        put(&mut self.children, i, child);
        self.log_path = log_path;
        Ok(())
    }

    /// Stops every server gracefully (SIGTERM, SIGKILL after 10 s); the cluster keeps running.
    pub fn stop_servers(&mut self) {
        for child in &self.children {
            // SIGTERM through kill(1): the workspace forbids the `unsafe` a libc call needs.
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for mut child in self.children.drain(..) {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        self.pids.clear();
    }

    /// Starts the servers again on their ports, one at a time, each until `/ready`.
    pub async fn start_servers(&mut self, cancelled: impl Fn() -> bool) -> Result<(), EmbeddedError> {
        self.restarts += 1;
        let opts = self.opts.clone();
        let replicas = opts.replicas.max(1);
        self.instance_ids.clear();
        for i in 0..replicas {
            self.spawn_server(&opts, i, replicas)?;
            self.wait_ready(i, opts.ready_timeout, &cancelled).await?;
        }
        Ok(())
    }

    /// Fast restart of PostgreSQL; with `down` > 0 it is stopped, left down that long, then
    /// started on the same port. Returns once it accepts connections again.
    pub async fn restart_database(&mut self, down: Duration) -> Result<(), EmbeddedError> {
        let Some(mut cluster) = self.cluster.take() else {
            return Err(EmbeddedError::Postgres("the cluster is gone".into()));
        };
        // pg_ctl blocks: off the runtime's workers, so the load keeps running meanwhile.
        let (cluster, r) = tokio::task::spawn_blocking(move || {
            let r = if down.is_zero() {
                cluster.restart()
            } else {
                cluster.stop_server().and_then(|()| {
                    std::thread::sleep(down);
                    cluster.start_server()
                })
            };
            (cluster, r)
        })
        .await
        .map_err(|e| EmbeddedError::Postgres(e.to_string()))?;
        self.cluster = Some(cluster);
        r.map_err(|e| EmbeddedError::Postgres(e.to_string()))
    }

    /// SIGSTOPs the postmaster and its backends (SIGCONT when the guard is thawed or dropped).
    pub fn freeze_database(&self) -> Result<pg_embedded::Frozen, EmbeddedError> {
        let cluster = self.cluster.as_ref().ok_or_else(|| EmbeddedError::Postgres("the cluster is gone".into()))?;
        cluster.freeze().map_err(|e| EmbeddedError::Postgres(e.to_string()))
    }

    /// `pg_terminate_backend` on every other connection to the server's database; returns how
    /// many were killed.
    pub async fn kill_connections(&self) -> Result<u64, EmbeddedError> {
        let admin = pg_embedded::replace_database(&self.database_url, "postgres");
        pg_embedded::terminate_connections(&admin, "certctl").await.map_err(|e| EmbeddedError::Postgres(e.to_string()))
    }

    /// Stops server `i`: SIGKILL, or SIGTERM and a wait for its graceful exit (SIGKILL after
    /// 30 s). Returns its pid.
    pub async fn stop_server(&mut self, i: usize, graceful: bool) -> Result<u32, EmbeddedError> {
        let child = self.children.get_mut(i).ok_or_else(|| EmbeddedError::NotReady(format!("no server {i}")))?;
        let pid = child.id();
        if !graceful {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(pid);
        }
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(pid),
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ok(pid);
                }
            }
        }
    }

    /// Starts server `i` again on its port (same instance id) and waits for its `/ready`.
    pub async fn start_server(&mut self, i: usize, cancelled: impl Fn() -> bool) -> Result<(), EmbeddedError> {
        self.restarts += 1;
        let opts = self.opts.clone();
        self.spawn_server(&opts, i, opts.replicas.max(1))?;
        self.wait_ready(i, opts.ready_timeout, &cancelled).await
    }

    /// Saves the database's current state (migrated, seeded) as the template that
    /// [`Embedded::restore`] clones; the servers are stopped meanwhile (a template copy needs
    /// the source database to itself) and started again.
    pub async fn snapshot(&mut self, cancelled: impl Fn() -> bool) -> Result<(), EmbeddedError> {
        self.stop_servers();
        let r = self
            .admin(&[
                // The harness's own pool reconnects when it next needs the database.
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = 'certctl' AND pid <> pg_backend_pid()"
                    .to_string(),
                format!("DROP DATABASE IF EXISTS {TEMPLATE_DB}"),
                format!("CREATE DATABASE {TEMPLATE_DB} TEMPLATE certctl"),
            ])
            .await;
        self.start_servers(cancelled).await?;
        r
    }

    /// Puts the database back to the [`Embedded::snapshot`] state: stops the servers, drops
    /// the database, clones the template, starts the servers. Every trial then starts from
    /// the same rows, however many the previous one created.
    pub async fn restore(&mut self, cancelled: impl Fn() -> bool) -> Result<(), EmbeddedError> {
        self.stop_servers();
        self.clone_template().await?;
        self.start_servers(cancelled).await
    }

    /// [`Embedded::restore`] with another server binary and settings (they stay for later
    /// restarts), returning the fingerprint of the cloned database taken before the servers
    /// start ([`Embedded::fingerprint`]): `ab` runs both builds on one cluster, each trial on
    /// a fresh clone of the one seeded template, and records that every clone starts equal.
    pub async fn restore_as(
        &mut self,
        server_bin: &Path,
        extra_env: &[(String, String)],
        cancelled: impl Fn() -> bool,
    ) -> Result<String, EmbeddedError> {
        self.stop_servers();
        self.opts.server_bin = server_bin.to_path_buf();
        self.opts.extra_env = extra_env.to_vec();
        self.clone_template().await?;
        let fp = self.fingerprint().await?;
        self.start_servers(cancelled).await?;
        Ok(fp)
    }

    async fn clone_template(&self) -> Result<(), EmbeddedError> {
        self.admin(&[
            "DROP DATABASE IF EXISTS certctl WITH (FORCE)".to_string(),
            format!("CREATE DATABASE certctl TEMPLATE {TEMPLATE_DB}"),
        ])
        .await
    }

    /// A digest of the database's contents: md5 over every table of the `public` schema, each
    /// table's rows as text in sorted order. Two databases with the same fingerprint hold the
    /// same rows.
    pub async fn fingerprint(&self) -> Result<String, EmbeddedError> {
        use sqlx::Connection;
        let pg = |e: sqlx::Error| EmbeddedError::Postgres(format!("fingerprint: {e}"));
        let mut conn = sqlx::PgConnection::connect(&self.database_url).await.map_err(pg)?;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
        )
        .fetch_all(&mut conn)
        .await
        .map_err(pg)?;
        let mut parts = Vec::with_capacity(tables.len());
        for t in &tables {
            // Table names come from the catalogue, quoted by quote_ident.
            let sql = format!("SELECT coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {t} x");
            let d: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut conn).await.map_err(pg)?;
            parts.push(format!("{t}:{d}"));
        }
        let all: String =
            sqlx::query_scalar("SELECT md5($1)").bind(parts.join(",")).fetch_one(&mut conn).await.map_err(pg)?;
        let _ = conn.close().await;
        Ok(format!("{}:{all}", tables.len()))
    }

    /// Runs statements on the cluster's `postgres` database, one connection, in order.
    async fn admin(&self, statements: &[String]) -> Result<(), EmbeddedError> {
        use sqlx::Connection;
        let url = pg_embedded::replace_database(&self.database_url, "postgres");
        let pg = |e: sqlx::Error| EmbeddedError::Postgres(e.to_string());
        let mut conn = sqlx::PgConnection::connect(&url).await.map_err(pg)?;
        for sql in statements {
            // Our own constant statements (database names are constants, nothing user-given).
            sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).execute(&mut conn).await.map_err(pg)?;
        }
        let _ = conn.close().await;
        Ok(())
    }

    /// The postmaster's `postmaster.pid` (its backends are its children), for CPU sampling.
    pub fn postgres_pid_file(&self) -> Option<std::path::PathBuf> {
        Some(self.cluster.as_ref()?.dir().join("data").join("postmaster.pid"))
    }

    /// Waits until server `i` answers `/ready` with 200.
    async fn wait_ready(
        &mut self,
        i: usize,
        timeout: Duration,
        cancelled: &impl Fn() -> bool,
    ) -> Result<(), EmbeddedError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| EmbeddedError::NotReady(e.to_string()))?;
        let url = format!("{}/ready", self.base_urls.get(i).unwrap_or(&self.base_url));
        let deadline = Instant::now() + timeout;
        loop {
            if cancelled() {
                return Err(EmbeddedError::Interrupted);
            }
            if let Some(child) = self.children.get_mut(i)
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

    /// Stops every server (SIGTERM, then SIGKILL after 10 s) and the cluster.
    pub fn teardown(&mut self) {
        self.stop_servers();
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
