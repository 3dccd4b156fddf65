//! Elementwise affine layer / ActNorm: `y = e^s ⊙ x + b`.

use crate::layer::{SliceBackward, SliceBijector};
use crate::{Bijector, Error};

/// Borrowed parameters of an elementwise affine layer; the one implementation
/// of its maths. Flat parameter order: `log_scale (D), shift (D)`.
#[derive(Clone, Copy, Debug)]
pub struct ActNormRef<'a> {
    /// Per-coordinate log-scale `s`.
    pub log_scale: &'a [f32],
    /// Per-coordinate shift `b`.
    pub shift: &'a [f32],
    /// The scales `e^s` and the log-det `Σ s`, as [`actnorm_cache`]
    /// computes them; `None`: computed on each call. Private, so that only
    /// [`ActNorm`], which keeps them in step with `log_scale`, provides them.
    cache: Option<(&'a [f32], f32)>,
}

impl<'a> ActNormRef<'a> {
    /// View per-coordinate log-scales and shifts (equal lengths).
    pub const fn new(log_scale: &'a [f32], shift: &'a [f32]) -> Self {
        ActNormRef {
            log_scale,
            shift,
            cache: None,
        }
    }

    /// View a flat parameter vector `[log_scale…, shift…]`.
    pub fn from_flat(p: &'a [f32]) -> Self {
        let (log_scale, shift) = p.split_at(p.len() / 2);
        Self::new(log_scale, shift)
    }

    /// `true` if the view carries cached scales and log-det (views of
    /// [`ActNorm`]); other views compute `e^s` on each call.
    pub fn is_cached(&self) -> bool {
        self.cache.is_some()
    }

    /// `y = e^s ⊙ x + b` in place; returns `Σ s`. With cached scales the
    /// same bits without an `exp` per coordinate.
    #[inline(always)]
    pub fn forward(&self, x: &mut [f32]) -> f32 {
        if let Some((scale, ld)) = crate::linear::valid_cache(self.cache, self.log_scale.len()) {
            for ((v, e), b) in x.iter_mut().zip(scale).zip(self.shift) {
                *v = e * *v + b;
            }
            return ld;
        }
        let mut ld = 0.0;
        for ((v, s), b) in x.iter_mut().zip(self.log_scale).zip(self.shift) {
            *v = crate::activation::exp(*s) * *v + b;
            ld += s;
        }
        ld
    }

    /// `x = e^{−s} ⊙ (y − b)` in place; returns `−Σ s`.
    #[inline(always)]
    pub fn inverse(&self, y: &mut [f32]) -> f32 {
        let mut ld = 0.0;
        for ((v, s), b) in y.iter_mut().zip(self.log_scale).zip(self.shift) {
            *v = (*v - b) * crate::activation::exp(-*s);
            ld -= s;
        }
        ld
    }

    /// Backward pass of [`ActNormRef::forward`] at input `x`: `g` holds
    /// `∂L/∂y` on entry and `∂L/∂x` on return; `g_ld = ∂L/∂(log-det)`.
    /// Adds the parameter gradient to `grad` (flat order).
    pub fn backward(&self, x: &[f32], g: &mut [f32], g_ld: f32, grad: &mut [f32]) {
        let d = self.log_scale.len();
        let (gs, gb) = grad.split_at_mut(d);
        for i in 0..d {
            let e = crate::activation::exp(self.log_scale[i]);
            gb[i] += g[i];
            gs[i] += g[i] * x[i] * e + g_ld;
            g[i] *= e;
        }
    }

    /// [`ActNormRef::backward`] without the parameter gradient: `g` becomes
    /// `∂L/∂x`, bit for bit as there (on-device adaptation).
    pub fn backward_input(&self, g: &mut [f32]) {
        if let Some((scale, _)) = crate::linear::valid_cache(self.cache, self.log_scale.len()) {
            for (g, e) in g.iter_mut().zip(scale) {
                *g *= e;
            }
            return;
        }
        for (g, &l) in g.iter_mut().zip(self.log_scale) {
            *g *= crate::activation::exp(l);
        }
    }

