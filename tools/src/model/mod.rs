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

mod file;
mod mixture;
mod storage;
mod validate;
mod view;

pub use crate::provenance::{Epoch, Provenance};
pub use file::{ModelFile, Threshold};
pub use mixture::{weights as mixture_weights, DynMixture, MixView, MixWorkspace};
pub use storage::{matrix_rows, matrix_weights, I8Net, Storage, Weights};
pub use view::{FlowView, View, Workspace};

use anyhow::{bail, ensure, Context, Result};
use flowmote::cnf::Solver;
use flowmote::linear::LuLinearRef;
use flowmote::mlp::MlpShape;
use flowmote::triangular::TriLinearRef;
use flowmote::{Activation, Error};
use rand_core::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Identifies model files written by this tool.
pub const FORMAT: &str = "flowmote-model";
/// [`ModelFile::kind`] of a model of Gaussians alone (a mixture of flows
/// of a standardisation and one ActNorm or triangular layer each), kept
/// when no flow fits a device budget.
pub const GAUSSIANS_KIND: &str = "gaussians";
/// Version of the model file layout for a model that scores the CSV's
/// columns as they are. Version 1 files (one `flow`) are read as a
/// one-member mixture; versions above [`VERSION_WITH_WEIGHTS`] are refused.
pub const VERSION: u32 = 2;
/// Version of a model file that holds a feature pipeline
/// (`features_pipeline`): an older tool, which would score raw rows with a
/// windowed model, refuses it. Files without a pipeline stay [`VERSION`].
pub const VERSION_WITH_FEATURES: u32 = 3;
/// Version of a model file whose conditioner weights are compressed (`f16`
/// or `i8`, [`Weights`]; with or without a feature pipeline): an older
/// tool, which would ignore the storage and score other weights than the
/// device runs, refuses it. Files of `f32` weights keep their version.
pub const VERSION_WITH_WEIGHTS: u32 = 4;

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
    /// Lower-triangular linear map `y = T·x + bias` (the cheaper whitening
    /// layer: half the LU layer's weights and multiply-adds).
    TriLinear {
        /// `[packed rows of T (d(d+1)/2, log T_ii on the diagonal), bias (d)]`.
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

/// What the host knows of a layer kind besides its maths (that is in
/// [`Layer::view`]): written once per kind, in [`Layer::spec`]. Its
/// description ([`Layer::describe`]), its sizes and costs, and the checks
/// [`DynFlow::validate`] makes of its split, bins, steps and conditioner
/// all read it.
#[derive(Clone, Copy, Debug)]
pub struct Spec<'a> {
    /// What [`Layer::describe`] calls the kind (`"MAF"`, `"spline coupling"`, …).
    pub name: &'static str,
    /// A coupling's split: `a` conditioning coordinates, `b` transformed.
    pub split: Option<(usize, usize)>,
    /// A spline's number of bins.
    pub bins: Option<usize>,
    /// Shape of the conditioner network, for layers that have one.
    pub net: Option<MlpShape>,
    /// The bound of a conditioner's outputs, which must be a positive number:
    /// the soft clamp of log-scales, or a spline's tail bound.
    pub bound: Option<f32>,
    /// A continuous flow's solver and steps (its network is the field).
    pub ode: Option<(SolverKind, usize)>,
    /// The trainable parameters (empty for fixed layers).
    pub params: &'a [f32],
    /// Further f32 numbers an export stores (an ActNorm's scales and shifts).
    pub fixed_floats: usize,
    /// MADE heads of an autoregressive conditioner (0 for the others).
    pub made_heads: usize,
    /// Network evaluations per score (a continuous flow's steps × stages).
    pub evaluations: usize,
    /// Multiply-adds outside a network (an LU layer's `d²`, a triangular
    /// one's `d(d+1)/2`).
    pub extra_macs: usize,
    /// Coordinates a spline transforms per evaluation (a spline coupling's
    /// `b`, an autoregressive spline's `d`).
    pub splines: usize,
    /// Coordinates of an elementwise affine (ActNorm) layer.
    pub elementwise: usize,
    /// Coordinates an affine coupling or MAF layer transforms per
    /// evaluation (each a soft clamp, an `exp` and a multiply-add).
    pub affine: usize,
}

