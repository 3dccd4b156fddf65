//! A flow compiled into its layers' core views, and the loops over them.

use super::storage::I8Net;
use super::{DynFlow, Layer, Net};
use flowmote::block::{Lanes, BLOCK};
use flowmote::cnf::ContinuousFlowRef;
use flowmote::coupling::AffineCouplingRef;
use flowmote::linear::LuLinearRef;
use flowmote::maf::MafRef;
use flowmote::mlp::MlpRef;
use flowmote::permutation::PermutationRef;
use flowmote::spline::{SplineAutoregressiveRef, SplineCouplingRef};
use flowmote::triangular::TriLinearRef;
use flowmote::{normal, ActNormRef, Error, Frozen, Reverse, SliceBackward, SliceBijector};
use rand_core::Rng;

/// Widest flow whose blocked scoring keeps its rows on the stack.
const MAX_BLOCK_DIM: usize = 64;

/// `log p` from the latent `z` and the log-det, with the checks of the
/// core's `Flow::log_prob`.
fn finish_log_prob(z: &[f32], ld: f32) -> Result<f32, Error> {
    if !ld.is_finite() || flowmote::error::check_finite(z).is_err() {
        return Err(Error::Overflow);
    }
    let lp = normal::log_pdf(z) + ld;
    if lp.is_finite() {
        Ok(lp)
    } else {
        Err(Error::Overflow)
    }
}

/// Reusable buffers for [`DynFlow`] evaluation (no allocation per row),
/// sized by [`FlowView::workspace`].
#[derive(Debug, Default, Clone)]
pub struct Workspace {
    /// The flat scratch of every layer's forward/inverse.
    pub(crate) scratch: Vec<f32>,
    /// Input of every layer, saved by the training forward pass.
    inputs: Vec<f32>,
    /// The scratch of every layer's backward pass.
    train: Vec<f32>,
    /// The scratch of every layer's blocked forward pass.
    block_scratch: Vec<Lanes>,
    /// Input of every layer for a block of rows, saved by the blocked
    /// training forward pass (`layers × BLOCK × dim`).
    block_inputs: Vec<f32>,
    /// The scratch of every layer's blocked backward pass.
    block_train: Vec<Lanes>,
    /// What every layer keeps from the blocked training forward pass for
    /// its backward pass (`SliceBackward::block_saved_len` lanes each, in
    /// layer order).
    block_saved: Vec<Lanes>,
}

impl Workspace {
    /// Buffers large enough for `flow` (empty if it does not compile into
    /// views: then every evaluation fails anyway).
    pub fn new(flow: &DynFlow) -> Self {
        flow.view().map(|v| v.workspace()).unwrap_or_default()
    }
}

