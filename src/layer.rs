//! One slice-level interface for every layer view, sized at run time.
//!
//! The const-generic layers ([`crate::Bijector`]) are what a device runs;
//! each of them calls a borrowed *view* (`…Ref`), the one implementation of
//! its maths. This module gives those views one object-safe shape, so that
//! code holding layers chosen at run time (the host tool) never has to ask
//! what a layer is:
//!
//! * [`SliceBijector`]: `forward` / `inverse` in place with one flat scratch
//!   slice of [`SliceBijector::scratch_len`] floats;
//! * [`SliceBackward`]: the vector–Jacobian product of `forward` for the
//!   layers trained by maximum likelihood, with the gradient of its
//!   parameters in their flat order. The continuous flow is trained by flow
//!   matching ([`crate::ContinuousFlowRef::flow_matching_backward`]), so it
//!   implements [`SliceBijector`] only.
//!
//! Every implementation splits the scratch slice and calls the view's own
//! methods, so the numbers are those of the const-generic layers, bit for
//! bit. [`Frozen`] turns a trainable view into one whose parameters are
//! fixed (the standardisation).

/// A layer on slices: data → latent and back, with one flat scratch slice.
pub trait SliceBijector {
    /// Floats of the `scratch` slice of [`SliceBijector::forward_flat`] and
    /// [`SliceBijector::inverse_flat`].
    fn scratch_len(&self) -> usize;
    /// Data → latent in place; returns `log|det ∂forward/∂x|`. `scratch` has
    /// at least [`SliceBijector::scratch_len`] floats (else it panics).
    fn forward_flat(&self, x: &mut [f32], scratch: &mut [f32]) -> f32;
    /// Latent → data in place; returns the log-det of this map. Scratch as
    /// in [`SliceBijector::forward_flat`].
    fn inverse_flat(&self, z: &mut [f32], scratch: &mut [f32]) -> f32;
    /// Lanes ([`crate::block::Lanes`]) of the `scratch` slice of
    /// [`SliceBijector::forward_block`] (by default room for
    /// [`SliceBijector::scratch_len`] floats).
    fn block_scratch_len(&self) -> usize {
        crate::block::lanes_for(self.scratch_len())
    }
    /// [`SliceBijector::forward_flat`] of `n = ld.len()` rows at once, for
    /// hosts: `x` holds the rows one after the other (`n × dim` floats),
    /// each transformed in place; `ld[r]` is set to row `r`'s log-det. Every
    /// row's numbers are bit-identical to [`SliceBijector::forward_flat`] on
    /// that row. Layers with a conditioner take the rows in blocks of
    /// [`crate::block::BLOCK`] (vectorised across rows); the default is the
    /// single-row loop. `scratch` has [`SliceBijector::block_scratch_len`]
    /// lanes.
    fn forward_block(&self, x: &mut [f32], ld: &mut [f32], scratch: &mut [crate::block::Lanes]) {
        let n = ld.len();
        if n == 0 {
            return;
        }
        let d = x.len() / n;
        let scratch = scratch.as_flattened_mut();
        for (row, l) in x.chunks_exact_mut(d).zip(ld) {
            *l = self.forward_flat(row, scratch);
        }
    }
}

