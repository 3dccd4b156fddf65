//! On-device adaptation: a per-feature affine correction in front of a
//! frozen model, fitted by Adam with the layers' backward passes.
//!
//! The model's weights stay in flash; what adapts is `2·D` floats, a shift
//! `u` and a log-scale `ℓ` in the model's standardised units:
//!
//! ```text
//! x' = μ + (x − μ − σ⊙u) ⊙ e^{−ℓ}        −log p̃(x) = −log p(x') + Σ ℓ
//! ```
//!
//! (`μ`, `σ` the model's standardisation, `MEAN`/`STD` of an export). A sensor
//! whose gain and offset drifted, `x = a⊙x₀ + c`, is undone by
//! `e^ℓ = a`, `σ⊙u = c + (a − 1)⊙μ`. The host folds the correction into the
//! model's first (standardisation) layer; the device applies it before
//! scoring ([`AdaptView::correct`]).
//!
//! Two modes, one update (Adam on `L = −log p̃(x)` of one window):
//! * **commissioning** ([`AdaptView::commission`]): the user declares a
//!   period normal; every finite window updates, however badly the shipped
//!   model scores it (after a large drift every window does);
//! * **tracking** ([`AdaptView::track`]): only windows scored below
//!   `threshold − margin` update, every parameter moves by at most
//!   [`AdaptConfig::max_step`] per window, and an update that raises the
//!   mean NLL of the held-back ring of recent normal windows is rolled back.
//!   The ring's NLLs under the current correction are kept between windows
//!   (`held_nll`), so a tracking update scores the ring once (after its
//!   step), not twice; the cached values are the same floats a fresh pass
//!   gives, so the results are bit for bit those of scoring it again.
//!
//! NaN/Inf input never updates. The arithmetic is a fixed sequence of `f32`
//! operations (the core's own `exp`, IEEE `sqrt`), so the same windows give
//! bit-identical state on the host (`flowmote adapt`) and on a device.
//!
//! The model is reached through [`AdaptTarget`]; [`Views`] implements it for
//! any stack of layer views ([`SliceBackward`]), the code the host trainer
//! differentiates.

use crate::error::check_finite;
use crate::layer::SliceBackward;
use crate::{normal, Density, Error};
use core::cell::Cell;
use rand_core::Rng;

/// The model an adapter fits against: `−log p(x)` and its input gradient.
pub trait AdaptTarget {
    /// `−log p(x)`; errors as the core's `log_prob`.
    fn nll(&mut self, x: &[f32]) -> Result<f32, Error>;
    /// `−log p(x)`, with `∂(−log p)/∂x` written to `g` (`x.len()` floats).
    fn nll_grad(&mut self, x: &[f32], g: &mut [f32]) -> Result<f32, Error>;
}

/// A flow as a stack of layer views with a standard-normal base: the
/// backward passes give the input gradient
/// ([`SliceBackward::backward_input`]). `work` holds [`Views::work_len`]
/// floats (every layer's input, the latent and the largest scratch). A
/// device uses [`crate::gradient::Gradient`] instead: the same numbers
/// through the const-generic layers, its memory inline.
pub struct Views<'a, 'l> {
    /// The layers in the data → latent order (the first is the frozen
    /// standardisation of an exported model).
    pub layers: &'a [&'l dyn SliceBackward],
    /// Working memory, [`Views::work_len`] floats.
    pub work: &'a mut [f32],
}

impl Views<'_, '_> {
    /// Floats of `work` for `layers` on inputs of `dim` features.
    pub fn work_len(layers: &[&dyn SliceBackward], dim: usize) -> usize {
        dim * (layers.len() + 1) + Self::scratch_len(layers)
    }

    fn scratch_len(layers: &[&dyn SliceBackward]) -> usize {
        layers
            .iter()
            .map(|l| l.scratch_len().max(l.train_scratch_len()))
            .max()
            .unwrap_or(0)
    }

