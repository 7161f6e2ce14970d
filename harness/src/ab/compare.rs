//! Round-by-round comparison: per label × metric, the log ratio log(B/A) of each round, the
//! Wilcoxon signed-rank test of those ratios against zero, the bootstrap confidence interval of
//! their median, and the verdict of that interval against ± the minimum effect.

use serde::{Deserialize, Serialize};

use super::output::{Round, TrialRecord};
use crate::cli::MinEffects;
use crate::stats;

/// Error rates are compared on `rate + ERROR_FLOOR`, so that zero errors on both sides is a
/// ratio of 1 and a side with no errors does not make the ratio infinite.
pub const ERROR_FLOOR: f64 = 0.001;
/// Bootstrap resamples of each interval.
pub const RESAMPLES: usize = 10_000;

/// What is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Corrected latency p50 (ms) over the measured window.
    P50,
    /// Corrected latency p95.
    P95,
    /// Corrected latency p99.
    P99,
    /// Error fraction.
    ErrorRate,
    /// Certificates/s of a fleet scenario.
    Throughput,
}

impl Metric {
    /// Whether a rise is the bad direction.
    pub fn higher_is_worse(self) -> bool {
        self != Metric::Throughput
    }

    /// The minimum effect that applies.
    pub fn min_effect(self, m: &MinEffects) -> f64 {
        match self {
            Metric::P50 => m.p50,
            Metric::P95 => m.p95,
            Metric::P99 => m.p99,
            Metric::ErrorRate => m.error_rate,
            Metric::Throughput => m.throughput,
        }
    }

    /// Name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::P50 => "p50",
            Metric::P95 => "p95",
            Metric::P99 => "p99",
            Metric::ErrorRate => "error rate",
            Metric::Throughput => "certificates/s",
        }
    }

    /// log(B/A) of one round, when both values allow a ratio.
    pub fn log_ratio(self, a: f64, b: f64) -> Option<f64> {
        let (a, b) = if self == Metric::ErrorRate { (a + ERROR_FLOOR, b + ERROR_FLOOR) } else { (a, b) };
        (a > 0.0 && b > 0.0 && a.is_finite() && b.is_finite()).then(|| (b / a).ln())
    }
}

/// The outcome of one label × metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The interval lies beyond the minimum effect in the bad direction (and p ≤ alpha).
    Regressed,
    /// The interval lies within ± the minimum effect.
    NoChange,
    /// The interval lies beyond the minimum effect in the good direction (and p ≤ alpha).
    Improved,
    /// Anything else: more rounds (or a quieter machine) are needed to tell.
    Inconclusive,
}

impl Verdict {
    /// Name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Regressed => "REGRESSED",
            Verdict::NoChange => "no change",
            Verdict::Improved => "improved",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// How the comparison is judged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Judging {
    /// Minimum effects, relative.
    pub min_effects: MinEffects,
    /// Level of the bootstrap interval.
    pub confidence: f64,
    /// Signed-rank significance level.
    pub alpha: f64,
    /// Seed of the bootstrap.
    pub seed: u64,
}

/// One label × metric over every round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Label (`_scenario` for throughput).
    pub label: String,
    /// Metric.
    pub metric: Metric,
    /// Median of A's values over the rounds.
    pub a_median: Option<f64>,
    /// Median of B's values.
    pub b_median: Option<f64>,
    /// log(B/A) of each round (`null` where a side had no value).
    pub log_ratios: Vec<Option<f64>>,
    /// Rounds with a ratio.
    pub n: usize,
    /// exp(median log ratio): the median B/A.
    pub median_ratio: Option<f64>,
    /// Bootstrap interval of the median ratio, as ratios.
    pub interval: Option<[f64; 2]>,
    /// Two-sided Wilcoxon signed-rank p-value of the log ratios.
    pub p_value: f64,
    /// The minimum effect applied, relative.
    pub min_effect: f64,
    /// The verdict.
    pub verdict: Verdict,
}

/// The verdict of an interval `[lo, hi]` of log ratios against ± `min_effect`.
pub fn verdict(metric: Metric, interval: Option<(f64, f64)>, p_value: f64, min_effect: f64, alpha: f64) -> Verdict {
    let Some((lo, hi)) = interval else { return Verdict::Inconclusive };
    let m = (1.0 + min_effect).ln();
    // Badness: a rise of latency or errors, a fall of throughput.
    let (lo, hi) = if metric.higher_is_worse() { (lo, hi) } else { (-hi, -lo) };
    if lo > m && p_value <= alpha {
        Verdict::Regressed
    } else if hi < -m && p_value <= alpha {
        Verdict::Improved
    } else if lo >= -m && hi <= m {
        Verdict::NoChange
    } else {
        Verdict::Inconclusive
    }
}