/// The `params` field of the kinds that train (`None` for the fixed ones),
/// borrowed as `$layer` is: the one list behind [`Layer::params`] and
/// [`Layer::params_mut`].
macro_rules! params_field {
    ($layer:expr) => {
        match $layer {
            Layer::AffineCoupling { params, .. }
            | Layer::Maf { params, .. }
            | Layer::SplineCoupling { params, .. }
            | Layer::SplineAutoregressive { params, .. }
            | Layer::LuLinear { params, .. }
            | Layer::TriLinear { params }
            | Layer::Cnf { params, .. } => Some(params),
            Layer::ActNorm { .. } | Layer::Permutation { .. } | Layer::Reverse => None,
        }
    };
}

impl Layer {
    /// The layer's [`Spec`] in a flow of dimension `dim`. Defined for any
    /// stored sizes (validation reads it before it has checked them).
    pub fn spec(&self, dim: usize) -> Spec<'_> {
        let shape = |input, cond, net: &Net, output| {
            Some(MlpShape {
                input,
                cond,
                hidden: net.hidden,
                depth: net.depth,
                output,
            })
        };
        let fixed = Spec {
            name: "",
            split: None,
            bins: None,
            net: None,
            bound: None,
            ode: None,
            params: self.params(),
            fixed_floats: 0,
            made_heads: 0,
            evaluations: 1,
            extra_macs: 0,
            splines: 0,
            elementwise: 0,
            affine: 0,
        };
        // Bins outside 1..=MAX_BINS (refused by validation) must not overflow.
        let k = |bins: usize| flowmote::spline::spline_params(bins.clamp(1, flowmote::spline::MAX_BINS));
        match self {
            Layer::ActNorm {
                log_scale,
                shift,
                frozen,
            } => Spec {
                name: if *frozen { "standardise" } else { "actnorm" },
                fixed_floats: log_scale.len() + shift.len(),
                elementwise: log_scale.len(),
                ..fixed
            },
            Layer::Permutation { .. } => Spec {
                name: "permutation",
                ..fixed
            },
            Layer::Reverse => Spec {
                name: "reverse",
                ..fixed
            },
            Layer::AffineCoupling { a, b, net, clamp, .. } => Spec {
                name: "affine coupling",
                split: Some((*a, *b)),
                net: shape(*a, 0, net, 2 * b),
                bound: Some(*clamp),
                affine: *b,
                ..fixed
            },
            Layer::Maf { net, clamp, .. } => Spec {
                name: "MAF",
                net: shape(dim, 0, net, 2 * dim),
                bound: Some(*clamp),
                made_heads: 2,
                affine: dim,
                ..fixed
            },
            Layer::SplineCoupling {
                a,
                b,
                bins,
                tail_bound,
                net,
                ..
            } => Spec {
                name: "spline coupling",
                split: Some((*a, *b)),
                bins: Some(*bins),
                net: shape(*a, 0, net, b * k(*bins)),
                bound: Some(*tail_bound),
                splines: *b,
                ..fixed
            },
            Layer::SplineAutoregressive {
                bins, tail_bound, net, ..
            } => Spec {
                name: "autoregressive spline",
                bins: Some(*bins),
                net: shape(dim, 0, net, dim * k(*bins)),
                bound: Some(*tail_bound),
                made_heads: k(*bins),
                splines: dim,
                ..fixed
            },
            Layer::LuLinear { .. } => Spec {
                name: "LU linear",
                extra_macs: dim * dim,
                ..fixed
            },
            Layer::TriLinear { .. } => Spec {
                name: "triangular linear",
                extra_macs: flowmote::triangular::packed_len(dim),
                ..fixed
            },
            Layer::Cnf { net, solver, steps, .. } => Spec {
                name: "continuous flow",
                net: shape(dim, 1, net, dim),
                ode: Some((*solver, *steps)),
                evaluations: steps * Solver::from(*solver).stages(),
                ..fixed
            },
        }
    }

    /// Shape of the conditioner network, for layers that have one.
    pub fn mlp_shape(&self, dim: usize) -> Option<MlpShape> {
        self.spec(dim).net
    }

    /// The trainable parameters (empty for fixed layers).
    pub fn params(&self) -> &[f32] {
        params_field!(self).map_or(&[], Vec::as_slice)
    }

    /// The trainable parameters, mutably (`None` for fixed layers).
    pub fn params_mut(&mut self) -> Option<&mut Vec<f32>> {
        params_field!(self)
    }

    /// MADE heads of the conditioner of an autoregressive layer (its
    /// parameters and gradients are masked with
    /// [`flowmote::maf::made_mask_heads`]); 0 for the others.
    pub fn made_heads(&self) -> usize {
        self.spec(0).made_heads
    }

    /// Short human-readable description, from the layer's [`Spec`]:
    /// `spline coupling 2+2, 8 bins, hidden 32×2`.
    pub fn describe(&self) -> String {
        let s = self.spec(0);
        let mut out = s.name.to_string();
        if let Some((a, b)) = s.split {
            let _ = write!(out, " {a}+{b}");
        }
        if let Some(bins) = s.bins {
            let _ = write!(out, ", {bins} bins");
        }
        if let Some(n) = s.net {
            // A continuous flow's network is its vector field.
            let what = if s.ode.is_some() { "field" } else { "hidden" };
            let _ = write!(out, ", {what} {}×{}", n.hidden, n.depth);
        }
        if let Some((solver, steps)) = s.ode {
            let _ = write!(out, ", {solver:?} × {steps} steps");
        }
        out
    }
}

