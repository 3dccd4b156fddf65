//! The one error type of the core.

use core::fmt;

/// Why a flow could not produce a value.
///
/// Returned by [`crate::Flow::log_prob`] and friends instead of panicking or
/// silently returning NaN.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// The input contained NaN or ±Inf.
    NonFiniteInput,
    /// An input lies outside a layer's domain (e.g. a logit input not in (0, 1)).
    OutOfDomain,
    /// A finite input produced a non-finite output or log-determinant
    /// (the model would overflow on this input).
    Overflow,
    /// A slice or parameter vector has the wrong length for the layer's shape.
    ShapeMismatch,
    /// The model cannot do this here: e.g. a device gradient of a model
    /// the device cannot differentiate ([`crate::gradient::NoGradient`]).
    Unsupported,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::NonFiniteInput => "input contains NaN or infinity",
            Error::OutOfDomain => "input outside the layer's domain",
            Error::Overflow => "result overflowed f32 (non-finite output or log-determinant)",
            Error::ShapeMismatch => "slice length does not match the layer's shape",
            Error::Unsupported => "the model does not support this (e.g. no device gradient of a mixture)",
        })
    }
}

impl core::error::Error for Error {}

/// `Ok(())` if every value is finite, else [`Error::NonFiniteInput`].
#[inline]
pub fn check_finite(x: &[f32]) -> Result<(), Error> {
    if all_finite(x) {
        Ok(())
    } else {
        Err(Error::NonFiniteInput)
    }
}

/// `Ok(log_det)` if the layer's output `x` is finite, else
/// [`Error::Overflow`]: the check of the linear layers, whose finite inputs
/// can only leave the f32 range by overflowing.
#[inline(always)]
pub(crate) fn finite_or_overflow(x: &[f32], log_det: f32) -> Result<f32, Error> {
    if all_finite(x) {
        Ok(log_det)
    } else {
        Err(Error::Overflow)
    }
}

/// `true` if every value is finite (no NaN, no ±∞).
///
/// With a hardware FPU (`eabihf` targets: the Cortex-M4F) as a sum of
/// `v·0`, which is `±0` for a finite `v` and NaN for NaN and `±∞`, so the
/// sum is `±0` exactly when every value is finite: one multiply–add per
/// value (`vmla`, not fused, so nothing rounds away), where testing the
/// exponent bits moves each value to an integer register first. Elsewhere
/// (soft float, where a float operation is a call, and the host) by the
/// exponent bits. The same answer either way.
#[inline(always)]
pub fn all_finite(x: &[f32]) -> bool {
    if cfg!(target_abi = "eabihf") {
        let mut acc = 0.0f32;
        for v in x {
            acc += v * 0.0;
        }
        acc == 0.0
    } else {
        x.iter().all(|v| v.is_finite())
    }
}
