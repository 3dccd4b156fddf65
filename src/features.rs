//! Window features: what a device computes from its sensor before scoring.
//!
//! A sensor gives one reading of `C` channels at a time; a model usually
//! scores a *window* of `N` readings, summarised per channel by a few
//! statistics ([`Stat`]): mean, standard deviation, RMS, minimum, maximum,
//! peak-to-peak, and the energy of a band of the window's spectrum. A new
//! window is complete every `M` readings (the *hop*; `M = N` for windows
//! that do not overlap). `N = 1` with [`Stat::Mean`] is the raw reading.
//!
//! [`window_features`] is the one implementation: the tool applies it to
//! CSV recordings (sizes read at run time), the firmware through the
//! fixed-size [`Pipeline`] — the same arithmetic in the same order, so host
//! and device features are equal bit for bit.
//!
//! Features are laid out channel by channel, each channel's statistics in
//! the order given: channels `x, y` with `[Mean, Std]` give
//! `[x_mean, x_std, y_mean, y_std]`.
//!
//! ```
//! use flowmote::features::{Pipeline, Stat};
//!
//! // Two channels, windows of 4 readings every 2 readings, mean and peak-to-peak.
//! let mut p: Pipeline<2, 4, 2, 4> = Pipeline::new([Stat::Mean, Stat::Ptp], 2);
//! assert!(p.push([1.0, 0.0]).is_none());
//! assert!(p.push([2.0, 0.0]).is_none());
//! assert!(p.push([3.0, 0.0]).is_none());
//! let f = p.push([4.0, 8.0]).unwrap().unwrap();
//! assert_eq!(f, [2.5, 3.0, 2.0, 8.0]);
//! let f = p.push([5.0, 0.0]).map(|r| r.unwrap()); // one reading into the next hop
//! assert!(f.is_none());
//! assert_eq!(p.push([6.0, 0.0]).unwrap().unwrap(), [4.5, 3.0, 2.0, 8.0]);
//! ```
//!
//! A pipeline whose output does not match the model's input does not build
//! (3 channels × 2 statistics are 6 features, not 5):
//! ```compile_fail
//! use flowmote::features::{Pipeline, Stat};
//! let p: Pipeline<3, 8, 2, 5> = Pipeline::new([Stat::Mean, Stat::Std], 8);
//! ```

use crate::Error;
use core::fmt;

/// Most readings in a window (bounds the cost of a band energy and keeps
/// sizes read from files sane).
pub const MAX_WINDOW: usize = 4096;

/// One statistic of one channel over a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Stat {
    /// Arithmetic mean.
    Mean,
    /// Standard deviation (population: divides by `N`), from the
    /// deviations about the mean (two passes).
    Std,
    /// Root mean square.
    Rms,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Peak-to-peak: largest minus smallest.
    Ptp,
    /// Energy of the discrete Fourier bins `lo..=hi` of the window (bin `k`
    /// is the frequency `k · fs / N`), one-sided and scaled so that the bands
    /// `0..=N/2` add up to the mean square (RMS²): a sine of amplitude `A`
    /// on bin `k` (`0 < k < N/2`) has energy `A²/2` there. Computed by the
    /// Goertzel recurrence, `O(N)` per bin. Needs `lo ≤ hi ≤ N/2`.
    Band {
        /// First bin.
        lo: u16,
        /// Last bin (inclusive).
        hi: u16,
    },
}

impl fmt::Display for Stat {
    /// The name the tool's `--features` takes: `mean`, `std`, `rms`, `min`,
    /// `max`, `ptp`, `band3-5` (bins 3 to 5), `band4` (bin 4 alone).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Stat::Mean => f.write_str("mean"),
            Stat::Std => f.write_str("std"),
            Stat::Rms => f.write_str("rms"),
            Stat::Min => f.write_str("min"),
            Stat::Max => f.write_str("max"),
            Stat::Ptp => f.write_str("ptp"),
            Stat::Band { lo, hi } if lo == hi => write!(f, "band{lo}"),
            Stat::Band { lo, hi } => write!(f, "band{lo}-{hi}"),
        }
    }
}

impl Stat {
    /// Whether this statistic can be computed over a window of `n` readings.
    pub const fn fits(&self, n: usize) -> bool {
        match *self {
            Stat::Band { lo, hi } => lo <= hi && (hi as usize) <= n / 2,
            _ => true,
        }
    }
}

