//! Input gradients of const-generic models, for devices.
//!
//! [`InputGradient`] is the backward pass of a whole stack of typed layers
//! (the `static MODEL` of an export) with respect to its *input* only: no
//! parameter gradient, so no buffer the size of the weights. It is what
//! on-device adaptation ([`crate::adapt`]) steps through, via
//! [`Gradient`], an [`AdaptTarget`] with its working memory inline.
//!
//! Every layer calls its view's [`SliceBackward::backward_input`], the code
//! the host's [`crate::adapt::Views`] runs, and the forward pass is the
//! layers' own [`Bijector::forward`], the scoring code: host and device
//! compute the same numbers bit for bit. Layers without a backward pass
//! (the continuous flow, sigmoid/logit) and compressed (`i8`, `f16`)
//! conditioners do not implement it, so adapting such a model does not
//! compile.

use crate::adapt::AdaptTarget;
use crate::bijector::Bijector;
use crate::layer::{SliceBackward, SliceBijector};
use crate::mixture::{mixture_nll_grad, Components, Mixture};
use crate::{normal, ActNorm, AffineCoupling, Error, Flow, LuLinear, Maf, Permutation, Reverse};
use crate::{SplineAutoregressive, SplineCoupling, TriLinear};

/// A typed layer, or a tuple of them, whose input gradient can be taken.
pub trait InputGradient<const D: usize>: Bijector<D> {
    /// Layers in the stack: the inputs [`InputGradient::forward_saving`] keeps.
    const LAYERS: usize;
    /// Floats of the `scratch` of [`InputGradient::forward_saving`] and
    /// [`InputGradient::backward_input`].
    fn gradient_scratch_len(&self) -> usize;
    /// [`Bijector::forward`] (through the layers' views, the same numbers
    /// with code shared by layers of one kind), keeping each layer's input
    /// in `saved` (its first [`InputGradient::LAYERS`] rows, in order);
    /// `scratch` as in [`InputGradient::backward_input`].
    fn forward_saving(&self, x: &mut [f32; D], saved: &mut [[f32; D]], scratch: &mut [f32]) -> Result<f32, Error>;
    /// Backward pass from the inputs `saved` by
    /// [`InputGradient::forward_saving`]: `g` holds `∂L/∂(output)` on entry
    /// and `∂L/∂(input)` on return; `g_ld = ∂L/∂(log-det)`. `ShapeMismatch`
    /// if `saved` or `scratch` is short; never panics.
    fn backward_input(&self, saved: &[[f32; D]], g: &mut [f32; D], g_ld: f32, scratch: &mut [f32])
        -> Result<(), Error>;
}

/// One layer: its input saved, its view's backward.
macro_rules! leaf {
    ([$($gen:tt)*] $ty:ty) => {
        impl<$($gen)*> InputGradient<D> for $ty {
            const LAYERS: usize = 1;
            fn gradient_scratch_len(&self) -> usize {
                let view = self.view();
                view.scratch_len().max(SliceBackward::train_scratch_len(&view))
            }
            fn forward_saving(&self, x: &mut [f32; D], saved: &mut [[f32; D]], scratch: &mut [f32]) -> Result<f32, Error> {
                *saved.first_mut().ok_or(Error::ShapeMismatch)? = *x;
                let view = self.view();
                let scratch = scratch.get_mut(..view.scratch_len()).ok_or(Error::ShapeMismatch)?;
                Ok(view.forward_flat(x, scratch))
            }
            fn backward_input(
                &self,
                saved: &[[f32; D]],
                g: &mut [f32; D],
                g_ld: f32,
                scratch: &mut [f32],
            ) -> Result<(), Error> {
                let view = self.view();
                let x = saved.first().ok_or(Error::ShapeMismatch)?;
                let scratch = scratch
                    .get_mut(..SliceBackward::train_scratch_len(&view))
                    .ok_or(Error::ShapeMismatch)?;
                SliceBackward::backward_input(&view, x, g, g_ld, scratch);
                Ok(())
            }
        }
    };
}

leaf!([const D: usize] ActNorm<D>);
leaf!([const D: usize] LuLinear<D>);
leaf!([const D: usize, const N: usize] TriLinear<D, N>);
leaf!([const D: usize] Permutation<D>);
leaf!([const D: usize, const A: usize, const B: usize, const H: usize, const L: usize] AffineCoupling<A, B, H, L, f32>);
leaf!([const D: usize, const H: usize, const L: usize] Maf<D, H, L, f32>);
leaf!([const D: usize, const A: usize, const B: usize, const H: usize, const L: usize, const K: usize, const P: usize]
    SplineCoupling<A, B, H, L, K, P, f32>);
leaf!([const D: usize, const H: usize, const L: usize, const K: usize, const P: usize]
    SplineAutoregressive<D, H, L, K, P, f32>);