    /// Split `work` into (inputs, z, scratch); `ShapeMismatch` if short.
    #[allow(clippy::type_complexity)]
    fn split(&mut self, d: usize) -> Result<(&mut [f32], &mut [f32], &mut [f32]), Error> {
        let need = Self::work_len(self.layers, d);
        let work = self.work.get_mut(..need).ok_or(Error::ShapeMismatch)?;
        let (inputs, rest) = work.split_at_mut(d * self.layers.len());
        let (z, scratch) = rest.split_at_mut(d);
        Ok((inputs, z, scratch))
    }

    /// Forward through every layer, keeping each layer's input when `save`;
    /// returns `−log p(x)` and leaves the latent in `z`.
    fn forward(&mut self, x: &[f32], save: bool) -> Result<f32, Error> {
        check_finite(x)?;
        let d = x.len();
        let layers = self.layers;
        let (inputs, z, scratch) = self.split(d)?;
        z.copy_from_slice(x);
        let mut ld = 0.0;
        for (l, input) in layers.iter().zip(inputs.chunks_exact_mut(d.max(1))) {
            if save {
                input.copy_from_slice(z);
            }
            ld += l.forward_flat(z, scratch);
        }
        if !ld.is_finite() || check_finite(z).is_err() {
            return Err(Error::Overflow);
        }
        let nll = -(normal::log_pdf(z) + ld);
        if nll.is_finite() {
            Ok(nll)
        } else {
            Err(Error::Overflow)
        }
    }
}

/// A mixture of flows on the host, each member as [`Views`]: the host's
/// twin of the device's [`MixtureGradient`](crate::gradient::MixtureGradient),
/// the same numbers bit for bit (the members' scores and gradients are, and
/// both combine them with [`mixture_nll_grad`](crate::mixture::mixture_nll_grad)).
pub struct MixtureViews<'a, 'v, 'l> {
    /// `ln wₖ` of every member.
    pub log_weights: &'a [f32],
    /// The members, in order.
    pub members: &'a mut [Views<'v, 'l>],
    /// Working memory: one float per member.
    pub terms: &'a mut [f32],
    /// Working memory: one float per feature.
    pub member_g: &'a mut [f32],
}

impl MixtureViews<'_, '_, '_> {
    /// `log p(x)`, the members' terms left in `terms`.
    fn log_prob(&mut self, x: &[f32]) -> Result<f32, Error> {
        check_finite(x)?;
        if self.terms.len() != self.members.len() || self.log_weights.len() != self.members.len() {
            return Err(Error::ShapeMismatch);
        }
        for (t, m) in self.terms.iter_mut().zip(self.members.iter_mut()) {
            *t = crate::mixture::member_term(m.nll(x).map(|nll| -nll))?;
        }
        crate::mixture::combine(self.log_weights, self.terms)
    }
}

impl AdaptTarget for MixtureViews<'_, '_, '_> {
    fn nll(&mut self, x: &[f32]) -> Result<f32, Error> {
        Ok(-self.log_prob(x)?)
    }

    fn nll_grad(&mut self, x: &[f32], g: &mut [f32]) -> Result<f32, Error> {
        if g.len() != x.len() || self.members.len() != self.log_weights.len() {
            return Err(Error::ShapeMismatch);
        }
        let members = &mut *self.members;
        crate::mixture::mixture_nll_grad(self.log_weights, self.terms, g, self.member_g, |k, gk| {
            members.get_mut(k).ok_or(Error::ShapeMismatch)?.nll_grad(x, gk)
        })
    }
}

impl AdaptTarget for Views<'_, '_> {
    fn nll(&mut self, x: &[f32]) -> Result<f32, Error> {
        self.forward(x, false)
    }

    fn nll_grad(&mut self, x: &[f32], g: &mut [f32]) -> Result<f32, Error> {
        if g.len() != x.len() {
            return Err(Error::ShapeMismatch);
        }
        let nll = self.forward(x, true)?;
        let d = x.len();
        let layers = self.layers;
        let (inputs, z, scratch) = self.split(d)?;
        // ∂(−log N(z))/∂z = z; ∂(−Σ log-det)/∂(log-det) = −1.
        g.copy_from_slice(z);
        for (l, input) in layers.iter().zip(inputs.chunks_exact(d.max(1))).rev() {
            l.backward_input(input, g, -1.0, scratch);
        }
        if check_finite(g).is_err() {
            return Err(Error::Overflow);
        }
        Ok(nll)
    }
}