/// Whether every statistic of `stats` fits a window of `n` readings (a
/// `const fn`, for compile-time checks of exported pipelines).
pub const fn all_fit(stats: &[Stat], n: usize) -> bool {
    let mut i = 0;
    while i < stats.len() {
        if !stats[i].fits(n) {
            return false;
        }
        i += 1;
    }
    n >= 1 && n <= MAX_WINDOW
}

/// Mean of `v` (sequential sum, then one division).
fn mean(v: impl Iterator<Item = f32>, n: usize) -> f32 {
    let mut s = 0.0f32;
    for x in v {
        s += x;
    }
    s / n as f32
}

/// `Σ_{k=lo..=hi} c_k |X_k|² / N²` with `c_k = 1` for DC and Nyquist, 2
/// otherwise. Bin 0 is `mu²`; the other bins do not depend on the mean, so
/// the recurrence runs on `x − mu` (a large offset would otherwise cost the
/// low bins most of their precision).
fn band_energy(v: impl Iterator<Item = f32> + Clone, n: usize, lo: u16, hi: u16, mu: f32) -> f32 {
    let nf = n as f32;
    let mut e = 0.0f32;
    for k in lo..=hi {
        if k == 0 {
            e += mu * mu;
            continue;
        }
        let w = 2.0 * core::f32::consts::PI * k as f32 / nf;
        let coeff = 2.0 * libm::cosf(w);
        let (mut s1, mut s2) = (0.0f32, 0.0f32);
        for x in v.clone() {
            let s0 = (x - mu) + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        // |X_k|² = s1² + s2² − coeff·s1·s2; clamp rounding below zero.
        let p = (s1 * s1 + s2 * s2 - coeff * s1 * s2).max(0.0);
        let one_sided = if 2 * k as usize == n { 1.0 } else { 2.0 };
        e += one_sided * p / (nf * nf);
    }
    e
}

/// Features of one window: `window` holds `N = window.len() / channels`
/// readings, row-major (reading `i`, channel `c` at `i · channels + c`), in
/// the order they were read; `out[c · stats.len() + j]` gets statistic
/// `stats[j]` of channel `c`.
///
/// Errors, never panics: [`Error::ShapeMismatch`] when the sizes disagree, a
/// band does not fit the window, or `N` is 0 or above [`MAX_WINDOW`];
/// [`Error::NonFiniteInput`] for NaN/Inf readings; [`Error::Overflow`] when a
/// feature of finite readings is not finite (e.g. the square of 1e30).
pub fn window_features(window: &[f32], channels: usize, stats: &[Stat], out: &mut [f32]) -> Result<(), Error> {
    if channels == 0 || window.len() % channels != 0 || out.len() != channels * stats.len() {
        return Err(Error::ShapeMismatch);
    }
    let n = window.len() / channels;
    if n == 0 || n > MAX_WINDOW || !stats.iter().all(|s| s.fits(n)) {
        return Err(Error::ShapeMismatch);
    }
    crate::error::check_finite(window)?;
    for (c, out) in out.chunks_exact_mut(stats.len().max(1)).enumerate() {
        let col = window.iter().skip(c).step_by(channels).copied();
        let mut m: Option<f32> = None;
        let mut mean_of = || *m.get_or_insert_with(|| mean(col.clone(), n));
        for (o, s) in out.iter_mut().zip(stats) {
            *o = match *s {
                Stat::Mean => mean_of(),
                Stat::Std => {
                    let mu = mean_of();
                    libm::sqrtf(mean(col.clone().map(|x| (x - mu) * (x - mu)), n))
                }
                Stat::Rms => libm::sqrtf(mean(col.clone().map(|x| x * x), n)),
                Stat::Min => col.clone().fold(f32::INFINITY, f32::min),
                Stat::Max => col.clone().fold(f32::NEG_INFINITY, f32::max),
                Stat::Ptp => col.clone().fold(f32::NEG_INFINITY, f32::max) - col.clone().fold(f32::INFINITY, f32::min),
                Stat::Band { lo, hi } => band_energy(col.clone(), n, lo, hi, mean_of()),
            };
        }
    }
    if out.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(Error::Overflow)
    }
}

