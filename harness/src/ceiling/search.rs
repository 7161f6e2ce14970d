//! The search over offered rates, as a state machine with no I/O: [`Search::next_trial`] says which
//! trial to run, [`Search::record`] takes its verdict. Rates are factors of the scenario's own
//! rates (1.0 = the file's figures), so a multi-label scenario keeps its request mix.
//!
//! 1. **Probe:** ×2 upward from 1.0 until a trial fails (the seed rate failing ends the search).
//! 2. **Bisect** the bracket [last pass, first fail] until `hi/lo − 1 ≤ precision`.
//! 3. **Confirm** at `lo` with `confirmations` longer trials; a confirmation that fails makes
//!    `lo` the new first fail and moves the answer down by one precision step, then confirms
//!    again there.
//!
//! A failing trial the generator caused (harness-bound) ends the search: no server ceiling is
//! claimed, only that the server passed up to the last passing factor.

use serde::{Deserialize, Serialize};

/// Which part of the search a trial belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The exponential probe upward.
    Probe,
    /// Halving the bracket.
    Bisect,
    /// A longer trial at the answer.
    Confirm,
}

/// How a search ended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// A confirmed bracket [lo, hi] within the precision.
    Found,
    /// The scenario's own rate already fails (exit 1).
    SeedFails,
    /// The generator, not the server, broke the criteria at this factor.
    HarnessBound,
    /// Still passing at the highest factor the search may offer.
    MaxRate,
    /// The trial budget ran out before the bracket closed.
    TrialLimit,
}

/// The search's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SearchParams {
    /// Bracket width to reach: `hi/lo − 1`.
    pub precision: f64,
    /// Confirmation trials that must pass at the answer.
    pub confirmations: usize,
    /// The highest factor to offer.
    pub max_factor: f64,
    /// The most trials to run in all.
    pub max_trials: usize,
}

/// The search state.
#[derive(Debug, Clone)]
pub struct Search {
    params: SearchParams,
    /// Highest factor that passed (and, once confirming, the candidate answer).
    pub lo: Option<f64>,
    /// Lowest factor that failed.
    pub hi: Option<f64>,
    confirmed: usize,
    trials: usize,
    /// Why it ended, once it has.
    pub end: Option<End>,
    /// The factor at which the generator was the limit.
    pub harness_bound_at: Option<f64>,
}

impl Search {
    /// A new search.
    pub fn new(params: SearchParams) -> Self {
        Search { params, lo: None, hi: None, confirmed: 0, trials: 0, end: None, harness_bound_at: None }
    }

    fn closed(&self) -> bool {
        matches!((self.lo, self.hi), (Some(lo), Some(hi)) if hi / lo - 1.0 <= self.params.precision + 1e-9)
    }

    /// The next trial: its phase and factor, or `None` once the search has ended.
    pub fn next_trial(&mut self) -> Option<(Phase, f64)> {
        if self.end.is_none() && self.trials >= self.params.max_trials {
            self.end = Some(End::TrialLimit);
        }
        if self.end.is_some() {
            return None;
        }
        Some(match (self.lo, self.hi) {
            (None, _) => (Phase::Probe, 1.0),
            (Some(lo), None) => (Phase::Probe, lo * 2.0),
            (Some(lo), Some(_)) if self.closed() => (Phase::Confirm, lo),
            (Some(lo), Some(hi)) => (Phase::Bisect, (lo + hi) / 2.0),
        })
    }

