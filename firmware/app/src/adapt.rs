//! On-device adaptation: the model learns its own installation's normal.
//!
//! [`Adaptation`] drives the core's [`flowmote::Adapter`] from the monitor's
//! windows: *commissioning* first (the first `N` valid windows after
//! installation, or after the user asks for it, all update, however badly
//! the shipped model scores them), then, if enabled, *tracking* (only
//! windows scored normal with a margin update, each step bounded, an update
//! that hurts the held-back windows rolled back). NaN/Inf windows never
//! update. The detector scores through a [`flowmote::Corrected`] model,
//! which [`Adaptation::observe`] keeps in step with the adapter; the
//! correction persists as a [`crate::Correction`] record.
//!
//! The gradient is the model's own ([`flowmote::gradient::Gradient`], sized
//! by the export's `ADAPT_LAYERS` and `ADAPT_SCRATCH`); the arithmetic is
//! the host's `flowmote adapt`, bit for bit (the QEMU golden run checks a
//! fixed sequence of updates).

use flowmote::adapt::{AdaptConfig, AdaptTarget, Adapter, Corrected, Tracked};
use flowmote::{Density, Error};

use crate::persist::Correction;

/// Where an [`Adaptation`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Phase {
    /// Every valid window updates; this many are still to come.
    Commissioning {
        /// Windows left.
        left: u32,
    },
    /// Only normal windows update (bounded, with rollback).
    Tracking,
    /// No updates.
    Frozen,
}

/// What one [`Adaptation::observe`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Step {
    /// A commissioning update; the window's adapted score before it.
    Commissioned(f32),
    /// The commissioning update of the last window: commissioning is done,
    /// the correction should be saved (and a threshold calibrated on it).
    CommissioningDone(f32),
    /// Tracking's decision.
    Tracked(Tracked),
    /// The window was not used: non-finite, or the model could not score
    /// or differentiate it. Nothing changed.
    Skipped(Error),
    /// Frozen: nothing to do.
    Idle,
}

/// Counters of an [`Adaptation`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AdaptStats {
    /// Windows that updated the correction (commissioning and tracking).
    pub updates: u32,
    /// Tracking windows not normal enough to update.
    pub rejected: u32,
    /// Tracking updates rolled back.
    pub rolled_back: u32,
    /// Windows skipped (non-finite, unscorable).
    pub skipped: u32,
}

/// An [`Adapter`] with `H` held-back windows and its phase.
pub struct Adaptation<const D: usize, const H: usize> {
    adapter: Adapter<D, H>,
    phase: Phase,
    track: bool,
    stats: AdaptStats,
}

impl<const D: usize, const H: usize> Adaptation<D, H> {
    /// Commission from the next `windows` valid windows, then track (if
    /// `track`) or freeze. `mean`, `std`: the export's `MEAN`, `STD`.
    pub fn commissioning(config: AdaptConfig, mean: [f32; D], std: [f32; D], windows: u32, track: bool) -> Self {
        let phase = if windows == 0 {
            Self::after(track)
        } else {
            Phase::Commissioning { left: windows }
        };
        Adaptation {
            adapter: Adapter::new(config, mean, std),
            phase,
            track,
            stats: AdaptStats::default(),
        }
    }

    /// Resume from a saved correction: track (if `track`) or freeze.
    pub fn restored(config: AdaptConfig, mean: [f32; D], std: [f32; D], saved: &Correction<D>, track: bool) -> Self {
        let mut a = Self::commissioning(config, mean, std, 0, track);
        a.adapter.set_correction(saved.shift, saved.log_scale);
        a
    }

    fn after(track: bool) -> Phase {
        if track {
            Phase::Tracking
        } else {
            Phase::Frozen
        }
    }

    /// Use window `x` (scored against `threshold` when tracking) and put
    /// the correction into `scorer`, so later windows score adapted.
    pub fn observe<T: AdaptTarget + ?Sized, M: Density<D>>(
        &mut self,
        target: &mut T,
        scorer: &Corrected<'_, D, M>,
        x: &[f32; D],
        threshold: f32,
    ) -> Step {
        let step = match self.phase {
            Phase::Frozen => return Step::Idle,
            Phase::Commissioning { left } => match self.adapter.commission(target, x) {
                Ok(nll) => {
                    self.stats.updates = self.stats.updates.wrapping_add(1);
                    let left = left.saturating_sub(1);
                    if left == 0 {
                        self.phase = Self::after(self.track);
                        Step::CommissioningDone(nll)
                    } else {
                        self.phase = Phase::Commissioning { left };
                        Step::Commissioned(nll)
                    }
                }
                Err(e) => Step::Skipped(e),
            },
            Phase::Tracking => match self.adapter.track(target, x, threshold) {
                Ok(t) => {
                    match t {
                        Tracked::Updated(_) => self.stats.updates = self.stats.updates.wrapping_add(1),
                        Tracked::NotNormal(_) => self.stats.rejected = self.stats.rejected.wrapping_add(1),
                        Tracked::RolledBack(_) => self.stats.rolled_back = self.stats.rolled_back.wrapping_add(1),
                        Tracked::Held(_) => {}
                    }
                    Step::Tracked(t)
                }
                Err(e) => Step::Skipped(e),
            },
        };
        if let Step::Skipped(_) = step {
            self.stats.skipped = self.stats.skipped.wrapping_add(1);
        }
        scorer.set(self.adapter.correction());
        step
    }

    /// The phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Counters so far.
    pub fn stats(&self) -> AdaptStats {
        self.stats
    }

    /// The correction as a record to save (its sequence number is set by
    /// the store).
    pub fn record(&self) -> Correction<D> {
        let (shift, log_scale) = self.adapter.correction();
        Correction {
            seq: 0,
            steps: self.adapter.steps(),
            shift,
            log_scale,
        }
    }

    /// The adapter.
    pub fn adapter(&self) -> &Adapter<D, H> {
        &self.adapter
    }
}
