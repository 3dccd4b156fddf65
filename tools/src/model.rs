//! The model file (`model.json`) and the run-time-sized flow the host tool
//! trains, scores and samples with.
//!
//! A [`DynFlow`] is a list of [`Layer`]s whose dimension and sizes are chosen
//! at run time (from the user's CSV). It holds no maths of its own: every
//! layer is evaluated through the core's slice-level views (`ActNormRef`,
//! `AffineCouplingRef`, `MafRef`, …), the very code the firmware runs, so the
//! exported const-generic model computes bit-for-bit the same numbers.
//!
//! A model file holds a [`DynMixture`]: one flow, or a weighted mixture of
//! flows (the core's `Mixture`), combined with the core's `member_term` and
//! `combine`.

use anyhow::{bail, ensure, Context, Result};
use flowmote::cnf::{ContinuousFlowRef, Solver};
use flowmote::coupling::AffineCouplingRef;
use flowmote::linear::LuLinearRef;
use flowmote::maf::MafRef;
use flowmote::mlp::{MlpGrad, MlpRef, MlpShape};
use flowmote::permutation::{permute_forward, permute_inverse};
use flowmote::spline::{SplineAutoregressiveRef, SplineCouplingRef};
use flowmote::{normal, ActNormRef, Activation, Error};
use rand_core::Rng;
use serde::{Deserialize, Serialize};

/// Identifies model files written by this tool.
pub const FORMAT: &str = "flowmote-model";
/// Version of the model file layout. Version 1 files (one `flow`) are read
/// as a one-member mixture; other versions are refused.
pub const VERSION: u32 = 2;

/// Hidden nonlinearity, as stored in model files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Act {
    /// tanh
    #[default]
    Tanh,
    /// ReLU
    Relu,
    /// leaky ReLU (slope 0.01)
    LeakyRelu,
    /// ELU
    Elu,
}

impl From<Act> for Activation {
    fn from(a: Act) -> Self {
        match a {
            Act::Tanh => Activation::Tanh,
            Act::Relu => Activation::Relu,
            Act::LeakyRelu => Activation::LeakyRelu,
            Act::Elu => Activation::Elu,
        }
    }
}

/// Conditioner network sizes of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Net {
    /// Hidden width.
    pub hidden: usize,
    /// Number of hidden layers (≥ 1).
    pub depth: usize,
    /// Hidden nonlinearity.
    pub act: Act,
}

/// One layer of a run-time-sized flow. `params` are flat, in the order the
/// core's `…Ref::from_flat` constructors read them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Layer {
    /// `y = e^s ⊙ x + b`. `frozen` layers (the standardisation) are not trained.
    ActNorm {
        /// Log-scales.
        log_scale: Vec<f32>,
        /// Shifts.
        shift: Vec<f32>,
        /// Excluded from training.
        #[serde(default)]
        frozen: bool,
    },
    /// `y[i] = x[perm[i]]`.
    Permutation {
        /// The permutation.
        perm: Vec<usize>,
    },
    /// Reverse the coordinates.
    Reverse,
    /// RealNVP affine coupling: first `a` coordinates condition the last `b`.
    AffineCoupling {
        /// Conditioning coordinates.
        a: usize,
        /// Transformed coordinates.
        b: usize,
        /// Conditioner sizes.
        net: Net,
        /// Soft-clamp bound on log-scales.
        clamp: f32,
        /// Conditioner parameters (`MlpRef::from_flat` order, `2b` outputs).
        params: Vec<f32>,
    },
    /// Masked autoregressive flow layer (MADE conditioner).
    Maf {
        /// Conditioner sizes.
        net: Net,
        /// Soft-clamp bound on log-scales.
        clamp: f32,
        /// Masked conditioner parameters (`2·dim` outputs).
        params: Vec<f32>,
    },
    /// Rational-quadratic spline coupling (neural spline flow).
    SplineCoupling {
        /// Conditioning coordinates.
        a: usize,
        /// Transformed coordinates.
        b: usize,
        /// Number of spline bins `K`.
        bins: usize,
        /// Splines act on `[−B, B]`, identity outside.
        tail_bound: f32,
        /// Conditioner sizes.
        net: Net,
        /// Conditioner parameters (`b·(3K − 1)` outputs, head-major).
        params: Vec<f32>,
    },
    /// Autoregressive rational-quadratic spline (MADE conditioner).
    SplineAutoregressive {
        /// Number of spline bins `K`.
        bins: usize,
        /// Splines act on `[−B, B]`, identity outside.
        tail_bound: f32,
        /// Conditioner sizes.
        net: Net,
        /// Masked conditioner parameters (`dim·(3K − 1)` outputs).
        params: Vec<f32>,
    },
    /// Glow-style LU-parametrised invertible linear map.
    LuLinear {
        /// Fixed permutation `P`.
        perm: Vec<usize>,
        /// Fixed signs of `U`'s diagonal.
        sign: Vec<f32>,
        /// `[lu (d·d), bias (d)]` (`log|U_ii|` on the diagonal).
        params: Vec<f32>,
    },
    /// Continuous flow: vector field `f(x, t)` integrated by a fixed-step solver.
    Cnf {
        /// Field network sizes (`dim` inputs + time, `dim` outputs).
        net: Net,
        /// Solver.
        solver: SolverKind,
        /// Steps over the unit time interval.
        steps: usize,
        /// Field parameters (`MlpRef::from_flat` order, `cond = 1`).
        params: Vec<f32>,
    },
}