impl<const D: usize> InputGradient<D> for Reverse {
    const LAYERS: usize = 1;
    fn gradient_scratch_len(&self) -> usize {
        0
    }
    fn forward_saving(&self, x: &mut [f32; D], saved: &mut [[f32; D]], _: &mut [f32]) -> Result<f32, Error> {
        *saved.first_mut().ok_or(Error::ShapeMismatch)? = *x;
        Bijector::<D>::forward(self, x)
    }
    fn backward_input(&self, _: &[[f32; D]], g: &mut [f32; D], _: f32, _: &mut [f32]) -> Result<(), Error> {
        g.reverse();
        Ok(())
    }
}

/// Tuples: layers left to right forward, right to left backward, each
/// taking its `LAYERS` rows of `saved` in order.
macro_rules! tuple_gradient {
    ($(($($name:ident $idx:tt),+) rev ($($rname:ident $ridx:tt),+);)+) => {$(
        impl<const D: usize, $($name: InputGradient<D>),+> InputGradient<D> for ($($name,)+) {
            const LAYERS: usize = 0 $(+ $name::LAYERS)+;
            fn gradient_scratch_len(&self) -> usize {
                let mut n = 0;
                $( n = n.max(self.$idx.gradient_scratch_len()); )+
                n
            }
            fn forward_saving(&self, x: &mut [f32; D], saved: &mut [[f32; D]], scratch: &mut [f32]) -> Result<f32, Error> {
                let mut ld = 0.0;
                let mut rest = saved;
                $(
                    let (mine, tail) = rest.split_at_mut_checked($name::LAYERS).ok_or(Error::ShapeMismatch)?;
                    ld += self.$idx.forward_saving(x, mine, scratch)?;
                    rest = tail;
                )+
                let _ = rest;
                Ok(ld)
            }
            fn backward_input(
                &self,
                saved: &[[f32; D]],
                g: &mut [f32; D],
                g_ld: f32,
                scratch: &mut [f32],
            ) -> Result<(), Error> {
                let mut rest = saved.get(..Self::LAYERS).ok_or(Error::ShapeMismatch)?;
                $(
                    let cut = rest.len().checked_sub($rname::LAYERS).ok_or(Error::ShapeMismatch)?;
                    let (head, mine) = rest.split_at_checked(cut).ok_or(Error::ShapeMismatch)?;
                    self.$ridx.backward_input(mine, g, g_ld, scratch)?;
                    rest = head;
                )+
                let _ = rest;
                Ok(())
            }
        }
    )+};
}

tuple_gradient! {
    (A 0) rev (A 0);
    (A 0, B 1) rev (B 1, A 0);
    (A 0, B 1, C 2) rev (C 2, B 1, A 0);
    (A 0, B 1, C 2, E 3) rev (E 3, C 2, B 1, A 0);
    (A 0, B 1, C 2, E 3, F 4) rev (F 4, E 3, C 2, B 1, A 0);
    (A 0, B 1, C 2, E 3, F 4, G 5) rev (G 5, F 4, E 3, C 2, B 1, A 0);
    (A 0, B 1, C 2, E 3, F 4, G 5, H 6) rev (H 6, G 5, F 4, E 3, C 2, B 1, A 0);
    (A 0, B 1, C 2, E 3, F 4, G 5, H 6, I 7) rev (I 7, H 6, G 5, F 4, E 3, C 2, B 1, A 0);
    (A 0, B 1, C 2, E 3, F 4, G 5, H 6, I 7, J 8) rev (J 8, I 7, H 6, G 5, F 4, E 3, C 2, B 1, A 0);
    (A 0, B 1, C 2, E 3, F 4, G 5, H 6, I 7, J 8, K 9) rev (K 9, J 8, I 7, H 6, G 5, F 4, E 3, C 2, B 1, A 0);
    (A 0, B 1, C 2, E 3, F 4, G 5, H 6, I 7, J 8, K 9, M 10)
        rev (M 10, K 9, J 8, I 7, H 6, G 5, F 4, E 3, C 2, B 1, A 0);
    (A 0, B 1, C 2, E 3, F 4, G 5, H 6, I 7, J 8, K 9, M 10, N 11)
        rev (N 11, M 10, K 9, J 8, I 7, H 6, G 5, F 4, E 3, C 2, B 1, A 0);
    (A 0, B 1, C 2, E 3, F 4, G 5, H 6, I 7, J 8, K 9, M 10, N 11, O 12)
        rev (O 12, N 11, M 10, K 9, J 8, I 7, H 6, G 5, F 4, E 3, C 2, B 1, A 0);
    (A 0, B 1, C 2, E 3, F 4, G 5, H 6, I 7, J 8, K 9, M 10, N 11, O 12, P 13)
        rev (P 13, O 12, N 11, M 10, K 9, J 8, I 7, H 6, G 5, F 4, E 3, C 2, B 1, A 0);
    (A 0, B 1, C 2, E 3, F 4, G 5, H 6, I 7, J 8, K 9, M 10, N 11, O 12, P 13, Q 14)
        rev (Q 14, P 13, O 12, N 11, M 10, K 9, J 8, I 7, H 6, G 5, F 4, E 3, C 2, B 1, A 0);
    (A 0, B 1, C 2, E 3, F 4, G 5, H 6, I 7, J 8, K 9, M 10, N 11, O 12, P 13, Q 14, R 15)
        rev (R 15, Q 14, P 13, O 12, N 11, M 10, K 9, J 8, I 7, H 6, G 5, F 4, E 3, C 2, B 1, A 0);
}

