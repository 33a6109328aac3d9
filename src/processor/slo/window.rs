//! Good/total counts in time buckets, and the window arithmetic of burn rates.
//!
//! A ring of `n` buckets of width `w` covers the last `n * w`. A window of length `d` ending at
//! `now` is summed over the `ceil(d / w)` most recent buckets, the current (partial) one
//! included, so a window is never shorter than asked and at most one bucket longer.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub good: f64,
    pub total: f64,
}

impl Counts {
    /// The SLI: good / total, None without events.
    pub fn ratio(&self) -> Option<f64> {
        (self.total > 0.0).then(|| self.good / self.total)
    }

    /// How fast the error budget burns: the error ratio divided by the budget (1 - objective).
    /// 1 means the budget lasts exactly the SLO period. None without events.
    pub fn burn_rate(&self, objective: f64) -> Option<f64> {
        let budget = 1.0 - objective;
        self.ratio().map(|r| (1.0 - r) / budget)
    }
}

/// Counts per bucket, oldest overwritten.
#[derive(Debug, Clone)]
pub struct Ring {
    origin: Instant,
    width: Duration,
    /// Index (since `origin`, in buckets) of the newest bucket written.
    head: u64,
    buckets: Vec<Counts>,
}

impl Ring {
    /// A ring covering at least `span` in buckets of `width`.
    pub fn new(origin: Instant, width: Duration, span: Duration) -> Ring {
        let width = width.max(Duration::from_millis(1));
        let n = span.as_nanos().div_ceil(width.as_nanos()).max(1) as usize;
        Ring {
            origin,
            width,
            head: 0,
            buckets: vec![Counts::default(); n],
        }
    }

    fn index(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.origin).as_nanos() / self.width.as_nanos()) as u64
    }

    /// Move the head to `now`, clearing the buckets passed over.
    fn advance(&mut self, now: Instant) {
        let i = self.index(now);
        if i <= self.head {
            return;
        }
        let n = self.buckets.len() as u64;
        let clear = (i - self.head).min(n);
        for k in 0..clear {
            let slot = ((i - k) % n) as usize;
            self.buckets[slot] = Counts::default();
        }
        self.head = i;
    }

    /// Count one event (or a weighted one) at `now`.
    pub fn record(&mut self, now: Instant, good: f64, total: f64) {
        self.advance(now);
        let n = self.buckets.len() as u64;
        let b = &mut self.buckets[(self.head % n) as usize];
        b.good += good;
        b.total += total;
    }

    /// The counts of the window of length `d` ending at `now` (clamped to what the ring covers).
    pub fn window(&mut self, now: Instant, d: Duration) -> Counts {
        self.advance(now);
        let n = self.buckets.len() as u64;
        let k = (d.as_nanos().div_ceil(self.width.as_nanos()) as u64).clamp(1, n);
        let mut c = Counts::default();
        for j in 0..k {
            let Some(idx) = self.head.checked_sub(j) else {
                break;
            };
            let b = self.buckets[(idx % n) as usize];
            c.good += b.good;
            c.total += b.total;
        }
        c
    }
}