/// Settings of an adapter.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AdaptConfig {
    /// Adam step size in commissioning (standardised units for the shift,
    /// nats of log-scale for the scale) at the first step; step `t` uses
    /// `lr / √(1 + t/100)`, so a long commissioning period converges rather
    /// than jittering around the optimum.
    pub lr: f32,
    /// Adam step size in tracking.
    pub track_lr: f32,
    /// Adam `β₁`.
    pub beta1: f32,
    /// Adam `β₂`.
    pub beta2: f32,
    /// Adam `ε`.
    pub eps: f32,
    /// Adam steps per window.
    pub steps: u8,
    /// Tracking: a window updates only if its score is below
    /// `threshold − margin` (nats).
    pub margin: f32,
    /// Tracking: the most any parameter moves per window.
    pub max_step: f32,
    /// Bound on `|u|` (standard deviations) in every mode.
    pub max_shift: f32,
    /// Bound on `|ℓ|` (a gain of `e^{±max_log_scale}`) in every mode.
    pub max_log_scale: f32,
}

impl AdaptConfig {
    /// The defaults: commissioning `lr = 0.05`, tracking `lr = 0.002` with
    /// steps of at most 0.005 and a margin of 2 nats; Adam `β = (0.9, 0.999)`,
    /// `ε = 1e-8`; one step per window; `|u| ≤ 10`, `|ℓ| ≤ ln 4`.
    pub const DEFAULT: AdaptConfig = AdaptConfig {
        lr: 0.05,
        track_lr: 0.002,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        steps: 1,
        margin: 2.0,
        max_step: 0.005,
        max_shift: 10.0,
        max_log_scale: core::f32::consts::LN_2 * 2.0,
    };
}

impl Default for AdaptConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Counters of an adapter (the floats are in its buffers).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AdaptMeta {
    /// `β₁ᵗ` and `β₂ᵗ` after `t` Adam steps (bias correction).
    pub beta_pow: [f32; 2],
    /// Adam steps taken.
    pub steps: u32,
    /// Windows in the held-back ring.
    pub held_len: u32,
    /// Where the next held-back window goes.
    pub held_next: u32,
    /// Which half of `held_nll` holds the held-back windows' adapted NLLs
    /// under the current correction: 0 neither (scored afresh when next
    /// needed), 1 the first, 2 the second.
    pub scored: u32,
}

impl AdaptMeta {
    /// No steps taken, empty ring.
    pub const NEW: AdaptMeta = AdaptMeta {
        beta_pow: [1.0, 1.0],
        steps: 0,
        held_len: 0,
        held_next: 0,
        scored: 0,
    };
}

/// What [`AdaptView::track`] did with a window.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Tracked {
    /// Scored at or above `threshold − margin`: no update, not held back.
    NotNormal(f32),
    /// Normal, but the held-back ring is empty: only held back.
    Held(f32),
    /// Normal; the bounded step did not raise the held-back NLL and was kept.
    Updated(f32),
    /// Normal; the step raised the held-back NLL and was undone.
    RolledBack(f32),
}

/// An adapter over borrowed buffers, sized at run time: the one
/// implementation of the maths. [`Adapter`] owns fixed-size buffers for a
/// device; the host tool owns vectors. `D` features, `H` held-back windows.
pub struct AdaptView<'a> {
    /// Settings.
    pub config: &'a AdaptConfig,
    /// The model's standardisation mean `μ` (`D`).
    pub mean: &'a [f32],
    /// The model's standardisation std `σ` (`D`).
    pub std: &'a [f32],
    /// `[u (D), ℓ (D)]`: the correction.
    pub params: &'a mut [f32],
    /// Adam moments `[m (2D), v (2D)]`.
    pub moments: &'a mut [f32],
    /// Working memory, `10·D` floats: the gradient (2D), two temporaries
    /// (2D) and a rollback copy of `params` and `moments` (6D).
    pub work: &'a mut [f32],
    /// The held-back ring of recent normal windows (`H·D`).
    pub held: &'a mut [f32],
    /// Two banks of the held-back windows' adapted NLLs (`2·H`; see
    /// [`AdaptMeta::scored`]). Anything that changes `params` other than
    /// [`AdaptView::commission`] and [`AdaptView::track`] must set
    /// `meta.scored` to 0.
    pub held_nll: &'a mut [f32],
    /// Counters.
    pub meta: &'a mut AdaptMeta,
}

