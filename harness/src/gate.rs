//! Judging a run: thresholds, and the noise-aware regression gate against a baseline.
//!
//! **Thresholds** ([`evaluate`]): each `[[thresholds]]` entry of a scenario is checked against
//! the label's whole-run figures: `max` means *observed < max* (with `max = 0` meaning *none
//! at all*), `min` means *observed ≥ min*. Seed thresholds decide the exit code; project
//! targets are reported. A label that completed no request is `not_measured`.
//!
//! **Comparison** ([`compare_series`], [`compare_dirs`]): one number per run cannot tell a
//! regression from noise, so each run contributes *samples*: its per-second interval histograms
//! (from the `.hlog`), merged into consecutive windows of at least [`NoiseFloor::min_window`]
//! requests so that a p99 per window means something at low rates. For each label and metric
//! (p50/p95/p99 of corrected latency, error rate) the windows' values of baseline and run are
//! compared with a one-sided Mann-Whitney U test. A change is **regressed** (or **improved**)
//! only when the medians differ by more than the noise floor — `max(rel × baseline, abs)` — *and*
//! the test supports it at level `alpha`; otherwise it is **within noise**. Too few windows on
//! either side give **insufficient data**, which never fails the gate.
//!
//! **Scheduler throughput** ([`compare_throughput`]) has no latency windows: a
//! `[scheduler_throughput]` scenario makes one call, then the fleet renews. Its samples are the
//! per-second completion counts of the drain (first and last, partial, seconds left out), and
//! a *drop* beyond the relative floor, supported by the same test, is a regression.

use std::collections::BTreeMap;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::metrics::{hlog, new_histogram};
use crate::report::summary::{self, LabelSummary, Summary};
use crate::scenario::scheduler_throughput::{RATE as THROUGHPUT_METRIC, SchedulerThroughput};
use crate::scenario::{SCENARIO_LABEL, ThresholdDef, ThresholdSet};

/// A threshold's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdVerdict {
    /// Held.
    Pass,
    /// Broken.
    Fail,
    /// No data (no requests, or no database for a database metric).
    NotMeasured,
}

/// One evaluated threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdResult {
    /// `seed` or `target`.
    pub set: ThresholdSet,
    /// Label (or `_scenario`).
    pub label: String,
    /// Metric name.
    pub metric: String,
    /// `<` or `>=`.
    pub op: String,
    /// The bound.
    pub limit: f64,
    /// Observed value.
    pub observed: Option<f64>,
    /// Outcome.
    pub verdict: ThresholdVerdict,
}

impl ThresholdResult {
    /// `p99 < 5000` style text.
    pub fn describe(&self) -> String {
        format!("{} {} {} {}", self.label, self.metric, self.op, fmt_num(self.limit))
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v}") }
}

/// The value of a label metric.
pub fn label_metric(l: &LabelSummary, metric: &str) -> Option<f64> {
    if l.count == 0 {
        return None;
    }
    Some(match metric {
        "p50" => l.corrected.p50,
        "p90" => l.corrected.p90,
        "p95" => l.corrected.p95,
        "p99" => l.corrected.p99,
        "p999" => l.corrected.p999,
        "max" => l.corrected.max,
        "service_p50" => l.service.p50,
        "service_p95" => l.service.p95,
        "service_p99" => l.service.p99,
        "error_rate" => l.error_rate,
        "error_rate_5xx" => l.error_rate_5xx,
        _ => return None,
    })
}

/// Evaluates thresholds against a scenario's labels and database metrics.
pub fn evaluate(
    defs: &[ThresholdDef],
    labels: &[LabelSummary],
    db_metrics: &BTreeMap<String, Option<f64>>,
) -> Vec<ThresholdResult> {
    defs.iter()
        .map(|t| {
            let observed = if t.label == SCENARIO_LABEL {
                db_metrics.get(&t.metric).copied().flatten()
            } else {
                labels.iter().find(|l| l.label == t.label).and_then(|l| label_metric(l, &t.metric))
            };
            let (op, limit) = match (t.max, t.min) {
                (Some(max), _) => ("<", max),
                (None, Some(min)) => (">=", min),
                (None, None) => ("<", f64::INFINITY),
            };
            let verdict = match observed {
                None => ThresholdVerdict::NotMeasured,
                Some(v) => {
                    let held = if op == ">=" {
                        v >= limit
                    } else if limit == 0.0 {
                        v == 0.0
                    } else {
                        v < limit
                    };
                    if held { ThresholdVerdict::Pass } else { ThresholdVerdict::Fail }
                }
            };
            ThresholdResult {
                set: t.set,
                label: t.label.clone(),
                metric: t.metric.clone(),
                op: op.into(),
                limit,
                observed,
                verdict,
            }
        })
        .collect()
}