/// Fixed-step ODE solver, as stored in model files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SolverKind {
    /// Explicit Euler (order 1).
    Euler,
    /// Heun (order 2).
    Heun,
    /// Classical Runge–Kutta (order 4).
    #[default]
    Rk4,
}

impl From<SolverKind> for Solver {
    fn from(s: SolverKind) -> Self {
        match s {
            SolverKind::Euler => Solver::Euler,
            SolverKind::Heun => Solver::Heun,
            SolverKind::Rk4 => Solver::Rk4,
        }
    }
}

impl Layer {
    /// Shape of the conditioner network, for layers that have one.
    pub fn mlp_shape(&self, dim: usize) -> Option<MlpShape> {
        match self {
            Layer::AffineCoupling { a, b, net, .. } => Some(MlpShape {
                input: *a,
                cond: 0,
                hidden: net.hidden,
                depth: net.depth,
                output: 2 * b,
            }),
            Layer::Maf { net, .. } => Some(MlpShape {
                input: dim,
                cond: 0,
                hidden: net.hidden,
                depth: net.depth,
                output: 2 * dim,
            }),
            Layer::SplineCoupling { a, b, bins, net, .. } => Some(MlpShape {
                input: *a,
                cond: 0,
                hidden: net.hidden,
                depth: net.depth,
                output: b * flowmote::spline::spline_params(*bins),
            }),
            Layer::SplineAutoregressive { bins, net, .. } => Some(MlpShape {
                input: dim,
                cond: 0,
                hidden: net.hidden,
                depth: net.depth,
                output: dim * flowmote::spline::spline_params(*bins),
            }),
            Layer::Cnf { net, .. } => Some(MlpShape {
                input: dim,
                cond: 1,
                hidden: net.hidden,
                depth: net.depth,
                output: dim,
            }),
            Layer::ActNorm { .. } | Layer::Permutation { .. } | Layer::Reverse | Layer::LuLinear { .. } => None,
        }
    }

    /// The trainable parameters (empty for fixed layers).
    pub fn params(&self) -> &[f32] {
        match self {
            Layer::AffineCoupling { params, .. }
            | Layer::Maf { params, .. }
            | Layer::SplineCoupling { params, .. }
            | Layer::SplineAutoregressive { params, .. }
            | Layer::LuLinear { params, .. }
            | Layer::Cnf { params, .. } => params,
            Layer::ActNorm { .. } | Layer::Permutation { .. } | Layer::Reverse => &[],
        }
    }

    /// Short human-readable description.
    pub fn describe(&self) -> String {
        match self {
            Layer::ActNorm { frozen: true, .. } => "standardise".into(),
            Layer::ActNorm { .. } => "actnorm".into(),
            Layer::Permutation { .. } => "permutation".into(),
            Layer::Reverse => "reverse".into(),
            Layer::AffineCoupling { a, b, net, .. } => {
                format!("affine coupling {a}+{b}, hidden {}×{}", net.hidden, net.depth)
            }
            Layer::Maf { net, .. } => format!("MAF, hidden {}×{}", net.hidden, net.depth),
            Layer::SplineCoupling { a, b, bins, net, .. } => {
                format!(
                    "spline coupling {a}+{b}, {bins} bins, hidden {}×{}",
                    net.hidden, net.depth
                )
            }
            Layer::SplineAutoregressive { bins, net, .. } => {
                format!(
                    "autoregressive spline, {bins} bins, hidden {}×{}",
                    net.hidden, net.depth
                )
            }
            Layer::LuLinear { .. } => "LU linear".into(),
            Layer::Cnf { net, solver, steps, .. } => {
                format!(
                    "continuous flow, field {}×{}, {solver:?} × {steps} steps",
                    net.hidden, net.depth
                )
            }
        }
    }
}