impl AdaptView<'_> {
    fn dim(&self) -> usize {
        self.mean.len()
    }

    fn check(&self) -> Result<(), Error> {
        let d = self.dim();
        if self.std.len() != d
            || self.params.len() != 2 * d
            || self.moments.len() != 4 * d
            || self.work.len() != 10 * d
            || self.held.len() % d.max(1) != 0
            || self.held_nll.len() != 2 * (self.held.len() / d.max(1))
        {
            return Err(Error::ShapeMismatch);
        }
        Ok(())
    }

    /// `x'` (the corrected window, into `out`) and the log-det of `x ↦ x'`
    /// (`−Σ ℓ`). [`Error::NonFiniteInput`] for NaN/Inf in `x`.
    pub fn correct(&self, x: &[f32], out: &mut [f32]) -> Result<f32, Error> {
        correct(self.mean, self.std, self.params, x, out)
    }

    /// `−log p̃(x) = −log p(x') + Σ ℓ`, the adapted model's score.
    pub fn nll<T: AdaptTarget + ?Sized>(&mut self, target: &mut T, x: &[f32]) -> Result<f32, Error> {
        self.check()?;
        let nll = self.window_nll(target, x)?;
        if nll.is_finite() {
            Ok(nll)
        } else {
            Err(Error::Overflow)
        }
    }

    /// The loss of one window and its gradient `[∂L/∂u, ∂L/∂ℓ]` into the
    /// first `2D` floats of `work`.
    fn loss_grad<T: AdaptTarget + ?Sized>(&mut self, target: &mut T, x: &[f32]) -> Result<f32, Error> {
        let d = self.dim();
        let (grad, rest) = self.work.split_at_mut_checked(2 * d).ok_or(Error::ShapeMismatch)?;
        let (xc, rest) = rest.split_at_mut_checked(d).ok_or(Error::ShapeMismatch)?;
        let g = rest.get_mut(..d).ok_or(Error::ShapeMismatch)?;
        let ld = correct(self.mean, self.std, self.params, x, xc)?;
        let nll = target.nll_grad(xc, g)? - ld;
        let ls = self.params.get(d..).ok_or(Error::ShapeMismatch)?;
        let (gu, gl) = grad.split_at_mut_checked(d).ok_or(Error::ShapeMismatch)?;
        let terms = gu.iter_mut().zip(gl).zip(g.iter()).zip(xc.iter());
        for ((((((gu, gl), g), xc), l), s), m) in terms.zip(ls).zip(self.std).zip(self.mean) {
            let e = crate::activation::exp(-*l);
            *gu = -g * s * e;
            *gl = 1.0 - g * (xc - m);
        }
        if !nll.is_finite() || check_finite(grad).is_err() {
            return Err(Error::Overflow);
        }
        Ok(nll)
    }

    /// The window's adapted NLL `L = −log p̃(x)` and its gradient
    /// `[∂L/∂u (D), ∂L/∂ℓ (D)]` into `out` (2D floats), at the current
    /// correction: what every update steps along.
    pub fn gradient<T: AdaptTarget + ?Sized>(
        &mut self,
        target: &mut T,
        x: &[f32],
        out: &mut [f32],
    ) -> Result<f32, Error> {
        self.check()?;
        let d = self.dim();
        if x.len() != d || out.len() != 2 * d {
            return Err(Error::ShapeMismatch);
        }
        let nll = self.loss_grad(target, x)?;
        out.copy_from_slice(self.work.split_at(2 * d).0);
        Ok(nll)
    }

    /// One Adam step from the gradient in `work[..2D]`, each parameter's
    /// change bounded by `max_step`, the parameters by the config's bounds.
    fn adam_step(&mut self, lr: f32, max_step: f32) {
        let c = *self.config;
        let d = self.dim();
        let m = &mut self.meta;
        m.beta_pow[0] *= c.beta1;
        m.beta_pow[1] *= c.beta2;
        m.steps = m.steps.saturating_add(1);
        let (bc1, bc2) = (1.0 - m.beta_pow[0], 1.0 - m.beta_pow[1]);
        let Some((mm, vv)) = self.moments.split_at_mut_checked(2 * d) else {
            return;
        };
        for (k, (((p, g), m), v)) in self.params.iter_mut().zip(self.work.iter()).zip(mm).zip(vv).enumerate() {
            *m = c.beta1 * *m + (1.0 - c.beta1) * g;
            *v = c.beta2 * *v + (1.0 - c.beta2) * (g * g);
            let step = lr * (*m / bc1) / (libm::sqrtf(*v / bc2) + c.eps);
            let step = bound_to(step, max_step);
            let bound = if k < d { c.max_shift } else { c.max_log_scale };
            *p = bound_to(*p - step, bound);
        }
    }

    /// Copy `params` and `moments` to the rollback area (or back).
    fn save(&mut self, restore: bool) {
        let d = self.dim();
        let saved = self.work.get_mut(4 * d..).unwrap_or_default();
        let (sp, sm) = saved.split_at_mut(saved.len().min(2 * d));
        if restore {
            copy(self.params, sp);
            copy(self.moments, sm);
        } else {
            copy(sp, self.params);
            copy(sm, self.moments);
        }
    }

    /// Put a normal window into the held-back ring (oldest out), with its
    /// adapted NLL under the current correction if known (`None` leaves no
    /// valid cache).
    fn hold(&mut self, x: &[f32], nll: Option<f32>) {
        let d = self.dim().max(1);
        let cap = self.held.len() / d;
        if cap == 0 {
            return;
        }
        let i = (self.meta.held_next as usize) % cap;
        if let Some(slot) = self.held.chunks_exact_mut(d).nth(i) {
            copy(slot, x);
        }
        // An empty ring's cache is trivially valid.
        if self.meta.held_len == 0 && self.meta.scored == 0 {
            self.meta.scored = 1;
        }
        let bank = self.meta.scored as usize;
        match (nll, bank) {
            (Some(v), 1 | 2) => match self.held_nll.get_mut((bank - 1) * cap + i) {
                Some(e) => *e = v,
                None => self.meta.scored = 0,
            },
            _ => self.meta.scored = 0,
        }
        self.meta.held_next = ((i + 1) % cap) as u32;
        self.meta.held_len = (self.meta.held_len as usize + 1).min(cap) as u32;
    }

    /// The adapted NLL of one window as the held-back ring's mean adds it
    /// (no finiteness check: a non-finite term makes the mean non-finite).
    fn window_nll<T: AdaptTarget + ?Sized>(&mut self, target: &mut T, x: &[f32]) -> Result<f32, Error> {
        let xc = self.work.get_mut(..self.mean.len()).ok_or(Error::ShapeMismatch)?;
        adapted_nll(self.mean, self.std, self.params, xc, target, x)
    }

    /// Score every held-back window under the current correction into
    /// `bank` (1 or 2) of `held_nll`; their mean.
    fn score_held<T: AdaptTarget + ?Sized>(&mut self, target: &mut T, bank: usize) -> Result<f32, Error> {
        let d = self.dim().max(1);
        let cap = self.held.len() / d;
        let n = self.meta.held_len as usize;
        let mut sum = 0.0;
        for k in 0..n {
            let row = self.held.get(k * d..(k + 1) * d).ok_or(Error::ShapeMismatch)?;
            let xc = self.work.get_mut(..d).ok_or(Error::ShapeMismatch)?;
            let v = adapted_nll(self.mean, self.std, self.params, xc, target, row)?;
            *self
                .held_nll
                .get_mut((bank - 1) * cap + k)
                .ok_or(Error::ShapeMismatch)? = v;
            sum += v;
        }
        Ok(sum / n.max(1) as f32)
    }

    /// Mean adapted NLL of the held-back windows under the current
    /// correction: from the cache when it is valid, else scored afresh into
    /// the first bank.
    fn held_mean<T: AdaptTarget + ?Sized>(&mut self, target: &mut T) -> Result<f32, Error> {
        let d = self.dim().max(1);
        let cap = self.held.len() / d;
        let n = self.meta.held_len as usize;
        match self.meta.scored {
            b @ (1 | 2) => {
                let bank = self
                    .held_nll
                    .get((b as usize - 1) * cap..(b as usize - 1) * cap + n)
                    .ok_or(Error::ShapeMismatch)?;
                let mut sum = 0.0;
                for v in bank {
                    sum += *v;
                }
                Ok(sum / n.max(1) as f32)
            }
            _ => {
                self.meta.scored = 0;
                let mean = self.score_held(target, 1)?;
                self.meta.scored = 1;
                Ok(mean)
            }
        }
    }

    /// Commissioning: `steps` Adam steps on this window, whatever its
    /// score, and the window joins the held-back ring. Returns the window's
    /// adapted NLL before the update. NaN/Inf input, or a window the model
    /// cannot score or differentiate, changes nothing and is an error.
    pub fn commission<T: AdaptTarget + ?Sized>(&mut self, target: &mut T, x: &[f32]) -> Result<f32, Error> {
        self.check()?;
        if x.len() != self.dim() {
            return Err(Error::ShapeMismatch);
        }
        check_finite(x)?;
        let meta = *self.meta;
        self.save(false);
        let mut first = None;
        for _ in 0..self.config.steps.max(1) {
            match self.loss_grad(target, x) {
                Ok(nll) => {
                    first.get_or_insert(nll);
                    // The step size decays with the steps taken (see `AdaptConfig::lr`).
                    let t = self.meta.steps as f32;
                    self.adam_step(self.config.lr / libm::sqrtf(1.0 + t / 100.0), f32::INFINITY);
                }
                Err(e) => {
                    self.save(true);
                    *self.meta = meta;
                    return Err(e);
                }
            }
        }
        // The correction moved: the ring is scored afresh when next needed.
        self.meta.scored = 0;
        self.hold(x, None);
        first.ok_or(Error::Overflow)
    }

    /// Tracking: score the window with the adapted model; if it is below
    /// `threshold − margin`, take one bounded Adam step and keep it only if
    /// the held-back ring's mean NLL did not rise; the window then joins the
    /// ring. NaN/Inf input changes nothing and is an error.
    pub fn track<T: AdaptTarget + ?Sized>(
        &mut self,
        target: &mut T,
        x: &[f32],
        threshold: f32,
    ) -> Result<Tracked, Error> {
        self.check()?;
        if x.len() != self.dim() {
            return Err(Error::ShapeMismatch);
        }
        let score = self.nll(target, x)?;
        if score >= threshold - self.config.margin {
            return Ok(Tracked::NotNormal(score));
        }
        if self.meta.held_len == 0 {
            self.hold(x, Some(score));
            return Ok(Tracked::Held(score));
        }
        self.save(false);
        let before = self.held_mean(target)?;
        let meta = *self.meta;
        // The ring after the step goes into the other bank: it becomes the
        // cache if the step is kept, and the current one stays if not.
        let other = if meta.scored == 2 { 1 } else { 2 };
        let outcome = match self.loss_grad(target, x) {
            Ok(_) => {
                self.adam_step(self.config.track_lr, self.config.max_step);
                match self.score_held(target, other) {
                    Ok(after) if after <= before => {
                        self.meta.scored = other as u32;
                        Tracked::Updated(score)
                    }
                    _ => {
                        self.save(true);
                        *self.meta = meta;
                        Tracked::RolledBack(score)
                    }
                }
            }
            Err(e) => {
                self.save(true);
                *self.meta = meta;
                return Err(e);
            }
        };
        // The window's own NLL under the correction now in force.
        let own = match outcome {
            Tracked::Updated(_) => self.window_nll(target, x).ok(),
            _ => Some(score),
        };
        self.hold(x, own);
        Ok(outcome)
    }
}

