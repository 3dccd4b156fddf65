//! A flow compiled into its layers' core views, and the loops over them.

use super::storage::I8Net;
use super::{DynFlow, Layer, Net};
use flowmote::cnf::ContinuousFlowRef;
use flowmote::coupling::AffineCouplingRef;
use flowmote::linear::LuLinearRef;
use flowmote::maf::MafRef;
use flowmote::mlp::MlpRef;
use flowmote::permutation::PermutationRef;
use flowmote::spline::{SplineAutoregressiveRef, SplineCouplingRef};
use flowmote::{normal, ActNormRef, Error, Frozen, Reverse, SliceBackward, SliceBijector};
use rand_core::Rng;

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
                let r = ActNormRef { log_scale, shift };
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
        if !ld.is_finite() || flowmote::error::check_finite(&z).is_err() {
            return Err(Error::Overflow);
        }
        let lp = normal::log_pdf(&z) + ld;
        if lp.is_finite() {
            Ok(lp)
        } else {
            Err(Error::Overflow)
        }
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
        let mut z = x.to_vec();
        let ld = self.forward(&mut z, ws, true);
        let nll = -(normal::log_pdf(&z) + ld);
        if !nll.is_finite() {
            return Err(Error::Overflow);
        }
        // ∂(−log N(z))/∂z = z; ∂(−log-det) = −1.
        self.backward_from(z, -1.0, grads, ws)?;
        Ok(nll)
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
        let w = weight(nll);
        for v in z.iter_mut() {
            *v *= w;
        }
        self.backward_from(z, -w, grads, ws)?;
        Ok(nll)
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
