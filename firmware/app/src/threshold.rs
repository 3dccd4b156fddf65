//! Commissioning: calibrate the anomaly threshold on the device from the
//! scores of its first windows after installation.
//!
//! The threshold for a target false-alarm rate `α` is the `1 − α` quantile of
//! the scores of normal windows. [`Calibrator`] feeds every *valid* score
//! (never [`Verdict::Invalid`]; a score is always finite) into the core's
//! streaming [`P2Quantile`] (fixed memory, no allocation) and, once it has
//! seen `windows` of them, yields the estimate — exactly once.
//!
//! What it does, precisely:
//! * It assumes the commissioning windows are normal (the device was just
//!   installed on healthy equipment): normal *and* anomalous verdicts (as
//!   judged against whatever threshold is in force meanwhile) are counted
//!   alike, because the quantile must see the whole normal distribution.
//! * It is one-shot: after completion it ignores further verdicts and keeps
//!   returning the same [`Calibrator::threshold`]. It does not track the
//!   threshold afterwards: a quantile fed only the windows scored normal would
//!   ratchet the threshold down, and one fed every window would follow
//!   anomalies up. Re-commissioning is a deliberate act (on the nRF52840-DK,
//!   holding button 2 at reset).
//! * If the estimate is not finite (scores near `f32::MAX`), it keeps
//!   collecting instead of yielding it.

use flowmote::quantile::P2Quantile;

use crate::Verdict;

/// Streaming threshold calibration at a target false-alarm rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Calibrator {
    quantile: P2Quantile,
    needed: u32,
    done: Option<f32>,
}

impl Calibrator {
    /// Calibrate at `false_alarm_rate` (`α`, clamped like
    /// [`P2Quantile::new`] clamps `1 − α`) from the first `windows` valid
    /// scores (at least 1; fewer than a few hundred windows give a noisy
    /// threshold: the rank error of the estimate is about
    /// `3·√(α(1−α)/windows)`).
    pub const fn new(false_alarm_rate: f32, windows: u32) -> Self {
        let quantile = P2Quantile::new(1.0 - false_alarm_rate);
        Calibrator {
            quantile,
            needed: if windows == 0 { 1 } else { windows },
            done: None,
        }
    }

    /// Take one verdict into account. Returns the calibrated threshold
    /// (finite, nats) on the window that completes the calibration, and
    /// `None` otherwise (still collecting, invalid verdict, already done).
    pub fn observe(&mut self, verdict: &Verdict) -> Option<f32> {
        if self.done.is_some() {
            return None;
        }
        let score = verdict.score()?;
        // A score is finite; a refused value changes nothing.
        self.quantile.push(score).ok()?;
        if self.quantile.count() < self.needed {
            return None;
        }
        let t = self.quantile.estimate().filter(|t| t.is_finite())?;
        self.done = Some(t);
        Some(t)
    }

    /// The calibrated threshold, once calibration is complete.
    pub fn threshold(&self) -> Option<f32> {
        self.done
    }

    /// Whether calibration is complete.
    pub fn is_done(&self) -> bool {
        self.done.is_some()
    }

    /// Valid scores taken so far.
    pub fn seen(&self) -> u32 {
        self.quantile.count()
    }

    /// Valid scores needed.
    pub fn needed(&self) -> u32 {
        self.needed
    }

    /// The target false-alarm rate (after clamping).
    pub fn false_alarm_rate(&self) -> f32 {
        1.0 - self.quantile.p()
    }
}