/// `−log p(x') + Σ ℓ` of window `x` (`x'` into `xc`), without a
/// finiteness check: the one arithmetic of every adapted score, so the ring's
/// cached scores are the floats a fresh pass gives.
fn adapted_nll<T: AdaptTarget + ?Sized>(
    mean: &[f32],
    std: &[f32],
    params: &[f32],
    xc: &mut [f32],
    target: &mut T,
    x: &[f32],
) -> Result<f32, Error> {
    let ld = correct(mean, std, params, x, xc)?;
    Ok(target.nll(xc)? - ld)
}

/// `dst[i] = src[i]` over the common length (`copy_from_slice` without its
/// length panic).
#[inline(always)]
fn copy(dst: &mut [f32], src: &[f32]) {
    for (a, b) in dst.iter_mut().zip(src) {
        *a = *b;
    }
}

/// `x` limited to `[−b, b]` (NaN stays NaN): `f32::clamp` for `b ≥ 0`,
/// without its panic on bounds it cannot check at compile time (and the
/// float formatting that panic message pulls into a device image).
#[inline(always)]
fn bound_to(x: f32, b: f32) -> f32 {
    if x < -b {
        -b
    } else if x > b {
        b
    } else {
        x
    }
}

/// The correction `x' = μ + (x − μ − σ⊙u) ⊙ e^{−ℓ}` into `out`, for a
/// model standardised with `mean` (`μ`) and `std` (`σ`) and `params =
/// [u (D), ℓ (D)]`; returns its log-det `−Σ ℓ`. What every adapter method
/// and [`Corrected`] apply.
pub fn correct(mean: &[f32], std: &[f32], params: &[f32], x: &[f32], out: &mut [f32]) -> Result<f32, Error> {
    let d = mean.len();
    if std.len() != d || params.len() != 2 * d || x.len() != d || out.len() != d {
        return Err(Error::ShapeMismatch);
    }
    check_finite(x)?;
    let (u, ls) = params.split_at(d);
    let mut ld = 0.0;
    for (((((o, x), m), s), u), l) in out.iter_mut().zip(x).zip(mean).zip(std).zip(u).zip(ls) {
        *o = m + (x - m - s * u) * crate::activation::exp(-*l);
        ld -= l;
    }
    Ok(ld)
}

