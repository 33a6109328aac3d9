//! The detectors of one signal of one key, fed one value at a time.
//!
//! [`Robust`] (latencies, tokens, cost, quality): the baseline is the median and the MAD of the
//! first `warmup` values, then follows the data slowly (a stochastic-approximation step of
//! `adapt` × sigma towards each value it did not judge), so it never learns from points judged
//! anomalous. Values are judged on the robust z-score `(x - median) / (1.4826 × MAD)` in the
//! signal's *adverse* direction only (latency up, quality down, ...; [`Direction`]):
//!
//! - a **point** outlier: z above `k` and the value at least `min_shift` away from the median
//!   in the signal's own units (a 0.2 ms glue span taking 0.6 ms is not news);
//! - a **sustained shift** starts when two of the last three values were point outliers, or a
//!   one-sided CUSUM on z (clamped to `k`, allowance `drift`) passes `h`; while it holds, every
//!   value on the shifted side (z at least half the shift's mean z, and at least 1) is marked.
//!   It ends after three values in a row off the shifted side; a shift that lasts `warmup`
//!   values is the new normal: those values become the baseline.
//!
//! [`Rate`] (errors): a baseline error rate from an informed prior (Beta with mean `prior_rate`
//! worth `prior_weight` requests) updated by every request seen outside an error burst, so it
//! judges from the first request without a warm-up; a burst is the last 10 or 20 requests
//! holding at least two errors that the baseline makes improbable (binomial tail below
//! e^-`h`, Bonferroni-corrected over the two windows), or a moderate rise over a longer
//! stretch that a Bernoulli CUSUM (the rate going from p0 to max(4·p0, p0 + 0.1)) finds past
//! `h` nats. While a burst holds, each failed request is marked.

use serde::{Deserialize, Serialize};

/// Which way a signal goes bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Up,
    Down,
    Both,
}

impl Direction {
    /// The signs judged: +1 (up), -1 (down).
    fn signs(self) -> &'static [f64] {
        match self {
            Direction::Up => &[1.0],
            Direction::Down => &[-1.0],
            Direction::Both => &[1.0, -1.0],
        }
    }
}

/// What one value did to a detector.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outcome {
    /// The robust z-score, once warmed up (signed: positive above the median).
    pub z: Option<f64>,
    /// A point outlier in the adverse direction.
    pub point: bool,
    /// The value lies on the shifted side of a sustained shift that holds now.
    pub sustained: bool,
}

/// Parameters shared by every [`Robust`] detector of a signal.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RobustParams {
    pub warmup: usize,
    /// Point threshold on z.
    pub k: f64,
    /// CUSUM allowance (in sigmas) and decision threshold.
    pub drift: f64,
    pub h: f64,
    /// How far the baseline moves towards a value, in sigmas.
    pub adapt: f64,
    /// The smallest sigma, in the detector's (transformed) units.
    pub min_sigma: f64,
    /// The adverse direction(s).
    pub direction: Direction,
}

/// A sustained shift in progress.
#[derive(Debug, Clone, Default)]
struct Shift {
    sign: f64,
    /// Mean z (in the adverse direction) of the values marked.
    mean_z: f64,
    marked: usize,
    /// Values in a row off the shifted side.
    misses: usize,
    /// The values marked, which become the baseline if the shift lasts `warmup` values.
    values: Vec<f64>,
}

#[derive(Debug, Clone)]
pub struct Robust {
    warm: Vec<f64>,
    median: f64,
    mad: f64,
    /// One-sided CUSUMs: up, down.
    cusum: [f64; 2],
    /// The last three point outliers as bits, per side (up, down).
    recent: [u8; 2],
    shift: Option<Shift>,
}

impl Default for Robust {
    fn default() -> Self {
        Robust {
            warm: Vec::new(),
            median: f64::NAN,
            mad: 0.0,
            cusum: [0.0; 2],
            recent: [0; 2],
            shift: None,
        }
    }
}

