//! Whether one steady trial meets every capacity criterion, and — when it does not — whether
//! the generator rather than the server broke it.
//!
//! Criteria, per label, over the trial's measurement window (after the warm-up):
//! - corrected p99 ≤ the label's SLO (its p99 project target, else its p99 seed threshold, or
//!   `--slo-p99-ms` for every label);
//! - error rate ≤ `--max-error-rate`;
//! - scheduled labels: achieved rate (completions in the window per second) ≥ 98 % of offered,
//!   no dropped start, late starts ≤ 1 % of the window's starts.
//!
//! Harness-bound: the generator's CPU was saturated (≥ 90 % of the threads its runtime has),
//! its runtime's workers were busy ≥ 90 % of the trial, or starts were late or dropped (and
//! nothing but schedule criteria failed) while the server's own service-time p99 met the SLO
//! and the machine still had idle CPU — the requests that went out were answered in time; the
//! generator just could not send them on time. An achieved rate short of the offered one is
//! not such evidence on its own: a server at its throughput limit falls short too.

use serde::{Deserialize, Serialize};

use crate::metrics::{LabelStats, Percentiles};
use crate::scenario::engine::ScheduleCounts;
use crate::scenario::{Method, ResolvedScenario, ThresholdSet};

/// Fraction of the offered rate a trial must achieve.
pub const MIN_ACHIEVED: f64 = 0.98;
/// Largest fraction of late starts a passing trial may have.
pub const MAX_LATE: f64 = 0.01;
/// Generator CPU (fraction of its runtime's threads) that counts as saturated.
pub const GENERATOR_SATURATED: f64 = 0.90;
/// Machine-wide busy fraction below which the machine still had idle CPU.
pub const MACHINE_IDLE_BELOW: f64 = 0.90;

/// The thresholds a trial is judged by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Criteria {
    /// Per label (scenario order): the p99 SLO in ms, or none (client-side labels, labels
    /// without a p99 threshold).
    pub slo_p99_ms: Vec<Option<f64>>,
    /// Largest error rate.
    pub max_error_rate: f64,
}

impl Criteria {
    /// The criteria of `sc`: each label's p99 target (else its p99 seed threshold), or `slo` for
    /// every HTTP label.
    pub fn of(sc: &ResolvedScenario, slo: Option<f64>, max_error_rate: f64) -> Self {
        let p99 = |label: &str, set: ThresholdSet| {
            sc.def.thresholds.iter().find(|t| t.label == label && t.metric == "p99" && t.set == set).and_then(|t| t.max)
        };
        let slo_p99_ms = sc
            .def
            .requests
            .iter()
            .map(|r| match (r.method, slo) {
                (Method::Client, _) => None,
                (_, Some(s)) => Some(s),
                (_, None) => p99(&r.label, ThresholdSet::Target).or_else(|| p99(&r.label, ThresholdSet::Seed)),
            })
            .collect();
        Criteria { slo_p99_ms, max_error_rate }
    }
}

/// One criterion a trial failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "criterion", rename_all = "snake_case")]
pub enum Failure {
    /// Corrected p99 above the SLO.
    P99 {
        /// Label.
        label: String,
        /// Observed, ms.
        observed_ms: f64,
        /// SLO, ms.
        slo_ms: f64,
    },
    /// Error rate above the maximum.
    ErrorRate {
        /// Label.
        label: String,
        /// Observed fraction.
        observed: f64,
        /// Allowed fraction.
        max: f64,
    },
    /// Achieved below 98 % of offered.
    Achieved {
        /// Label.
        label: String,
        /// Completions per second in the window.
        achieved: f64,
        /// Offered per second.
        offered: f64,
    },
    /// Slots never started.
    Dropped {
        /// Label.
        label: String,
        /// How many.
        dropped: u64,
    },
    /// Too many late starts.
    Late {
        /// Label.
        label: String,
        /// Fraction of the window's starts.
        fraction: f64,
    },
}

