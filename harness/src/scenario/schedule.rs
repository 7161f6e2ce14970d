//! The open-model arrival schedule — the one place that decides when a request is due.
//!
//! A label's offered load is a [`RateCurve`]: a constant rate, or stages that ramp linearly from
//! one rate to the next (k6's ramping-arrival-rate). Request *i* of a label is due at the instant
//! *t* where the integral of the rate curve from the start reaches *i* — `start + i/rate` for a
//! constant rate — however slow earlier requests were. Goose users share one [`Schedule`] per
//! label: each takes the next slot index from an atomic counter, sleeps until the slot is due and
//! fires. With enough users one slow request never holds up the schedule; when every user is
//! busy, the next slot simply starts late — and its latency is still measured from the slot's due
//! time (coordinated-omission-free), while the start is counted as late. Slots that could not be
//! issued before the hard stop are counted as dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One linear piece of a rate curve: the rate goes from `r0` to `r1` over `dur` seconds, and
/// `n0` arrivals are due before it starts.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Piece {
    t0: f64,
    dur: f64,
    r0: f64,
    r1: f64,
    n0: f64,
}

impl Piece {
    /// Arrivals due within this piece.
    fn count(&self) -> f64 {
        (self.r0 + self.r1) / 2.0 * self.dur
    }

    /// Seconds into the piece at which `n` (≤ [`Piece::count`]) arrivals are due: the root of
    /// `r0·s + a·s²/2 = n` with `a = (r1 − r0)/dur`, in the form that stays exact when `a` is 0
    /// or negative.
    fn time_of(&self, n: f64) -> f64 {
        if n <= 0.0 {
            return 0.0;
        }
        let a = if self.dur > 0.0 { (self.r1 - self.r0) / self.dur } else { 0.0 };
        let disc = (self.r0 * self.r0 + 2.0 * a * n).max(0.0);
        let denom = self.r0 + disc.sqrt();
        if denom <= 0.0 { self.dur } else { (2.0 * n / denom).min(self.dur) }
    }
}

/// An arrival-rate curve: piecewise linear in time, starting at time zero.
#[derive(Debug, Clone, PartialEq)]
pub struct RateCurve {
    pieces: Vec<Piece>,
}

impl RateCurve {
    /// `rate` per second for `duration`.
    pub fn constant(rate: f64, duration: Duration) -> Self {
        Self::ramp(rate, &[(rate, duration)])
    }

    /// Starts at `start_rate` and moves linearly to each stage's rate over the stage's duration.
    pub fn ramp(start_rate: f64, stages: &[(f64, Duration)]) -> Self {
        let (mut t, mut n, mut from) = (0.0, 0.0, start_rate.max(0.0));
        let mut pieces = Vec::with_capacity(stages.len());
        for &(rate, d) in stages {
            let to = rate.max(0.0);
            let p = Piece { t0: t, dur: d.as_secs_f64(), r0: from, r1: to, n0: n };
            n += p.count();
            t += p.dur;
            from = to;
            pieces.push(p);
        }
        RateCurve { pieces }
    }

    /// The same shape with every rate multiplied by `k`.
    pub fn scaled(&self, k: f64) -> Self {
        let k = k.max(0.0);
        let mut n = 0.0;
        let pieces = self
            .pieces
            .iter()
            .map(|p| {
                let q = Piece { r0: p.r0 * k, r1: p.r1 * k, n0: n, ..*p };
                n += q.count();
                q
            })
            .collect();
        RateCurve { pieces }
    }

    /// Arrivals the curve offers in all (its integral).
    pub fn expected(&self) -> f64 {
        self.pieces.last().map(|p| p.n0 + p.count()).unwrap_or(0.0)
    }

    /// Slots of the schedule: the integral, rounded.
    pub fn slots(&self) -> u64 {
        self.expected().round() as u64
    }

    /// Length of the curve.
    pub fn span(&self) -> Duration {
        Duration::from_secs_f64(self.pieces.last().map(|p| p.t0 + p.dur).unwrap_or(0.0).max(0.0))
    }

    /// Highest rate anywhere on the curve.
    pub fn peak(&self) -> f64 {
        self.pieces.iter().map(|p| p.r0.max(p.r1)).fold(0.0, f64::max)
    }

    /// Mean rate over the curve's span.
    pub fn mean(&self) -> f64 {
        let s = self.span().as_secs_f64();
        if s > 0.0 { self.expected() / s } else { 0.0 }
    }

    /// Seconds after time zero at which slot `i` is due: the first instant at which the
    /// integral reaches `i` (slot 0 at time zero).
    pub fn due_s(&self, i: u64) -> f64 {
        let n = i as f64;
        for p in &self.pieces {
            let c = p.count();
            if c > 0.0 && n <= p.n0 + c {
                return p.t0 + p.time_of(n - p.n0);
            }
        }
        self.pieces.last().map(|p| p.t0 + p.dur).unwrap_or(0.0)
    }
}

