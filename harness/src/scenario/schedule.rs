//! The open-model arrival schedule — the one place that decides when a request is due.
//!
//! Request *i* of a label is due at `start + i/rate`, however slow earlier requests were. Goose
//! users share one [`Schedule`] per label: each takes the next slot index from an atomic counter,
//! sleeps until the slot is due and fires. With enough users one slow request never holds up
//! the schedule; when every user is busy, the next slot simply starts late — and its latency is
//! still measured from the slot's due time (coordinated-omission-free), while the start is
//! counted as late. Slots that could not be issued before the hard stop are counted as dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A shared arrival schedule for one label.
#[derive(Debug)]
pub struct Schedule {
    start: Instant,
    interval_ns: f64,
    total: u64,
    hard_stop: Instant,
    next: AtomicU64,
    /// Sharding: local slot k is global slot `offset + k * stride` of the full-rate schedule.
    offset: u64,
    stride: u64,
    issued: AtomicU64,
    late: AtomicU64,
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
        Self::sharded(start, rate, total, drain, tolerance, crate::scenario::Shard::default())
    }

    /// The `shard`'s slice of a `total`-slot schedule at `rate`: the slots i ≡ I−1 (mod N), at
    /// their full-schedule due times, so N shards started together offer the one-generator
    /// schedule. [`Slot::index`] is the global slot index (templates stay disjoint across shards).
    pub fn sharded(
        start: Instant,
        rate: f64,
        total: u64,
        drain: Duration,
        tolerance: Duration,
        shard: crate::scenario::Shard,
    ) -> Self {
        let interval_ns = if rate > 0.0 { 1e9 / rate } else { 0.0 };
        let span = Duration::from_nanos((interval_ns * total as f64) as u64);
        Schedule {
            start,
            interval_ns,
            total: shard.slots_of(total),
            hard_stop: start + span + drain,
            next: AtomicU64::new(0),
            offset: shard.offset(),
            stride: u64::from(shard.count.max(1)),
            issued: AtomicU64::new(0),
            late: AtomicU64::new(0),
            tolerance,
        }
    }

    /// When slot `i` is due.
    pub fn due(&self, i: u64) -> Instant {
        self.start + Duration::from_nanos((self.interval_ns * i as f64) as u64)
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
        let late = started.saturating_duration_since(slot.due) > self.tolerance;
        if late {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
        late
    }

    /// Planned slots (this shard's).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Slots whose request was started.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    /// Starts later than the tolerance.
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
            let s = Schedule::sharded(t0, 50.0, 103, Duration::from_secs(1), Duration::from_millis(10), shard);
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
}