impl Failure {
    /// Whether the criterion is about sending on schedule (the generator's side).
    pub fn is_schedule(&self) -> bool {
        matches!(self, Failure::Achieved { .. } | Failure::Dropped { .. } | Failure::Late { .. })
    }

    /// One line for reports.
    pub fn describe(&self) -> String {
        match self {
            Failure::P99 { label, observed_ms, slo_ms } => format!("{label} p99 {observed_ms:.2} ms > {slo_ms} ms"),
            Failure::ErrorRate { label, observed, max } => {
                format!("{label} errors {:.3} % > {:.3} %", observed * 100.0, max * 100.0)
            }
            Failure::Achieved { label, achieved, offered } => {
                format!("{label} achieved {achieved:.1}/s < 98 % of {offered:.1}/s")
            }
            Failure::Dropped { label, dropped } => format!("{label} {dropped} dropped starts"),
            Failure::Late { label, fraction } => format!("{label} late starts {:.2} % > 1 %", fraction * 100.0),
        }
    }
}

/// What one label did in a trial's window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelReading {
    /// Label.
    pub label: String,
    /// Offered per second (scheduled labels).
    pub offered: Option<f64>,
    /// Completions per second within the window.
    pub achieved: f64,
    /// Requests judged (intended within the window).
    pub count: u64,
    /// Corrected latency percentiles, ms.
    pub corrected: Percentiles,
    /// Service-time percentiles, ms.
    pub service: Percentiles,
    /// Error fraction.
    pub error_rate: f64,
    /// Schedule lag p99 (actual − intended start), ms.
    pub lag_p99_ms: f64,
    /// Late starts in the window.
    pub late: u64,
    /// Dropped starts.
    pub dropped: u64,
}

/// Reads each label's window: `warmup_s` and `measure_s` from the trial's time zero.
pub fn readings(
    sc: &ResolvedScenario,
    labels: &[LabelStats],
    counts: &[ScheduleCounts],
    warmup_s: u64,
    measure_s: u64,
) -> Vec<LabelReading> {
    labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let scheduled = !sc.def.requests[i].follow_up;
            let done: u64 =
                l.intervals.iter().skip(warmup_s as usize).take(measure_s as usize).map(|iv| iv.corrected.len()).sum();
            let c = counts.get(i).copied().unwrap_or_default();
            let n = l.count();
            LabelReading {
                label: l.label.clone(),
                offered: scheduled.then(|| sc.shard_rate(i)),
                achieved: done as f64 / measure_s.max(1) as f64,
                count: n,
                corrected: Percentiles::of(&l.corrected),
                service: Percentiles::of(&l.service),
                error_rate: if n == 0 { 0.0 } else { l.errors.total() as f64 / n as f64 },
                lag_p99_ms: if l.lag.is_empty() { 0.0 } else { l.lag.value_at_quantile(0.99) as f64 / 1000.0 },
                late: c.late,
                dropped: c.dropped,
            }
        })
        .collect()
}

/// Every criterion the readings fail.
pub fn failures(r: &[LabelReading], counts: &[ScheduleCounts], c: &Criteria) -> Vec<Failure> {
    let mut out = Vec::new();
    for (i, x) in r.iter().enumerate() {
        if let Some(slo) = c.slo_p99_ms.get(i).copied().flatten()
            && x.count > 0
            && x.corrected.p99 > slo
        {
            out.push(Failure::P99 { label: x.label.clone(), observed_ms: x.corrected.p99, slo_ms: slo });
        }
        if x.error_rate > c.max_error_rate {
            out.push(Failure::ErrorRate { label: x.label.clone(), observed: x.error_rate, max: c.max_error_rate });
        }
        let Some(offered) = x.offered else { continue };
        if x.achieved < MIN_ACHIEVED * offered {
            out.push(Failure::Achieved { label: x.label.clone(), achieved: x.achieved, offered });
        }
        if x.dropped > 0 {
            out.push(Failure::Dropped { label: x.label.clone(), dropped: x.dropped });
        }
        let measured = counts.get(i).map(|c| c.measured).unwrap_or(0);
        let late = if measured == 0 { 0.0 } else { x.late as f64 / measured as f64 };
        if late > MAX_LATE {
            out.push(Failure::Late { label: x.label.clone(), fraction: late });
        }
    }
    out
}