/// A fixed-size adapter for a device: `D` features, `H` held-back windows,
/// `(18 + H)·D + 2·H` floats (with the standardisation) plus 24 bytes of counters, all inline (see
/// [`AdaptView`] for the maths and the module for the modes).
#[derive(Clone, Debug)]
pub struct Adapter<const D: usize, const H: usize> {
    /// Settings.
    pub config: AdaptConfig,
    mean: [f32; D],
    std: [f32; D],
    params: [[f32; D]; 2],
    moments: [[f32; D]; 4],
    work: [[f32; D]; 10],
    held: [[f32; D]; H],
    held_nll: [[f32; H]; 2],
    meta: AdaptMeta,
}

impl<const D: usize, const H: usize> Adapter<D, H> {
    /// An adapter with no correction yet, for a model standardised with
    /// `mean` and `std` (an export's `MEAN` and `STD`).
    pub const fn new(config: AdaptConfig, mean: [f32; D], std: [f32; D]) -> Self {
        Adapter {
            config,
            mean,
            std,
            params: [[0.0; D]; 2],
            moments: [[0.0; D]; 4],
            work: [[0.0; D]; 10],
            held: [[0.0; D]; H],
            held_nll: [[0.0; H]; 2],
            meta: AdaptMeta::NEW,
        }
    }

