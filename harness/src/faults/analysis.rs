//! What the recorder saw around each fault: error window, errors by class, recovery time, and
//! the accounting of every planned request.
//!
//! - A fault's errors are those that ended from its start until the end of its recovery
//!   second (or the next fault's start, whichever is first); errors before the first fault or
//!   after a fault's recovery second are *outside* every fault window.
//! - The recovery second is the first second, from the one in which the fault ended, in which
//!   requests completed and every label that completed some met the scenario's seed
//!   thresholds on `p99` (corrected) and `error_rate` — or the scenario's `[recovery]` bounds
//!   where it gives them (a label with no error-rate bound must have no error in it). Recovery time = that second's start − the fault's
//!   end, at least 0; one-second resolution, as the intervals have.

use crate::metrics::{ErrorCounts, LabelStats};
use crate::scenario::engine::ScenarioRun;
use crate::scenario::{Model, ResolvedScenario, ThresholdSet};

use super::{Accounting, FaultEvent, FaultReport};

/// Per-label seed bounds a recovered second must meet.
struct Judge {
    p99_ms: Vec<Option<f64>>,
    error_rate: Vec<Option<f64>>,
}

impl Judge {
    fn of(sc: &ResolvedScenario) -> Self {
        let bound = |label: &str, metric: &str| {
            sc.def
                .thresholds
                .iter()
                .filter(|t| t.set == ThresholdSet::Seed && t.label == label && t.metric == metric)
                .filter_map(|t| t.max)
                .reduce(f64::min)
        };
        let own = sc.def.recovery;
        Judge {
            p99_ms: sc
                .def
                .requests
                .iter()
                .map(|r| own.and_then(|o| o.p99_ms).or_else(|| bound(&r.label, "p99")))
                .collect(),
            error_rate: sc
                .def
                .requests
                .iter()
                .map(|r| own.and_then(|o| o.error_rate).or_else(|| bound(&r.label, "error_rate")))
                .collect(),
        }
    }

    /// Whether second `k` completed requests and every label that completed some met its bounds.
    fn good(&self, labels: &[LabelStats], k: usize) -> bool {
        let mut any = false;
        for (i, l) in labels.iter().enumerate() {
            let Some(iv) = l.intervals.get(k) else { continue };
            let n = iv.corrected.len();
            if n == 0 {
                continue;
            }
            any = true;
            let p99 = iv.corrected.value_at_quantile(0.99) as f64 / 1000.0;
            if self.p99_ms.get(i).copied().flatten().is_some_and(|m| p99 >= m) {
                return false;
            }
            let limit = self.error_rate.get(i).copied().flatten().unwrap_or(0.0);
            let rate = iv.errors as f64 / n as f64;
            if (limit == 0.0 && iv.errors > 0) || (limit > 0.0 && rate >= limit) {
                return false;
            }
        }
        any
    }

    fn describe(&self, sc: &ResolvedScenario) -> String {
        let parts: Vec<String> = sc
            .def
            .requests
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let p = self.p99_ms[i].map(|m| format!("p99 < {m} ms, ")).unwrap_or_default();
                let e =
                    self.error_rate[i].filter(|m| *m > 0.0).map_or("no error".into(), |m| format!("error rate < {m}"));
                format!("{}: {p}{e}", r.label)
            })
            .collect();
        parts.join("; ")
    }
}

/// Reports every fault of a trial, the errors outside their windows, and the accounting.
pub fn analyze(
    sc: &ResolvedScenario,
    run: &ScenarioRun,
    events: &[FaultEvent],
    drain: bool,
) -> (Vec<FaultReport>, u64, Accounting) {
    let judge = Judge::of(sc);
    let seconds = run.labels.iter().map(|l| l.intervals.len()).max().unwrap_or(0);
    let mut marks: Vec<_> = run.labels.iter().flat_map(|l| l.error_marks.iter().copied()).collect();
    marks.sort_by_key(|m| m.end_ms);
    let mut attributed = 0u64;
    let mut reports = Vec::new();
    for (j, ev) in events.iter().enumerate() {
        let recovered =
            (!drain).then(|| (ev.ended_s.floor() as usize..seconds).find(|&k| judge.good(&run.labels, k))).flatten();
        let from_ms = (ev.started_s * 1000.0) as u64;
        let next_ms = events.get(j + 1).map_or(u64::MAX, |n| (n.started_s * 1000.0) as u64);
        let to_ms = recovered.map_or(next_ms, |k| ((k as u64 + 1) * 1000).min(next_ms));
        let mine: Vec<_> = marks.iter().filter(|m| m.end_ms >= from_ms && m.end_ms < to_ms).collect();
        let mut errors = ErrorCounts::default();
        for m in &mine {
            errors.count(m.class);
        }
        attributed += mine.len() as u64;
        let recovery = match (drain, recovered) {
            (true, _) => "not judged: a drain has no request load per second".to_string(),
            (false, Some(k)) => format!("second {k} was the first back within {}", judge.describe(sc)),
            (false, None) => format!("never back within {} before the run ended", judge.describe(sc)),
        };
        reports.push(FaultReport {
            kind: ev.def.kind.as_str().into(),
            at_s: ev.def.at_s,
            duration_s: ev.def.duration_s.unwrap_or(0.0),
            started_s: ev.started_s,
            ended_s: ev.ended_s,
            detail: ev.detail.clone(),
            error_window: match (mine.first(), mine.last()) {
                (Some(a), Some(b)) => Some([a.end_ms as f64 / 1000.0, b.end_ms as f64 / 1000.0]),
                _ => None,
            },
            errors,
            recovery_s: recovered.map(|k| (k as f64 - ev.ended_s).max(0.0)),
            recovery,
            reclaim: ev.reclaim.clone(),
            failed: ev.failed.clone(),
        });
    }
    let outside = marks.len() as u64 - attributed;
    (reports, outside, accounting(sc, run))
}

