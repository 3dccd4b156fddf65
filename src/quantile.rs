//! A streaming quantile in fixed memory: the P² algorithm (Jain & Chlamtac,
//! "The P² algorithm for dynamic calculation of quantiles and histograms
//! without storing observations", CACM 1985).
//!
//! A device calibrates its own anomaly threshold from the scores of its
//! first windows after installation: the threshold for a false-alarm rate
//! `α` is the `1 − α` quantile of normal scores. [`P2Quantile`] estimates one
//! quantile from a stream with five markers (a few dozen bytes, no
//! allocation, `O(1)` per value): exact up to five values, then the markers'
//! heights are adjusted by piecewise-parabolic interpolation as values
//! arrive. NaN/Inf values are refused and leave the estimate unchanged.
//!
//! ```
//! use flowmote::quantile::P2Quantile;
//!
//! let mut q = P2Quantile::new(0.9);
//! for i in 0..1000 {
//!     q.push((i % 100) as f32).unwrap(); // uniform on 0..=99, ten times
//! }
//! let est = q.estimate().unwrap();
//! assert!((est - 89.5).abs() < 2.0, "{est}");
//! assert!(q.push(f32::NAN).is_err());
//! ```

use crate::Error;

/// Streaming estimate of the `p`-quantile of the values pushed (P²).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct P2Quantile {
    p: f32,
    /// Values seen (saturating).
    count: u32,
    /// Marker heights (the first `count` values, sorted, until there are five).
    q: [f32; 5],
    /// Marker positions (1-based ranks).
    n: [f32; 5],
    /// Desired marker positions.
    want: [f32; 5],
}

impl P2Quantile {
    /// An estimator of the `p`-quantile, `0 < p < 1` (clamped into
    /// `[0.001, 0.999]`; NaN becomes 0.5).
    pub const fn new(p: f32) -> Self {
        let p = if p.is_nan() {
            0.5
        } else if p < 0.001 {
            0.001
        } else if p > 0.999 {
            0.999
        } else {
            p
        };
        P2Quantile {
            p,
            count: 0,
            q: [0.0; 5],
            n: [1.0, 2.0, 3.0, 4.0, 5.0],
            want: [1.0, 1.0 + 2.0 * p, 1.0 + 4.0 * p, 3.0 + 2.0 * p, 5.0],
        }
    }

    /// The quantile estimated, `p`.
    pub fn p(&self) -> f32 {
        self.p
    }

    /// Values accepted so far (saturates at `u32::MAX`).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Add one value. NaN/Inf is [`Error::NonFiniteInput`] and changes nothing.
    pub fn push(&mut self, x: f32) -> Result<(), Error> {
        if !x.is_finite() {
            return Err(Error::NonFiniteInput);
        }
        if self.count < 5 {
            // Insertion into the sorted first values.
            let mut i = self.count as usize;
            while i > 0 && self.q[i - 1] > x {
                self.q[i] = self.q[i - 1];
                i -= 1;
            }
            self.q[i] = x;
            self.count += 1;
            return Ok(());
        }
        self.count = self.count.saturating_add(1);
        // The cell the value falls in; the extreme markers follow the extremes.
        let k = if x < self.q[0] {
            self.q[0] = x;
            0
        } else if x >= self.q[4] {
            self.q[4] = x;
            3
        } else {
            let mut k = 0;
            while k < 3 && x >= self.q[k + 1] {
                k += 1;
            }
            k
        };
        for i in k + 1..5 {
            self.n[i] += 1.0;
        }
        let p = self.p;
        let dw = [0.0, p / 2.0, p, (1.0 + p) / 2.0, 1.0];
        for (w, d) in self.want.iter_mut().zip(dw) {
            *w += d;
        }
        for i in 1..4 {
            let d = self.want[i] - self.n[i];
            if d >= 1.0 && self.n[i + 1] - self.n[i] > 1.0 || d <= -1.0 && self.n[i - 1] - self.n[i] < -1.0 {
                let s = if d >= 0.0 { 1.0 } else { -1.0 };
                let qp = self.parabolic(i, s);
                self.q[i] = if self.q[i - 1] < qp && qp < self.q[i + 1] {
                    qp
                } else {
                    self.linear(i, s)
                };
                self.n[i] += s;
            }
        }
        Ok(())
    }

    fn parabolic(&self, i: usize, s: f32) -> f32 {
        let (q, n) = (&self.q, &self.n);
        q[i] + s / (n[i + 1] - n[i - 1])
            * ((n[i] - n[i - 1] + s) * (q[i + 1] - q[i]) / (n[i + 1] - n[i])
                + (n[i + 1] - n[i] - s) * (q[i] - q[i - 1]) / (n[i] - n[i - 1]))
    }

    fn linear(&self, i: usize, s: f32) -> f32 {
        let j = if s > 0.0 { i + 1 } else { i - 1 };
        self.q[i] + s * (self.q[j] - self.q[i]) / (self.n[j] - self.n[i])
    }

    /// The estimate; `None` before any value. Up to five values it is the
    /// sample quantile (nearest rank).
    pub fn estimate(&self) -> Option<f32> {
        match self.count {
            0 => None,
            c @ 1..=4 => {
                let c = c as usize;
                let rank = libm::ceilf(self.p * c as f32) as usize;
                self.q.get(rank.clamp(1, c) - 1).copied()
            }
            _ => Some(self.q[2]),
        }
    }
}