/// Outcome of comparing one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareVerdict {
    /// Better beyond noise, statistically supported.
    Improved,
    /// No supported change beyond the noise floor.
    WithinNoise,
    /// Worse beyond noise, statistically supported.
    Regressed,
    /// Too few windows to judge.
    InsufficientData,
}

impl CompareVerdict {
    /// Text for tables.
    pub fn as_str(self) -> &'static str {
        match self {
            CompareVerdict::Improved => "improved",
            CompareVerdict::WithinNoise => "within noise",
            CompareVerdict::Regressed => "REGRESSED",
            CompareVerdict::InsufficientData => "insufficient data",
        }
    }
}

/// Noise floor and statistics settings.
///
/// The defaults are calibrated on the 2-core reference machine from A/A comparisons: four `ci`
/// runs of the same server code, compared pairwise (12 ordered pairs, see
/// `docs/operator/scale-baseline.md`). Between two runs the window medians of one label moved
/// by up to 51 % at p50, 63 % at p95 and 232 % (12 ms) at p99, and fleet throughput by 12 %,
/// with the Mann-Whitney test "supporting" each move: windows of one run are not independent
/// of that run's conditions (CPU steal, the database's state), so the test alone cannot tell a
/// regression from another run on the same code. The floors sit above those moves; on quieter,
/// dedicated hardware tighten them with `compare`'s flags.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NoiseFloor {
    /// Relative floor for p50 (0.60 = 60 % of the baseline's window median).
    pub rel: f64,
    /// Relative floor for p95.
    pub rel_p95: f64,
    /// Relative floor for p99.
    pub rel_p99: f64,
    /// Absolute floor for p50 latencies, ms.
    pub abs_ms: f64,
    /// Absolute floor for p95 latencies, ms.
    pub abs_ms_p95: f64,
    /// Absolute floor for p99 latencies, ms.
    pub abs_ms_p99: f64,
    /// Absolute floor for error rates (fraction).
    pub abs_error_rate: f64,
    /// Relative floor for scheduler throughput (certificates/s).
    pub rel_throughput: f64,
    /// Significance level of the one-sided Mann-Whitney test.
    pub alpha: f64,
    /// Minimum requests per window.
    pub min_window: u64,
    /// Minimum windows per side.
    pub min_samples: usize,
}

impl Default for NoiseFloor {
    fn default() -> Self {
        NoiseFloor {
            rel: 0.60,
            rel_p95: 0.75,
            rel_p99: 0.90,
            abs_ms: 1.0,
            abs_ms_p95: 2.0,
            abs_ms_p99: 15.0,
            abs_error_rate: 0.005,
            rel_throughput: 0.25,
            alpha: 0.01,
            min_window: 50,
            min_samples: 5,
        }
    }
}

/// One metric of one label compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricComparison {
    /// Scenario.
    pub scenario: String,
    /// Label.
    pub label: String,
    /// `p50`, `p95`, `p99`, `error_rate`, or `scheduler_certs_per_s` (label `_scenario`).
    pub metric: String,
    /// Baseline whole-run value.
    pub baseline: f64,
    /// Run whole-run value.
    pub run: f64,
    /// Median of baseline windows.
    pub baseline_median: f64,
    /// Median of run windows.
    pub run_median: f64,
    /// Relative change of the window medians, percent.
    pub change_pct: Option<f64>,
    /// One-sided p-value in the direction of the change.
    pub p_value: Option<f64>,
    /// Windows per side.
    pub samples: [usize; 2],
    /// Outcome.
    pub verdict: CompareVerdict,
}

/// A whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Baseline directory.
    pub baseline: String,
    /// Baseline commit.
    pub baseline_commit: String,
    /// Settings used.
    pub noise: NoiseFloor,
    /// Per label and metric.
    pub results: Vec<MetricComparison>,
    /// Any regression.
    pub regressed: bool,
}