/// A layer trained by maximum likelihood: the backward pass of
/// [`SliceBijector::forward_flat`].
pub trait SliceBackward: SliceBijector {
    /// Length of the flat parameter gradient of
    /// [`SliceBackward::backward_flat`] (0 for layers without parameters).
    fn param_len(&self) -> usize;
    /// Floats of the `scratch` slice of [`SliceBackward::backward_flat`].
    fn train_scratch_len(&self) -> usize;
    /// Backward pass of the forward map at input `x`: `g` holds `∂L/∂y` on
    /// entry and `∂L/∂x` on return, `g_ld = ∂L/∂(log-det)`; *adds* the
    /// parameter gradient to `grad` ([`SliceBackward::param_len`] floats, the
    /// layer's flat parameter order). Panics on wrong lengths.
    fn backward_flat(&self, x: &[f32], g: &mut [f32], g_ld: f32, grad: &mut [f32], scratch: &mut [f32]);
    /// [`SliceBackward::backward_flat`] without the parameter gradient:
    /// `g` becomes `∂L/∂x`, bit for bit as there, and no gradient buffer
    /// is needed — what on-device adaptation ([`crate::adapt`]) steps
    /// through. `scratch` has [`SliceBackward::train_scratch_len`] floats.
    fn backward_input(&self, x: &[f32], g: &mut [f32], g_ld: f32, scratch: &mut [f32]);
    /// Lanes ([`crate::block::Lanes`]) of the `scratch` slice of
    /// [`SliceBackward::backward_block`] (by default room for
    /// [`SliceBackward::train_scratch_len`] floats).
    fn block_train_scratch_len(&self) -> usize {
        crate::block::lanes_for(self.train_scratch_len())
    }
    /// [`SliceBackward::backward_flat`] of `n = g_ld.len()` rows, for hosts:
    /// `x` and `g` hold the rows one after the other (`n × dim`), `g_ld[r]`
    /// is row `r`'s `∂L/∂(log-det)`. The parameter gradients are added row
    /// after row, so `grad` and every row of `g` are bit-identical to `n`
    /// calls of [`SliceBackward::backward_flat`] in row order. `scratch` has
    /// [`SliceBackward::block_train_scratch_len`] lanes.
    fn backward_block(
        &self,
        x: &[f32],
        g: &mut [f32],
        g_ld: &[f32],
        grad: &mut [f32],
        scratch: &mut [crate::block::Lanes],
    ) {
        let n = g_ld.len();
        if n == 0 {
            return;
        }
        let d = x.len() / n;
        let scratch = scratch.as_flattened_mut();
        for ((xr, gr), l) in x.chunks_exact(d).zip(g.chunks_exact_mut(d)).zip(g_ld) {
            self.backward_flat(xr, gr, *l, grad, scratch);
        }
    }
    /// Lanes of the `saved` slice of [`SliceBackward::forward_block_saved`]
    /// and [`SliceBackward::backward_block_saved`] (0, the default: the
    /// layer keeps nothing and recomputes what its backward pass needs).
    fn block_saved_len(&self) -> usize {
        0
    }
    /// [`SliceBijector::forward_block`] of `n = ld.len() ≤ BLOCK` rows that
    /// also keeps in `saved` ([`SliceBackward::block_saved_len`] lanes) what
    /// [`SliceBackward::backward_block_saved`] needs, so the training
    /// backward pass does not run the layer's forward a second time. The
    /// rows and log-dets are bit-identical to
    /// [`SliceBijector::forward_block`].
    fn forward_block_saved(
        &self,
        x: &mut [f32],
        ld: &mut [f32],
        scratch: &mut [crate::block::Lanes],
        saved: &mut [crate::block::Lanes],
    ) {
        let _ = saved;
        self.as_bijector().forward_block(x, ld, scratch);
    }
    /// [`SliceBackward::backward_block`] of the same `n ≤ BLOCK` rows, in
    /// the same order, that [`SliceBackward::forward_block_saved`] just
    /// took forward with this `saved`; bit-identical to it.
    fn backward_block_saved(
        &self,
        x: &[f32],
        g: &mut [f32],
        g_ld: &[f32],
        grad: &mut [f32],
        scratch: &mut [crate::block::Lanes],
        saved: &[crate::block::Lanes],
    ) {
        let _ = saved;
        self.backward_block(x, g, g_ld, grad, scratch);
    }
    /// The same layer as a [`SliceBijector`] (for `dyn` holders).
    fn as_bijector(&self) -> &dyn SliceBijector;
}

/// A trainable view with its parameters held fixed: the same forward,
/// inverse and input gradient, no parameter gradient.
#[derive(Clone, Copy, Debug)]
pub struct Frozen<T>(pub T);

impl<T: SliceBijector> SliceBijector for Frozen<T> {
    fn scratch_len(&self) -> usize {
        self.0.scratch_len()
    }
    fn forward_flat(&self, x: &mut [f32], scratch: &mut [f32]) -> f32 {
        self.0.forward_flat(x, scratch)
    }
    fn inverse_flat(&self, z: &mut [f32], scratch: &mut [f32]) -> f32 {
        self.0.inverse_flat(z, scratch)
    }
    fn block_scratch_len(&self) -> usize {
        self.0.block_scratch_len()
    }
    fn forward_block(&self, x: &mut [f32], ld: &mut [f32], scratch: &mut [crate::block::Lanes]) {
        self.0.forward_block(x, ld, scratch)
    }
}

