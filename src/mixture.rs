//! Densities, and weighted mixtures of flows.
//!
//! [`Density`] is what scoring and sampling need from a model: `log p(x)` and
//! a draw. A [`Flow`] is one; so is a [`Mixture`]
//! `p(x) = Σₖ wₖ pₖ(x)` of up to [`MAX_MEMBERS`] densities (usually flows of
//! different families or sizes, or the folds of a cross-validation
//! committee), each statically dispatched and constructible in a `static`.
//!
//! A mixture of flows fitted to the same data is still an exact, normalised
//! density (`Σₖ wₖ = 1`), and it is often better than its best member: the
//! members make different errors, and the weights (fitted on held-out rows by
//! the trainer, "stacking") trust each one where it is good. It costs the sum
//! of the members' flash and cycles.
//!
//! ```
//! use flowmote::mixture::{Density, Mixture};
//! use flowmote::{ActNorm, Flow};
//!
//! // N(−2, 1) and N(2, 1), weights ¼ and ¾ (stored as natural logs).
//! static MODEL: Mixture<1, 2, (Flow<1, (ActNorm<1>,)>, Flow<1, (ActNorm<1>,)>)> = Mixture::new(
//!     [-core::f32::consts::LN_2 * 2.0, -0.287_682_1],
//!     (Flow::new((ActNorm::new([0.0], [2.0]),)), Flow::new((ActNorm::new([0.0], [-2.0]),))),
//! );
//! let lp = MODEL.log_prob(&[2.0]).unwrap();
//! let n = |d: f32| (-0.5 * d * d).exp() / (2.0 * core::f32::consts::PI).sqrt();
//! assert!((lp - (0.25 * n(4.0) + 0.75 * n(0.0)).ln()).abs() < 1e-5);
//! assert!(MODEL.log_prob(&[f32::NAN]).is_err());
//! ```

use crate::error::check_finite;
use crate::gradient::{MemberGradients, NllGrad};
use crate::{Bijector, Error, Flow};
use rand_core::Rng;

/// A probability density on `[f32; D]` that can be scored and sampled.
///
/// Implemented by [`Flow`] and [`Mixture`]; the anomaly
/// [`Detector`](crate::Detector) takes any `Density`.
pub trait Density<const D: usize> {
    /// Exact `log p(x)` in nats. Never panics: NaN/Inf input, input outside
    /// the model's domain and overflow come back as an [`Error`].
    fn log_prob(&self, x: &[f32; D]) -> Result<f32, Error>;

    /// Draw one sample together with its `log p(x)`.
    fn sample_with_log_prob<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<([f32; D], f32), Error>;

    /// Draw one sample.
    fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<[f32; D], Error> {
        self.sample_with_log_prob(rng).map(|(x, _)| x)
    }
}

impl<const D: usize, L: Bijector<D>> Density<D> for Flow<D, L> {
    #[inline(always)]
    fn log_prob(&self, x: &[f32; D]) -> Result<f32, Error> {
        Flow::log_prob(self, x)
    }

    fn sample_with_log_prob<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<([f32; D], f32), Error> {
        Flow::sample_with_log_prob(self, rng)
    }

    fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<[f32; D], Error> {
        Flow::sample(self, rng)
    }
}

/// The members of a [`Mixture`] with `M` components: implemented for tuples
/// of 1 to [`MAX_MEMBERS`] [`Density`] types (so `M` is checked by the type
/// system). A member may itself be a [`Mixture`].
pub trait Components<const D: usize, const M: usize> {
    /// `log pₖ(x)` of every member, in order: `−∞` for a member whose
    /// domain `x` is outside ([`Error::OutOfDomain`]: its density there is
    /// 0); any other error is returned.
    fn log_probs(&self, x: &[f32; D], out: &mut [f32; M]) -> Result<(), Error>;

    /// One sample of member `k` (the last member for `k ≥ M`).
    fn sample_member<R: Rng + ?Sized>(&self, k: usize, rng: &mut R) -> Result<[f32; D], Error>;
}

/// The most members a [`Mixture`] tuple may have (the tuple arities
/// [`Components`] is implemented for).
pub const MAX_MEMBERS: usize = 32;