/// The samples one run offers for one label.
#[derive(Debug, Clone, Default)]
pub struct LabelSeries {
    /// Per-second corrected histograms.
    pub intervals: Vec<Histogram<u64>>,
    /// Per-second (count, errors).
    pub errors: Vec<(u64, u64)>,
}

/// Merges consecutive intervals into windows of at least `min` requests (a trailing short
/// window is folded into the previous one).
pub fn windows(intervals: &[Histogram<u64>], min: u64) -> Vec<Histogram<u64>> {
    let mut out: Vec<Histogram<u64>> = Vec::new();
    let mut cur = new_histogram();
    for h in intervals {
        let _ = cur.add(h);
        if cur.len() >= min.max(1) {
            out.push(std::mem::replace(&mut cur, new_histogram()));
        }
    }
    if !cur.is_empty() {
        match out.last_mut() {
            Some(last) => {
                let _ = last.add(&cur);
            }
            None => out.push(cur),
        }
    }
    out
}

fn error_windows(errors: &[(u64, u64)], min: u64) -> Vec<f64> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let (mut n, mut e) = (0u64, 0u64);
    for &(c, er) in errors {
        n += c;
        e += er;
        if n >= min.max(1) {
            out.push((n, e));
            (n, e) = (0, 0);
        }
    }
    if n > 0 {
        match out.last_mut() {
            Some(last) => {
                last.0 += n;
                last.1 += e;
            }
            None => out.push((n, e)),
        }
    }
    out.into_iter().map(|(n, e)| e as f64 / n as f64).collect()
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    if s.len().is_multiple_of(2) { (s[m - 1] + s[m]) / 2.0 } else { s[m] }
}