/// A shared arrival schedule for one label.
#[derive(Debug)]
pub struct Schedule {
    start: Instant,
    curve: RateCurve,
    total: u64,
    hard_stop: Instant,
    next: AtomicU64,
    /// Sharding: local slot k is global slot `offset + k * stride` of the full-rate schedule.
    offset: u64,
    stride: u64,
    issued: AtomicU64,
    late: AtomicU64,
    /// Slots due at or after this instant are the measured ones (a trial's warm-up is before).
    measure_from: Instant,
    measured_issued: AtomicU64,
    tolerance: Duration,
}

/// A slot handed to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Index of the request within the label.
    pub index: u64,
    /// When it is due.
    pub due: Instant,
}

impl Schedule {
    /// `total` slots at `rate` per second from `start`. Slots not issued by `start + total/rate +
    /// drain` are dropped; a start later than `due + tolerance` is late.
    pub fn new(start: Instant, rate: f64, total: u64, drain: Duration, tolerance: Duration) -> Self {
        let span = if rate > 0.0 { Duration::from_secs_f64(total as f64 / rate) } else { Duration::ZERO };
        Self::sharded(start, RateCurve::constant(rate, span), drain, tolerance, crate::scenario::Shard::default())
    }

    /// The `shard`'s slice of the schedule `curve` offers: the slots i ≡ I−1 (mod N), at their
    /// full-schedule due times, so N shards started together offer the one-generator schedule.
    /// [`Slot::index`] is the global slot index (templates stay disjoint across shards).
    pub fn sharded(
        start: Instant,
        curve: RateCurve,
        drain: Duration,
        tolerance: Duration,
        shard: crate::scenario::Shard,
    ) -> Self {
        let total = curve.slots();
        Schedule {
            start,
            hard_stop: start + curve.span() + drain,
            curve,
            total: shard.slots_of(total),
            next: AtomicU64::new(0),
            offset: shard.offset(),
            stride: u64::from(shard.count.max(1)),
            issued: AtomicU64::new(0),
            late: AtomicU64::new(0),
            measure_from: start,
            measured_issued: AtomicU64::new(0),
            tolerance,
        }
    }

    /// Counts late starts only for slots due `warmup` after the start or later (a trial's
    /// measurement window); see [`Schedule::measured_issued`].
    pub fn with_warmup(mut self, warmup: Duration) -> Self {
        self.measure_from = self.start + warmup;
        self
    }

    /// When slot `i` is due.
    pub fn due(&self, i: u64) -> Instant {
        self.start + Duration::from_secs_f64(self.curve.due_s(i).max(0.0))
    }

    /// Takes the next slot, or `None` when the schedule is exhausted or past its hard stop
    /// (`now` is the caller's clock reading, so tests can drive it).
    pub fn claim(&self, now: Instant) -> Option<Slot> {
        if now > self.hard_stop {
            return None;
        }
        let local = self.next.fetch_add(1, Ordering::Relaxed);
        if local >= self.total {
            // Leave the counter saturated-ish; only `issued` is reported.
            return None;
        }
        let index = self.offset + local * self.stride;
        Some(Slot { index, due: self.due(index) })
    }

    /// Records that a slot's request was actually started at `started`; returns whether the
    /// start was late.
    pub fn started(&self, slot: Slot, started: Instant) -> bool {
        self.issued.fetch_add(1, Ordering::Relaxed);
        if slot.due < self.measure_from {
            return false;
        }
        self.measured_issued.fetch_add(1, Ordering::Relaxed);
        let late = started.saturating_duration_since(slot.due) > self.tolerance;
        if late {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
        late
    }

    /// Started slots due in the measurement window (all of them without a warm-up).
    pub fn measured_issued(&self) -> u64 {
        self.measured_issued.load(Ordering::Relaxed)
    }

    /// Planned slots (this shard's).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Slots whose request was started.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    /// Starts later than the tolerance (among the measured slots).
    pub fn late(&self) -> u64 {
        self.late.load(Ordering::Relaxed)
    }

    /// Slots never started (only final once every user has stopped).
    pub fn dropped(&self) -> u64 {
        self.total.saturating_sub(self.issued())
    }

    /// When users must stop taking slots.
    pub fn hard_stop(&self) -> Instant {
        self.hard_stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_i_is_due_at_start_plus_i_over_rate() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 200.0, 1000, Duration::from_secs(1), Duration::from_millis(10));
        assert_eq!(s.due(0), t0);
        assert_eq!(s.due(200), t0 + Duration::from_secs(1));
        assert_eq!(s.due(1), t0 + Duration::from_millis(5));
    }