    /// The borrowed view every method goes through.
    pub fn view(&mut self) -> AdaptView<'_> {
        AdaptView {
            config: &self.config,
            mean: &self.mean,
            std: &self.std,
            params: self.params.as_flattened_mut(),
            moments: self.moments.as_flattened_mut(),
            work: self.work.as_flattened_mut(),
            held: self.held.as_flattened_mut(),
            held_nll: self.held_nll.as_flattened_mut(),
            meta: &mut self.meta,
        }
    }

    /// The correction `(u, ℓ)`: what to persist (`2·D` floats).
    pub fn correction(&self) -> ([f32; D], [f32; D]) {
        (self.params[0], self.params[1])
    }

    /// Restore a persisted correction (Adam restarts; the ring stays).
    pub fn set_correction(&mut self, shift: [f32; D], log_scale: [f32; D]) {
        self.params = [shift, log_scale];
        self.moments = [[0.0; D]; 4];
        self.meta.beta_pow = [1.0, 1.0];
        self.meta.steps = 0;
        self.meta.scored = 0;
    }

    /// Adam steps taken.
    pub fn steps(&self) -> u32 {
        self.meta.steps
    }

    /// The corrected window `x'` and the log-det of `x ↦ x'`: the adapted
    /// score is `−log p(x') − log-det` with the model's own `log_prob`.
    pub fn correct(&self, x: &[f32; D]) -> Result<([f32; D], f32), Error> {
        let mut out = [0.0; D];
        let ld = correct(&self.mean, &self.std, self.params.as_flattened(), x, &mut out)?;
        Ok((out, ld))
    }

    /// See [`AdaptView::nll`].
    pub fn nll<T: AdaptTarget + ?Sized>(&mut self, target: &mut T, x: &[f32; D]) -> Result<f32, Error> {
        self.view().nll(target, x)
    }

    /// See [`AdaptView::commission`].
    pub fn commission<T: AdaptTarget + ?Sized>(&mut self, target: &mut T, x: &[f32; D]) -> Result<f32, Error> {
        self.view().commission(target, x)
    }

    /// See [`AdaptView::track`].
    pub fn track<T: AdaptTarget + ?Sized>(
        &mut self,
        target: &mut T,
        x: &[f32; D],
        threshold: f32,
    ) -> Result<Tracked, Error> {
        self.view().track(target, x, threshold)
    }
}