/// One-sided Mann-Whitney U test: p-value for "`x` tends to be larger than `y`" (normal
/// approximation with tie correction and continuity correction).
pub fn mann_whitney_greater(x: &[f64], y: &[f64]) -> f64 {
    let (n1, n2) = (x.len() as f64, y.len() as f64);
    if x.is_empty() || y.is_empty() {
        return 1.0;
    }
    let mut all: Vec<(f64, bool)> = x.iter().map(|&v| (v, true)).chain(y.iter().map(|&v| (v, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = all.len();
    let mut rank_x = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        // Ranks i+1..=j+1 share their average.
        let avg = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        rank_x += all[i..=j].iter().filter(|(_, is_x)| *is_x).count() as f64 * avg;
        i = j + 1;
    }
    let u = rank_x - n1 * (n1 + 1.0) / 2.0;
    let nf = n as f64;
    let var = n1 * n2 / 12.0 * ((nf + 1.0) - tie_term / (nf * (nf - 1.0)));
    if var <= 0.0 {
        return 1.0;
    }
    let z = (u - n1 * n2 / 2.0 - 0.5) / var.sqrt();
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Complementary error function (Numerical Recipes' erfcc, |error| < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Judges one metric from per-window samples.
/// `rel` and `abs_floor` are the metric's floors: a rise counts only beyond
/// `max(rel × |baseline median|, abs_floor)`, a fall only beyond
/// `max(rel / (1 + rel) × |baseline median|, abs_floor)` — the same ratio either way (with
/// `rel` = 0.6, ×1.6 is a regression and ÷1.6 an improvement).
pub fn judge(
    base: &[f64],
    run: &[f64],
    rel: f64,
    abs_floor: f64,
    noise: &NoiseFloor,
) -> (CompareVerdict, Option<f64>, f64, f64) {
    let (mb, mr) = (median(base), median(run));
    if base.len() < noise.min_samples || run.len() < noise.min_samples {
        return (CompareVerdict::InsufficientData, None, mb, mr);
    }
    let floor = (rel * mb.abs()).max(abs_floor);
    let floor_down = (rel / (1.0 + rel) * mb.abs()).max(abs_floor);
    let diff = mr - mb;
    if diff > 0.0 {
        let p = mann_whitney_greater(run, base);
        let v = if diff > floor && p < noise.alpha { CompareVerdict::Regressed } else { CompareVerdict::WithinNoise };
        (v, Some(p), mb, mr)
    } else {
        let p = mann_whitney_greater(base, run);
        let v =
            if -diff > floor_down && p < noise.alpha { CompareVerdict::Improved } else { CompareVerdict::WithinNoise };
        (v, Some(p), mb, mr)
    }
}

/// Compares one label's series; `whole` gives the whole-run (baseline, run) value per metric.
pub fn compare_series(
    scenario: &str,
    label: &str,
    base: &LabelSeries,
    run: &LabelSeries,
    whole: &dyn Fn(&str) -> (f64, f64),
    noise: &NoiseFloor,
) -> Vec<MetricComparison> {
    let bw = windows(&base.intervals, noise.min_window);
    let rw = windows(&run.intervals, noise.min_window);
    let mut out = Vec::new();
    for (metric, q, rel, abs) in [
        ("p50", 0.50, noise.rel, noise.abs_ms),
        ("p95", 0.95, noise.rel_p95, noise.abs_ms_p95),
        ("p99", 0.99, noise.rel_p99, noise.abs_ms_p99),
    ] {
        let b: Vec<f64> = bw.iter().map(|h| h.value_at_quantile(q) as f64 / 1000.0).collect();
        let r: Vec<f64> = rw.iter().map(|h| h.value_at_quantile(q) as f64 / 1000.0).collect();
        out.push(build(scenario, label, metric, &b, &r, (rel, abs), whole, noise));
    }
    let b = error_windows(&base.errors, noise.min_window);
    let r = error_windows(&run.errors, noise.min_window);
    out.push(build(scenario, label, "error_rate", &b, &r, (0.0, noise.abs_error_rate), whole, noise));
    out
}

#[allow(clippy::too_many_arguments)]
fn build(
    scenario: &str,
    label: &str,
    metric: &str,
    b: &[f64],
    r: &[f64],
    (rel, abs): (f64, f64),
    whole: &dyn Fn(&str) -> (f64, f64),
    noise: &NoiseFloor,
) -> MetricComparison {
    let (verdict, p_value, mb, mr) = judge(b, r, rel, abs, noise);
    let (baseline, run) = whole(metric);
    MetricComparison {
        scenario: scenario.into(),
        label: label.into(),
        metric: metric.into(),
        baseline,
        run,
        baseline_median: mb,
        run_median: mr,
        change_pct: (mb != 0.0).then(|| (mr - mb) / mb * 100.0),
        p_value,
        samples: [b.len(), r.len()],
        verdict,
    }
}

/// The throughput samples of a measured scheduler-throughput scenario: completions in each
/// whole second of the drain (the first second also holds the call, the last is partial).
pub fn throughput_samples(t: &SchedulerThroughput) -> Vec<f64> {
    if t.status != "measured" || t.series.len() < 3 {
        return Vec::new();
    }
    t.series[1..t.series.len() - 1].iter().map(|p| p.per_s).collect()
}

/// Compares two scheduler-throughput measurements (metric `scheduler_certs_per_s`, label
/// `_scenario`). Higher is better: the samples are judged negated, so a drop is a regression.
pub fn compare_throughput(
    scenario: &str,
    base: &SchedulerThroughput,
    run: &SchedulerThroughput,
    noise: &NoiseFloor,
) -> MetricComparison {
    let neg = |t: &SchedulerThroughput| throughput_samples(t).into_iter().map(|v| -v).collect::<Vec<f64>>();
    let (b, r) = (neg(base), neg(run));
    let (verdict, p_value, mb, mr) = judge(&b, &r, noise.rel_throughput, 0.0, noise);
    MetricComparison {
        scenario: scenario.into(),
        label: SCENARIO_LABEL.into(),
        metric: THROUGHPUT_METRIC.into(),
        baseline: base.certs_per_s,
        run: run.certs_per_s,
        baseline_median: -mb,
        run_median: -mr,
        change_pct: (mb != 0.0).then(|| (mr - mb) / mb * 100.0),
        p_value,
        samples: [b.len(), r.len()],
        verdict,
    }
}

/// Problems comparing.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// A run directory could not be read.
    #[error("{0}")]
    Read(String),
}

fn series(dir: &Path, s: &Summary) -> Result<BTreeMap<(String, String), LabelSeries>, CompareError> {
    let mut out = BTreeMap::new();
    for sc in &s.scenarios {
        let logged =
            hlog::read(&dir.join(&sc.hlog)).map_err(|e| CompareError::Read(format!("{}: {e}", dir.display())))?;
        for l in &sc.labels {
            let mut intervals = Vec::new();
            if let Some(ivs) = logged.get(&l.label) {
                intervals = ivs.iter().map(|iv| iv.histogram.clone()).collect();
            }
            let errors = l.intervals.iter().map(|i| (i.count, i.errors)).collect();
            out.insert((sc.name.clone(), l.label.clone()), LabelSeries { intervals, errors });
        }
    }
    Ok(out)
}

/// Compares the run in `run_dir` with the baseline in `base_dir`, label by label (labels
/// present in both).
pub fn compare_dirs(base_dir: &Path, run_dir: &Path, noise: &NoiseFloor) -> Result<Comparison, CompareError> {
    let bs = summary::read(base_dir).map_err(|e| CompareError::Read(e.to_string()))?;
    let rs = summary::read(run_dir).map_err(|e| CompareError::Read(e.to_string()))?;
    let bser = series(base_dir, &bs)?;
    let rser = series(run_dir, &rs)?;
    let mut results = Vec::new();
    for sc in &rs.scenarios {
        for l in &sc.labels {
            let key = (sc.name.clone(), l.label.clone());
            let (Some(b), Some(r)) = (bser.get(&key), rser.get(&key)) else { continue };
            let bl = bs
                .scenarios
                .iter()
                .find(|x| x.name == sc.name)
                .and_then(|x| x.labels.iter().find(|y| y.label == l.label));
            let Some(bl) = bl else { continue };
            let whole = |m: &str| (label_metric(bl, m).unwrap_or(0.0), label_metric(l, m).unwrap_or(0.0));
            results.extend(compare_series(&sc.name, &l.label, b, r, &whole, noise));
        }
        let base_t = bs.scenarios.iter().find(|x| x.name == sc.name).and_then(|x| x.scheduler_throughput.as_ref());
        if let (Some(b), Some(r)) = (base_t, sc.scheduler_throughput.as_ref()) {
            results.push(compare_throughput(&sc.name, b, r, noise));
        }
    }
    let regressed = results.iter().any(|r| r.verdict == CompareVerdict::Regressed);
    Ok(Comparison {
        baseline: base_dir.display().to_string(),
        baseline_commit: bs.commit,
        noise: *noise,
        results,
        regressed,
    })
}

/// The comparison as a Markdown table.
pub fn comparison_table(c: &Comparison) -> String {
    let mut s = format!(
        "Baseline `{}` (commit {}); noise floors: p50 {:.0} % / {} ms, p95 {:.0} % / {} ms, p99 {:.0} % / {} ms, \
         error rate {}, throughput {:.0} %; alpha {}\n\n\
         `baseline`/`run` are whole-run values; the verdict judges the per-window samples, whose \
         medians and their change are shown.\n\n\
         | scenario | label | metric | baseline | run | window medians | change | p | verdict |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        c.baseline,
        c.baseline_commit,
        c.noise.rel * 100.0,
        c.noise.abs_ms,
        c.noise.rel_p95 * 100.0,
        c.noise.abs_ms_p95,
        c.noise.rel_p99 * 100.0,
        c.noise.abs_ms_p99,
        c.noise.abs_error_rate,
        c.noise.rel_throughput * 100.0,
        c.noise.alpha
    );
    for r in &c.results {
        let fmt = |v: f64| match r.metric.as_str() {
            "error_rate" => format!("{:.3} %", v * 100.0),
            THROUGHPUT_METRIC => format!("{v:.1}/s"),
            _ => format!("{v:.2} ms"),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} → {} | {} | {} | {} |\n",
            r.scenario,
            r.label,
            r.metric,
            fmt(r.baseline),
            fmt(r.run),
            fmt(r.baseline_median),
            fmt(r.run_median),
            r.change_pct.map(|c| format!("{c:+.1} %")).unwrap_or_else(|| "–".into()),
            r.p_value.map(|p| format!("{p:.3}")).unwrap_or_else(|| "–".into()),
            r.verdict.as_str()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per-second histograms: `secs` seconds of `per_s` requests around `center_ms` with a
    /// deterministic ±`spread` relative jitter.
    fn synth(secs: usize, per_s: u64, center_ms: f64, spread: f64, seed: u64) -> LabelSeries {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut intervals = Vec::new();
        for _ in 0..secs {
            let mut h = new_histogram();
            for _ in 0..per_s {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let u = (x >> 11) as f64 / (1u64 << 53) as f64; // [0,1)
                let v = center_ms * (1.0 + spread * (2.0 * u - 1.0));
                h.saturating_record((v * 1000.0) as u64);
            }
            intervals.push(h);
        }
        LabelSeries { intervals, errors: vec![(per_s, 0); secs] }
    }

    fn verdicts(base: &LabelSeries, run: &LabelSeries) -> Vec<CompareVerdict> {
        let whole = |_: &str| (0.0, 0.0);
        compare_series("s", "l", base, run, &whole, &NoiseFloor::default()).into_iter().map(|m| m.verdict).collect()
    }

    #[test]
    fn twice_the_latency_is_a_regression() {
        let v = verdicts(&synth(60, 100, 30.0, 0.2, 1), &synth(60, 100, 60.0, 0.2, 2));
        assert_eq!(&v[..3], &[CompareVerdict::Regressed; 3]);
        assert_eq!(v[3], CompareVerdict::WithinNoise);
    }

    #[test]
    fn half_the_latency_is_an_improvement() {
        let v = verdicts(&synth(60, 100, 30.0, 0.2, 1), &synth(60, 100, 15.0, 0.2, 2));
        assert_eq!(&v[..3], &[CompareVerdict::Improved; 3]);
    }

    #[test]
    fn a_small_but_significant_shift_stays_within_the_noise_floor() {
        // +40 %, as much as two runs of the same code moved on the 2-core reference machine:
        // Mann-Whitney sees it, the calibrated floors do not let it fail the gate.
        let v = verdicts(&synth(60, 100, 10.0, 0.2, 1), &synth(60, 100, 14.0, 0.2, 2));
        assert_eq!(&v[..3], &[CompareVerdict::WithinNoise; 3]);
        // With the floors of a quiet, dedicated runner the same shift is a regression.
        let tight = NoiseFloor {
            rel: 0.10,
            rel_p95: 0.10,
            rel_p99: 0.10,
            abs_ms_p95: 1.0,
            abs_ms_p99: 1.0,
            ..NoiseFloor::default()
        };
        let whole = |_: &str| (0.0, 0.0);
        let v: Vec<_> =
            compare_series("s", "l", &synth(60, 100, 10.0, 0.2, 1), &synth(60, 100, 14.0, 0.2, 2), &whole, &tight)
                .into_iter()
                .map(|m| m.verdict)
                .collect();
        assert_eq!(&v[..3], &[CompareVerdict::Regressed; 3]);
    }

    #[test]
    fn two_runs_of_the_same_distribution_are_within_noise() {
        let v = verdicts(&synth(60, 100, 10.0, 0.5, 1), &synth(60, 100, 10.0, 0.5, 99));
        assert!(v.iter().all(|v| *v == CompareVerdict::WithinNoise), "{v:?}");
    }

    #[test]
    fn one_bad_window_is_not_a_regression() {
        // A single slow second moves one sample, not the distribution: the test does not
        // support it even though the whole-run p99 would jump.
        let base = synth(60, 100, 10.0, 0.2, 1);
        let mut run = synth(60, 100, 10.0, 0.2, 2);
        run.intervals[30] = synth(1, 100, 500.0, 0.1, 3).intervals[0].clone();
        let v = verdicts(&base, &run);
        assert_eq!(&v[..3], &[CompareVerdict::WithinNoise; 3]);
    }

    #[test]
    fn a_rising_error_rate_is_a_regression_and_too_few_windows_are_insufficient() {
        let base = synth(60, 100, 10.0, 0.2, 1);
        let mut run = synth(60, 100, 10.0, 0.2, 2);
        run.errors = vec![(100, 5); 60];
        assert_eq!(verdicts(&base, &run)[3], CompareVerdict::Regressed);
        let short = synth(3, 100, 10.0, 0.2, 4);
        assert!(verdicts(&base, &short).iter().all(|v| *v == CompareVerdict::InsufficientData));
    }

    fn drain(per_s: &[f64]) -> SchedulerThroughput {
        let mut versions = 0;
        let series: Vec<crate::metrics::fleet::FleetPoint> = per_s
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                versions += n as u64;
                crate::metrics::fleet::FleetPoint { t_s: (i + 1) as f64, versions, per_s: n }
            })
            .collect();
        SchedulerThroughput {
            status: "measured".into(),
            selected: versions,
            matched: versions,
            enqueued: versions,
            skipped: 0,
            completed: versions,
            failed: 0,
            cancelled: 0,
            quiesce_s: 0.0,
            call_ms: 500.0,
            seconds: per_s.len() as f64,
            certs_per_s: versions as f64 / per_s.len() as f64,
            series,
        }
    }

    #[test]
    fn a_slower_fleet_drain_is_a_regression_and_a_faster_one_an_improvement() {
        let noise = NoiseFloor::default();
        let fast = drain(&[300.0, 1010.0, 990.0, 1020.0, 1000.0, 980.0, 1005.0, 995.0, 400.0]);
        let slow = drain(&[200.0, 610.0, 590.0, 620.0, 600.0, 580.0, 605.0, 595.0, 300.0]);
        let c = compare_throughput("fleet_renewal", &fast, &slow, &noise);
        assert_eq!(c.verdict, CompareVerdict::Regressed, "{c:?}");
        assert_eq!((c.metric.as_str(), c.label.as_str()), ("scheduler_certs_per_s", "_scenario"));
        assert_eq!(c.samples, [7, 7], "first and last seconds are left out");
        assert_eq!((c.baseline_median, c.run_median), (1000.0, 600.0));
        assert!((c.change_pct.unwrap() + 40.0).abs() < 1e-9, "{c:?}");
        assert_eq!(compare_throughput("fleet_renewal", &slow, &fast, &noise).verdict, CompareVerdict::Improved);
        let same = drain(&[250.0, 1000.0, 1015.0, 985.0, 1010.0, 990.0, 1000.0, 1002.0, 100.0]);
        assert_eq!(compare_throughput("fleet_renewal", &fast, &same, &noise).verdict, CompareVerdict::WithinNoise);
        // A 2-second smoke drain has no whole second to judge.
        let short = drain(&[900.0, 1000.0, 100.0]);
        assert_eq!(
            compare_throughput("fleet_renewal", &fast, &short, &noise).verdict,
            CompareVerdict::InsufficientData
        );
    }

    #[test]
    fn mann_whitney_agrees_with_a_textbook_value() {
        // Clearly separated samples of 10: p is tiny; identical samples: p ≈ 0.5 or more.
        let a: Vec<f64> = (0..10).map(|i| 10.0 + i as f64).collect();
        let b: Vec<f64> = (0..10).map(|i| i as f64).collect();
        assert!(mann_whitney_greater(&a, &b) < 0.001);
        assert!(mann_whitney_greater(&b, &a) > 0.99);
        assert!(mann_whitney_greater(&a, &a) >= 0.5);
    }

    #[test]
    fn zero_means_none_and_min_is_inclusive() {
        use crate::scenario::ThresholdDef;
        let l = LabelSummary {
            label: "a".into(),
            count: 10,
            target_rate: None,
            achieved_rate: 1.0,
            corrected: crate::metrics::Percentiles { p99: 12.0, ..Default::default() },
            service: Default::default(),
            errors: Default::default(),
            error_rate: 0.0,
            error_rate_5xx: 0.0,
            status_counts: Default::default(),
            rate_limited_429: 0,
            planned: 0,
            late_starts: 0,
            dropped_starts: 0,
            intervals: vec![],
        };
        let t = |metric: &str, max: Option<f64>, min: Option<f64>, label: &str| ThresholdDef {
            set: ThresholdSet::Seed,
            label: label.into(),
            metric: metric.into(),
            max,
            min,
        };
        let mut db = BTreeMap::new();
        db.insert("rate".to_string(), Some(500.0));
        let r = evaluate(
            &[
                t("error_rate", Some(0.0), None, "a"),
                t("p99", Some(10.0), None, "a"),
                t("rate", None, Some(500.0), SCENARIO_LABEL),
            ],
            &[l],
            &db,
        );
        let v: Vec<_> = r.iter().map(|r| r.verdict).collect();
        assert_eq!(v, [ThresholdVerdict::Pass, ThresholdVerdict::Fail, ThresholdVerdict::Pass]);
    }

    #[test]
    fn a_min_threshold_fails_below_its_bound_and_is_not_measured_without_a_value() {
        let t = |metric: &str| ThresholdDef {
            set: ThresholdSet::Target,
            label: SCENARIO_LABEL.into(),
            metric: metric.into(),
            max: None,
            min: Some(500.0),
        };
        let db = BTreeMap::from([("slow".to_string(), Some(499.9)), ("absent".to_string(), None)]);
        let r = evaluate(&[t("slow"), t("absent")], &[], &db);
        assert_eq!((r[0].op.as_str(), r[0].verdict), (">=", ThresholdVerdict::Fail));
        assert_eq!(r[1].verdict, ThresholdVerdict::NotMeasured);
    }
}