    #[test]
    fn the_schedule_hands_out_exactly_total_slots() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 100.0, 50, Duration::from_secs(1), Duration::from_millis(10));
        let mut n = 0;
        while let Some(slot) = s.claim(t0) {
            s.started(slot, slot.due);
            n += 1;
        }
        assert_eq!(n, 50);
        assert_eq!(s.issued(), 50);
        assert_eq!(s.dropped(), 0);
        assert_eq!(s.late(), 0);
    }

    #[test]
    fn shards_together_claim_exactly_the_one_generator_schedule() {
        use crate::scenario::Shard;
        let t0 = Instant::now();
        let whole = Schedule::new(t0, 50.0, 103, Duration::from_secs(1), Duration::from_millis(10));
        let mut want: Vec<(u64, Instant)> = std::iter::from_fn(|| whole.claim(t0)).map(|s| (s.index, s.due)).collect();
        let mut got = Vec::new();
        for index in 1..=3 {
            let shard = Shard { index, count: 3 };
            let curve = RateCurve::constant(50.0, Duration::from_secs_f64(103.0 / 50.0));
            let s = Schedule::sharded(t0, curve, Duration::from_secs(1), Duration::from_millis(10), shard);
            let mine: Vec<_> = std::iter::from_fn(|| s.claim(t0)).map(|s| (s.index, s.due)).collect();
            assert_eq!(mine.len() as u64, shard.slots_of(103));
            assert!(mine.iter().all(|(i, _)| i % 3 == u64::from(index - 1)));
            got.extend(mine);
        }
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn late_starts_and_dropped_slots_are_counted() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 10.0, 10, Duration::from_millis(100), Duration::from_millis(10));
        let slot = s.claim(t0).unwrap();
        assert!(s.started(slot, slot.due + Duration::from_millis(50)));
        // Past the hard stop nothing more is handed out; the other nine are dropped.
        assert_eq!(s.claim(t0 + Duration::from_secs(5)), None);
        assert_eq!(s.late(), 1);
        assert_eq!(s.dropped(), 9);
    }

    #[test]
    fn a_linear_ramp_from_0_to_400_over_5_s_offers_1000_slots_at_the_integral_of_the_rate() {
        let c = RateCurve::ramp(0.0, &[(400.0, Duration::from_secs(5))]);
        assert_eq!(c.slots(), 1000);
        // r(t) = 80 t, so N(t) = 40 t²: slot i is due at sqrt(i / 40).
        for i in [1u64, 10, 250, 999] {
            let want = (i as f64 / 40.0).sqrt();
            assert!((c.due_s(i) - want).abs() < 1e-9, "slot {i}: {} vs {want}", c.due_s(i));
        }
        // Due times never go backwards and stay inside the ramp.
        let dues: Vec<f64> = (0..1000).map(|i| c.due_s(i)).collect();
        assert!(dues.windows(2).all(|w| w[0] <= w[1]));
        assert!(dues[999] < 5.0);
    }

    #[test]
    fn stages_chain_ramps_holds_and_ramp_downs() {
        let s = |x| Duration::from_secs(x);
        let c = RateCurve::ramp(100.0, &[(100.0, s(2)), (300.0, s(2)), (0.0, s(1)), (0.0, s(1)), (50.0, s(2))]);
        // 200 + 400 + 150 + 0 + 50.
        assert_eq!(c.slots(), 800);
        assert_eq!(c.span(), s(8));
        assert_eq!(c.peak(), 300.0);
        assert!((c.due_s(100) - 1.0).abs() < 1e-9);
        // The ramp down ends at 5 s; the idle second offers nothing; the last ramp starts at 6 s.
        assert!(c.due_s(749) < 5.0);
        assert!((c.due_s(750) - 5.0).abs() < 1e-9);
        assert!(c.due_s(751) > 6.0);
        let k = c.scaled(2.0);
        assert_eq!(k.slots(), 1600);
        assert!((k.due_s(200) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn shards_split_a_ramped_schedule_exactly() {
        use crate::scenario::Shard;
        let t0 = Instant::now();
        let curve = RateCurve::ramp(0.0, &[(400.0, Duration::from_secs(5))]);
        let whole = Schedule::sharded(t0, curve.clone(), Duration::ZERO, Duration::ZERO, Shard::default());
        let want: Vec<(u64, Instant)> = std::iter::from_fn(|| whole.claim(t0)).map(|s| (s.index, s.due)).collect();
        let mut got = Vec::new();
        for index in 1..=4 {
            let s = Schedule::sharded(t0, curve.clone(), Duration::ZERO, Duration::ZERO, Shard { index, count: 4 });
            got.extend(std::iter::from_fn(|| s.claim(t0)).map(|s| (s.index, s.due)));
        }
        got.sort();
        assert_eq!(got, want);
        assert_eq!(want.len(), 1000);
    }

    #[test]
    fn a_warm_up_keeps_late_starts_out_of_the_measured_slots() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 10.0, 20, Duration::from_secs(1), Duration::from_millis(10))
            .with_warmup(Duration::from_secs(1));
        let early = s.claim(t0).unwrap();
        assert!(!s.started(early, early.due + Duration::from_millis(500)));
        for _ in 1..10 {
            s.claim(t0);
        }
        let measured = s.claim(t0).unwrap();
        assert_eq!(measured.index, 10);
        assert!(s.started(measured, measured.due + Duration::from_millis(500)));
        assert_eq!((s.issued(), s.measured_issued(), s.late()), (2, 1, 1));
    }
}