fn median_of(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn side(sign: f64) -> usize {
    usize::from(sign < 0.0)
}

impl Robust {
    pub fn warmed_up(&self) -> bool {
        !self.median.is_nan()
    }

    /// The baseline: median and sigma (1.4826 × MAD, at least `min_sigma`).
    pub fn baseline(&self, p: &RobustParams) -> Option<(f64, f64)> {
        self.warmed_up()
            .then(|| (self.median, (1.4826 * self.mad).max(p.min_sigma)))
    }

    /// Whether a sustained shift holds now.
    pub fn shifted(&self) -> bool {
        self.shift.is_some()
    }

    fn learn_baseline(&mut self, mut values: Vec<f64>) {
        self.median = median_of(&mut values);
        let mut dev: Vec<f64> = values.iter().map(|v| (v - self.median).abs()).collect();
        self.mad = median_of(&mut dev);
        self.cusum = [0.0; 2];
        self.recent = [0; 2];
        self.shift = None;
    }

    /// Judge `x` (in transformed units); `far_enough(median)` says whether `x` lies far enough
    /// from the median in the signal's own units to matter.
    pub fn observe(
        &mut self,
        x: f64,
        p: &RobustParams,
        far_enough: impl Fn(f64) -> bool,
    ) -> Outcome {
        if !x.is_finite() {
            return Outcome::default();
        }
        if !self.warmed_up() {
            self.warm.push(x);
            if self.warm.len() >= p.warmup.max(1) {
                let w = std::mem::take(&mut self.warm);
                self.learn_baseline(w);
            }
            return Outcome::default();
        }
        let sigma = (1.4826 * self.mad).max(p.min_sigma);
        let z = (x - self.median) / sigma;
        let far = far_enough(self.median);
        let mut point = false;
        let mut start: Option<f64> = None;
        for &sign in p.direction.signs() {
            let zo = sign * z;
            let s = side(sign);
            let out = zo > p.k && far;
            point |= out;
            self.recent[s] = ((self.recent[s] << 1) | u8::from(out)) & 0b111;
            // Capped at h: a long shift must not take as long again to wind down.
            self.cusum[s] = (self.cusum[s] + zo.min(p.k) - p.drift).clamp(0.0, p.h + p.k);
            let two_of_three = self.recent[s].count_ones() >= 2 && out;
            if self.shift.is_none() && far && (two_of_three || (self.cusum[s] > p.h && zo > 1.0)) {
                start = Some(sign);
            }
        }
        let mut sustained = false;
        if let Some(sign) = start {
            self.shift = Some(Shift {
                sign,
                ..Shift::default()
            });
        }
        if let Some(shift) = &mut self.shift {
            let zo = shift.sign * z;
            let on_side = far && zo >= 1.0 && (shift.marked == 0 || zo >= shift.mean_z / 2.0);
            if on_side {
                shift.mean_z =
                    (shift.mean_z * shift.marked as f64 + zo) / (shift.marked + 1) as f64;
                shift.marked += 1;
                shift.misses = 0;
                shift.values.push(x);
                sustained = true;
            } else {
                shift.misses += 1;
            }
            if shift.misses >= 3 {
                self.shift = None;
                self.cusum = [0.0; 2];
                self.recent = [0; 2];
            } else if shift.values.len() >= p.warmup.max(1) {
                // A shift that lasts this long is the new normal.
                let values = std::mem::take(&mut shift.values);
                self.learn_baseline(values);
            }
        }
        if !point && !sustained {
            let step = p.adapt * sigma;
            self.median += step * (x - self.median).signum();
            let d = (x - self.median).abs();
            // The MAD follows in the same way, in MAD units (1.4826 × MAD = sigma).
            self.mad = (self.mad + step / 1.4826 * (d - self.mad).signum()).max(0.0);
        }
        Outcome {
            z: Some(z),
            point,
            sustained,
        }
    }
}

/// Parameters of the error-rate detector.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RateParams {
    /// The prior's mean error rate and weight (in requests).
    pub prior_rate: f64,
    pub prior_weight: f64,
    /// The decision threshold: evidence of at least `h` nats (tail probability below e^-h).
    pub h: f64,
}