/// A model's `−log p(x)` and input gradient with its working memory inline:
/// `N` saved layer inputs (at least the stack's [`InputGradient::LAYERS`])
/// and `S` floats of scratch (at least
/// [`InputGradient::gradient_scratch_len`]); an export gives both as
/// `ADAPT_LAYERS` and `ADAPT_SCRATCH`. `(N + 1)·D + S` floats of RAM.
pub struct Gradient<'m, const D: usize, L, const N: usize, const S: usize> {
    model: &'m Flow<D, L>,
    saved: [[f32; D]; N],
    scratch: [f32; S],
}

impl<'m, const D: usize, L: InputGradient<D>, const N: usize, const S: usize> Gradient<'m, D, L, N, S> {
    /// The gradient of `model`; `ShapeMismatch` if `N` or `S` is too small.
    pub fn new(model: &'m Flow<D, L>) -> Result<Self, Error> {
        if N < L::LAYERS || S < model.layers.gradient_scratch_len() {
            return Err(Error::ShapeMismatch);
        }
        Ok(Gradient {
            model,
            saved: [[0.0; D]; N],
            scratch: [0.0; S],
        })
    }

    /// The model.
    pub fn model(&self) -> &'m Flow<D, L> {
        self.model
    }
}

impl<const D: usize, L: InputGradient<D>, const N: usize, const S: usize> AdaptTarget for Gradient<'_, D, L, N, S> {
    fn nll(&mut self, x: &[f32]) -> Result<f32, Error> {
        let x: &[f32; D] = x.try_into().map_err(|_| Error::ShapeMismatch)?;
        Ok(-self.model.log_prob(x)?)
    }

    fn nll_grad(&mut self, x: &[f32], g: &mut [f32]) -> Result<f32, Error> {
        let x: &[f32; D] = x.try_into().map_err(|_| Error::ShapeMismatch)?;
        let g: &mut [f32; D] = g.try_into().map_err(|_| Error::ShapeMismatch)?;
        self.model.nll_grad_with(x, g, &mut self.saved, &mut self.scratch)
    }
}

/// A density whose `−log p(x)` and input gradient a device can take with
/// memory the caller gives: a [`Flow`] of [`InputGradient`] layers. The
/// members of a [`MixtureGradient`] are these.
pub trait NllGrad<const D: usize> {
    /// Saved layer inputs [`NllGrad::nll_grad_with`] needs.
    const LAYERS: usize;
    /// Scratch floats [`NllGrad::nll_grad_with`] needs.
    fn gradient_scratch_len(&self) -> usize;
    /// `−log p(x)`, with `∂(−log p)/∂x` written to `g`; `saved` holds at
    /// least [`NllGrad::LAYERS`] rows, `scratch` at least
    /// [`NllGrad::gradient_scratch_len`] floats (else `ShapeMismatch`).
    fn nll_grad_with(
        &self,
        x: &[f32; D],
        g: &mut [f32; D],
        saved: &mut [[f32; D]],
        scratch: &mut [f32],
    ) -> Result<f32, Error>;
}

impl<const D: usize, L: InputGradient<D>> NllGrad<D> for Flow<D, L> {
    const LAYERS: usize = L::LAYERS;

    fn gradient_scratch_len(&self) -> usize {
        self.layers.gradient_scratch_len()
    }

    fn nll_grad_with(
        &self,
        x: &[f32; D],
        g: &mut [f32; D],
        saved: &mut [[f32; D]],
        scratch: &mut [f32],
    ) -> Result<f32, Error> {
        crate::error::check_finite(x)?;
        let mut z = *x;
        let ld = self.layers.forward_saving(&mut z, saved, scratch)?;
        if !ld.is_finite() || crate::error::check_finite(&z).is_err() {
            return Err(Error::Overflow);
        }
        let nll = -(normal::log_pdf(&z) + ld);
        if !nll.is_finite() {
            return Err(Error::Overflow);
        }
        // ∂(−log N(z))/∂z = z; ∂(−Σ log-det)/∂(log-det) = −1.
        *g = z;
        self.layers.backward_input(saved, g, -1.0, scratch)?;
        crate::error::check_finite(g).map_err(|_| Error::Overflow)?;
        Ok(nll)
    }
}

