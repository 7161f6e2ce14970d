//! Context sampled while a scenario runs: the server process's RSS and CPU (1 Hz, from
//! `/proc/<pid>/stat` and `/proc/<pid>/status`) and the database's connection count
//! (`pg_stat_activity`). Each source is optional: external mode has no server pid, and a run
//! without `--database-url` has no database.

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
    /// Starts sampling `pids` (summed: the replicas of a `--replicas N` run are one service)
    /// and `pool` once a second from `t0`.
    pub fn start(pids: Vec<u32>, pool: Option<PgPool>, t0: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = tokio::spawn(async move {
            let tck = clk_tck();
            let mut samples = Vec::new();
            let ticks = |pids: &[u32]| -> Option<u64> {
                if pids.is_empty() {
                    return None;
                }
                pids.iter().map(|p| cpu_ticks(*p)).sum()
            };
            let mut last = ticks(&pids).map(|t| (t, Instant::now()));
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                let now = Instant::now();
                let mut s = Sample { t_s: now.saturating_duration_since(t0).as_secs_f64(), ..Sample::default() };
                if !pids.is_empty() {
                    s.rss_bytes = pids.iter().map(|p| rss_bytes(*p)).sum();
                    if let (Some(t), Some((lt, li))) = (ticks(&pids), last) {
                        let dt = now.duration_since(li).as_secs_f64();
                        if dt > 0.0 {
                            s.cpu_percent = Some((t.saturating_sub(lt)) as f64 / tck / dt * 100.0);
                        }
                        last = Some((t, now));
                    }
                }
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
}
