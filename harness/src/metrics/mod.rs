//! Measurement: HDR histograms per request label, whole-run and per 1-s interval.
//!
//! Data flow: the engine calls [`Recorder::record`] once per finished request with the slot's
//! intended start, the actual start and the end. Two latencies are recorded, in microseconds
//! with 3 significant digits: *corrected* (end − intended start; what a client whose requests
//! arrive on schedule experiences, free of coordinated omission) and *service* (end − actual
//! start; what the server took once the request was on the wire). Every request is recorded,
//! whatever its outcome, and its outcome is classified into the error classes. The interval a
//! request belongs to is the second (since the scenario's start) in which it completed, as an
//! HdrHistogram recorder would bucket it.
//!
//! After the run, [`hlog`] writes the interval histograms as a V2 compressed interval log, and
//! [`sampler`] supplies the resource samples taken alongside.

pub mod fleet;
pub mod hlog;
pub mod live;
pub mod sampler;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest trackable latency: one hour in µs (larger values saturate).
pub const MAX_TRACKABLE_US: u64 = 3_600_000_000;

/// A new, empty latency histogram (µs, 3 significant digits).
#[allow(clippy::expect_used)]
pub fn new_histogram() -> Histogram<u64> {
    // Constant bounds that `new_with_bounds` accepts (low >= 1, high >= 2 * low, sigfig <= 5):
    // no input can make this fail.
    Histogram::new_with_bounds(1, MAX_TRACKABLE_US, 3).expect("constant histogram bounds are valid")
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_TRACKABLE_US)
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An expected status and the body check held.
    Ok(u16),
    /// No HTTP response (connect, timeout, reset, body read failure).
    Transport,
    /// A status outside `expect`.
    Status(u16),
    /// An expected status whose body or headers failed the check.
    BodyCheck(u16),
    /// Client-side work (no HTTP) timed by a flow: `true` when it succeeded. A failure is
    /// counted with the body checks — the input the server gave could not be used.
    Client(bool),
}

/// Error counts by class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCounts {
    /// No HTTP response.
    pub transport: u64,
    /// Unexpected 4xx.
    pub status_4xx: u64,
    /// Unexpected 5xx.
    pub status_5xx: u64,
    /// Unexpected status outside 4xx/5xx (e.g. a 2xx or 3xx the label does not expect).
    pub unexpected_status: u64,
    /// Expected status, failed body/header check.
    pub body_check: u64,
}

impl ErrorCounts {
    /// All errors.
    pub fn total(&self) -> u64 {
        self.transport + self.status_4xx + self.status_5xx + self.unexpected_status + self.body_check
    }

    fn add(&mut self, outcome: Outcome) {
        if let Some(c) = ErrorClass::of(outcome) {
            self.count(c);
        }
    }
}

/// An error class, as [`ErrorCounts`] counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// No HTTP response.
    Transport,
    /// Unexpected 4xx.
    Status4xx,
    /// Unexpected 5xx.
    Status5xx,
    /// Unexpected other status.
    Unexpected,
    /// Failed body/header check (or failed client-side work).
    BodyCheck,
}

impl ErrorClass {
    /// The class of `outcome`, `None` for a success.
    pub fn of(outcome: Outcome) -> Option<Self> {
        match outcome {
            Outcome::Ok(_) | Outcome::Client(true) => None,
            Outcome::Client(false) | Outcome::BodyCheck(_) => Some(ErrorClass::BodyCheck),
            Outcome::Transport => Some(ErrorClass::Transport),
            Outcome::Status(s) if (400..500).contains(&s) => Some(ErrorClass::Status4xx),
            Outcome::Status(s) if (500..600).contains(&s) => Some(ErrorClass::Status5xx),
            Outcome::Status(_) => Some(ErrorClass::Unexpected),
        }
    }
}

/// The error class of an outcome, as an index into [`live::ERROR_CLASSES`] (transport, 4xx,
/// 5xx, unexpected status, body check: the order of [`ErrorClass`]); `None` for a success.
pub fn error_class(outcome: Outcome) -> Option<usize> {
    ErrorClass::of(outcome).map(|c| c as usize)
}