/// The CPU a trial used, percent of one core (machine: percent of all cores, 0–100).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CpuSplit {
    /// The server process(es).
    pub server: Option<f64>,
    /// The generator (this process).
    pub generator: Option<f64>,
    /// PostgreSQL (postmaster and backends).
    pub postgres: Option<f64>,
    /// The whole machine, busy percent of all cores.
    pub machine_busy: Option<f64>,
    /// Worker threads of the generator's runtime.
    pub generator_threads: usize,
    /// How much of the trial the generator's runtime workers were busy (not parked), percent
    /// of their wall time: near 100 % the generator cannot serve its schedule, whatever its
    /// process CPU says on a machine whose cores are shared.
    pub generator_busy: Option<f64>,
}

/// Why the generator, not the server, is to blame for `failures` (or `None`).
pub fn harness_bound(failures: &[Failure], r: &[LabelReading], c: &Criteria, cpu: &CpuSplit) -> Option<String> {
    if failures.is_empty() {
        return None;
    }
    let threads = cpu.generator_threads.max(1) as f64;
    if let Some(g) = cpu.generator
        && g >= GENERATOR_SATURATED * threads * 100.0
    {
        return Some(format!("generator CPU saturated: {g:.0} % of {threads:.0} thread(s)"));
    }
    if let Some(b) = cpu.generator_busy
        && b >= GENERATOR_SATURATED * 100.0
    {
        return Some(format!("generator runtime saturated: its {threads:.0} worker(s) busy {b:.0} % of the trial"));
    }
    let service_ok = r
        .iter()
        .enumerate()
        .all(|(i, x)| c.slo_p99_ms.get(i).copied().flatten().is_none_or(|slo| x.count == 0 || x.service.p99 <= slo));
    let idle = cpu.machine_busy.is_some_and(|b| b < MACHINE_IDLE_BELOW * 100.0);
    // Late or dropped starts are the generator's own evidence; an achieved rate short of the
    // offered one alone is not — a server at its throughput limit queues requests and falls
    // short too, with service times still inside the SLO.
    let lagged = failures.iter().any(|f| matches!(f, Failure::Late { .. } | Failure::Dropped { .. }));
    if lagged && failures.iter().all(Failure::is_schedule) && service_ok && idle {
        return Some(format!(
            "the schedule fell behind ({}) while service times met the SLO and the machine was {:.0} % busy",
            failures.iter().map(Failure::describe).collect::<Vec<_>>().join("; "),
            cpu.machine_busy.unwrap_or(0.0)
        ));
    }
    None
}

/// Total busy time of the current tokio runtime's workers, and their count.
pub fn runtime_busy() -> (std::time::Duration, usize) {
    let m = tokio::runtime::Handle::current().metrics();
    let n = m.num_workers();
    ((0..n).map(|w| m.worker_total_busy_duration(w)).sum(), n)
}

/// Busy percent of the runtime's workers between two [`runtime_busy`] readings `wall` apart.
pub fn runtime_busy_percent(
    before: std::time::Duration,
    after: (std::time::Duration, usize),
    wall: std::time::Duration,
) -> Option<f64> {
    let denom = wall.as_secs_f64() * after.1.max(1) as f64;
    (denom > 0.0).then(|| after.0.saturating_sub(before).as_secs_f64() / denom * 100.0)
}