impl<T: SliceBackward> SliceBackward for Frozen<T> {
    fn param_len(&self) -> usize {
        0
    }
    /// The inner layer's scratch, then room for its (discarded) gradient.
    fn train_scratch_len(&self) -> usize {
        self.0.train_scratch_len() + self.0.param_len()
    }
    fn backward_flat(&self, x: &[f32], g: &mut [f32], g_ld: f32, _grad: &mut [f32], scratch: &mut [f32]) {
        let (inner, discard) = scratch.split_at_mut(self.0.train_scratch_len());
        let discard = &mut discard[..self.0.param_len()];
        discard.fill(0.0);
        self.0.backward_flat(x, g, g_ld, discard, inner);
    }
    fn backward_input(&self, x: &[f32], g: &mut [f32], g_ld: f32, scratch: &mut [f32]) {
        self.0.backward_input(x, g, g_ld, scratch)
    }
    fn block_train_scratch_len(&self) -> usize {
        self.0.block_train_scratch_len() + crate::block::lanes_for(self.0.param_len())
    }
    fn backward_block(
        &self,
        x: &[f32],
        g: &mut [f32],
        g_ld: &[f32],
        _grad: &mut [f32],
        scratch: &mut [crate::block::Lanes],
    ) {
        let (inner, discard) = scratch.split_at_mut(self.0.block_train_scratch_len());
        let discard = &mut discard.as_flattened_mut()[..self.0.param_len()];
        discard.fill(0.0);
        self.0.backward_block(x, g, g_ld, discard, inner);
    }
    fn block_saved_len(&self) -> usize {
        self.0.block_saved_len()
    }
    fn forward_block_saved(
        &self,
        x: &mut [f32],
        ld: &mut [f32],
        scratch: &mut [crate::block::Lanes],
        saved: &mut [crate::block::Lanes],
    ) {
        self.0.forward_block_saved(x, ld, scratch, saved)
    }
    fn backward_block_saved(
        &self,
        x: &[f32],
        g: &mut [f32],
        g_ld: &[f32],
        _grad: &mut [f32],
        scratch: &mut [crate::block::Lanes],
        saved: &[crate::block::Lanes],
    ) {
        let (inner, discard) = scratch.split_at_mut(self.0.block_train_scratch_len());
        let discard = &mut discard.as_flattened_mut()[..self.0.param_len()];
        discard.fill(0.0);
        self.0.backward_block_saved(x, g, g_ld, discard, inner, saved);
    }
    fn as_bijector(&self) -> &dyn SliceBijector {
        self
    }
}