/// A flow whose sizes are chosen at run time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DynFlow {
    /// Dimension.
    pub dim: usize,
    /// Layers, applied in order in the data → latent direction.
    pub layers: Vec<Layer>,
}

/// Reusable buffers for [`DynFlow`] evaluation (no allocation per row).
#[derive(Debug, Default, Clone)]
pub struct Workspace {
    h0: Vec<f32>,
    h1: Vec<f32>,
    out: Vec<f32>,
    tmp: Vec<f32>,
    /// Input of every layer, saved by the training forward pass.
    inputs: Vec<f32>,
    train: Vec<f32>,
    cnf: Vec<f32>,
}

impl Workspace {
    /// Buffers large enough for `flow`.
    pub fn new(flow: &DynFlow) -> Self {
        let d = flow.dim;
        let hidden = flow
            .layers
            .iter()
            .filter_map(|l| l.mlp_shape(d))
            .map(|s| s.hidden)
            .max()
            .unwrap_or(0);
        let out = flow
            .layers
            .iter()
            .filter_map(|l| l.mlp_shape(d))
            .map(|s| s.output)
            .max()
            .unwrap_or(0);
        let train = flow
            .layers
            .iter()
            .filter_map(|l| l.mlp_shape(d))
            .map(|s| s.n_activations() + 2 * s.output + 2 * s.hidden + 3 * d)
            .max()
            .unwrap_or(0);
        let cnf = flow
            .layers
            .iter()
            .filter(|l| matches!(l, Layer::Cnf { .. }))
            .filter_map(|l| l.mlp_shape(d))
            .map(|s| 3 * d + 3 * s.hidden + (s.depth - 1) * s.hidden)
            .max()
            .unwrap_or(0);
        Workspace {
            cnf: vec![0.0; cnf],
            h0: vec![0.0; hidden],
            h1: vec![0.0; hidden],
            out: vec![0.0; out],
            tmp: vec![0.0; d],
            inputs: vec![0.0; d * flow.layers.len()],
            train: vec![0.0; train.max(2 * d)],
        }
    }
}

fn mlp<'a>(shape: MlpShape, net: &Net, params: &'a [f32]) -> MlpRef<'a> {
    MlpRef::from_flat(shape, net.act.into(), params).expect("validated model")
}

