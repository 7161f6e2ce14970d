//! Fleet renewal rate: how fast the server turns renewal jobs into new certificate versions.
//!
//! Data flow: while a scenario that declares `[fleet_renewal]` runs, a [`CounterSampler`] reads
//! the scenario's `counter_sql` (a `count(*)` of the fleet's `certificate_versions`) once when
//! the scenario starts and then once a second over the harness's own database connection. The
//! cumulative readings become a per-second series ([`summarize`]) that `summary.json` keeps as a
//! [`FleetRenewal`] object, `report.md` tabulates and the charts draw.
//!
//! **The judged rate** (`fleet_renewal_rate`, the metric the `min` threshold checks) is the
//! *peak moving average over `window_s` seconds* (5 s by default) of the per-second series —
//! not the whole-run average. The bulk-renew load of `bulk_renewal` only *enqueues* 100
//! certificates per request at 5 req/s (500 certificates/s at scale), so the whole-run average
//! is bounded by the offered load and by the job processor's 1-s tick, and a single 1-s sample is
//! dominated by which tick landed in which second. A few seconds' window smooths the tick
//! phase while still showing the rate the scheduler can sustain when it has work queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// One reading of the counter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FleetPoint {
    /// Seconds since the scenario's time zero.
    pub t_s: f64,
    /// Versions created since the scenario started (cumulative).
    pub versions: u64,
    /// Versions created since the previous reading, per second.
    pub per_s: f64,
}

/// The fleet renewal measurement of one scenario, as `summary.json` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetRenewal {
    /// `measured`, or `unavailable: <why>` (e.g. external mode without `--database-url`).
    pub status: String,
    /// Certificate versions created between the scenario's start and its last reading.
    pub versions: u64,
    /// Seconds from the first to the last reading.
    pub seconds: f64,
    /// `versions / seconds`.
    pub avg_per_s: f64,
    /// Highest single per-second reading.
    pub peak_per_s: f64,
    /// Width of the moving-average window, seconds.
    pub window_s: u32,
    /// Highest `window_s`-second moving average: the judged `fleet_renewal_rate`.
    pub peak_window_avg_per_s: f64,
    /// The readings, about one a second.
    pub series: Vec<FleetPoint>,
}

impl FleetRenewal {
    /// A measurement that could not be taken, with the reason.
    pub fn unavailable(why: &str, window_s: u32) -> Self {
        FleetRenewal {
            status: format!("unavailable: {why}"),
            versions: 0,
            seconds: 0.0,
            avg_per_s: 0.0,
            peak_per_s: 0.0,
            window_s,
            peak_window_avg_per_s: 0.0,
            series: Vec::new(),
        }
    }

    /// The value the `fleet_renewal_rate` threshold judges; `None` when not measured.
    pub fn judged_rate(&self) -> Option<f64> {
        (self.status == "measured").then_some(self.peak_window_avg_per_s)
    }
}

/// Name of the scenario-level metric thresholds use for the judged rate.
pub const FLEET_RENEWAL_RATE: &str = "fleet_renewal_rate";

/// The highest mean of `window` consecutive values; the mean of all values when there are
/// fewer than `window` (a short smoke run still reports something), 0 for none.
pub fn peak_moving_average(values: &[f64], window: usize) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let w = window.clamp(1, values.len());
    values.windows(w).map(|s| s.iter().sum::<f64>() / w as f64).fold(0.0, f64::max)
}

/// Turns cumulative readings `(t_s, count)` — the first one taken when the scenario starts —
/// into the summary. Fewer than two readings measure nothing.
pub fn summarize(readings: &[(f64, i64)], window_s: u32) -> FleetRenewal {
    let (Some(&(t0, c0)), Some(&(tn, cn))) = (readings.first(), readings.last()) else {
        return FleetRenewal::unavailable("no readings", window_s);
    };
    if readings.len() < 2 {
        return FleetRenewal::unavailable("fewer than two readings", window_s);
    }
    let series: Vec<FleetPoint> = readings
        .windows(2)
        .map(|p| {
            let (ta, ca) = p[0];
            let (tb, cb) = p[1];
            let dt = (tb - ta).max(1e-9);
            // A counter can only shrink if rows were deleted meanwhile; count that as no progress.
            let d = (cb - ca).max(0) as f64;
            FleetPoint { t_s: tb, versions: (cb - c0).max(0) as u64, per_s: d / dt }
        })
        .collect();
    let rates: Vec<f64> = series.iter().map(|p| p.per_s).collect();
    let seconds = tn - t0;
    let versions = (cn - c0).max(0) as u64;
    FleetRenewal {
        status: "measured".into(),
        versions,
        seconds,
        avg_per_s: if seconds > 0.0 { versions as f64 / seconds } else { 0.0 },
        peak_per_s: rates.iter().copied().fold(0.0, f64::max),
        window_s,
        peak_window_avg_per_s: peak_moving_average(&rates, window_s as usize),
        series,
    }
}

/// Reads one `bigint` counter.
pub async fn read_counter(pool: &PgPool, sql: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string())).fetch_one(pool).await
}

/// Samples a counter once at start and then once a second until stopped.
#[derive(Debug)]
pub struct CounterSampler {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<Vec<(f64, i64)>>,
}

impl CounterSampler {
    /// Starts sampling `sql` on `pool`; times are seconds since `t0`. A failed reading is
    /// skipped (the next one still measures progress since the previous success).
    pub fn start(pool: PgPool, sql: String, t0: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = tokio::spawn(async move {
            let mut out = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // The first tick fires at once: the reading the scenario's progress is measured from.
                tick.tick().await;
                if let Ok(v) = read_counter(&pool, &sql).await {
                    out.push((t0.elapsed().as_secs_f64(), v));
                }
                if flag.load(Ordering::Relaxed) {
                    break;
                }
            }
            out
        });
        CounterSampler { stop, handle }
    }

    /// Takes one last reading, stops and returns the readings.
    pub async fn stop(self) -> Vec<(f64, i64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_moving_average_finds_the_best_window() {
        let v = [0.0, 100.0, 900.0, 800.0, 700.0, 600.0, 500.0, 0.0];
        assert_eq!(peak_moving_average(&v, 5), (900.0 + 800.0 + 700.0 + 600.0 + 500.0) / 5.0);
        assert_eq!(peak_moving_average(&v, 1), 900.0);
    }

    #[test]
    fn peak_moving_average_of_a_short_series_is_its_mean() {
        assert_eq!(peak_moving_average(&[300.0, 600.0], 5), 450.0);
        assert_eq!(peak_moving_average(&[], 5), 0.0);
    }

    #[test]
    fn summarize_turns_cumulative_readings_into_rates() {
        let r = [(0.0, 1000), (1.0, 1000), (2.0, 1600), (3.0, 2200), (4.0, 2500)];
        let f = summarize(&r, 2);
        assert_eq!(f.status, "measured");
        assert_eq!(f.versions, 1500);
        assert_eq!(f.seconds, 4.0);
        assert_eq!(f.avg_per_s, 375.0);
        assert_eq!(f.peak_per_s, 600.0);
        assert_eq!(f.peak_window_avg_per_s, 600.0);
        assert_eq!(f.series.len(), 4);
        assert_eq!(f.series[3].versions, 1500);
        assert_eq!(f.judged_rate(), Some(600.0));
    }

    #[test]
    fn a_single_reading_is_not_a_measurement() {
        let f = summarize(&[(0.0, 5)], 5);
        assert!(f.status.starts_with("unavailable"));
        assert_eq!(f.judged_rate(), None);
    }
}