/// [`SliceBackward`] for views with an MLP conditioner `net` and the
/// inherent `backward(x, g, g_ld, &mut MlpGrad, scratch)`,
/// `vjp(x, g, g_ld, Option<&mut MlpGrad>, scratch)` (the same pass with an
/// optional parameter gradient) and `train_scratch_len()` of the coupling
/// and autoregressive layers.
macro_rules! mlp_backward {
    ($view:ident) => {
        impl $crate::layer::SliceBackward for $view<'_> {
            $crate::layer::mlp_backward!(@common $view);
        }
    };
    // With `block()`, the layer's row-blocked passes
    // (`block::Conditioned` with its elementwise map): the training passes
    // go through it block by block.
    ($view:ident, blocked) => {
        impl $crate::layer::SliceBackward for $view<'_> {
            $crate::layer::mlp_backward!(@common $view);
            fn block_train_scratch_len(&self) -> usize {
                self.block().train_scratch_len()
            }
            fn backward_block(
                &self,
                x: &[f32],
                g: &mut [f32],
                g_ld: &[f32],
                grad: &mut [f32],
                scratch: &mut [$crate::block::Lanes],
            ) {
                let n = g_ld.len();
                if n == 0 {
                    return;
                }
                let d = x.len() / n;
                let mut grad =
                    $crate::mlp::MlpGrad::from_flat(self.net.shape, grad).expect("gradient sized like the parameters");
                let b = $crate::block::BLOCK;
                let geometry = self.block();
                for ((xs, gs), ls) in x.chunks(d * b).zip(g.chunks_mut(d * b)).zip(g_ld.chunks(b)) {
                    geometry.backward(xs, gs, ls, &mut grad, scratch)
                }
            }
            fn block_saved_len(&self) -> usize {
                self.block().saved_len()
            }
            fn forward_block_saved(
                &self,
                x: &mut [f32],
                ld: &mut [f32],
                scratch: &mut [$crate::block::Lanes],
                saved: &mut [$crate::block::Lanes],
            ) {
                self.block().forward_saved(x, ld, scratch, saved)
            }
            fn backward_block_saved(
                &self,
                x: &[f32],
                g: &mut [f32],
                g_ld: &[f32],
                grad: &mut [f32],
                scratch: &mut [$crate::block::Lanes],
                saved: &[$crate::block::Lanes],
            ) {
                let mut grad =
                    $crate::mlp::MlpGrad::from_flat(self.net.shape, grad).expect("gradient sized like the parameters");
                self.block().backward_saved(x, g, g_ld, &mut grad, scratch, saved)
            }
        }
    };
    (@common $view:ident) => {
        fn param_len(&self) -> usize {
            self.net.shape.n_params()
        }
        fn train_scratch_len(&self) -> usize {
            $view::train_scratch_len(self)
        }
        fn backward_flat(&self, x: &[f32], g: &mut [f32], g_ld: f32, grad: &mut [f32], scratch: &mut [f32]) {
            let mut grad =
                $crate::mlp::MlpGrad::from_flat(self.net.shape, grad).expect("gradient sized like the parameters");
            self.backward(x, g, g_ld, &mut grad, scratch)
        }
        fn backward_input(&self, x: &[f32], g: &mut [f32], g_ld: f32, scratch: &mut [f32]) {
            $view::vjp(self, x, g, g_ld, None, scratch)
        }
        fn as_bijector(&self) -> &dyn $crate::layer::SliceBijector {
            self
        }
    };
}
pub(crate) use mlp_backward;

/// The scratch of a conditioned layer: `h0`, `h1` (`hidden` each), `out`
/// (`n_out`) and the rest.
#[inline(always)]
#[allow(clippy::type_complexity)]
pub(crate) fn net_scratch(
    mut s: &mut [f32],
    hidden: usize,
    n_out: usize,
) -> (&mut [f32], &mut [f32], &mut [f32], &mut [f32]) {
    let (h0, h1, out) = (take(&mut s, hidden), take(&mut s, hidden), take(&mut s, n_out));
    (h0, h1, out, s)
}

/// The scratch of a conditioned layer's backward pass (`vjp`), split:
/// the conditioner's activations (`n_acts`), its output and the output's
/// gradient (`n_out` each), then two rows of `hidden` and the rest. `None`
/// if `scratch` is short (callers size it by `train_scratch_len`), so that
/// nothing here can panic.
#[allow(clippy::type_complexity)]
#[inline(always)]
pub(crate) fn vjp_scratch(
    scratch: &mut [f32],
    n_acts: usize,
    n_out: usize,
    hidden: usize,
) -> Option<(&mut [f32], &mut [f32], &mut [f32], &mut [f32], &mut [f32])> {
    let (acts, rest) = scratch.split_at_mut_checked(n_acts)?;
    let (out, rest) = rest.split_at_mut_checked(n_out)?;
    let (g_out, rest) = rest.split_at_mut_checked(n_out)?;
    let (t0, t1) = rest.split_at_mut_checked(hidden)?;
    Some((acts, out, g_out, t0, t1))
}

/// Split the first `n` floats off `s` (the views' scratch layouts); fewer
/// if `s` is shorter (callers size it, so never in use), so that nothing
/// here can panic.
#[inline(always)]
pub(crate) fn take<'s>(s: &mut &'s mut [f32], n: usize) -> &'s mut [f32] {
    let all = core::mem::take(s);
    let (head, tail) = all.split_at_mut(n.min(all.len()));
    *s = tail;
    head
}