/// A layer's core view, built once per call from its stored parameters:
/// the one place that maps each [`Layer`] kind onto the core's maths.
enum View<'a> {
    /// ActNorm and whether it is frozen.
    ActNorm(ActNormRef<'a>, bool),
    Permutation(&'a [usize]),
    Reverse,
    AffineCoupling(AffineCouplingRef<'a>),
    Maf(MafRef<'a>),
    SplineCoupling(SplineCouplingRef<'a>),
    SplineAutoregressive(SplineAutoregressiveRef<'a>),
    LuLinear(LuLinearRef<'a>),
    Cnf(ContinuousFlowRef<'a>),
}

impl Layer {
    /// The core view of this layer in a flow of dimension `d` (the model
    /// must have passed [`DynFlow::validate`]).
    fn view(&self, d: usize) -> Result<View<'_>, Error> {
        let shape = || self.mlp_shape(d).expect("conditioned layer");
        Ok(match self {
            Layer::ActNorm {
                log_scale,
                shift,
                frozen,
            } => View::ActNorm(ActNormRef { log_scale, shift }, *frozen),
            Layer::Permutation { perm } => View::Permutation(perm),
            Layer::Reverse => View::Reverse,
            Layer::AffineCoupling {
                a,
                b,
                net: n,
                clamp,
                params,
            } => View::AffineCoupling(AffineCouplingRef {
                a: *a,
                b: *b,
                clamp: *clamp,
                net: mlp(shape(), n, params),
            }),
            Layer::Maf { net: n, clamp, params } => View::Maf(MafRef {
                clamp: *clamp,
                net: mlp(shape(), n, params),
            }),
            Layer::SplineCoupling {
                a,
                b,
                bins,
                tail_bound,
                net: n,
                params,
            } => View::SplineCoupling(SplineCouplingRef::new(
                *a,
                *b,
                *bins,
                *tail_bound,
                mlp(shape(), n, params),
            )?),
            Layer::SplineAutoregressive {
                bins,
                tail_bound,
                net: n,
                params,
            } => View::SplineAutoregressive(SplineAutoregressiveRef::new(
                *bins,
                *tail_bound,
                mlp(shape(), n, params),
            )?),
            Layer::LuLinear { perm, sign, params } => View::LuLinear(LuLinearRef::from_flat(perm, sign, params)?),
            Layer::Cnf {
                net: n,
                solver,
                steps,
                params,
            } => View::Cnf(ContinuousFlowRef::new(
                mlp(shape(), n, params),
                (*solver).into(),
                *steps,
            )),
        })
    }
}

impl DynFlow {
    /// The trainable parameters of every layer (what `flowmote train`
    /// reports; the frozen standardisation is not counted).
    pub fn parameters(&self) -> usize {
        self.layers.iter().map(|l| l.params().len()).sum()
    }

    /// The f32 numbers an export stores: trainable parameters plus the
    /// scales and shifts of ActNorm layers.
    pub fn stored_floats(&self) -> usize {
        self.layers
            .iter()
            .map(|l| match l {
                Layer::ActNorm { .. } => 2 * self.dim,
                l => l.params().len(),
            })
            .sum()
    }

    /// Multiply–accumulates of one `log_prob`'s networks (the floor of its
    /// device cost, the "MACs" of BENCHMARKS.md): each conditioner's
    /// [`MlpShape::macs`], `d²` for an LU layer, and for a continuous flow
    /// the field's MACs times its evaluations (steps × 1, 2 or 4 stages for
    /// Euler, Heun, RK4; the trace comes on top).
    pub fn macs(&self) -> usize {
        let d = self.dim;
        self.layers
            .iter()
            .map(|l| match (l, l.mlp_shape(d)) {
                (Layer::Cnf { solver, steps, .. }, Some(s)) => {
                    let stages = match solver {
                        SolverKind::Euler => 1,
                        SolverKind::Heun => 2,
                        SolverKind::Rk4 => 4,
                    };
                    steps * stages * s.macs()
                }
                (Layer::LuLinear { .. }, _) => d * d,
                (_, Some(s)) => s.macs(),
                (_, None) => 0,
            })
            .sum()
    }

    /// Check sizes, permutations and finiteness of every parameter.
    pub fn validate(&self) -> Result<()> {
        let d = self.dim;
        ensure!(d >= 1, "model dimension must be at least 1");
        for (i, l) in self.layers.iter().enumerate() {
            let ctx = || format!("layer {i} ({})", l.describe());
            match l {
                Layer::ActNorm { log_scale, shift, .. } => {
                    ensure!(
                        log_scale.len() == d && shift.len() == d,
                        "{}: expected {d} scales and shifts",
                        ctx()
                    );
                    ensure!(
                        log_scale.iter().chain(shift).all(|v| v.is_finite()),
                        "{}: non-finite parameter",
                        ctx()
                    );
                }
                Layer::Permutation { perm } => {
                    ensure!(
                        perm.len() == d && flowmote::permutation::is_permutation(perm),
                        "{}: not a permutation of 0..{d}",
                        ctx()
                    );
                }
                Layer::Reverse => {}
                Layer::AffineCoupling {
                    a,
                    b,
                    net,
                    clamp,
                    params,
                } => {
                    ensure!(
                        a + b == d && *a >= 1 && *b >= 1,
                        "{}: split {a}+{b} does not fit dimension {d}",
                        ctx()
                    );
                    check_net(l, d, net, *clamp, params).with_context(ctx)?;
                }
                Layer::Maf { net, clamp, params } => check_net(l, d, net, *clamp, params).with_context(ctx)?,
                Layer::SplineCoupling {
                    a,
                    b,
                    bins,
                    tail_bound,
                    net,
                    params,
                } => {
                    ensure!(
                        a + b == d && *a >= 1 && *b >= 1,
                        "{}: split {a}+{b} does not fit dimension {d}",
                        ctx()
                    );
                    ensure!(
                        (1..=flowmote::spline::MAX_BINS).contains(bins),
                        "{}: bins must be 1..={}",
                        ctx(),
                        flowmote::spline::MAX_BINS
                    );
                    check_net(l, d, net, *tail_bound, params).with_context(ctx)?;
                }
                Layer::SplineAutoregressive {
                    bins,
                    tail_bound,
                    net,
                    params,
                } => {
                    ensure!(
                        (1..=flowmote::spline::MAX_BINS).contains(bins),
                        "{}: bins must be 1..={}",
                        ctx(),
                        flowmote::spline::MAX_BINS
                    );
                    check_net(l, d, net, *tail_bound, params).with_context(ctx)?;
                }
                Layer::LuLinear { perm, sign, params } => {
                    ensure!(
                        LuLinearRef::from_flat(perm, sign, params).is_ok() && perm.len() == d,
                        "{}: expected a permutation of 0..{d}, {d} signs and {} parameters",
                        ctx(),
                        LuLinearRef::n_params(d)
                    );
                    ensure!(
                        params.iter().chain(sign).all(|v| v.is_finite()),
                        "{}: non-finite weight",
                        ctx()
                    );
                }
                Layer::Cnf { net, steps, params, .. } => {
                    ensure!(*steps >= 1, "{}: needs at least one solver step", ctx());
                    check_net(l, d, net, 1.0, params).with_context(ctx)?;
                }
            }
        }
        Ok(())
    }

    /// Data → latent in place; returns the log-det. With `save`, keeps every
    /// layer's input in the workspace for [`DynFlow::nll_backward`].
    pub fn forward(&self, x: &mut [f32], ws: &mut Workspace, save: bool) -> Result<f32, Error> {
        let d = self.dim;
        let mut ld = 0.0;
        for (i, layer) in self.layers.iter().enumerate() {
            if save {
                ws.inputs[i * d..(i + 1) * d].copy_from_slice(x);
            }
            ld += match layer.view(d)? {
                View::ActNorm(r, _) => r.forward(x),
                View::Permutation(perm) => {
                    permute_forward(perm, x, &mut ws.tmp);
                    0.0
                }
                View::Reverse => {
                    x.reverse();
                    0.0
                }
                View::AffineCoupling(r) => r.forward(x, &mut ws.h0, &mut ws.h1, &mut ws.out),
                View::Maf(r) => r.forward(x, &mut ws.h0, &mut ws.h1, &mut ws.out),
                View::SplineCoupling(r) => r.forward(x, &mut ws.h0, &mut ws.h1, &mut ws.out),
                View::SplineAutoregressive(r) => r.forward(x, &mut ws.h0, &mut ws.h1, &mut ws.out),
                View::LuLinear(r) => r.forward(x, &mut ws.tmp),
                View::Cnf(r) => r.forward_flat(x, &mut ws.cnf),
            };
        }
        Ok(ld)
    }

    /// Latent → data in place; returns the log-det of the inverse map.
    pub fn inverse(&self, z: &mut [f32], ws: &mut Workspace) -> Result<f32, Error> {
        let d = self.dim;
        let mut ld = 0.0;
        for layer in self.layers.iter().rev() {
            let view = layer.view(d)?;
            // The autoregressive inverses need a d-float buffer: borrow the
            // (unused while sampling) saved-inputs buffer.
            let mut xbuf = std::mem::take(&mut ws.inputs);
            let r = match view {
                View::ActNorm(r, _) => r.inverse(z),
                View::Permutation(perm) => {
                    permute_inverse(perm, z, &mut ws.tmp);
                    0.0
                }
                View::Reverse => {
                    z.reverse();
                    0.0
                }
                View::AffineCoupling(r) => r.inverse(z, &mut ws.h0, &mut ws.h1, &mut ws.out),
                View::Maf(r) => r.inverse(z, &mut xbuf[..d], &mut ws.h0, &mut ws.h1, &mut ws.out),
                View::SplineCoupling(r) => r.inverse(z, &mut ws.h0, &mut ws.h1, &mut ws.out),
                View::SplineAutoregressive(r) => r.inverse(z, &mut xbuf[..d], &mut ws.h0, &mut ws.h1, &mut ws.out),
                View::LuLinear(r) => r.inverse(z, &mut ws.tmp),
                View::Cnf(r) => r.inverse_flat(z, &mut ws.cnf),
            };
            ws.inputs = xbuf;
            ld += r;
        }
        Ok(ld)
    }

    /// Exact `log p(x)`, with the same checks as the core's `Flow::log_prob`.
    pub fn log_prob(&self, x: &[f32], ws: &mut Workspace) -> Result<f32, Error> {
        flowmote::error::check_finite(x)?;
        let mut z = x.to_vec();
        let ld = self.forward(&mut z, ws, false)?;
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
        let ld = self.inverse(&mut z, ws)?;
        if !ld.is_finite() || flowmote::error::check_finite(&z).is_err() {
            return Err(Error::Overflow);
        }
        Ok((z, lpz - ld))
    }

    /// Negative log-likelihood of one row and its gradient: *adds*
    /// `∂(−log p)/∂θ` of every trainable layer into `grads[i]` (same length as
    /// that layer's `params`; frozen/fixed layers get nothing). Returns `−log p(x)`.
    pub fn nll_backward(&self, x: &[f32], grads: &mut [Vec<f32>], ws: &mut Workspace) -> Result<f32, Error> {
        let d = self.dim;
        let mut z = x.to_vec();
        let ld = self.forward(&mut z, ws, true)?;
        let nll = -(normal::log_pdf(&z) + ld);
        if !nll.is_finite() {
            return Err(Error::Overflow);
        }
        // ∂(−log N(z))/∂z = z; ∂(−log-det) = −1.
        let mut g = z;
        let g_ld = -1.0;
        for (i, layer) in self.layers.iter().enumerate().rev() {
            let xin = &ws.inputs[i * d..(i + 1) * d];
            let shape = layer.mlp_shape(d);
            let grad = |gr| MlpGrad::from_flat(shape.expect("conditioned layer"), gr).expect("grad sized like params");
            match layer.view(d)? {
                View::ActNorm(r, frozen) => {
                    if frozen {
                        for (gi, s) in g.iter_mut().zip(r.log_scale.iter()) {
                            *gi *= s.exp();
                        }
                    } else {
                        r.backward(xin, &mut g, g_ld, &mut grads[i]);
                    }
                }
                // y = P x  ⇒  ∂L/∂x = Pᵀ ∂L/∂y
                View::Permutation(perm) => permute_inverse(perm, &mut g, &mut ws.tmp),
                View::Reverse => g.reverse(),
                View::AffineCoupling(r) => r.backward(xin, &mut g, g_ld, &mut grad(&mut grads[i]), &mut ws.train),
                View::Maf(r) => r.backward(xin, &mut g, g_ld, &mut grad(&mut grads[i]), &mut ws.train),
                View::SplineCoupling(r) => r.backward(xin, &mut g, g_ld, &mut grad(&mut grads[i]), &mut ws.train),
                View::SplineAutoregressive(r) => r.backward(xin, &mut g, g_ld, &mut grad(&mut grads[i]), &mut ws.train),
                View::LuLinear(r) => r.backward(xin, &mut g, g_ld, &mut grads[i], &mut ws.train),
                // Continuous flows are trained by flow matching
                // (`ContinuousFlowRef::flow_matching_backward`), not by
                // back-propagating through the solver.
                View::Cnf(_) => return Err(Error::ShapeMismatch),
            }
        }
        Ok(nll)
    }
}

fn check_net(l: &Layer, d: usize, net: &Net, clamp: f32, params: &[f32]) -> Result<()> {
    let shape = l.mlp_shape(d).unwrap();
    ensure!(
        net.depth >= 1 && net.hidden >= 1,
        "conditioner needs hidden ≥ 1 and depth ≥ 1"
    );
    ensure!(
        clamp.is_finite() && clamp > 0.0,
        "clamp / tail bound must be a positive number"
    );
    ensure!(
        params.len() == shape.n_params(),
        "expected {} parameters, found {}",
        shape.n_params(),
        params.len()
    );
    if !params.iter().all(|v| v.is_finite()) {
        bail!("non-finite weight");
    }
    Ok(())
}

/// Anomaly threshold stored by `flowmote calibrate`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// Threshold on the score `−log p(x)` (nats): above it, a row is anomalous.
    pub score: f32,
    /// The false-alarm rate it was calibrated for.
    pub false_alarm_rate: f64,
    /// Rows of normal data it was calibrated on.
    pub rows: usize,
    /// SHA-256 of the calibration file.
    pub data_sha256: String,
}

/// One epoch of the training history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Epoch {
    /// Epoch number (1-based).
    pub epoch: usize,
    /// Mean training NLL (nats/row, data units).
    pub train_nll: f64,
    /// Mean validation NLL (nats/row, data units).
    pub val_nll: f64,
    /// Learning rate used.
    pub lr: f64,
}

/// Where a model came from and how it trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Provenance {
    /// Training data file, as given.
    pub data_file: String,
    /// SHA-256 of the training data file.
    pub data_sha256: String,
    /// Rows used for training.
    pub train_rows: usize,
    /// Rows held out for validation.
    pub val_rows: usize,
    /// Best validation NLL (nats/row, data units) — the kept model's.
    pub val_nll: f64,
    /// Training settings, as resolved (flags and chosen defaults).
    pub settings: serde_json::Value,
    /// Per-epoch history.
    pub history: Vec<Epoch>,
}

/// A model's density: one flow (`log_weights == [0.0]`), or the mixture
/// `p(x) = Σₖ exp(log_weights[k]) · pₖ(x)` of flows of the same dimension —
/// the host side of the core's `Mixture` (one flow exports as a plain `Flow`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DynMixture {
    /// `ln wₖ` of every member; `Σ exp = 1`.
    pub log_weights: Vec<f32>,
    /// The members.
    pub flows: Vec<DynFlow>,
}

/// Number of stored weights of a model of `n` flows (none for one flow).
fn weights(n: usize) -> usize {
    if n > 1 {
        n
    } else {
        0
    }
}

/// Reusable buffers for [`DynMixture`] evaluation: one [`Workspace`] per
/// member and the members' log-densities.
#[derive(Debug, Default, Clone)]
pub struct MixWorkspace {
    members: Vec<Workspace>,
    lps: Vec<f32>,
}

impl DynMixture {
    /// Most members a mixture may have (the core's `Components` tuples).
    pub const MAX_MEMBERS: usize = flowmote::mixture::MAX_MEMBERS;

    /// A one-flow model.
    pub fn single(flow: DynFlow) -> Self {
        DynMixture {
            log_weights: vec![0.0],
            flows: vec![flow],
        }
    }

    /// The only flow, when there is exactly one member.
    pub fn as_single(&self) -> Option<&DynFlow> {
        match self.flows.as_slice() {
            [f] => Some(f),
            _ => None,
        }
    }

    /// Dimension of the data.
    pub fn dim(&self) -> usize {
        self.flows.first().map_or(0, |f| f.dim)
    }

    /// The f32 numbers an export stores: every member's
    /// [`DynFlow::stored_floats`] and, for a mixture, its weights.
    pub fn stored_floats(&self) -> usize {
        self.flows.iter().map(DynFlow::stored_floats).sum::<usize>() + weights(self.flows.len())
    }

    /// Parameters as `flowmote train` counts them (and `--max-params`
    /// bounds them); see [`DynMixture::cost`].
    pub fn parameters(&self) -> usize {
        Self::cost(&self.flows).0
    }

    /// [`DynFlow::macs`] of every member: a mixture evaluates them all.
    pub fn macs(&self) -> usize {
        Self::cost(&self.flows).1
    }

    /// `(parameters, multiply-adds per score)` of the model made of `flows`:
    /// every member's [`DynFlow::parameters`] plus, from two members on, the
    /// weights; every member's [`DynFlow::macs`].
    pub fn cost<'a>(flows: impl IntoIterator<Item = &'a DynFlow>) -> (usize, usize) {
        let (mut params, mut macs, mut n) = (0, 0, 0);
        for f in flows {
            params += f.parameters();
            macs += f.macs();
            n += 1;
        }
        (params + weights(n), macs)
    }

    /// Buffers for [`DynMixture::log_prob`] and sampling.
    pub fn workspace(&self) -> MixWorkspace {
        MixWorkspace {
            members: self.flows.iter().map(Workspace::new).collect(),
            lps: vec![0.0; self.flows.len()],
        }
    }

    /// Check every member, equal dimensions, and weights that are finite and
    /// sum to 1.
    pub fn validate(&self) -> Result<()> {
        let n = self.flows.len();
        ensure!(
            (1..=Self::MAX_MEMBERS).contains(&n),
            "a model holds 1 to {} flows, not {n}",
            Self::MAX_MEMBERS
        );
        ensure!(
            self.log_weights.len() == n,
            "{} mixture weights for {n} flows",
            self.log_weights.len()
        );
        ensure!(
            self.log_weights.iter().all(|w| w.is_finite()),
            "non-finite mixture weight"
        );
        let total: f64 = self.log_weights.iter().map(|w| (*w as f64).exp()).sum();
        ensure!((total - 1.0).abs() < 1e-4, "mixture weights sum to {total}, not 1");
        let d = self.dim();
        for (k, f) in self.flows.iter().enumerate() {
            ensure!(f.dim == d, "mixture member {k} has dimension {}, not {d}", f.dim);
            f.validate().with_context(|| format!("mixture member {k}"))?;
        }
        Ok(())
    }

    /// Exact `log p(x)`, computed as the core's `Flow::log_prob` (one member)
    /// or `Mixture::log_prob` does.
    pub fn log_prob(&self, x: &[f32], ws: &mut MixWorkspace) -> Result<f32, Error> {
        if let (Some(f), Some(w)) = (self.as_single(), ws.members.first_mut()) {
            return f.log_prob(x, w);
        }
        flowmote::error::check_finite(x)?;
        for ((f, w), lp) in self.flows.iter().zip(&mut ws.members).zip(&mut ws.lps) {
            *lp = flowmote::mixture::member_term(f.log_prob(x, w))?;
        }
        flowmote::mixture::combine(&self.log_weights, &ws.lps)
    }

    /// One sample, drawing exactly as the exported model's `sample` does
    /// (one member: `Flow::sample`; more: `Mixture::sample`).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R, ws: &mut MixWorkspace) -> Result<Vec<f32>, Error> {
        let k = if self.flows.len() > 1 {
            flowmote::mixture::pick(&self.log_weights, rng.next_u32())
        } else {
            0
        };
        match (self.flows.get(k), ws.members.get_mut(k)) {
            (Some(f), Some(w)) => f.sample_with_log_prob(rng, w).map(|(x, _)| x),
            _ => Err(Error::OutOfDomain),
        }
    }

    /// One sample and its `log p` under the whole model.
    pub fn sample_with_log_prob<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        ws: &mut MixWorkspace,
    ) -> Result<(Vec<f32>, f32), Error> {
        if let (Some(f), Some(w)) = (self.as_single(), ws.members.first_mut()) {
            return f.sample_with_log_prob(rng, w);
        }
        let x = self.sample(rng, ws)?;
        let lp = self.log_prob(&x, ws)?;
        Ok((x, lp))
    }
}