/// A flow whose sizes are chosen at run time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DynFlow {
    /// Dimension.
    pub dim: usize,
    /// Layers, applied in order in the data → latent direction.
    pub layers: Vec<Layer>,
    /// How the conditioners' weights are stored (`f32` unless compressed
    /// with [`DynFlow::compressed`]; absent from model files for `f32`).
    #[serde(default, skip_serializing_if = "Weights::is_f32")]
    pub weights: Weights,
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
            .map(|l| l.spec(self.dim))
            .map(|s| s.params.len() + s.fixed_floats)
            .sum()
    }

    /// Multiply–accumulates of one `log_prob`'s networks (the floor of its
    /// device cost, the "MACs" of BENCHMARKS.md): each conditioner's
    /// [`MlpShape::macs`], `d²` for an LU layer, and for a continuous flow
    /// the field's MACs times its evaluations (steps × 1, 2 or 4 stages for
    /// Euler, Heun, RK4; the trace comes on top).
    pub fn macs(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.spec(self.dim))
            .map(|s| s.evaluations * s.net.map_or(0, |n| n.macs()) + s.extra_macs)
            .sum()
    }

    /// The multiply-adds of [`DynFlow::macs`] outside the networks: the
    /// linear (LU and triangular) layers', which cost more per multiply-add
    /// on a device ([`Target::instr_per_linear_mac`](crate::target::Target::instr_per_linear_mac)).
    pub fn linear_macs(&self) -> usize {
        self.per_score(|s| s.extra_macs)
    }

    /// `count` of every layer's [`Spec`], summed over the layers.
    fn per_score(&self, count: impl Fn(&Spec) -> usize) -> usize {
        self.layers.iter().map(|l| count(&l.spec(self.dim))).sum()
    }

    /// Spline evaluations of one `log_prob` (one per coordinate a spline
    /// layer transforms), which cost far more than a multiply-add on a
    /// device ([`Target::instr_per_spline`](crate::target::Target::instr_per_spline)).
    pub fn splines(&self) -> usize {
        self.per_score(|s| s.evaluations * s.splines)
    }

    /// Coordinates the affine coupling and MAF layers of one `log_prob`
    /// transform.
    pub fn affine(&self) -> usize {
        self.per_score(|s| s.evaluations * s.affine)
    }

    /// Coordinates of the elementwise affine (ActNorm) layers that one
    /// `log_prob` transforms.
    pub fn elementwise(&self) -> usize {
        self.per_score(|s| s.elementwise)
    }

    /// The multiply-adds of [`DynFlow::macs`] whose weights are stored
    /// compressed (the conditioners', for `f16` and `i8`; 0 for `f32`).
    pub fn compressed_macs(&self) -> usize {
        if self.storage() == Storage::F32 {
            return 0;
        }
        self.layers
            .iter()
            .filter_map(|l| l.compressible_net(self.dim))
            .map(|n| n.macs())
            .sum()
    }

    /// Hidden-unit activations of one `log_prob`: every conditioner's hidden
    /// units times its evaluations.
    pub fn activations(&self) -> usize {
        self.per_score(|s| s.evaluations * s.net.map_or(0, |n| n.hidden * n.depth))
    }

    /// A flow of `f32` weights.
    pub fn new(dim: usize, layers: Vec<Layer>) -> Self {
        DynFlow {
            dim,
            layers,
            weights: Weights::F32,
        }
    }

    /// The flow compiled into its layers' views (once per use, not per row);
    /// layers stored as `i8` get the core's `i8` views.
    pub fn view(&self) -> Result<FlowView<'_>, Error> {
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| match self.weights.i8_net(i) {
                Some(q) => l.view_i8(self.dim, q),
                None => l.view(self.dim),
            })
            .collect::<Result<_, _>>()?;
        Ok(FlowView { dim: self.dim, layers })
    }

    /// [`FlowView::forward`] of [`DynFlow::view`].
    pub fn forward(&self, x: &mut [f32], ws: &mut Workspace, save: bool) -> Result<f32, Error> {
        Ok(self.view()?.forward(x, ws, save))
    }

    /// [`FlowView::inverse`] of [`DynFlow::view`].
    pub fn inverse(&self, z: &mut [f32], ws: &mut Workspace) -> Result<f32, Error> {
        Ok(self.view()?.inverse(z, ws))
    }

    /// [`FlowView::log_prob`] of [`DynFlow::view`] (compile once with
    /// [`DynFlow::view`] to score many rows).
    pub fn log_prob(&self, x: &[f32], ws: &mut Workspace) -> Result<f32, Error> {
        self.view()?.log_prob(x, ws)
    }

    /// [`FlowView::sample_with_log_prob`] of [`DynFlow::view`].
    pub fn sample_with_log_prob<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        ws: &mut Workspace,
    ) -> Result<(Vec<f32>, f32), Error> {
        self.view()?.sample_with_log_prob(rng, ws)
    }

    /// `log p` of every row, in parallel (the views compiled once per
    /// worker), [`flowmote::block::BLOCK`] rows at a time
    /// ([`FlowView::log_prob_block`]: bit for bit [`FlowView::log_prob`]).
    pub fn log_probs(&self, rows: &[Vec<f32>]) -> Vec<Result<f32, Error>> {
        par_blocks(
            rows,
            || self.view().map(|v| (v.workspace(), v)),
            |view, xs, out| match view.as_mut() {
                Ok((ws, v)) => v.log_prob_block(xs, out, ws),
                Err(e) => out.extend(xs.iter().map(|_| Err(*e))),
            },
        )
    }

    /// [`FlowView::nll_backward`] of [`DynFlow::view`].
    pub fn nll_backward(&self, x: &[f32], grads: &mut [Vec<f32>], ws: &mut Workspace) -> Result<f32, Error> {
        self.view()?.nll_backward(x, grads, ws)
    }
}