    /// Records the verdict of the trial [`Search::next_trial`] returned.
    pub fn record(&mut self, phase: Phase, factor: f64, passed: bool, harness_bound: bool) {
        self.trials += 1;
        if !passed && harness_bound {
            self.harness_bound_at = Some(factor);
            self.end = Some(End::HarnessBound);
            return;
        }
        match (phase, passed) {
            (Phase::Probe | Phase::Bisect, true) => {
                self.lo = Some(factor);
                if phase == Phase::Probe && factor * 2.0 > self.params.max_factor {
                    self.end = Some(End::MaxRate);
                }
            }
            (Phase::Probe | Phase::Bisect, false) if self.lo.is_none() => self.end = Some(End::SeedFails),
            (Phase::Probe | Phase::Bisect, false) => self.hi = Some(factor),
            (Phase::Confirm, true) => {
                self.confirmed += 1;
                if self.confirmed >= self.params.confirmations {
                    self.end = Some(End::Found);
                }
            }
            (Phase::Confirm, false) => {
                // The answer moves down one precision step below the rate that just failed.
                self.confirmed = 0;
                self.hi = Some(factor);
                let lower = factor / (1.0 + self.params.precision);
                if lower < 1.0 - 1e-9 {
                    self.lo = None;
                    self.end = Some(End::SeedFails);
                } else {
                    self.lo = Some(lower);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SearchParams {
        SearchParams { precision: 0.05, confirmations: 3, max_factor: 4096.0, max_trials: 60 }
    }

    /// Runs a search against a server whose capacity is `cap` (factor units) and whose
    /// confirmations fail while `flaky` says so.
    fn drive(cap: f64, mut flaky: impl FnMut(f64) -> bool) -> (Search, Vec<(Phase, f64)>) {
        let mut s = Search::new(params());
        let mut seen = Vec::new();
        while let Some((phase, f)) = s.next_trial() {
            let pass = f <= cap && !(phase == Phase::Confirm && flaky(f));
            s.record(phase, f, pass, false);
            seen.push((phase, f));
        }
        (s, seen)
    }

    #[test]
    fn the_search_brackets_a_known_capacity_within_the_precision() {
        for cap in [1.0, 1.7, 23.0, 30.0, 1000.0] {
            let (s, seen) = drive(cap, |_| false);
            assert_eq!(s.end, Some(End::Found), "cap {cap}");
            let (lo, hi) = (s.lo.unwrap(), s.hi.unwrap());
            assert!(lo <= cap && cap < hi, "cap {cap}: [{lo}, {hi}]");
            assert!(hi / lo - 1.0 <= 0.05 + 1e-9);
            assert_eq!(seen.iter().filter(|(p, _)| *p == Phase::Confirm).count(), 3);
            // The probe doubles from the seed rate.
            assert_eq!(seen[0], (Phase::Probe, 1.0));
            assert!(seen.len() < 30);
        }
    }

    #[test]
    fn a_failed_confirmation_moves_the_answer_down() {
        let mut first = true;
        let (s, seen) = drive(30.0, |_| std::mem::replace(&mut first, false));
        assert_eq!(s.end, Some(End::Found));
        let confirms: Vec<f64> = seen.iter().filter(|(p, _)| *p == Phase::Confirm).map(|(_, f)| *f).collect();
        // One failure, then three passes one step lower.
        assert_eq!(confirms.len(), 4);
        assert!((confirms[1] - confirms[0] / 1.05).abs() < 1e-9);
        assert_eq!(s.hi, Some(confirms[0]));
        assert_eq!(s.lo, Some(confirms[1]));
    }

    #[test]
    fn the_seed_rate_failing_ends_the_search_at_once() {
        let (s, seen) = drive(0.5, |_| false);
        assert_eq!(s.end, Some(End::SeedFails));
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn a_harness_bound_failure_claims_no_ceiling() {
        let mut s = Search::new(params());
        let (p, f) = s.next_trial().unwrap();
        s.record(p, f, true, false);
        let (p, f) = s.next_trial().unwrap();
        s.record(p, f, false, true);
        assert_eq!(s.end, Some(End::HarnessBound));
        assert_eq!(s.harness_bound_at, Some(2.0));
        assert_eq!(s.hi, None);
        assert!(s.next_trial().is_none());
    }

    #[test]
    fn the_trial_budget_and_the_rate_cap_end_the_search() {
        let mut s = Search::new(SearchParams { max_trials: 2, ..params() });
        while let Some((p, f)) = s.next_trial() {
            s.record(p, f, true, false);
        }
        assert_eq!(s.end, Some(End::TrialLimit));
        let (s, _) = drive(1e9, |_| false);
        assert_eq!(s.end, Some(End::MaxRate));
    }
}