/// The members of a [`Mixture`] a device can differentiate: tuples of
/// [`NllGrad`] densities (implemented with [`Components`]).
pub trait MemberGradients<const D: usize, const M: usize> {
    /// The most saved layer inputs of any member.
    const LAYERS: usize;
    /// The most scratch floats of any member.
    fn gradient_scratch_len(&self) -> usize;
    /// Member `k`'s [`NllGrad::nll_grad_with`] (`ShapeMismatch` for `k ≥ M`).
    fn member_nll_grad(
        &self,
        k: usize,
        x: &[f32; D],
        g: &mut [f32; D],
        saved: &mut [[f32; D]],
        scratch: &mut [f32],
    ) -> Result<f32, Error>;
}

/// A mixture's `−log p(x)` and input gradient with its working memory
/// inline, like [`Gradient`]: `N` saved layer inputs (at least the members'
/// [`MemberGradients::LAYERS`]) and `S` floats of scratch (at least
/// [`MemberGradients::gradient_scratch_len`]), shared by the members in
/// turn; an export gives both as `ADAPT_LAYERS` and `ADAPT_SCRATCH`.
/// `(N + 1)·D + S + M` floats of RAM.
///
/// `∂(−log p)/∂x = Σₖ rₖ ∂(−log pₖ)/∂x` with the members' posterior
/// responsibilities `rₖ = wₖ pₖ(x) / p(x)`
/// ([`mixture_nll_grad`]: one pass over the members, the code the host's
/// twin runs too).
pub struct MixtureGradient<'m, const D: usize, const M: usize, C, const N: usize, const S: usize> {
    model: &'m Mixture<D, M, C>,
    saved: [[f32; D]; N],
    scratch: [f32; S],
    member_g: [f32; D],
}

impl<'m, const D: usize, const M: usize, C, const N: usize, const S: usize> MixtureGradient<'m, D, M, C, N, S>
where
    C: Components<D, M> + MemberGradients<D, M>,
{
    /// The gradient of `model`; `ShapeMismatch` if `N` or `S` is too small.
    pub fn new(model: &'m Mixture<D, M, C>) -> Result<Self, Error> {
        if N < C::LAYERS || S < model.components.gradient_scratch_len() {
            return Err(Error::ShapeMismatch);
        }
        Ok(MixtureGradient {
            model,
            saved: [[0.0; D]; N],
            scratch: [0.0; S],
            member_g: [0.0; D],
        })
    }

    /// The model.
    pub fn model(&self) -> &'m Mixture<D, M, C> {
        self.model
    }
}

impl<const D: usize, const M: usize, C, const N: usize, const S: usize> AdaptTarget
    for MixtureGradient<'_, D, M, C, N, S>
where
    C: Components<D, M> + MemberGradients<D, M>,
{
    fn nll(&mut self, x: &[f32]) -> Result<f32, Error> {
        let x: &[f32; D] = x.try_into().map_err(|_| Error::ShapeMismatch)?;
        Ok(-self.model.log_prob(x)?)
    }

    fn nll_grad(&mut self, x: &[f32], g: &mut [f32]) -> Result<f32, Error> {
        let x: &[f32; D] = x.try_into().map_err(|_| Error::ShapeMismatch)?;
        let mut terms = [0.0f32; M];
        let (components, saved, scratch) = (&self.model.components, &mut self.saved, &mut self.scratch);
        mixture_nll_grad(&self.model.log_weights, &mut terms, g, &mut self.member_g, |k, gk| {
            let gk: &mut [f32; D] = gk.try_into().map_err(|_| Error::ShapeMismatch)?;
            components.member_nll_grad(k, x, gk, saved, scratch)
        })
    }
}

/// The adaptation gradient of a model a device cannot differentiate (a
/// mixture, a continuous flow, int8 or f16 weights): an export names it as
/// its `AdaptGradient`, so that a board built for any model compiles, and
/// [`NoGradient::new`] always fails with [`Error::Unsupported`], so that the
/// board runs with adaptation off. No value of this type exists.
pub struct NoGradient<M> {
    never: core::convert::Infallible,
    model: core::marker::PhantomData<fn(&M)>,
}

impl<M> NoGradient<M> {
    /// Always [`Error::Unsupported`].
    pub fn new(model: &M) -> Result<Self, Error> {
        let _ = model;
        Err(Error::Unsupported)
    }
}

impl<M> AdaptTarget for NoGradient<M> {
    fn nll(&mut self, _: &[f32]) -> Result<f32, Error> {
        match self.never {}
    }

    fn nll_grad(&mut self, _: &[f32], _: &mut [f32]) -> Result<f32, Error> {
        match self.never {}
    }
}