/// Everything `model.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`] for files this build reads.
    pub version: u32,
    /// Version of the tool that wrote it.
    pub tool_version: String,
    /// Flow family (`maf`, `coupling`, `cnf`, …; `mixture` for several flows).
    pub kind: String,
    /// Feature (column) names, in order.
    pub features: Vec<String>,
    /// Per-feature training mean (folded into the first, frozen layer).
    pub mean: Vec<f32>,
    /// Per-feature training standard deviation (folded into the first layer).
    pub std: Vec<f32>,
    /// The density (each flow includes the standardisation, so `log_prob`
    /// takes raw rows).
    pub model: DynMixture,
    /// Anomaly threshold, once calibrated.
    pub threshold: Option<Threshold>,
    /// Provenance and training history.
    pub provenance: Provenance,
}

impl ModelFile {
    /// Read and check a model file: format, version, sizes, finite weights.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read model file {}", path.display()))?;
        let head: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a flowmote model file (not valid JSON)", path.display()))?;
        ensure!(
            head.get("format").and_then(|f| f.as_str()) == Some(FORMAT),
            "{} is not a flowmote model file (missing \"format\": \"{FORMAT}\")",
            path.display()
        );
        let version = head.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        ensure!(
            version == 1 || version == VERSION as u64,
            "{} is model format version {version}; this build of flowmote reads versions 1 and {VERSION} — re-train or use the matching tool",
            path.display()
        );
        let mut head = head;
        if version == 1 {
            // Version 1 held one `flow`: it is a one-member mixture.
            if let Some(obj) = head.as_object_mut() {
                if let Some(flow) = obj.remove("flow") {
                    obj.insert(
                        "model".into(),
                        serde_json::json!({ "log_weights": [0.0], "flows": [flow] }),
                    );
                }
                obj.insert("version".into(), VERSION.into());
            }
        }
        let m: ModelFile =
            serde_json::from_value(head).with_context(|| format!("{}: malformed model file", path.display()))?;
        m.validate()
            .with_context(|| format!("{}: invalid model", path.display()))?;
        Ok(m)
    }

    /// Consistency checks shared by `load` and `save`.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        let d = self.model.dim();
        ensure!(
            self.features.len() == d && self.mean.len() == d && self.std.len() == d,
            "feature names, mean and std must all have {d} entries"
        );
        ensure!(
            self.mean.iter().chain(&self.std).all(|v| v.is_finite()),
            "non-finite standardisation"
        );
        if let Some(t) = &self.threshold {
            ensure!(!t.score.is_nan(), "threshold is NaN");
        }
        Ok(())
    }

    /// Validate, then write through [`crate::output::write`] (atomic for
    /// regular files): a failure leaves no partial file.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        self.validate()?;
        ensure!(
            self.provenance.val_nll.is_finite(),
            "refusing to write {}: the model's validation NLL is {} (no held-out row could be scored)",
            path.display(),
            self.provenance.val_nll
        );
        let text = serde_json::to_string_pretty(self)?;
        // What is written must load: read it back the way `load` does.
        let back: ModelFile = serde_json::from_str(&text)
            .with_context(|| format!("refusing to write {}: the model would not load back", path.display()))?;
        back.validate()
            .with_context(|| format!("refusing to write {}: the model would not load back", path.display()))?;
        crate::output::write(path, text.as_bytes())
    }
}