macro_rules! tuple_components {
    ($($m:literal: ($($name:ident $idx:tt),+) last $last:tt;)+) => {$(
        impl<const D: usize, $($name: Density<D>),+> Components<D, $m> for ($($name,)+) {
            #[inline(always)]
            fn log_probs(&self, x: &[f32; D], out: &mut [f32; $m]) -> Result<(), Error> {
                $( out[$idx] = member_term(self.$idx.log_prob(x))?; )+
                Ok(())
            }

            fn sample_member<R: Rng + ?Sized>(&self, k: usize, rng: &mut R) -> Result<[f32; D], Error> {
                $( if k == $idx { return self.$idx.sample(rng); } )+
                self.$last.sample(rng)
            }
        }

        impl<const D: usize, $($name: NllGrad<D>),+> MemberGradients<D, $m> for ($($name,)+) {
            const LAYERS: usize = {
                let mut n = 0;
                $( if $name::LAYERS > n { n = $name::LAYERS; } )+
                n
            };

            fn gradient_scratch_len(&self) -> usize {
                let mut n = 0;
                $( n = n.max(self.$idx.gradient_scratch_len()); )+
                n
            }

            fn member_nll_grad(
                &self,
                k: usize,
                x: &[f32; D],
                g: &mut [f32; D],
                saved: &mut [[f32; D]],
                scratch: &mut [f32],
            ) -> Result<f32, Error> {
                $( if k == $idx { return self.$idx.nll_grad_with(x, g, saved, scratch); } )+
                Err(Error::ShapeMismatch)
            }
        }
    )+};
}

tuple_components! {
    1: (T0 0) last 0;
    2: (T0 0, T1 1) last 1;
    3: (T0 0, T1 1, T2 2) last 2;
    4: (T0 0, T1 1, T2 2, T3 3) last 3;
    5: (T0 0, T1 1, T2 2, T3 3, T4 4) last 4;
    6: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5) last 5;
    7: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6) last 6;
    8: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7) last 7;
    9: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8) last 8;
    10: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8, T9 9) last 9;
    11: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8, T9 9, T10 10) last 10;
    12: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8, T9 9, T10 10, T11 11) last 11;
    13: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8, T9 9, T10 10, T11 11, T12 12) last 12;
    14: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8, T9 9, T10 10, T11 11, T12 12, T13 13) last 13;
    15: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8, T9 9, T10 10, T11 11, T12 12, T13 13, T14 14) last 14;
    16: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8, T9 9, T10 10, T11 11, T12 12, T13 13, T14 14, T15 15) last 15;
    17: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8, T9 9, T10 10, T11 11, T12 12, T13 13, T14 14, T15 15, T16 16) last 16;
    18: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8, T9 9, T10 10, T11 11, T12 12, T13 13, T14 14, T15 15, T16 16, T17 17) last 17;
    19: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8, T9 9, T10 10, T11 11, T12 12, T13 13, T14 14, T15 15, T16 16, T17 17, T18 18) last 18;
    20: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8, T9 9, T10 10, T11 11, T12 12, T13 13, T14 14, T15 15, T16 16, T17 17, T18 18, T19 19) last 19;
    21: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8, T9 9, T10 10, T11 11, T12 12, T13 13, T14 14, T15 15, T16 16, T17 17, T18 18, T19 19, T20 20) last 20;
    22: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8, T9 9, T10 10, T11 11, T12 12, T13 13, T14 14, T15 15, T16 16, T17 17, T18 18, T19 19, T20 20, T21 21) last 21;
    23: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8, T9 9, T10 10, T11 11, T12 12, T13 13, T14 14, T15 15, T16 16, T17 17, T18 18, T19 19, T20 20, T21 21, T22 22) last 22;
    24: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8, T9 9, T10 10, T11 11, T12 12, T13 13, T14 14, T15 15, T16 16, T17 17, T18 18, T19 19, T20 20, T21 21, T22 22, T23 23) last 23;
    25: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8, T9 9, T10 10, T11 11, T12 12, T13 13, T14 14, T15 15, T16 16, T17 17, T18 18, T19 19, T20 20, T21 21, T22 22, T23 23, T24 24) last 24;
    26: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8, T9 9, T10 10, T11 11, T12 12, T13 13, T14 14, T15 15, T16 16, T17 17, T18 18, T19 19, T20 20, T21 21, T22 22, T23 23, T24 24, T25 25) last 25;
    27: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8, T9 9, T10 10, T11 11, T12 12, T13 13, T14 14, T15 15, T16 16, T17 17, T18 18, T19 19, T20 20, T21 21, T22 22, T23 23, T24 24, T25 25, T26 26) last 26;
    28: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8, T9 9, T10 10, T11 11, T12 12, T13 13, T14 14, T15 15, T16 16, T17 17, T18 18, T19 19, T20 20, T21 21, T22 22, T23 23, T24 24, T25 25, T26 26, T27 27) last 27;
    29: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8, T9 9, T10 10, T11 11, T12 12, T13 13, T14 14, T15 15, T16 16, T17 17, T18 18, T19 19, T20 20, T21 21, T22 22, T23 23, T24 24, T25 25, T26 26, T27 27, T28 28) last 28;
    30: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8, T9 9, T10 10, T11 11, T12 12, T13 13, T14 14, T15 15, T16 16, T17 17, T18 18, T19 19, T20 20, T21 21, T22 22, T23 23, T24 24, T25 25, T26 26, T27 27, T28 28, T29 29) last 29;
    31: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8, T9 9, T10 10, T11 11, T12 12, T13 13, T14 14, T15 15, T16 16, T17 17, T18 18, T19 19, T20 20, T21 21, T22 22, T23 23, T24 24, T25 25, T26 26, T27 27, T28 28, T29 29, T30 30) last 30;
    32: (T0 0, T1 1, T2 2, T3 3, T4 4, T5 5, T6 6, T7 7, T8 8, T9 9, T10 10, T11 11, T12 12, T13 13, T14 14, T15 15, T16 16, T17 17, T18 18, T19 19, T20 20, T21 21, T22 22, T23 23, T24 24, T25 25, T26 26, T27 27, T28 28, T29 29, T30 30, T31 31) last 31;
}

