//! A throw-away PostgreSQL cluster for development, tests and the harness's embedded mode.
//!
//! Its own crate so that both `certctl-server` (its tests and `certctl-dev`) and the load
//! harness use it without the harness compiling the server: the harness reaches the server
//! only over HTTP and SQL.
//!
//! Flow: find the server binaries (`PATH`, then the newest `/usr/lib/postgresql/*/bin`),
//! `initdb` into a fresh temporary directory, append settings to `postgresql.conf`, start
//! `postgres` on a free loopback port (with its socket in the same directory), and hand back a
//! [`Cluster`] whose URLs point at it.
//!
//! PostgreSQL refuses to run as root, so when the process is root the cluster directory is
//! given to the `postgres` user and every server command runs through `runuser -u postgres`.
//!
//! Teardown happens three ways, so no cluster outlives its owner:
//! - [`Drop`] stops the server (`pg_ctl stop -m immediate`) and removes the directory — the
//!   normal path, also taken while a panic unwinds;
//! - a watchdog process (started with `setsid`, so a terminal's Ctrl-C does not reach it)
//!   polls the owner's pid and does the same cleanup once the owner is gone — this covers
//!   Ctrl-C, `SIGKILL`, and clusters held in a `static` (which Rust never drops);
//! - [`Cluster::stop`] for an explicit, checked shutdown.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Errors while finding, creating or starting a cluster.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// No `initdb`/`postgres`/`pg_ctl` found.
    #[error(
        "PostgreSQL server binaries not found on PATH or under /usr/lib/postgresql/*/bin \
         (install them: apt-get install -y postgresql)"
    )]
    BinariesNotFound,
    /// Running as root but there is no `postgres` user to own the cluster.
    #[error(
        "running as root, but there is no 'postgres' user to run the cluster as \
         (install the postgresql package, or run as a normal user)"
    )]
    NoPostgresUser,
    /// A command failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// The step that failed.
        what: &'static str,
        /// Its output or error.
        detail: String,
    },
    /// Filesystem trouble.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How the cluster is tuned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// For tests: `fsync=off`, `synchronous_commit=off`, `full_page_writes=off`. Data is lost on
    /// a crash, which a throw-away cluster does not care about.
    #[default]
    Fast,
    /// Production-like: durable commits (the defaults), for baselines that must say so.
    Durable,
}

impl Durability {
    /// A short name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fast => "fast (fsync=off, synchronous_commit=off, full_page_writes=off)",
            Durability::Durable => "durable (fsync=on, synchronous_commit=on)",
        }
    }
}

/// Options for [`Cluster::start`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Fast or durable settings.
    pub durability: Durability,
    /// `max_connections` of the server.
    pub max_connections: u32,
    /// `shared_buffers`, e.g. `256MB`.
    pub shared_buffers: String,
    /// Load `pg_stat_statements` when the extension is installed.
    pub pg_stat_statements: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Fast,
            max_connections: 400,
            shared_buffers: "256MB".into(),
            pg_stat_statements: false,
        }
    }
}

/// A running throw-away cluster. Dropping it stops the server and deletes its files.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    as_postgres: bool,
    stopped: bool,
    version: String,
    pg_stat_statements: bool,
    durability: Durability,
}