/// A model scored through an adapter's correction:
/// `log p̃(x) = log p(x') − Σ ℓ`, bit for bit the adapter's own score
/// ([`AdaptView::nll`]). The correction sits in a [`Cell`], so a detector
/// can hold `&Corrected` while the device's adapter updates it
/// ([`Corrected::set`]).
#[derive(Debug)]
pub struct Corrected<'m, const D: usize, M> {
    model: &'m M,
    mean: [f32; D],
    std: [f32; D],
    correction: Cell<[[f32; D]; 2]>,
}

impl<'m, const D: usize, M: Density<D>> Corrected<'m, D, M> {
    /// `model` (standardised with `mean`, `std`: an export's `MEAN`,
    /// `STD`) with no correction yet: it scores exactly as `model`.
    pub const fn new(model: &'m M, mean: [f32; D], std: [f32; D]) -> Self {
        Corrected {
            model,
            mean,
            std,
            correction: Cell::new([[0.0; D]; 2]),
        }
    }

    /// Score with the correction `(u, ℓ)` from now on (e.g.
    /// [`Adapter::correction`] after an update).
    pub fn set(&self, (shift, log_scale): ([f32; D], [f32; D])) {
        self.correction.set([shift, log_scale]);
    }

    /// The correction in use.
    pub fn correction(&self) -> ([f32; D], [f32; D]) {
        let [u, l] = self.correction.get();
        (u, l)
    }

    /// The uncorrected model.
    pub fn model(&self) -> &'m M {
        self.model
    }
}

impl<const D: usize, M: Density<D>> Density<D> for Corrected<'_, D, M> {
    fn log_prob(&self, x: &[f32; D]) -> Result<f32, Error> {
        let params = self.correction.get();
        let mut xc = [0.0; D];
        let ld = correct(&self.mean, &self.std, params.as_flattened(), x, &mut xc)?;
        let lp = self.model.log_prob(&xc)? + ld;
        if lp.is_finite() {
            Ok(lp)
        } else {
            Err(Error::Overflow)
        }
    }

    /// A model sample `x'` mapped back, `x = μ + σ⊙u + (x' − μ) ⊙ e^{ℓ}`.
    fn sample_with_log_prob<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<([f32; D], f32), Error> {
        let [u, l] = self.correction.get();
        let (xc, lp) = self.model.sample_with_log_prob(rng)?;
        let mut x = [0.0; D];
        let mut ld = 0.0;
        for i in 0..D {
            x[i] = self.mean[i] + self.std[i] * u[i] + (xc[i] - self.mean[i]) * crate::activation::exp(l[i]);
            ld -= l[i];
        }
        let lp = lp + ld;
        if lp.is_finite() && check_finite(&x).is_ok() {
            Ok((x, lp))
        } else {
            Err(Error::Overflow)
        }
    }
}