/// `ln Σₖ exp(log_weights[k] + log_probs[k])`, computed stably (the largest
/// term factored out). Pairs beyond the shorter slice are ignored; an empty
/// input gives `−∞`. This is the one implementation the host tools use too.
#[inline]
pub fn log_sum_exp(log_weights: &[f32], log_probs: &[f32]) -> f32 {
    let mut m = f32::NEG_INFINITY;
    for (w, p) in log_weights.iter().zip(log_probs) {
        let t = w + p;
        if t > m {
            m = t;
        }
    }
    if !m.is_finite() {
        return m;
    }
    let mut s = 0.0f32;
    for (w, p) in log_weights.iter().zip(log_probs) {
        s += crate::activation::exp(w + p - m);
    }
    m + libm::logf(s)
}

/// What one member's `log_prob` result contributes to a mixture: its
/// log-density, `−∞` (density 0) outside its domain
/// ([`Error::OutOfDomain`]), any other error as is.
#[inline(always)]
pub fn member_term(log_prob: Result<f32, Error>) -> Result<f32, Error> {
    match log_prob {
        Err(Error::OutOfDomain) => Ok(f32::NEG_INFINITY),
        r => r,
    }
}

/// A mixture's `log p` from its members' [`member_term`]s: the
/// [`log_sum_exp`] with the weights; `−∞` (every member out of its domain)
/// is [`Error::OutOfDomain`], a non-finite sum [`Error::Overflow`].
#[inline]
pub fn combine(log_weights: &[f32], terms: &[f32]) -> Result<f32, Error> {
    let lp = log_sum_exp(log_weights, terms);
    if lp.is_finite() {
        Ok(lp)
    } else if lp == f32::NEG_INFINITY {
        Err(Error::OutOfDomain)
    } else {
        Err(Error::Overflow)
    }
}

/// A mixture's `−log p(x)` and its input gradient `Σₖ rₖ ∂(−log pₖ)/∂x`
/// (written to `g`), with the posterior responsibilities
/// `rₖ = wₖ pₖ(x) / p(x)`, in one pass over the members: `member(k, gk)`
/// returns member `k`'s `−log pₖ(x)` and writes its `∂(−log pₖ)/∂x` to `gk`
/// (`g.len()` floats). Each member's [`member_term`] is left in `terms`
/// and `−log p` is their [`combine`] (the mixture's `log_prob`); the
/// gradient is accumulated as a running, rescaled `Σₖ exp(ln wₖ + log pₖ − m)`
/// (`m` the largest term so far), so no member is evaluated twice. A member
/// outside its domain contributes nothing; any other member error is
/// returned as is; a non-finite gradient is [`Error::Overflow`]. The
/// device's [`MixtureGradient`](crate::gradient::MixtureGradient) and the
/// host's [`MixtureViews`](crate::adapt::MixtureViews) both go through here.
pub fn mixture_nll_grad(
    log_weights: &[f32],
    terms: &mut [f32],
    g: &mut [f32],
    gk: &mut [f32],
    mut member: impl FnMut(usize, &mut [f32]) -> Result<f32, Error>,
) -> Result<f32, Error> {
    if gk.len() != g.len() || terms.len() != log_weights.len() {
        return Err(Error::ShapeMismatch);
    }
    g.fill(0.0);
    let (mut m, mut s) = (f32::NEG_INFINITY, 0.0f32);
    for (k, (w, t)) in log_weights.iter().zip(terms.iter_mut()).enumerate() {
        *t = member_term(member(k, gk).map(|nll| -nll))?;
        if !t.is_finite() {
            continue;
        }
        let a = w + *t;
        // Scale what is there (`c`) and the new member (`e`) to the larger
        // of `m` and `a`.
        let (c, e) = if a > m {
            let c = if m == f32::NEG_INFINITY {
                0.0
            } else {
                crate::activation::exp(m - a)
            };
            m = a;
            (c, 1.0)
        } else {
            (1.0, crate::activation::exp(a - m))
        };
        s = s * c + e;
        for (gi, gki) in g.iter_mut().zip(gk.iter()) {
            *gi = *gi * c + e * gki;
        }
    }
    let lp = combine(log_weights, terms)?;
    for gi in g.iter_mut() {
        *gi /= s;
    }
    check_finite(g).map_err(|_| Error::Overflow)?;
    Ok(-lp)
}

