//! A flow: standard-normal base plus a statically dispatched stack of layers.

use crate::error::check_finite;
use crate::{normal, Bijector, Error};
use rand_core::Rng;

/// A normalizing flow on `[f32; D]`: `x = inverse(z)`, `z ~ N(0, I)`.
///
/// `L` is any [`Bijector`], usually a tuple of layers. Constructible in a
/// `static`, so the whole model can live in flash.
#[derive(Clone, Debug)]
pub struct Flow<const D: usize, L> {
    /// The layers, applied in order by [`Flow::forward`].
    pub layers: L,
}

impl<const D: usize, L: Bijector<D>> Flow<D, L> {
    /// Wrap a stack of layers.
    pub const fn new(layers: L) -> Self {
        Flow { layers }
    }

    /// Data → latent: returns `(z, log|det ∂z/∂x|)`.
    ///
    /// Errors: [`Error::NonFiniteInput`] for NaN/Inf in `x`, [`Error::OutOfDomain`]
    /// from domain-restricted layers, [`Error::Overflow`] if a finite input
    /// leads to a non-finite latent or log-det. Never panics.
    pub fn forward(&self, x: &[f32; D]) -> Result<([f32; D], f32), Error> {
        check_finite(x)?;
        let mut z = *x;
        let ld = self.layers.forward(&mut z)?;
        if !ld.is_finite() || check_finite(&z).is_err() {
            return Err(Error::Overflow);
        }
        Ok((z, ld))
    }

    /// Latent → data: returns `(x, log|det ∂x/∂z|)`.
    pub fn inverse(&self, z: &[f32; D]) -> Result<([f32; D], f32), Error> {
        check_finite(z)?;
        let mut x = *z;
        let ld = self.layers.inverse(&mut x)?;
        if !ld.is_finite() || check_finite(&x).is_err() {
            return Err(Error::Overflow);
        }
        Ok((x, ld))
    }

    /// Exact `log p(x)` in nats. Never panics; see [`Flow::forward`] for errors.
    pub fn log_prob(&self, x: &[f32; D]) -> Result<f32, Error> {
        check_finite(x)?;
        let mut z = *x;
        let ld = self.layers.forward(&mut z)?;
        // [`Flow::forward`]'s check of `z` and `ld` is left to the one below:
        // a non-finite coordinate of `z` (its square is +∞ or NaN) or
        // log-det makes `lp` non-finite too, and both are `Overflow`.
        let lp = normal::log_pdf(&z) + ld;
        if lp.is_finite() {
            Ok(lp)
        } else {
            Err(Error::Overflow)
        }
    }

    /// Draw one sample.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<[f32; D], Error> {
        self.sample_with_log_prob(rng).map(|(x, _)| x)
    }

    /// Draw one sample together with its `log p(x)` (computed from the base
    /// density and the inverse log-det, no second pass).
    pub fn sample_with_log_prob<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<([f32; D], f32), Error> {
        let mut z = [0.0; D];
        normal::fill_standard_normal(rng, &mut z);
        let lpz = normal::log_pdf(&z);
        let (x, ld) = self.inverse(&z)?;
        Ok((x, lpz - ld))
    }
}
