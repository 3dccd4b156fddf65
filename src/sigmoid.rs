//! Sigmoid and logit layers (each the other's inverse).

use crate::{Bijector, Error};

/// `softplus(x) = log(1 + eˣ)`, without overflow; the one implementation
/// (the spline's knot derivatives use it too).
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    // log(1 + e^x) without overflow.
    if x > 0.0 {
        x + libm::log1pf(crate::activation::exp(-x))
    } else {
        libm::log1pf(crate::activation::exp(x))
    }
}

/// `y = σ(x)` elementwise in place; returns `Σ log σ'(x)`. Defined for every
/// finite `x` (the log-det is computed stably as `−softplus(x) − softplus(−x)`).
#[inline(always)]
pub fn sigmoid_forward(x: &mut [f32]) -> f32 {
    let mut ld = 0.0;
    for v in x.iter_mut() {
        ld -= softplus(*v) + softplus(-*v);
        *v = 1.0 / (1.0 + crate::activation::exp(-*v));
    }
    ld
}

/// `y = log(x / (1 − x))` elementwise in place; returns `Σ −log(x(1 − x))`.
/// Any input outside the open interval (0, 1) gives [`Error::OutOfDomain`]
/// and leaves `x` untouched.
#[inline(always)]
pub fn logit_forward(x: &mut [f32]) -> Result<f32, Error> {
    if !x.iter().all(|&v| v > 0.0 && v < 1.0) {
        return Err(Error::OutOfDomain);
    }
    let mut ld = 0.0;
    for v in x.iter_mut() {
        let a = libm::logf(*v);
        let b = libm::log1pf(-*v);
        ld -= a + b;
        *v = a - b;
    }
    Ok(ld)
}

/// `y = σ(x)`: maps ℝ to (0, 1). Its inverse is the logit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sigmoid;

/// `y = log(x/(1−x))`: maps (0, 1) to ℝ, e.g. for readings normalised to a
/// known range. Inputs outside (0, 1) give [`Error::OutOfDomain`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Logit;

impl<const D: usize> Bijector<D> for Sigmoid {
    #[inline(always)]
    fn forward(&self, x: &mut [f32; D]) -> Result<f32, Error> {
        Ok(sigmoid_forward(x))
    }
    #[inline(always)]
    fn inverse(&self, z: &mut [f32; D]) -> Result<f32, Error> {
        logit_forward(z)
    }
}

impl<const D: usize> Bijector<D> for Logit {
    #[inline(always)]
    fn forward(&self, x: &mut [f32; D]) -> Result<f32, Error> {
        logit_forward(x)
    }
    #[inline(always)]
    fn inverse(&self, z: &mut [f32; D]) -> Result<f32, Error> {
        Ok(sigmoid_forward(z))
    }
}