impl ErrorCounts {
    /// Counts one error of class `c`.
    pub fn count(&mut self, c: ErrorClass) {
        match c {
            ErrorClass::Transport => self.transport += 1,
            ErrorClass::Status4xx => self.status_4xx += 1,
            ErrorClass::Status5xx => self.status_5xx += 1,
            ErrorClass::Unexpected => self.unexpected_status += 1,
            ErrorClass::BodyCheck => self.body_check += 1,
        }
    }
}

/// When one failing request ended, for the error windows of faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorMark {
    /// Milliseconds from time zero to the request's end.
    pub end_ms: u64,
    /// Its class.
    pub class: ErrorClass,
}

/// Error marks kept per label; past it the error windows of faults are marked truncated.
pub const MAX_ERROR_MARKS: usize = 1_000_000;

/// One second of one label.
#[derive(Debug, Clone)]
pub struct Interval {
    /// Corrected latencies completed in this second.
    pub corrected: Histogram<u64>,
    /// Service times completed in this second.
    pub service: Histogram<u64>,
    /// Errors in this second.
    pub errors: u64,
}

impl Interval {
    fn new() -> Self {
        Interval { corrected: new_histogram(), service: new_histogram(), errors: 0 }
    }

    /// An interval with nothing recorded (for merging into).
    pub fn empty() -> Self {
        Self::new()
    }
}

/// Everything recorded for one label.
#[derive(Debug, Clone)]
pub struct LabelStats {
    /// The label.
    pub label: String,
    /// Whole-run corrected latencies.
    pub corrected: Histogram<u64>,
    /// Whole-run service times.
    pub service: Histogram<u64>,
    /// Whole-run schedule lag: actual start − intended start (the generator's own delay).
    pub lag: Histogram<u64>,
    /// Per-second intervals, index = second since the scenario's start.
    pub intervals: Vec<Interval>,
    /// Errors by class.
    pub errors: ErrorCounts,
    /// Responses by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// 429 answers carrying an ACME `rateLimited` problem document.
    pub rate_limited: u64,
    /// When each failing request ended, in order of recording (at most [`MAX_ERROR_MARKS`]).
    pub error_marks: Vec<ErrorMark>,
}

impl LabelStats {
    fn new(label: &str) -> Self {
        LabelStats {
            label: label.to_string(),
            corrected: new_histogram(),
            service: new_histogram(),
            lag: new_histogram(),
            intervals: Vec::new(),
            errors: ErrorCounts::default(),
            statuses: BTreeMap::new(),
            rate_limited: 0,
            error_marks: Vec::new(),
        }
    }

    /// Empty statistics for `label` (what `merge` adds shards' histograms into).
    pub fn empty(label: &str) -> Self {
        Self::new(label)
    }

    /// Requests recorded.
    pub fn count(&self) -> u64 {
        self.corrected.len()
    }
}

/// The recorder shared by every goose user of a scenario.
#[derive(Debug)]
pub struct Recorder {
    /// Time zero of the intervals; set when the engine releases its users.
    t0: std::sync::OnceLock<Instant>,
    /// Requests intended before this instant (a trial's warm-up) go into the intervals only,
    /// not into the whole-run histograms and counts that judge the trial.
    measure_from: std::sync::OnceLock<Instant>,
    labels: Vec<Mutex<LabelStats>>,
    total: AtomicU64,
    errors: AtomicU64,
    /// `--metrics-listen`: the live metrics of this scenario's labels.
    live: Option<live::LiveScenario>,
}

impl Recorder {
    /// A recorder for `labels`; interval 0 starts at the time zero given to [`Recorder::set_t0`].
    pub fn new(labels: &[String]) -> Self {
        Recorder {
            t0: std::sync::OnceLock::new(),
            measure_from: std::sync::OnceLock::new(),
            labels: labels.iter().map(|l| Mutex::new(LabelStats::new(l))).collect(),
            total: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            live: None,
        }
    }

    /// Also feeds every request to `live` (labels in the same order), when given.
    pub fn with_live(mut self, live: Option<live::LiveScenario>) -> Self {
        self.live = live;
        self
    }

    /// Sets time zero (the first call wins).
    pub fn set_t0(&self, t0: Instant) {
        let _ = self.t0.set(t0);
    }

    /// Sets the start of the measurement window (the first call wins; default: everything).
    pub fn set_measure_from(&self, from: Instant) {
        let _ = self.measure_from.set(from);
    }