/// A layer's core view: the one place that maps each [`Layer`] kind onto
/// the core's maths ([`Layer::view`]). How it is trained is in its type.
// One per layer, built once per use: the continuous flow's view (an MLP
// view with its seven slices and three scale slices) is not worth a box.
#[allow(clippy::large_enum_variant)]
pub enum View<'a> {
    /// Trained by maximum likelihood through its backward pass.
    Likelihood(Box<dyn SliceBackward + 'a>),
    /// The continuous flow, trained by flow matching.
    FlowMatching(ContinuousFlowRef<'a>),
    /// A layer with compressed (`i8`) weights: evaluated, never trained.
    Fixed(Box<dyn SliceBijector + 'a>),
}

impl View<'_> {
    /// The layer's forward/inverse.
    pub fn bijector(&self) -> &dyn SliceBijector {
        match self {
            View::Likelihood(l) => l.as_bijector(),
            View::FlowMatching(c) => c,
            View::Fixed(l) => l.as_ref(),
        }
    }

    /// Floats of the layer's backward (or flow-matching) scratch.
    fn train_scratch_len(&self) -> usize {
        match self {
            View::Likelihood(l) => l.train_scratch_len(),
            View::FlowMatching(c) => c.train_scratch_len(),
            View::Fixed(_) => 0,
        }
    }

    /// Lanes the layer keeps from its blocked training forward pass.
    fn block_saved_len(&self) -> usize {
        match self {
            View::Likelihood(l) => l.block_saved_len(),
            View::FlowMatching(_) | View::Fixed(_) => 0,
        }
    }

    /// Floats of the layer's blocked backward scratch.
    fn block_train_scratch_len(&self) -> usize {
        match self {
            View::Likelihood(l) => l.block_train_scratch_len(),
            View::FlowMatching(_) | View::Fixed(_) => 0,
        }
    }
}

impl Layer {
    /// The core view of this layer in a flow of dimension `d`; fails on sizes
    /// the core's checked constructors refuse (see [`DynFlow::validate`]).
    pub fn view(&self, d: usize) -> Result<View<'_>, Error> {
        let net = |n: &Net, params| match self.mlp_shape(d) {
            Some(shape) => MlpRef::from_flat(shape, n.act.into(), params),
            None => Err(Error::ShapeMismatch),
        };
        fn ml<'a>(l: impl SliceBackward + 'a) -> Result<View<'a>, Error> {
            Ok(View::Likelihood(Box::new(l)))
        }
        match self {
            Layer::ActNorm {
                log_scale,
                shift,
                frozen,
            } => {
                let r = ActNormRef::new(log_scale, shift);
                if log_scale.len() != d || shift.len() != d {
                    Err(Error::ShapeMismatch)
                } else if *frozen {
                    ml(Frozen(r))
                } else {
                    ml(r)
                }
            }
            Layer::Permutation { perm } => ml(PermutationRef { perm }),
            Layer::Reverse => ml(Reverse),
            Layer::AffineCoupling {
                a,
                b,
                net: n,
                clamp,
                params,
            } => ml(AffineCouplingRef {
                a: *a,
                b: *b,
                clamp: *clamp,
                net: net(n, params)?,
            }),
            Layer::Maf { net: n, clamp, params } => ml(MafRef {
                clamp: *clamp,
                net: net(n, params)?,
            }),
            Layer::SplineCoupling {
                a,
                b,
                bins,
                tail_bound,
                net: n,
                params,
            } => ml(SplineCouplingRef::new(*a, *b, *bins, *tail_bound, net(n, params)?)?),
            Layer::SplineAutoregressive {
                bins,
                tail_bound,
                net: n,
                params,
            } => ml(SplineAutoregressiveRef::new(*bins, *tail_bound, net(n, params)?)?),
            Layer::LuLinear { perm, sign, params } => ml(LuLinearRef::from_flat(perm, sign, params)?),
            Layer::TriLinear { params } => ml(TriLinearRef::from_flat(d, params)?),
            Layer::Cnf {
                net: n,
                solver,
                steps,
                params,
            } => Ok(View::FlowMatching(ContinuousFlowRef::new(
                net(n, params)?,
                (*solver).into(),
                *steps,
            ))),
        }
    }
}

impl Layer {
    /// The core view of this layer with its conditioner's weights stored as
    /// `i8` (`q`); biases from `params`. Fails unless the layer has a
    /// compressible network and `q` fits its shape.
    pub fn view_i8<'a>(&'a self, d: usize, q: &'a I8Net) -> Result<View<'a>, Error> {
        let shape = self.compressible_net(d).ok_or(Error::ShapeMismatch)?;
        let (n, params) = match self {
            Layer::AffineCoupling { net, params, .. }
            | Layer::Maf { net, params, .. }
            | Layer::SplineCoupling { net, params, .. }
            | Layer::SplineAutoregressive { net, params, .. } => (net, params),
            _ => return Err(Error::ShapeMismatch),
        };
        let f = MlpRef::from_flat(shape, n.act.into(), params)?;
        let (w_in, rest) = q.q.split_at_checked(f.w_in.len()).ok_or(Error::ShapeMismatch)?;
        let (w_hid, w_out) = rest.split_at_checked(f.w_hid.len()).ok_or(Error::ShapeMismatch)?;
        let (s_in, rest) = q.scales.split_at_checked(shape.hidden).ok_or(Error::ShapeMismatch)?;
        let (s_hid, s_out) = rest
            .split_at_checked(shape.hidden * (shape.depth - 1))
            .ok_or(Error::ShapeMismatch)?;
        let net = MlpRef::<i8> {
            shape,
            act: f.act,
            w_in,
            w_cond: f.w_cond,
            b_in: f.b_in,
            w_hid,
            b_hid: f.b_hid,
            w_out,
            b_out: f.b_out,
            s_in,
            s_hid,
            s_out,
        };
        if !net.is_consistent() {
            return Err(Error::ShapeMismatch);
        }
        let fixed = |l: Box<dyn SliceBijector + 'a>| Ok(View::Fixed(l));
        match self {
            Layer::AffineCoupling { a, b, clamp, .. } => fixed(Box::new(AffineCouplingRef {
                a: *a,
                b: *b,
                clamp: *clamp,
                net,
            })),
            Layer::Maf { clamp, .. } => fixed(Box::new(MafRef { clamp: *clamp, net })),
            Layer::SplineCoupling {
                a, b, bins, tail_bound, ..
            } => fixed(Box::new(SplineCouplingRef::new(*a, *b, *bins, *tail_bound, net)?)),
            Layer::SplineAutoregressive { bins, tail_bound, .. } => {
                fixed(Box::new(SplineAutoregressiveRef::new(*bins, *tail_bound, net)?))
            }
            _ => Err(Error::ShapeMismatch),
        }
    }
}