/// Compares one label × metric over `rounds`.
pub fn compare(rounds: &[Round], label: &str, metric: Metric, j: &Judging) -> Comparison {
    let value = |t: &TrialRecord| t.value(label, metric);
    let a: Vec<f64> = rounds.iter().filter_map(|r| value(&r.a)).collect();
    let b: Vec<f64> = rounds.iter().filter_map(|r| value(&r.b)).collect();
    let log_ratios: Vec<Option<f64>> = rounds
        .iter()
        .map(|r| match (value(&r.a), value(&r.b)) {
            (Some(a), Some(b)) => metric.log_ratio(a, b),
            _ => None,
        })
        .collect();
    let d: Vec<f64> = log_ratios.iter().flatten().copied().collect();
    let p_value = stats::signed_rank(&d).p_value;
    let ci = stats::bootstrap_median_ci(&d, j.confidence, RESAMPLES, j.seed);
    let min_effect = metric.min_effect(&j.min_effects);
    Comparison {
        label: label.to_string(),
        metric,
        a_median: stats::median(&a),
        b_median: stats::median(&b),
        n: d.len(),
        median_ratio: stats::median(&d).map(f64::exp),
        interval: ci.map(|(lo, hi)| [lo.exp(), hi.exp()]),
        p_value,
        min_effect,
        verdict: verdict(metric, ci, p_value, min_effect, j.alpha),
        log_ratios,
    }
}

/// Every label × metric the rounds measured, in first-seen order.
pub fn compare_all(rounds: &[Round], j: &Judging) -> Vec<Comparison> {
    let mut keys: Vec<(String, Metric)> = Vec::new();
    for t in rounds.iter().flat_map(|r| [&r.a, &r.b]) {
        for v in &t.values {
            if !keys.iter().any(|(l, m)| *l == v.label && *m == v.metric) {
                keys.push((v.label.clone(), v.metric));
            }
        }
    }
    keys.iter().map(|(l, m)| compare(rounds, l, *m, j)).collect()
}

/// Whether another adaptive round is due: some verdict is inconclusive and the budget allows.
pub fn wants_more(comparisons: &[Comparison], done: usize, max_rounds: usize) -> bool {
    done < max_rounds && comparisons.iter().any(|c| c.verdict == Verdict::Inconclusive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_follows_the_interval_against_the_minimum_effect() {
        let m = 0.10; // ln(1.1) = 0.0953
        let v = |lo: f64, hi: f64, p: f64| verdict(Metric::P50, Some((lo, hi)), p, m, 0.05);
        assert_eq!(v(0.12, 0.30, 0.002), Verdict::Regressed);
        // Beyond the minimum effect but not significant: not a regression.
        assert_eq!(v(0.12, 0.30, 0.2), Verdict::Inconclusive);
        assert_eq!(v(-0.05, 0.05, 0.9), Verdict::NoChange);
        assert_eq!(v(-0.05, 0.12, 0.1), Verdict::Inconclusive);
        assert_eq!(v(-0.3, -0.12, 0.002), Verdict::Improved);
        // Throughput: a fall is the bad direction.
        assert_eq!(verdict(Metric::Throughput, Some((-0.9, -0.7)), 0.002, m, 0.05), Verdict::Regressed);
        assert_eq!(verdict(Metric::Throughput, Some((0.7, 0.9)), 0.002, m, 0.05), Verdict::Improved);
        assert_eq!(verdict(Metric::P99, None, 1.0, m, 0.05), Verdict::Inconclusive);
    }

    #[test]
    fn error_rates_are_compared_above_a_floor() {
        assert_eq!(Metric::ErrorRate.log_ratio(0.0, 0.0), Some(0.0));
        let r = Metric::ErrorRate.log_ratio(0.0, 0.001).unwrap();
        assert!((r - 2f64.ln()).abs() < 1e-12);
        assert_eq!(Metric::P50.log_ratio(0.0, 1.0), None);
        assert!((Metric::P50.log_ratio(2.0, 2.4).unwrap() - 1.2f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn adaptive_rounds_run_only_while_something_is_inconclusive() {
        let c = |v| Comparison {
            label: "x".into(),
            metric: Metric::P50,
            a_median: None,
            b_median: None,
            log_ratios: vec![],
            n: 0,
            median_ratio: None,
            interval: None,
            p_value: 1.0,
            min_effect: 0.1,
            verdict: v,
        };
        assert!(wants_more(&[c(Verdict::NoChange), c(Verdict::Inconclusive)], 10, 20));
        assert!(!wants_more(&[c(Verdict::Inconclusive)], 20, 20));
        assert!(!wants_more(&[c(Verdict::Regressed), c(Verdict::NoChange)], 10, 20));
    }
}