/// A sensor's feature pipeline with fixed sizes, for the firmware: readings
/// of `C` channels go in one at a time; every `hop` readings, once `N` have
/// been read, the `D = C · S` features of the last `N` come out.
///
/// `D == C · S` and `N ≥ 1` are checked when the type is used (a compile
/// error), so a model whose input does not match the sensor's pipeline does
/// not build; [`all_fit`] checks the bands in a `const` (the export does). A
/// band that does not fit makes every window [`Error::ShapeMismatch`], never
/// a panic.
/// Memory: the window, `C · N` floats.
#[derive(Clone, Debug)]
pub struct Pipeline<const C: usize, const N: usize, const S: usize, const D: usize> {
    stats: [Stat; S],
    hop: usize,
    /// The last readings, oldest first; `filled` of them are valid.
    buf: [[f32; C]; N],
    filled: usize,
    /// Readings since the last complete window.
    since: usize,
}

impl<const C: usize, const N: usize, const S: usize, const D: usize> Pipeline<C, N, S, D> {
    /// A pipeline computing `stats` per channel over windows of `N` readings,
    /// one window every `hop` readings (`hop` is clamped to `1..=N`).
    pub const fn new(stats: [Stat; S], hop: usize) -> Self {
        const {
            assert!(
                C >= 1 && N >= 1 && S >= 1,
                "a pipeline needs channels, readings and statistics"
            );
            assert!(N <= MAX_WINDOW, "window longer than MAX_WINDOW");
            assert!(C * S == D, "the model's input size D must be channels × statistics");
        }
        let hop = if hop == 0 {
            1
        } else if hop > N {
            N
        } else {
            hop
        };
        Pipeline {
            stats,
            hop,
            buf: [[0.0; C]; N],
            filled: 0,
            since: 0,
        }
    }

    /// The statistics computed per channel.
    pub fn stats(&self) -> &[Stat; S] {
        &self.stats
    }

    /// Readings between windows.
    pub fn hop(&self) -> usize {
        self.hop
    }

    /// Readings added since the last complete window (or since the pipeline
    /// was made or reset): `0` right after a window, up to `N` while the
    /// first window fills.
    pub fn pending(&self) -> usize {
        self.since
    }

    /// Forget every reading (e.g. after a sensor error), so the next window
    /// holds only readings that follow.
    pub fn reset(&mut self) {
        self.filled = 0;
        self.since = 0;
    }

    /// Add one reading; `Some` when it completes a window: its features, or
    /// why they cannot be computed. A reading with NaN/Inf is stored (so the
    /// windows it is part of report [`Error::NonFiniteInput`]) and never
    /// corrupts later windows.
    pub fn push(&mut self, reading: [f32; C]) -> Option<Result<[f32; D], Error>> {
        let mut just_filled = false;
        if self.filled < N {
            if let Some(slot) = self.buf.get_mut(self.filled) {
                *slot = reading;
            }
            self.filled += 1;
            just_filled = self.filled == N;
        } else {
            self.buf.rotate_left(1);
            if let Some(last) = self.buf.last_mut() {
                *last = reading;
            }
        }
        self.since += 1;
        if !(just_filled || self.filled == N && self.since >= self.hop) {
            return None;
        }
        self.since = 0;
        let mut out = [0.0f32; D];
        Some(window_features(self.buf.as_flattened(), C, &self.stats, &mut out).map(|()| out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_reading_with_mean_is_the_reading() {
        let mut p: Pipeline<3, 1, 1, 3> = Pipeline::new([Stat::Mean], 1);
        for r in [[1.5f32, -2.25, 1e-30], [3.0, 4.0, -7.0]] {
            assert_eq!(p.push(r).unwrap().unwrap(), r);
        }
    }

    #[test]
    fn windows_come_every_hop_once_full() {
        let mut p: Pipeline<1, 3, 1, 1> = Pipeline::new([Stat::Max], 2);
        let got: [Option<f32>; 7] = core::array::from_fn(|i| p.push([i as f32]).map(|r| r.unwrap()[0]));
        assert_eq!(got, [None, None, Some(2.0), None, Some(4.0), None, Some(6.0)]);
        assert_eq!(p.pending(), 0);
        p.push([7.0]);
        assert_eq!(p.pending(), 1);
        p.reset();
        assert_eq!(p.pending(), 0);
    }
}