    /// Data-dependent initialisation: parameters that standardise a signal
    /// with the given per-coordinate `mean` and `std` (`y = (x − mean)/std`).
    /// Writes `log_scale = −ln std`, `shift = −mean/std`.
    pub fn standardizing(mean: &[f32], std: &[f32], log_scale: &mut [f32], shift: &mut [f32]) {
        for i in 0..mean.len() {
            let sd = if std[i] > 0.0 && std[i].is_finite() {
                std[i]
            } else {
                1.0
            };
            log_scale[i] = -libm::logf(sd);
            shift[i] = -mean[i] / sd;
        }
    }
}

impl SliceBijector for ActNormRef<'_> {
    fn scratch_len(&self) -> usize {
        0
    }
    fn forward_flat(&self, x: &mut [f32], _: &mut [f32]) -> f32 {
        self.forward(x)
    }
    fn inverse_flat(&self, z: &mut [f32], _: &mut [f32]) -> f32 {
        self.inverse(z)
    }
}

impl SliceBackward for ActNormRef<'_> {
    fn param_len(&self) -> usize {
        2 * self.log_scale.len()
    }
    fn train_scratch_len(&self) -> usize {
        0
    }
    fn backward_flat(&self, x: &[f32], g: &mut [f32], g_ld: f32, grad: &mut [f32], _: &mut [f32]) {
        self.backward(x, g, g_ld, grad)
    }
    fn backward_input(&self, _: &[f32], g: &mut [f32], _: f32, _: &mut [f32]) {
        self.backward_input(g)
    }
    fn as_bijector(&self) -> &dyn SliceBijector {
        self
    }
}

/// The scales `e^s` (the core's [`crate::activation::exp`], bit for bit) and
/// the log-det `Σ s` summed in coordinate order: what
/// [`ActNormRef::forward`] computes on each call without a cache. A
/// `const fn`, so in a `static` it runs at compile time.
pub const fn actnorm_cache<const D: usize>(log_scale: &[f32; D]) -> ([f32; D], f32) {
    let mut scale = [0.0; D];
    let mut ld = 0.0;
    let mut i = 0;
    while i < D {
        scale[i] = crate::activation::exp_inline(log_scale[i]);
        ld += log_scale[i];
        i += 1;
    }
    (scale, ld)
}

/// Const-generic elementwise affine / ActNorm layer for `static` models.
/// `log_scale` is private so that the cached scales and log-det
/// ([`actnorm_cache`]: no `exp` on the scoring path) always match it (read
/// it with [`ActNorm::log_scale`], change it with [`ActNorm::set_log_scale`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ActNorm<const D: usize> {
    log_scale: [f32; D],
    /// Per-coordinate shift `b`.
    pub shift: [f32; D],
    /// `e^{log_scale}` ([`actnorm_cache`]).
    scale: [f32; D],
    /// `Σ log_scale` ([`actnorm_cache`]).
    log_det: f32,
}

impl<const D: usize> ActNorm<D> {
    /// A layer `y = e^{log_scale} ⊙ x + shift`. Computes the cached scales
    /// and log-det ([`actnorm_cache`]; in a `static`, at compile time).
    pub const fn new(log_scale: [f32; D], shift: [f32; D]) -> Self {
        let (scale, log_det) = actnorm_cache(&log_scale);
        ActNorm {
            log_scale,
            shift,
            scale,
            log_det,
        }
    }

    /// The identity layer.
    pub const fn identity() -> Self {
        Self::new([0.0; D], [0.0; D])
    }

    /// Per-coordinate log-scale `s`.
    pub const fn log_scale(&self) -> &[f32; D] {
        &self.log_scale
    }

    /// Replace the log-scales (and the cached scales and log-det with them).
    pub fn set_log_scale(&mut self, log_scale: [f32; D]) {
        *self = Self::new(log_scale, self.shift);
    }

    /// Borrow as the slice-level view, with the cached scales.
    #[inline(always)]
    pub fn view(&self) -> ActNormRef<'_> {
        ActNormRef {
            log_scale: &self.log_scale,
            shift: &self.shift,
            cache: Some((&self.scale, self.log_det)),
        }
    }
}

impl<const D: usize> Bijector<D> for ActNorm<D> {
    #[inline(always)]
    fn forward(&self, x: &mut [f32; D]) -> Result<f32, Error> {
        Ok(self.view().forward(x))
    }
    #[inline(always)]
    fn inverse(&self, z: &mut [f32; D]) -> Result<f32, Error> {
        Ok(self.view().inverse(z))
    }
}