/// A [`DynFlow`] compiled into its layers' views, once; evaluation loops
/// over them.
pub struct FlowView<'a> {
    /// Dimension.
    pub dim: usize,
    /// The views, in the data → latent order.
    pub layers: Vec<View<'a>>,
}

impl FlowView<'_> {
    /// Buffers for every method of this view.
    pub fn workspace(&self) -> Workspace {
        let max = |f: &dyn Fn(&View) -> usize| self.layers.iter().map(f).max().unwrap_or(0);
        Workspace {
            scratch: vec![0.0; max(&|v| v.bijector().scratch_len())],
            inputs: vec![0.0; self.dim * self.layers.len()],
            train: vec![0.0; max(&|v| v.train_scratch_len())],
            block_scratch: vec![[0.0; BLOCK]; max(&|v| v.bijector().block_scratch_len())],
            block_inputs: vec![0.0; self.dim * BLOCK * self.layers.len()],
            block_train: vec![[0.0; BLOCK]; max(&|v| v.block_train_scratch_len())],
            block_saved: vec![[0.0; BLOCK]; self.layers.iter().map(View::block_saved_len).sum()],
        }
    }

    /// [`FlowView::forward`] of `n = ld.len() ≤ BLOCK` rows at once (`x`:
    /// `n × dim`, row after row, transformed in place; `ld[r]` = row `r`'s
    /// log-det). Every row's numbers are bit-identical to
    /// [`FlowView::forward`] on that row. With `save`, keeps every layer's
    /// input, and what its backward pass would otherwise recompute, for
    /// [`FlowView::nll_backward_block`].
    pub fn forward_block(&self, x: &mut [f32], ld: &mut [f32], ws: &mut Workspace, save: bool) {
        let n = ld.len().min(BLOCK);
        let (x, ld) = (&mut x[..n * self.dim], &mut ld[..n]);
        let stride = self.dim * BLOCK;
        ld.fill(0.0);
        let mut l = [0.0f32; BLOCK];
        let mut off = 0;
        for (i, layer) in self.layers.iter().enumerate() {
            match layer {
                View::Likelihood(b) if save => {
                    ws.block_inputs[i * stride..i * stride + x.len()].copy_from_slice(x);
                    let len = b.block_saved_len();
                    let saved = &mut ws.block_saved[off..off + len];
                    off += len;
                    b.forward_block_saved(x, &mut l[..n], &mut ws.block_scratch, saved);
                }
                _ => {
                    if save {
                        ws.block_inputs[i * stride..i * stride + x.len()].copy_from_slice(x);
                    }
                    layer.bijector().forward_block(x, &mut l[..n], &mut ws.block_scratch);
                }
            }
            for (a, b) in ld.iter_mut().zip(&l) {
                *a += b;
            }
        }
    }

    /// [`FlowView::log_prob`] of up to [`BLOCK`] rows at once: `out[r]` is
    /// bit for bit what [`FlowView::log_prob`] returns for `rows[r]` (rows
    /// that are not finite give its error and are not evaluated).
    pub fn log_prob_block<R: AsRef<[f32]>>(&self, rows: &[R], out: &mut Vec<Result<f32, Error>>, ws: &mut Workspace) {
        for chunk in rows.chunks(BLOCK) {
            let n = chunk.len();
            let d = self.dim;
            let mut z = [0.0f32; BLOCK * MAX_BLOCK_DIM];
            let mut zv;
            let z: &mut [f32] = if d <= MAX_BLOCK_DIM {
                &mut z[..n * d]
            } else {
                zv = vec![0.0; n * d];
                &mut zv
            };
            let mut bad = [None; BLOCK];
            for ((r, zr), b) in chunk.iter().zip(z.chunks_exact_mut(d)).zip(&mut bad) {
                let r = r.as_ref();
                match flowmote::error::check_finite(r) {
                    // A row of the wrong length is refused as the single-row path refuses it.
                    Ok(()) if r.len() == d => zr.copy_from_slice(r),
                    Ok(()) => *b = Some(Error::ShapeMismatch),
                    Err(e) => *b = Some(e),
                }
            }
            if bad.iter().any(Option::is_some) {
                // Unusual rows: the single-row path, one at a time.
                for r in chunk {
                    out.push(self.log_prob(r.as_ref(), ws));
                }
                continue;
            }
            let mut ld = [0.0f32; BLOCK];
            self.forward_block(z, &mut ld[..n], ws, false);
            for (zr, ld) in z.chunks_exact(d).zip(ld) {
                out.push(finish_log_prob(zr, ld));
            }
        }
    }

    /// Data → latent in place; returns the log-det. With `save`, keeps every
    /// layer's input in the workspace for [`FlowView::nll_backward`].
    pub fn forward(&self, x: &mut [f32], ws: &mut Workspace, save: bool) -> f32 {
        let d = self.dim;
        let mut ld = 0.0;
        for (i, layer) in self.layers.iter().enumerate() {
            if save {
                ws.inputs[i * d..(i + 1) * d].copy_from_slice(x);
            }
            ld += layer.bijector().forward_flat(x, &mut ws.scratch);
        }
        ld
    }

    /// Latent → data in place; returns the log-det of the inverse map.
    pub fn inverse(&self, z: &mut [f32], ws: &mut Workspace) -> f32 {
        let mut ld = 0.0;
        for layer in self.layers.iter().rev() {
            ld += layer.bijector().inverse_flat(z, &mut ws.scratch);
        }
        ld
    }

    /// Exact `log p(x)`, with the same checks as the core's `Flow::log_prob`.
    pub fn log_prob(&self, x: &[f32], ws: &mut Workspace) -> Result<f32, Error> {
        flowmote::error::check_finite(x)?;
        let mut z = x.to_vec();
        let ld = self.forward(&mut z, ws, false);
        finish_log_prob(&z, ld)
    }

    /// One sample and its `log p`, drawing exactly as the core's
    /// `Flow::sample_with_log_prob` does (same generator ⇒ same numbers).
    pub fn sample_with_log_prob<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        ws: &mut Workspace,
    ) -> Result<(Vec<f32>, f32), Error> {
        let mut z = vec![0.0; self.dim];
        normal::fill_standard_normal(rng, &mut z);
        let lpz = normal::log_pdf(&z);
        let ld = self.inverse(&mut z, ws);
        if !ld.is_finite() || flowmote::error::check_finite(&z).is_err() {
            return Err(Error::Overflow);
        }
        Ok((z, lpz - ld))
    }

    /// Negative log-likelihood of one row and its gradient: *adds*
    /// `∂(−log p)/∂θ` of every trainable layer into `grads[i]` (same length as
    /// that layer's `params`; frozen/fixed layers get nothing). Returns
    /// `−log p(x)`. A continuous flow is trained by flow matching instead
    /// ([`View::FlowMatching`]): a flow holding one fails with
    /// [`Error::ShapeMismatch`].
    pub fn nll_backward(&self, x: &[f32], grads: &mut [Vec<f32>], ws: &mut Workspace) -> Result<f32, Error> {
        // Weight 1: `z · 1` and `−1 · 1` are exact.
        self.nll_backward_weighted(x, grads, ws, |_| 1.0)
    }

    /// [`FlowView::nll_backward`] with the gradient scaled by `weight(nll)`
    /// (the backward pass is linear in it): the gradient of a loss `L(nll)`
    /// with `L′ = weight`.
    pub fn nll_backward_weighted(
        &self,
        x: &[f32],
        grads: &mut [Vec<f32>],
        ws: &mut Workspace,
        weight: impl FnOnce(f32) -> f32,
    ) -> Result<f32, Error> {
        let mut z = x.to_vec();
        let ld = self.forward(&mut z, ws, true);
        let nll = -(normal::log_pdf(&z) + ld);
        if !nll.is_finite() {
            return Err(Error::Overflow);
        }
        // ∂(−log N(z))/∂z = z; ∂(−log-det) = −1; both times L′ = w.
        let w = weight(nll);
        for v in z.iter_mut() {
            *v *= w;
        }
        self.backward_from(z, -w, grads, ws)?;
        Ok(nll)
    }

    /// [`FlowView::nll_backward`] (or, for rows whose `weight` is `Some`,
    /// [`FlowView::nll_backward_weighted`] with that function) of up to
    /// [`BLOCK`] rows at once: `nll[r]` gets row `r`'s result and the
    /// gradients of the rows that can be scored are added to `grads` row
    /// after row, so `grads` is bit for bit what the single-row calls in row
    /// order give.
    pub fn nll_backward_block<R: AsRef<[f32]>>(
        &self,
        rows: &[R],
        weight: &dyn Fn(usize, f32) -> Option<f32>,
        grads: &mut [Vec<f32>],
        ws: &mut Workspace,
        nll: &mut [Result<f32, Error>],
    ) {
        let d = self.dim;
        let n = rows.len().min(BLOCK);
        let mut z = vec![0.0f32; n * d];
        for (zr, r) in z.chunks_exact_mut(d).zip(rows) {
            zr.copy_from_slice(r.as_ref());
        }
        let mut ld = [0.0f32; BLOCK];
        self.forward_block(&mut z, &mut ld[..n], ws, true);
        // The rows that go on to the backward pass, compacted in order.
        let mut keep = [0usize; BLOCK];
        let mut g_ld = [0.0f32; BLOCK];
        let mut m = 0;
        for r in 0..n {
            let zr = &z[r * d..(r + 1) * d];
            let v = -(normal::log_pdf(zr) + ld[r]);
            if !v.is_finite() {
                nll[r] = Err(Error::Overflow);
                continue;
            }
            nll[r] = Ok(v);
            let w = weight(r, v);
            if m != r {
                z.copy_within(r * d..(r + 1) * d, m * d);
            }
            // ∂(−log N(z))/∂z = z; ∂(−log-det) = −1 (weighted: w·z, −w).
            if let Some(w) = w {
                for v in &mut z[m * d..(m + 1) * d] {
                    *v *= w;
                }
                g_ld[m] = -w;
            } else {
                g_ld[m] = -1.0;
            }
            keep[m] = r;
            m += 1;
        }
        if m == 0 {
            return;
        }
        let stride = d * BLOCK;
        if m < n {
            for i in 0..self.layers.len() {
                let inp = &mut ws.block_inputs[i * stride..(i + 1) * stride];
                for (j, &r) in keep[..m].iter().enumerate() {
                    inp.copy_within(r * d..(r + 1) * d, j * d);
                }
            }
        }
        let g = &mut z[..m * d];
        // What the forward pass saved is per lane of the whole block: usable
        // unless rows were dropped above.
        let mut end = ws.block_saved.len();
        for (i, layer) in self.layers.iter().enumerate().rev() {
            let View::Likelihood(l) = layer else {
                for &r in &keep[..m] {
                    nll[r] = Err(Error::ShapeMismatch);
                }
                return;
            };
            let xin = &ws.block_inputs[i * stride..i * stride + m * d];
            let len = l.block_saved_len();
            let saved = &ws.block_saved[end - len..end];
            end -= len;
            if m == n {
                l.backward_block_saved(xin, g, &g_ld[..m], &mut grads[i], &mut ws.block_train, saved);
            } else {
                l.backward_block(xin, g, &g_ld[..m], &mut grads[i], &mut ws.block_train);
            }
        }
    }

    /// The backward pass from `g = ∂L/∂z` and `g_ld = ∂L/∂(log-det)`, after a
    /// training forward pass saved every layer's input in `ws`.
    fn backward_from(
        &self,
        mut g: Vec<f32>,
        g_ld: f32,
        grads: &mut [Vec<f32>],
        ws: &mut Workspace,
    ) -> Result<(), Error> {
        let d = self.dim;
        for (i, layer) in self.layers.iter().enumerate().rev() {
            let View::Likelihood(l) = layer else {
                return Err(Error::ShapeMismatch);
            };
            let xin = &ws.inputs[i * d..(i + 1) * d];
            l.backward_flat(xin, &mut g, g_ld, &mut grads[i], &mut ws.train);
        }
        Ok(())
    }
}