/// The windows a burst is looked for in: the last 10 and 20 requests. Not fewer: the shards of
/// a pipeline hand traces on in an order that may differ from their clients' by a few
/// requests, so "3 in the last 5" would depend on that order where "3 in the last 10" does not.
const WINDOWS: [usize; 2] = [10, 20];
/// Past this many requests the baseline's counts are halved, so it follows slow change.
const MEMORY: f64 = 2000.0;

#[derive(Debug, Clone, Default)]
pub struct Rate {
    /// Requests and errors in the baseline (outside the window and outside bursts).
    n: f64,
    errors: f64,
    /// A Bernoulli CUSUM for rises too moderate for the windows (the rate going from p0 to
    /// max(4·p0, p0 + 0.1)), in nats.
    cusum: f64,
    /// The last requests, newest last: (error, seen during a burst).
    window: std::collections::VecDeque<(bool, bool)>,
    burst: bool,
}

impl Rate {
    /// The baseline error rate: the prior updated by the requests seen outside bursts.
    pub fn baseline(&self, p: &RateParams) -> f64 {
        (p.prior_rate * p.prior_weight + self.errors) / (p.prior_weight + self.n)
    }

    /// Whether an error burst holds now.
    pub fn bursting(&self) -> bool {
        self.burst
    }

    /// The strongest evidence of a burst in the current windows: the smallest tail probability
    /// (Bonferroni-corrected) among windows with at least two errors.
    fn evidence(&self, p0: f64) -> f64 {
        let mut best = 1.0f64;
        for w in WINDOWS {
            let take = w.min(self.window.len());
            let k = self
                .window
                .iter()
                .rev()
                .take(take)
                .filter(|(e, _)| *e)
                .count();
            if k >= 2 {
                best = best.min(binomial_tail(take, k, p0) * WINDOWS.len() as f64);
            }
        }
        best
    }

    /// The alternative the CUSUM looks for: clearly more errors than p0.
    pub fn p1(p0: f64) -> f64 {
        (4.0 * p0).max(p0 + 0.1).min(0.95)
    }

    pub fn observe(&mut self, error: bool, p: &RateParams) -> Outcome {
        let p0 = self.baseline(p);
        let p1 = Self::p1(p0);
        let llr = if error {
            (p1 / p0).ln()
        } else {
            ((1.0 - p1) / (1.0 - p0)).ln()
        };
        // Capped one error above the threshold, so it winds down soon after a burst.
        self.cusum = (self.cusum + llr).clamp(0.0, p.h + (p1 / p0).ln());
        self.window.push_back((error, false));
        let evidence = self.evidence(p0);
        if evidence < (-p.h).exp() || self.cusum > p.h {
            if !self.burst {
                // The errors that made the burst are part of it: none of them will teach
                // the baseline.
                for entry in self.window.iter_mut().filter(|(e, _)| *e) {
                    entry.1 = true;
                }
            }
            self.burst = true;
        } else if evidence > 0.01 && self.cusum < p.h / 2.0 {
            // No longer unusual at all: the burst is over.
            self.burst = false;
        }
        if let Some(last) = self.window.back_mut() {
            last.1 = self.burst;
        }
        let max_window = WINDOWS[WINDOWS.len() - 1];
        while self.window.len() > max_window {
            if let Some((e, in_burst)) = self.window.pop_front()
                && !in_burst
            {
                self.n += 1.0;
                self.errors += f64::from(u8::from(e));
                if self.n > MEMORY {
                    self.n /= 2.0;
                    self.errors /= 2.0;
                }
            }
        }
        Outcome {
            z: None,
            point: false,
            sustained: self.burst && error,
        }
    }
}

/// P(X >= k) for X ~ Binomial(n, p), summed in log space (n is small here).
pub fn binomial_tail(n: usize, k: usize, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n || p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let ln_choose =
        |n: usize, k: usize| -> f64 { (1..=k).map(|i| ((n - k + i) as f64 / i as f64).ln()).sum() };
    (k..=n)
        .map(|j| (ln_choose(n, j) + j as f64 * p.ln() + (n - j) as f64 * (1.0 - p).ln()).exp())
        .sum::<f64>()
        .min(1.0)
}
