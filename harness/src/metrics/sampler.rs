//! Context sampled while a scenario runs: the server process's RSS and CPU (1 Hz, from
//! `/proc/<pid>/stat` and `/proc/<pid>/status`), the CPU of the generator itself and of the
//! embedded PostgreSQL (the postmaster and every backend it forked), and the database's
//! connection count (`pg_stat_activity`). The CPU split is what tells a server ceiling from a
//! generator that ran out of CPU. Each source is optional: external mode has no server or
//! PostgreSQL pid, and a run without `--database-url` has no database.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// One sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the scenario's time zero (negative while goose launches its users).
    pub t_s: f64,
    /// Server resident set size in bytes.
    pub rss_bytes: Option<u64>,
    /// Server CPU use over the last second, percent of one core.
    pub cpu_percent: Option<f64>,
    /// Connections to the database (all states).
    pub db_connections: Option<i64>,
    /// The generator's own CPU over the last second, percent of one core.
    #[serde(default)]
    pub generator_cpu_percent: Option<f64>,
    /// PostgreSQL's CPU (postmaster and backends) over the last second, percent of one core.
    #[serde(default)]
    pub postgres_cpu_percent: Option<f64>,
}

/// The processes a sampler watches.
#[derive(Debug, Clone, Default)]
pub struct Procs {
    /// Server processes (summed: the replicas of a `--replicas N` run are one service).
    pub server: Vec<u32>,
    /// The PostgreSQL postmaster's `postmaster.pid`, read again every second so that a
    /// restarted PostgreSQL (a `db_restart` fault) is followed (its children are summed with it).
    pub postgres: Option<PathBuf>,
}

/// The pid on the first line of a `postmaster.pid` file.
pub fn pid_from_file(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.lines().next()?.trim().parse().ok()
}

/// `pid` and every process whose parent it is (one level: PostgreSQL's backends).
pub fn with_children(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let Ok(rd) = std::fs::read_dir("/proc") else { return out };
    for e in rd.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let ppid = std::fs::read_to_string(format!("/proc/{child}/stat")).ok().and_then(|st| {
            let rest = st.get(st.rfind(')')? + 1..)?.to_string();
            rest.split_whitespace().nth(1)?.parse::<u32>().ok()
        });
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// CPU percent of one core between two tick readings `dt` seconds apart.
fn percent(now: Option<u64>, before: Option<u64>, tck: f64, dt: f64) -> Option<f64> {
    match (now, before) {
        (Some(n), Some(b)) if dt > 0.0 => Some(n.saturating_sub(b) as f64 / tck / dt * 100.0),
        _ => None,
    }
}

/// Clock ticks per second for `/proc/<pid>/stat` times (`getconf CLK_TCK`; 100 on Linux).
fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .filter(|v| *v > 0.0)
        .unwrap_or(100.0)
}

/// Clock ticks per second, read once per process.
pub fn ticks_per_second() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(clk_tck)
}

/// utime + stime of `pid`, in ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after its closing ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is index 0, utime is field 14 overall → index 11, stime index 12.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// VmRSS of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A running sampler; [`Sampler::stop`] returns the samples.
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Starts sampling `procs`, the generator itself and `pool` once a second from `t0`.
    pub fn start(procs: Procs, pool: Option<PgPool>, t0: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = tokio::spawn(async move {
            let tck = clk_tck();
            let me = std::process::id();
            let sum = |pids: &[u32]| -> Option<u64> {
                if pids.is_empty() {
                    return None;
                }
                pids.iter().map(|p| cpu_ticks(*p)).sum()
            };
            // Backends come and go: PostgreSQL's ticks are summed over whoever exists now, so
            // a backend that exited between two readings loses its last second (a lower bound).
            // The postmaster as of now, and its ticks (with its children's).
            let pg = || {
                let pm = procs.postgres.as_deref().and_then(pid_from_file)?;
                Some((pm, with_children(pm).iter().filter_map(|p| cpu_ticks(*p)).sum::<u64>()))
            };
            let read = || (sum(&procs.server), cpu_ticks(me), pg(), Instant::now());
            let mut last = read();
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                let now = read();
                let dt = now.3.duration_since(last.3).as_secs_f64();
                let mut s = Sample {
                    t_s: now.3.saturating_duration_since(t0).as_secs_f64(),
                    rss_bytes: if procs.server.is_empty() {
                        None
                    } else {
                        procs.server.iter().map(|p| rss_bytes(*p)).sum()
                    },
                    cpu_percent: percent(now.0, last.0, tck, dt),
                    generator_cpu_percent: percent(now.1, last.1, tck, dt),
                    // Across a PostgreSQL restart (another postmaster) the two readings are of
                    // different processes: that second has no PostgreSQL figure.
                    postgres_cpu_percent: match (now.2, last.2) {
                        (Some((pm, t)), Some((last_pm, last_t))) if pm == last_pm => {
                            percent(Some(t), Some(last_t), tck, dt)
                        }
                        _ => None,
                    },
                    ..Sample::default()
                };
                last = now;
                if let Some(pool) = &pool {
                    s.db_connections = sqlx::query_scalar::<_, i64>(
                        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'",
                    )
                    .fetch_one(pool)
                    .await
                    .ok();
                }
                samples.push(s);
            }
            samples
        });
        Sampler { stop, handle }
    }

    /// Stops and returns the samples.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.unwrap_or_default()
    }
}

/// Peaks over a set of samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Peaks {
    /// Highest RSS.
    pub rss_bytes: Option<u64>,
    /// Highest CPU percent.
    pub cpu_percent: Option<f64>,
    /// Most DB connections.
    pub db_connections: Option<i64>,
}

/// Computes the peaks.
pub fn peaks(samples: &[Sample]) -> Peaks {
    Peaks {
        rss_bytes: samples.iter().filter_map(|s| s.rss_bytes).max(),
        cpu_percent: samples
            .iter()
            .filter_map(|s| s.cpu_percent)
            .fold(None, |m, v| Some(m.map_or(v, |m: f64| m.max(v)))),
        db_connections: samples.iter().filter_map(|s| s.db_connections).max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_has_rss_and_cpu_ticks() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(cpu_ticks(pid).is_some());
    }

    #[test]
    fn the_postmaster_pid_is_the_first_line_of_its_pid_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("postmaster.pid");
        assert_eq!(pid_from_file(&f), None);
        std::fs::write(&f, "4242\n/var/lib/pg/data\n1764590000\n5432\n").unwrap();
        assert_eq!(pid_from_file(&f), Some(4242));
        std::fs::write(&f, "4243\n").unwrap();
        assert_eq!(pid_from_file(&f), Some(4243), "read again, not cached");
        std::fs::write(&f, "").unwrap();
        assert_eq!(pid_from_file(&f), None);
    }

    #[test]
    fn a_child_process_is_found_under_its_parent() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let found = with_children(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found[0], std::process::id());
        assert!(found.contains(&child.id()));
    }
}