/// Finds the directory holding `initdb`, `pg_ctl` and `postgres`.
pub fn find_bin_dir() -> Result<PathBuf, PgError> {
    let has_all = |d: &Path| ["initdb", "pg_ctl", "postgres"].iter().all(|b| d.join(b).is_file());
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if has_all(&d) {
                return Ok(d);
            }
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    has_all(&bin).then_some((v, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    candidates.pop().map(|(_, p)| p).ok_or(PgError::BinariesNotFound)
}

/// Whether the process runs as root (effective uid 0).
pub fn is_root() -> bool {
    effective_uid() == 0
}

fn effective_uid() -> u32 {
    // Read from /proc rather than calling `geteuid` through FFI, which would need `unsafe`
    // (forbidden workspace-wide). Line format: `Uid: real effective saved fs`.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

/// Returns a port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> Result<u16, PgError> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn run(what: &'static str, cmd: &mut Command) -> Result<String, PgError> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| PgError::Command { what, detail: e.to_string() })?;
    if !out.status.success() {
        let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if detail.is_empty() {
            detail = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        return Err(PgError::Command { what, detail });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Cluster {
    /// Creates and starts a cluster with `options`.
    pub fn start(options: &ClusterOptions) -> Result<Self, PgError> {
        let bin_dir = find_bin_dir()?;
        let as_postgres = is_root();
        if as_postgres && !user_exists("postgres") {
            return Err(PgError::NoPostgresUser);
        }
        let dir = tempfile::Builder::new().prefix("certctl-pg-").tempdir()?.keep();
        let mut cluster = Cluster {
            dir,
            bin_dir,
            port: 0,
            as_postgres,
            stopped: true,
            version: String::new(),
            pg_stat_statements: false,
            durability: options.durability,
        };
        // From here on `cluster`'s Drop cleans up whatever was created.
        cluster.init_and_start(options)?;
        Ok(cluster)
    }

    fn cmd(&self, program: &str) -> Command {
        let exe = self.bin_dir.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn init_and_start(&mut self, options: &ClusterOptions) -> Result<(), PgError> {
        if self.as_postgres {
            run("chown", Command::new("chown").args(["postgres:postgres"]).arg(&self.dir))?;
        }
        run(
            "initdb",
            self.cmd("initdb")
                .args(["--no-sync", "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "-D"])
                .arg(self.data_dir()),
        )?;
        self.version = run("postgres --version", self.cmd("postgres").arg("--version"))
            .map(|v| v.trim().to_string())
            .unwrap_or_default();
        let mut conf = format!(
            "\n# certctl throw-away cluster\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             max_connections = {}\nshared_buffers = '{}'\n",
            self.dir.display(),
            options.max_connections,
            options.shared_buffers
        );
        if options.durability == Durability::Fast {
            conf.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        }
        if options.pg_stat_statements && self.has_extension("pg_stat_statements") {
            conf.push_str("shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = all\n");
            self.pg_stat_statements = true;
        }
        let conf_path = self.data_dir().join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path)?;
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing)?;

        // The chosen port can be taken between probe and bind; retry a few times.
        let mut last_err = None;
        for _ in 0..5 {
            self.port = free_port()?;
            let started = run(
                "pg_ctl start",
                self.cmd("pg_ctl")
                    .arg("-D")
                    .arg(self.data_dir())
                    .args(["-w", "-t", "30", "-o"])
                    .arg(format!("-p {}", self.port))
                    .arg("-l")
                    .arg(self.dir.join("postgres.log"))
                    .arg("start")
                    .stdout(Stdio::null()),
            );
            match started {
                Ok(_) => {
                    self.stopped = false;
                    self.spawn_watchdog();
                    return Ok(());
                }
                Err(e) => {
                    let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
                    last_err = Some(PgError::Command {
                        what: "pg_ctl start",
                        detail: format!("{e}; log: {}", log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")),
                    });
                    if !log.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        Err(last_err.unwrap_or(PgError::Command { what: "pg_ctl start", detail: "unknown".into() }))
    }

    fn has_extension(&self, name: &str) -> bool {
        // `bin_dir` may be a directory of symlinks (e.g. /usr/local/bin -> /usr/lib/postgresql/15/bin)
        // without `pg_config`; fall back to the directory the real `postgres` binary lives in.
        let real_bin =
            std::fs::canonicalize(self.bin_dir.join("postgres")).ok().and_then(|p| p.parent().map(Path::to_path_buf));
        let pg_config = std::iter::once(self.bin_dir.join("pg_config"))
            .chain(real_bin.map(|d| d.join("pg_config")))
            .find(|p| p.is_file());
        let Some(pg_config) = pg_config else { return false };
        let Ok(share) = run("pg_config", Command::new(pg_config).arg("--sharedir")) else {
            return false;
        };
        Path::new(share.trim()).join("extension").join(format!("{name}.control")).is_file()
    }

    /// A watchdog outside our process group: once our pid is gone, stop the server and delete
    /// the directory. Covers exits that skip `Drop` (statics, Ctrl-C, SIGKILL).
    fn spawn_watchdog(&self) {
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let stop = if self.as_postgres {
            format!(
                "runuser -u postgres -- '{}' -D '{}' -m immediate stop",
                pg_ctl.display(),
                self.data_dir().display()
            )
        } else {
            format!("'{}' -D '{}' -m immediate stop", pg_ctl.display(), self.data_dir().display())
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; if [ -d '{dir}' ]; then {stop} >/dev/null 2>&1; rm -rf '{dir}'; fi",
            pid = std::process::id(),
            dir = self.dir.display(),
        );
        let _ = Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of database `db` as the `postgres` superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// `postgres --version` output, e.g. `postgres (PostgreSQL) 15.18`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether `pg_stat_statements` is preloaded (the extension still has to be created).
    pub fn pg_stat_statements(&self) -> bool {
        self.pg_stat_statements
    }

    /// The settings the cluster runs with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Directory of the cluster (data, socket and log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server and removes its files, reporting failure.
    pub fn stop(mut self) -> Result<(), PgError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), PgError> {
        let mut result = Ok(());
        if !self.stopped {
            self.stopped = true;
            result = run(
                "pg_ctl stop",
                self.cmd("pg_ctl").arg("-D").arg(self.data_dir()).args(["-m", "immediate", "-w", "stop"]),
            )
            .map(|_| ());
        }
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir)?;
        }
        result
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("certctl: stopping the throw-away PostgreSQL failed: {e}");
        }
    }
}

fn user_exists(name: &str) -> bool {
    std::fs::read_to_string("/etc/passwd")
        .map(|s| s.lines().any(|l| l.split(':').next() == Some(name)))
        .unwrap_or(false)
}

/// Creates database `name` on the server at `admin_url` (a URL of an existing database).
pub async fn create_database(admin_url: &str, name: &str) -> Result<String, sqlx::Error> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    // Identifiers cannot be bound as parameters; the name is quoted with quotes stripped.
    let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', ""));
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await?;
    conn.close().await?;
    Ok(replace_database(admin_url, name))
}

/// Returns `url` with its database name replaced by `db`.
pub fn replace_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    // postgres://user@host:port/dbname -> keep everything up to the path's last '/'.
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// Waits until the server accepts connections or `timeout` passes.
pub async fn wait_ready(url: &str, timeout: Duration) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match sqlx::PgConnection::connect(url).await {
            Ok(c) => {
                let _ = c.close().await;
                return Ok(());
            }
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_database_keeps_host_and_query() {
        assert_eq!(replace_database("postgres://u@h:1/postgres", "x"), "postgres://u@h:1/x");
        assert_eq!(
            replace_database("postgres://u@h:1/postgres?sslmode=disable", "x"),
            "postgres://u@h:1/x?sslmode=disable"
        );
        assert_eq!(replace_database("postgres://u@h:1", "x"), "postgres://u@h:1/x");
    }
}

// ---------------------------------------------------------------------------------------------
// Fault injection on a running cluster: restart, stop/start, freeze (SIGSTOP) and killing the
// connections of one database. Used by the server's fault tests and the harness's fault runs.
// ---------------------------------------------------------------------------------------------

impl Cluster {
    /// Fast restart (`pg_ctl restart -m fast`) on the same port: every session is terminated
    /// (clients see SQLSTATE 57P01 or a closed socket), the cluster is back when this returns.
    pub fn restart(&mut self) -> Result<(), PgError> {
        run(
            "pg_ctl restart",
            self.cmd("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-t", "30", "-m", "fast", "-o"])
                .arg(format!("-p {}", self.port))
                .arg("-l")
                .arg(self.dir.join("postgres.log"))
                .arg("restart")
                .stdout(Stdio::null()),
        )
        .map(|_| ())
    }

    /// Stops the server (fast shutdown) but keeps its files, for [`Cluster::start_server`].
    pub fn stop_server(&mut self) -> Result<(), PgError> {
        run("pg_ctl stop", self.cmd("pg_ctl").arg("-D").arg(self.data_dir()).args(["-m", "fast", "-w", "stop"]))?;
        self.stopped = true;
        Ok(())
    }

    /// Starts a server stopped by [`Cluster::stop_server`] again, on the same port.
    pub fn start_server(&mut self) -> Result<(), PgError> {
        run(
            "pg_ctl start",
            self.cmd("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-t", "30", "-o"])
                .arg(format!("-p {}", self.port))
                .arg("-l")
                .arg(self.dir.join("postgres.log"))
                .arg("start")
                .stdout(Stdio::null()),
        )?;
        self.stopped = false;
        Ok(())
    }

    /// The postmaster's pid (first line of `postmaster.pid`).
    pub fn postmaster_pid(&self) -> Result<u32, PgError> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))?;
        text.lines().next().and_then(|l| l.trim().parse().ok()).ok_or_else(|| PgError::Command {
            what: "reading postmaster.pid",
            detail: format!("no pid in {:?}", text.lines().next()),
        })
    }

    /// The postmaster and every process it forked (backends, checkpointer, WAL writer, …),
    /// found through `/proc/*/stat`'s parent pid.
    pub fn server_pids(&self) -> Result<Vec<u32>, PgError> {
        let postmaster = self.postmaster_pid()?;
        let mut pids = vec![postmaster];
        pids.extend(child_pids(postmaster)?);
        Ok(pids)
    }

    /// Freezes the server like a frozen disk or VM: SIGSTOP to the postmaster, then to each of
    /// its children. Connections stay open and nothing answers. The returned guard sends
    /// SIGCONT to all of them on [`Frozen::thaw`] or when dropped (also during a panic), so a
    /// failing test never leaves a frozen cluster behind.
    pub fn freeze(&self) -> Result<Frozen, PgError> {
        let postmaster = self.postmaster_pid()?;
        // The postmaster first: stopped, it cannot fork a child we would miss.
        signal("STOP", &[postmaster])?;
        let mut frozen = Frozen { pids: vec![postmaster] };
        let children = child_pids(postmaster)?;
        signal("STOP", &children)?;
        frozen.pids.extend(children);
        Ok(frozen)
    }
}

/// Processes stopped by [`Cluster::freeze`]; continued on [`Frozen::thaw`] or drop.
#[derive(Debug)]
pub struct Frozen {
    pids: Vec<u32>,
}

impl Frozen {
    /// The stopped pids (postmaster first).
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// Sends SIGCONT to every stopped process (children first, then the postmaster).
    pub fn thaw(mut self) -> Result<(), PgError> {
        self.resume()
    }

    fn resume(&mut self) -> Result<(), PgError> {
        if self.pids.is_empty() {
            return Ok(());
        }
        let mut pids = std::mem::take(&mut self.pids);
        pids.reverse();
        signal("CONT", &pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Err(e) = self.resume() {
            eprintln!("certctl: continuing the frozen PostgreSQL failed: {e}");
        }
    }
}

/// Pids whose parent is `parent`, from `/proc/*/stat` (field 4; the command name in field 2
/// may hold spaces and parentheses, so parse after its last `)`).
fn child_pids(parent: u32) -> Result<Vec<u32>, PgError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc")?.filter_map(Result::ok) {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let ppid =
            stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    Ok(out)
}

/// `kill -SIG pid…` (a process that already exited is not an error).
fn signal(sig: &str, pids: &[u32]) -> Result<(), PgError> {
    for pid in pids {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| PgError::Command { what: "kill", detail: e.to_string() })?;
        if !status.success() && Path::new(&format!("/proc/{pid}")).exists() {
            return Err(PgError::Command { what: "kill", detail: format!("kill -{sig} {pid} failed: {status}") });
        }
    }
    Ok(())
}

/// `pg_terminate_backend` on every other session connected to database `db` (through the
/// server at `admin_url`, a URL of another database); returns how many were terminated.
pub async fn terminate_connections(admin_url: &str, db: &str) -> Result<u64, sqlx::Error> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
          WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(db)
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    Ok(u64::try_from(n).unwrap_or(0))
}