/// Busy and total jiffies of the whole machine (`/proc/stat`'s first line).
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Busy percent of all cores between two [`machine_ticks`] readings.
pub fn machine_busy(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((b0, t0), (b1, t1)) = (before?, after?);
    let dt = t1.checked_sub(t0).filter(|d| *d > 0)?;
    Some(b1.saturating_sub(b0) as f64 / dt as f64 * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(p99: f64, service_p99: f64, achieved: f64) -> LabelReading {
        LabelReading {
            label: "a".into(),
            offered: Some(100.0),
            achieved,
            count: 1000,
            corrected: Percentiles { p99, ..Percentiles::default() },
            service: Percentiles { p99: service_p99, ..Percentiles::default() },
            error_rate: 0.0,
            lag_p99_ms: 0.0,
            late: 0,
            dropped: 0,
        }
    }

    fn counts() -> Vec<ScheduleCounts> {
        vec![ScheduleCounts { planned: 1000, issued: 1000, measured: 1000, ..Default::default() }]
    }

    #[test]
    fn each_criterion_fails_on_its_own_reading() {
        let c = Criteria { slo_p99_ms: vec![Some(10.0)], max_error_rate: 0.001 };
        assert!(failures(&[reading(9.0, 5.0, 99.0)], &counts(), &c).is_empty());
        let f = failures(&[reading(11.0, 5.0, 99.0)], &counts(), &c);
        assert!(matches!(f[..], [Failure::P99 { .. }]));
        let f = failures(&[reading(9.0, 5.0, 97.9)], &counts(), &c);
        assert!(matches!(f[..], [Failure::Achieved { .. }]));
        let mut r = reading(9.0, 5.0, 99.0);
        r.late = 11;
        r.dropped = 1;
        r.error_rate = 0.002;
        let f = failures(&[r], &counts(), &c);
        assert_eq!(f.len(), 3, "{f:?}");
    }

    #[test]
    fn a_saturated_generator_or_a_lagging_schedule_is_harness_bound() {
        let c = Criteria { slo_p99_ms: vec![Some(10.0)], max_error_rate: 0.001 };
        let lagging = [reading(50.0, 2.0, 90.0)];
        let late = vec![
            Failure::Achieved { label: "a".into(), achieved: 90.0, offered: 100.0 },
            Failure::Late { label: "a".into(), fraction: 0.2 },
        ];
        let idle = CpuSplit {
            generator: Some(60.0),
            machine_busy: Some(50.0),
            generator_threads: 2,
            generator_busy: Some(40.0),
            ..CpuSplit::default()
        };
        assert!(harness_bound(&late, &lagging, &c, &idle).is_some());
        // A shortfall without late starts is a server at its throughput limit.
        let short = vec![Failure::Achieved { label: "a".into(), achieved: 90.0, offered: 100.0 }];
        assert!(harness_bound(&short, &lagging, &c, &idle).is_none());
        // The same failure on a saturated machine could be the server's.
        let busy = CpuSplit { machine_busy: Some(99.0), ..idle };
        assert!(harness_bound(&late, &lagging, &c, &busy).is_none());
        // Slow service is the server's, whatever the schedule did.
        let slow = [reading(50.0, 40.0, 90.0)];
        assert!(harness_bound(&late, &slow, &c, &idle).is_none());
        // A generator at its threads' limit is harness-bound even with a p99 failure.
        let p99 = vec![Failure::P99 { label: "a".into(), observed_ms: 50.0, slo_ms: 10.0 }];
        let starved = CpuSplit { generator: Some(97.0), generator_threads: 1, ..CpuSplit::default() };
        assert!(harness_bound(&p99, &slow, &c, &starved).unwrap().contains("saturated"));
        // So is one whose runtime never parked, though a shared core gave it less CPU.
        let busy_runtime = CpuSplit { generator: Some(70.0), generator_busy: Some(99.0), ..busy };
        assert!(harness_bound(&p99, &slow, &c, &busy_runtime).unwrap().contains("runtime saturated"));
    }
}