/// `score` of every block of [`flowmote::block::BLOCK`] rows in parallel
/// (it pushes one result per row), with the state `init` makes (views and
/// buffers) built once per worker: the one "score every row" loop.
fn par_blocks<T>(
    rows: &[Vec<f32>],
    init: impl Fn() -> T + Sync + Send,
    score: impl Fn(&mut T, &[Vec<f32>], &mut Vec<Result<f32, Error>>) + Sync + Send,
) -> Vec<Result<f32, Error>> {
    // One contiguous part per thread (a multiple of 4 × BLOCK rows), each
    // scored in blocks of 4 × BLOCK rows with state built once per part:
    // rayon's `map_init` would build it once per split job, which on a
    // thousand rows costs as much as the scoring. A row's score does not
    // depend on the rows it is blocked with.
    let step = 4 * flowmote::block::BLOCK;
    let threads = rayon::current_num_threads().max(1);
    let per = rows.len().div_ceil(threads).div_ceil(step).max(1) * step;
    let parts: Vec<Vec<Result<f32, Error>>> = rows
        .par_chunks(per)
        .map(|part| {
            let mut t = init();
            let mut out = Vec::with_capacity(part.len());
            for xs in part.chunks(step) {
                score(&mut t, xs, &mut out);
            }
            out
        })
        .collect();
    parts.concat()
}

/// `score` of every row in parallel, with the state `init` makes (views and
/// buffers) built once per worker.
#[allow(dead_code)]
fn par_rows<T>(
    rows: &[Vec<f32>],
    init: impl Fn() -> T + Sync + Send,
    score: impl Fn(&mut T, &[f32]) -> Result<f32, Error> + Sync + Send,
) -> Vec<Result<f32, Error>> {
    rows.par_iter().map_init(init, |t, x| score(t, x)).collect()
}