/// Every scheduled label's planned requests: answered, failed, dropped, or unaccounted.
pub fn accounting(sc: &ResolvedScenario, run: &ScenarioRun) -> Accounting {
    let mut a = Accounting::default();
    for (i, l) in run.labels.iter().enumerate() {
        if sc.def.requests.get(i).is_some_and(|r| r.follow_up) {
            continue;
        }
        let recorded: u64 = l.intervals.iter().map(|iv| iv.corrected.len()).sum();
        let transport = l.error_marks.iter().filter(|m| m.class == crate::metrics::ErrorClass::Transport).count();
        let sched = run.schedule.get(i).copied().unwrap_or_default();
        let open = sc.def.load.model == Model::Open && sched.planned > 0;
        let (planned, issued) = if open { (sched.planned, sched.issued) } else { (recorded, recorded) };
        a.planned += planned;
        a.issued += issued;
        a.answered += recorded.saturating_sub(transport as u64);
        a.failed += l.error_marks.len() as u64;
        a.dropped += if open { sched.dropped } else { 0 };
        a.unaccounted += issued.saturating_sub(recorded);
    }
    a
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, SystemTime};

    use super::*;
    use crate::faults::{FaultDef, FaultKind};
    use crate::metrics::{Outcome, Recorder};
    use crate::scenario::ScenarioDef;
    use crate::scenario::engine::ScheduleCounts;

    const SCENARIO: &str = r#"
name = "t"
description = "d"
[load]
model = "open"
duration_s = 10
[[requests]]
label = "a"
method = "GET"
path = "/x"
expect = [200]
rate = 10
[[thresholds]]
set = "seed"
label = "a"
metric = "p99"
max = 100
[[thresholds]]
set = "seed"
label = "a"
metric = "error_rate"
max = 0.2
"#;

    /// Ten requests a second for 10 s, 5 ms each, except: one 503 in second 1; half 503s in
    /// second 5 (the fault); answers in second 6 due 500 ms before they ended (the backlog).
    fn run() -> ScenarioRun {
        let t0 = Instant::now();
        let r = Recorder::new(&["a".into()]);
        r.set_t0(t0);
        let ms = Duration::from_millis;
        for s in 0..10u64 {
            for n in 0..10u64 {
                let end = t0 + ms(s * 1000 + n * 90 + 5);
                let outcome =
                    if matches!((s, n), (1, 0) | (5, 0..5)) { Outcome::Status(503) } else { Outcome::Ok(200) };
                let due = if s == 6 { end - ms(500) } else { end - ms(5) };
                r.record(0, due, due, end, outcome, false);
            }
        }
        ScenarioRun {
            labels: r.snapshot(),
            schedule: vec![ScheduleCounts { planned: 101, issued: 101, dropped: 0, late: 0, measured: 101 }],
            started_at: SystemTime::now(),
            elapsed: Duration::from_secs(10),
            t0,
            cancelled: false,
        }
    }

    fn restart(started_s: f64, ended_s: f64) -> FaultEvent {
        let now = chrono::Utc::now();
        FaultEvent {
            def: FaultDef { kind: FaultKind::DbRestart, at_s: 5.0, duration_s: None },
            started_s,
            started_at: now,
            ended_s,
            ended_at: now,
            detail: "restart".into(),
            server: None,
            reclaim: None,
            failed: None,
        }
    }

    #[test]
    fn a_faults_errors_window_and_recovery_come_from_the_seconds_after_it() {
        let sc = ScenarioDef::parse(SCENARIO, std::path::Path::new("t.toml")).unwrap().resolve("scale").unwrap();
        let (reports, outside, acc) = analyze(&sc, &run(), &[restart(5.0, 5.5)], false);
        let f = &reports[0];
        // Second 5 has 50 % errors, second 6 a 500-ms p99: second 7 is the first back.
        assert_eq!(f.recovery_s, Some(1.5), "{}", f.recovery);
        assert_eq!(f.errors.status_5xx, 5);
        let [first, last] = f.error_window.unwrap();
        assert!((5.0..5.4).contains(&first) && (5.0..5.4).contains(&last) && first < last, "{first} {last}");
        // The 503 of second 1 came before the fault.
        assert_eq!(outside, 1);
        // 101 started, 100 recorded: one request the harness lost.
        assert_eq!((acc.planned, acc.answered, acc.failed, acc.unaccounted), (101, 100, 6, 1));
        // A drain is not judged per second.
        let (drained, _, _) = analyze(&sc, &run(), &[restart(5.0, 5.5)], true);
        assert!(drained[0].recovery_s.is_none() && drained[0].recovery.starts_with("not judged"));
    }
}
