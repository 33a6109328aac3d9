//! The detectors of one signal of one key, fed one value at a time.
//!
//! [`Robust`] (latencies, tokens, cost, quality): the baseline is the median and the MAD of the
//! first `warmup` values, then follows the data slowly (a stochastic-approximation step of
//! `adapt` × sigma towards each value that is not an outlier), so it never learns from points
//! judged anomalous. Two tests run on the robust z-score `(x - median) / (1.4826 × MAD)`:
//! a point test (|z| > k) and a two-sided CUSUM on z clamped to ±k, for sustained shifts.
//!
//! [`Rate`] (errors): a Bernoulli CUSUM, the log-likelihood ratio of "the error rate rose to p1"
//! against the baseline rate p0, which follows the data with a slow average while the statistic rests at zero.

use serde::Serialize;

/// What one value did to a detector.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outcome {
    /// The robust z-score, once warmed up.
    pub z: Option<f64>,
    /// |z| above the point threshold.
    pub point: bool,
    /// The level-shift test crossed its threshold (it restarts from zero after).
    pub sustained: bool,
}

/// Parameters shared by every [`Robust`] detector.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RobustParams {
    pub warmup: usize,
    /// Point threshold on |z|.
    pub k: f64,
    /// CUSUM allowance (in sigmas) and decision threshold.
    pub drift: f64,
    pub h: f64,
    /// How far the baseline moves towards a value, in sigmas.
    pub adapt: f64,
    /// The smallest sigma, in the detector's units (keeps a constant series from dividing by 0).
    pub min_sigma: f64,
}

#[derive(Debug, Clone)]
pub struct Robust {
    warm: Vec<f64>,
    median: f64,
    mad: f64,
    hi: f64,
    lo: f64,
}

impl Default for Robust {
    fn default() -> Self {
        Robust {
            warm: Vec::new(),
            median: f64::NAN,
            mad: 0.0,
            hi: 0.0,
            lo: 0.0,
        }
    }
}

fn median_of(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
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

    pub fn observe(&mut self, x: f64, p: &RobustParams) -> Outcome {
        if !x.is_finite() {
            return Outcome::default();
        }
        if !self.warmed_up() {
            self.warm.push(x);
            if self.warm.len() >= p.warmup.max(1) {
                let mut w = std::mem::take(&mut self.warm);
                self.median = median_of(&mut w);
                let mut dev: Vec<f64> = w.iter().map(|v| (v - self.median).abs()).collect();
                self.mad = median_of(&mut dev);
            }
            return Outcome::default();
        }
        let sigma = (1.4826 * self.mad).max(p.min_sigma);
        let z = (x - self.median) / sigma;
        let point = z.abs() > p.k;
        let zc = z.clamp(-p.k, p.k);
        self.hi = (self.hi + zc - p.drift).max(0.0);
        self.lo = (self.lo - zc - p.drift).max(0.0);
        let sustained = self.hi > p.h || self.lo > p.h;
        if sustained {
            self.hi = 0.0;
            self.lo = 0.0;
        }
        if !point {
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
    pub warmup: usize,
    /// The lowest baseline rate assumed (a clean warm-up does not make every error an alarm).
    pub min_rate: f64,
    /// The decision threshold on the log-likelihood ratio (ln of the wanted run length).
    pub h: f64,
    /// Weight of each new value in the baseline rate.
    pub adapt: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Rate {
    n: usize,
    errors: usize,
    p0: Option<f64>,
    s: f64,
}

impl Rate {
    /// The baseline error rate, once warmed up.
    pub fn baseline(&self) -> Option<f64> {
        self.p0
    }

    /// The alternative the test looks for: clearly more errors than p0.
    pub fn p1(p0: f64) -> f64 {
        (4.0 * p0).max(p0 + 0.1).min(0.95)
    }

    pub fn observe(&mut self, error: bool, p: &RateParams) -> Outcome {
        let Some(p0) = self.p0 else {
            self.n += 1;
            self.errors += usize::from(error);
            if self.n >= p.warmup.max(1) {
                self.p0 = Some((self.errors as f64 / self.n as f64).max(p.min_rate));
            }
            return Outcome::default();
        };
        let p1 = Self::p1(p0);
        // Learn from values seen while the statistic rested at zero (an excursion's values
        // are suspects), errors included: judging after the update would never learn an error.
        let at_rest = self.s == 0.0;
        let llr = if error {
            (p1 / p0).ln()
        } else {
            ((1.0 - p1) / (1.0 - p0)).ln()
        };
        self.s = (self.s + llr).max(0.0);
        let sustained = self.s > p.h;
        if sustained {
            self.s = 0.0;
        } else if at_rest {
            let x = if error { 1.0 } else { 0.0 };
            self.p0 = Some((p0 + p.adapt * (x - p0)).max(p.min_rate));
        }
        Outcome {
            z: None,
            point: false,
            sustained,
        }
    }
}