/// The member a uniform 32-bit word `u` selects: the first `k` whose
/// cumulative weight `Σ_{j≤k} exp(log_weights[j])` exceeds `u / 2³²`
/// (the last member if rounding leaves `u` beyond the total).
#[inline]
pub fn pick(log_weights: &[f32], u: u32) -> usize {
    let t = (u >> 8) as f32 * (1.0 / 16_777_216.0);
    let mut cum = 0.0f32;
    for (k, w) in log_weights.iter().enumerate() {
        cum += crate::activation::exp(*w);
        if t < cum {
            return k;
        }
    }
    log_weights.len().saturating_sub(1)
}

/// A weighted mixture `p(x) = Σₖ exp(log_weights[k]) · pₖ(x)` of `M` densities.
///
/// The weights are stored as natural logs and must sum (after `exp`) to 1 for
/// `p` to be normalised; the trainer writes them that way and
/// [`Mixture::weights_sum`] checks it. Constructible in a `static`.
#[derive(Clone, Debug)]
pub struct Mixture<const D: usize, const M: usize, C> {
    /// `ln wₖ` of every member.
    pub log_weights: [f32; M],
    /// The members, usually a tuple of [`Flow`]s.
    pub components: C,
}

impl<const D: usize, const M: usize, C: Components<D, M>> Mixture<D, M, C> {
    /// A mixture of `components` with weights `exp(log_weights)`.
    pub const fn new(log_weights: [f32; M], components: C) -> Self {
        Mixture {
            log_weights,
            components,
        }
    }

    /// `Σₖ exp(log_weights[k])`: 1 up to rounding for a normalised mixture.
    pub fn weights_sum(&self) -> f32 {
        self.log_weights.iter().map(|w| crate::activation::exp(*w)).sum()
    }

    /// Exact `log p(x)` in nats. Every member is scored; a member whose
    /// domain excludes `x` contributes density 0, and if every member's does,
    /// the result is [`Error::OutOfDomain`]. Any other member error
    /// (overflow) is returned as is: a row one member cannot score is not
    /// silently scored by the others. Never panics.
    #[inline(always)]
    pub fn log_prob(&self, x: &[f32; D]) -> Result<f32, Error> {
        check_finite(x)?;
        let mut lps = [0.0f32; M];
        self.components.log_probs(x, &mut lps)?;
        combine(&self.log_weights, &lps)
    }

    /// Draw one sample: one 32-bit word picks the member ([`pick`]), then
    /// that member draws `x`.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<[f32; D], Error> {
        let k = pick(&self.log_weights, rng.next_u32());
        self.components.sample_member(k, rng)
    }

    /// Draw one sample as [`Mixture::sample`] does, and score it with the
    /// mixture (every member evaluates `x`).
    pub fn sample_with_log_prob<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<([f32; D], f32), Error> {
        let x = self.sample(rng)?;
        let lp = self.log_prob(&x)?;
        Ok((x, lp))
    }
}

impl<const D: usize, const M: usize, C: Components<D, M>> Density<D> for Mixture<D, M, C> {
    #[inline(always)]
    fn log_prob(&self, x: &[f32; D]) -> Result<f32, Error> {
        Mixture::log_prob(self, x)
    }

    fn sample_with_log_prob<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<([f32; D], f32), Error> {
        Mixture::sample_with_log_prob(self, rng)
    }

    fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<[f32; D], Error> {
        Mixture::sample(self, rng)
    }
}