    /// Records one finished request of label index `label`.
    pub fn record(
        &self,
        label: usize,
        intended: Instant,
        started: Instant,
        ended: Instant,
        outcome: Outcome,
        rate_limited: bool,
    ) {
        let Some(cell) = self.labels.get(label) else { return };
        let corrected = micros(ended.saturating_duration_since(intended));
        let service = micros(ended.saturating_duration_since(started));
        // Nothing is recorded before time zero is set; should it happen, count from `intended`.
        let t0 = self.t0.get().copied().unwrap_or(intended);
        let second = ended.saturating_duration_since(t0).as_secs() as usize;
        let is_error = !matches!(outcome, Outcome::Ok(_) | Outcome::Client(true));
        let judged = self.measure_from.get().is_none_or(|from| intended >= *from);
        // A poisoned lock only means another user panicked mid-record; the histogram is
        // still consistent enough to keep counting.
        let mut s = cell.lock().unwrap_or_else(|e| e.into_inner());
        while s.intervals.len() <= second {
            s.intervals.push(Interval::new());
        }
        if let Some(iv) = s.intervals.get_mut(second) {
            iv.corrected.saturating_record(corrected);
            iv.service.saturating_record(service);
            if is_error {
                iv.errors += 1;
            }
        }
        if let Some(class) = ErrorClass::of(outcome)
            && s.error_marks.len() < MAX_ERROR_MARKS
        {
            let end_ms = ended.saturating_duration_since(t0).as_millis() as u64;
            s.error_marks.push(ErrorMark { end_ms, class });
        }
        if judged {
            s.corrected.saturating_record(corrected);
            s.service.saturating_record(service);
            s.lag.saturating_record(micros(started.saturating_duration_since(intended)));
            s.errors.add(outcome);
            match outcome {
                Outcome::Ok(st) | Outcome::Status(st) | Outcome::BodyCheck(st) => {
                    *s.statuses.entry(st).or_default() += 1
                }
                Outcome::Transport | Outcome::Client(_) => {}
            }
            if rate_limited {
                s.rate_limited += 1;
            }
        }
        drop(s);
        if let Some(l) = &self.live {
            let lag = micros(started.saturating_duration_since(intended));
            l.record(label, corrected, service, error_class(outcome), lag);
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        if is_error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests recorded so far (for progress lines).
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Errors so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// A copy of every label's statistics.
    pub fn snapshot(&self) -> Vec<LabelStats> {
        self.labels.iter().map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).clone()).collect()
    }
}

/// Percentiles of a histogram in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest value.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// Reads the percentiles of `h` (µs) in milliseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_recorded_in_the_whole_run_and_its_interval() {
        let t0 = Instant::now();
        let r = Recorder::new(&["a".into()]);
        r.set_t0(t0);
        let due = t0 + Duration::from_millis(1500);
        r.record(0, due, due + Duration::from_millis(100), due + Duration::from_millis(110), Outcome::Ok(200), false);
        r.record(0, due, due, due + Duration::from_millis(1), Outcome::Status(503), false);
        let s = &r.snapshot()[0];
        assert_eq!(s.count(), 2);
        assert_eq!(s.intervals.len(), 2);
        assert_eq!(s.intervals[1].corrected.len(), 2);
        assert!(s.corrected.max() >= 110_000 && s.service.max() < 11_000);
        assert_eq!(s.errors.status_5xx, 1);
        assert_eq!(r.errors(), 1);
    }

    #[test]
    fn a_warm_up_request_counts_in_its_interval_but_not_in_the_judged_histograms() {
        let t0 = Instant::now();
        let r = Recorder::new(&["a".into()]);
        r.set_t0(t0);
        r.set_measure_from(t0 + Duration::from_secs(1));
        let ms = Duration::from_millis;
        r.record(0, t0, t0 + ms(5), t0 + ms(10), Outcome::Status(500), false);
        r.record(0, t0 + ms(1000), t0 + ms(1003), t0 + ms(1010), Outcome::Ok(200), false);
        let s = &r.snapshot()[0];
        assert_eq!((s.count(), s.errors.total(), s.intervals[0].errors), (1, 0, 1));
        assert_eq!(s.intervals.iter().map(|i| i.corrected.len()).sum::<u64>(), 2);
        // Lag is actual start − intended start: 3 ms for the judged request.
        assert!((2_900..=3_100).contains(&s.lag.max()));
    }
}
