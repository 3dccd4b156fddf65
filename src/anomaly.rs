//! Anomaly scoring: `score = −log p(x)` against a threshold, and a k-of-n
//! debouncer for alarms.
//!
//! A [`Detector`] borrows a model — any [`Density`]: a [`Flow`](crate::Flow) or a
//! [`Mixture`](crate::Mixture) of flows, usually the exported `static MODEL` — and
//! the calibrated threshold (`THRESHOLD` of the exported file) and turns a
//! feature vector into a [`Verdict`]. Scoring is a pure function of the input:
//! NaN/Inf input, or input the model cannot score, gives
//! [`Verdict::Invalid`] — never a panic, and nothing is stored, so a bad
//! reading cannot corrupt later verdicts.
//!
//! A single anomalous window is often noise; [`KOfN`] raises an alarm only
//! when at least `k` of the last `N` verdicts were anomalous, with a fixed
//! ring buffer (no allocation).
//!
//! ```
//! use flowmote::anomaly::{Detector, KOfN, Verdict};
//! use flowmote::{ActNorm, Flow};
//!
//! static MODEL: Flow<1, (ActNorm<1>,)> = Flow::new((ActNorm::new([0.0], [0.0]),));
//! // Standard normal: −log p(0) = ½ ln 2π ≈ 0.92; −log p(4) ≈ 8.92.
//! let det = Detector::new(&MODEL, 5.0);
//! assert!(matches!(det.score(&[0.0]), Verdict::Normal { .. }));
//! assert!(det.score(&[4.0]).is_anomalous());
//! assert!(matches!(det.score(&[f32::NAN]), Verdict::Invalid(_)));
//!
//! let mut debounce = KOfN::<3>::new(2); // alarm when 2 of the last 3 are anomalous
//! assert!(!debounce.push(true));
//! assert!(!debounce.push(false));
//! assert!(debounce.push(true));
//! ```

use crate::{Density, Error};

/// The outcome of scoring one feature vector.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Verdict {
    /// The score `−log p(x)` (nats, finite) is at most the threshold.
    Normal {
        /// `−log p(x)` in nats.
        score: f32,
    },
    /// The score exceeds the threshold (or the threshold is NaN: fail-safe).
    Anomalous {
        /// `−log p(x)` in nats.
        score: f32,
    },
    /// The input could not be scored (NaN/Inf, out of the model's domain, or
    /// the model overflows on it). Carries the core's [`Error`].
    Invalid(Error),
}

impl Verdict {
    /// The score, if the input could be scored.
    #[inline]
    pub fn score(&self) -> Option<f32> {
        match *self {
            Verdict::Normal { score } | Verdict::Anomalous { score } => Some(score),
            Verdict::Invalid(_) => None,
        }
    }

    /// `true` for [`Verdict::Anomalous`] only.
    #[inline]
    pub fn is_anomalous(&self) -> bool {
        matches!(self, Verdict::Anomalous { .. })
    }

    /// `true` for [`Verdict::Invalid`].
    #[inline]
    pub fn is_invalid(&self) -> bool {
        matches!(self, Verdict::Invalid(_))
    }
}

/// Scores feature vectors with a model (any [`Density`]) and a threshold on
/// `−log p(x)`.
///
/// Holds only a reference and a number, so it is `Copy` and can be built in a
/// `const`/`static` from the exported `MODEL` and `THRESHOLD`.
#[derive(Debug)]
pub struct Detector<'a, const D: usize, M> {
    model: &'a M,
    threshold: f32,
}

impl<const D: usize, M> Clone for Detector<'_, D, M> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<const D: usize, M> Copy for Detector<'_, D, M> {}

impl<'a, const D: usize, M: Density<D>> Detector<'a, D, M> {
    /// A detector flagging inputs whose score `−log p(x)` exceeds `threshold`
    /// (nats). `f32::INFINITY` (an uncalibrated model) never flags a finite
    /// score; a NaN threshold flags every scorable input (fail-safe).
    pub const fn new(model: &'a M, threshold: f32) -> Self {
        Detector { model, threshold }
    }

    /// The threshold on `−log p(x)`, nats.
    #[inline]
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// The model being scored with.
    #[inline]
    pub fn model(&self) -> &'a M {
        self.model
    }

    /// Score one feature vector. Never panics: inputs that cannot be scored
    /// give [`Verdict::Invalid`]. A returned score is always finite.
    #[inline]
    pub fn score(&self, x: &[f32; D]) -> Verdict {
        match self.model.log_prob(x) {
            Ok(lp) => {
                let score = -lp;
                // `!(score <= t)` rather than `score > t`: a NaN threshold flags.
                if score <= self.threshold {
                    Verdict::Normal { score }
                } else {
                    Verdict::Anomalous { score }
                }
            }
            Err(e) => Verdict::Invalid(e),
        }
    }
}

/// k-of-n debouncer: the alarm is on while at least `k` of the last `N`
/// observations were positive. A fixed ring buffer of `N` flags; `N ≥ 1`
/// is checked at compile time.
///
/// Until `N` observations have been pushed, the window holds only those seen
/// so far (missing ones count as negative), so the alarm can fire early
/// after `k` positives.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct KOfN<const N: usize> {
    ring: [bool; N],
    next: usize,
    positives: usize,
    k: usize,
}

impl<const N: usize> KOfN<N> {
    /// A debouncer that alarms when `k` of the last `N` observations are
    /// positive, or `None` unless `1 ≤ k ≤ N`.
    pub const fn try_new(k: usize) -> Option<Self> {
        const { assert!(N >= 1, "KOfN needs a window of at least one observation") };
        if k >= 1 && k <= N {
            Some(KOfN {
                ring: [false; N],
                next: 0,
                positives: 0,
                k,
            })
        } else {
            None
        }
    }

    /// Like [`KOfN::try_new`]. Panics unless `1 ≤ k ≤ N`; in a `const` or
    /// `static` initialiser that is a compile-time error, so prefer
    /// `const { KOfN::new(k) }` in firmware.
    pub const fn new(k: usize) -> Self {
        match Self::try_new(k) {
            Some(d) => d,
            None => panic!("KOfN: need 1 <= k <= N"),
        }
    }

    /// Record one observation; returns whether the alarm is now on.
    #[inline]
    pub fn push(&mut self, positive: bool) -> bool {
        // `next < N` always holds (wrapped below), so no bounds check fails;
        // `get_mut` keeps the path free of panics regardless.
        if let Some(slot) = self.ring.get_mut(self.next) {
            if *slot {
                self.positives = self.positives.saturating_sub(1);
            }
            *slot = positive;
            if positive {
                self.positives += 1;
            }
        }
        self.next += 1;
        if self.next >= N {
            self.next = 0;
        }
        self.is_alarm()
    }

    /// Whether at least `k` of the last `N` observations were positive.
    #[inline]
    pub fn is_alarm(&self) -> bool {
        self.positives >= self.k
    }

    /// Number of positives among the last `N` observations.
    #[inline]
    pub fn positives(&self) -> usize {
        self.positives
    }

    /// The `k` of k-of-n.
    #[inline]
    pub fn k(&self) -> usize {
        self.k
    }

    /// Forget every observation (the alarm turns off).
    pub fn reset(&mut self) {
        self.ring = [false; N];
        self.next = 0;
        self.positives = 0;
    }
}
