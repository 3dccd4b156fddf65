//! Maximum-likelihood training of a [`DynFlow`] (and flow matching for
//! continuous flows) with the core's own backward passes.
//!
//! Pipeline: split the rows into training and validation parts (by default
//! the last rows of the file are the validation part, see [`ValSplit`]); fit
//! the standardisation on the training part and freeze it as the first
//! layer; start with a whitening LU layer (the full-covariance Gaussian fit,
//! [`whitening_layer`]); dequantise integer-valued columns and add Gaussian
//! noise each epoch; mini-batch Adam(W) with a cosine learning-rate
//! schedule, global-norm gradient clipping and MAF gradients masked;
//! validation NLL after every epoch, early stopping that keeps the best
//! model. [`train`] chooses the settings left open (noise, family, size) by
//! validation NLL, stacks the candidates ([`stack`]), and on small data runs
//! all of it once per fold of a k-fold cross-validation and averages the
//! folds' models ([`default_folds`]).
//!
//! Determinism: every random draw comes from one seeded
//! `Xoshiro256PlusPlus`, drawn sequentially; a mini-batch is split into
//! chunks of fixed size whose gradients are computed in parallel (rayon) and
//! summed in chunk order, so the result does not depend on the thread count.

use crate::data::Dataset;
use crate::model::{
    Act, DynFlow, DynMixture, Epoch, Layer, ModelFile, Net, Provenance, SolverKind, Workspace, FORMAT, VERSION,
};
use anyhow::{bail, ensure, Result};
use flowmote::cnf::ContinuousFlowRef;
use flowmote::maf::made_mask_params;
use flowmote::mlp::{MlpGrad, MlpRef, MlpShape};
use flowmote::ActNormRef;
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::Serialize;
use std::time::Instant;

/// Flow family. The layer lists below are [`build_flow`]'s; [`train`] also
/// puts a [`whitening_layer`] right after the standardisation (all families
/// but cnf) unless [`TrainConfig::whiten`] is off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FlowKind {
    /// Choose by validation NLL among maf and nsf (nsf-ar for 1-D data),
    /// after the noise level (the default; see the search above).
    Auto,
    /// Masked autoregressive flow: [standardise, (MAF, Permutation)×N]
    /// (affine autoregressive layers, seeded random permutations between).
    Maf,
    /// RealNVP affine coupling: [standardise, (AffineCoupling, Permutation)×N].
    Coupling,
    /// Neural spline flow, coupling: [standardise, (SplineCoupling,
    /// Permutation)×N] — rational-quadratic splines (K bins on ±tail bound)
    /// of half the coordinates conditioned on the other half.
    Nsf,
    /// Neural spline flow, autoregressive: [standardise,
    /// (SplineAutoregressive, Permutation)×N] — every coordinate's spline
    /// conditioned on the earlier ones (MADE conditioner).
    NsfAr,
    /// Continuous flow (one vector field, RK4), trained by flow matching.
    Cnf,
}

impl FlowKind {
    /// Name stored in model files.
    pub fn name(self) -> &'static str {
        match self {
            FlowKind::Auto => "auto",
            FlowKind::Maf => "maf",
            FlowKind::Coupling => "coupling",
            FlowKind::Nsf => "nsf",
            FlowKind::NsfAr => "nsf_ar",
            FlowKind::Cnf => "cnf",
        }
    }
}

/// Which rows are held out for validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ValSplit {
    /// The last rows of the file: the model is judged on readings later than
    /// those it learnt from, as the detector will be.
    Last,
    /// A seeded random sample of the rows (for files whose row order means
    /// nothing).
    Random,
}

/// Training settings; `None` fields are chosen from the data (see [`train`] and [`default_size`]).
#[derive(Clone, Debug, Serialize)]
pub struct TrainConfig {
    /// Flow family.
    pub flow: FlowKind,
    /// Number of flow layers (MAF/coupling blocks).
    pub layers: Option<usize>,
    /// Hidden units per conditioner layer.
    pub hidden: Option<usize>,
    /// Hidden layers per conditioner.
    pub depth: usize,
    /// Maximum epochs (`None`: 200, or more for small data so that at
    /// least ~4000 optimiser steps are taken, at most 2000 epochs).
    pub epochs: Option<usize>,
    /// Mini-batch size.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Decoupled (AdamW) weight decay.
    pub weight_decay: f64,
    /// Stop when validation NLL has not improved for this many epochs
    /// (`None`: 20, or the epochs of ~400 steps for small data, at most 200;
    /// `Some(0)`: never).
    pub patience: Option<usize>,
    /// Fraction of rows held out for validation / early stopping.
    pub val_fraction: f64,
    /// Seed of every random draw.
    pub seed: u64,
    /// Which rows are held out for validation.
    pub val_split: ValSplit,
    /// Cross-validation folds: `Some(k ≥ 2)` runs the search `k` times, each
    /// holding out one of `k` blocks of rows for validation, and keeps the
    /// equal-weight mixture of the `k` results; `Some(1)`: one split of
    /// `val_fraction`; `None`: [`default_folds`].
    pub folds: Option<usize>,
    /// Hold out block `k` of `n` (`Some((k, n))`) instead of `val_fraction`
    /// of the rows: the blocks, contiguous in the split's row order, cover
    /// every row once. Set by [`train`] for each fold.
    pub fold: Option<(usize, usize)>,
    /// Start with a trainable whitening LU layer after the standardisation.
    pub whiten: bool,
    /// After a search, keep a weighted mixture of the candidates when it has
    /// the lower validation NLL ([`stack`]).
    pub mixture: bool,
    /// Largest model (trainable and fixed parameters, i.e. f32 weights in
    /// flash) the search may keep; `None`: no limit.
    pub max_params: Option<usize>,
    /// Largest cost per score ([`DynMixture::macs`], multiply-adds of the
    /// networks) the search may keep; `None`: no limit.
    pub max_macs: Option<usize>,
    /// Dequantise integer-valued columns.
    pub dequantize: bool,
    /// Standard deviation of Gaussian noise added to every training row, in
    /// standard deviations of each column (`None`: chosen by validation).
    pub noise: Option<f32>,
    /// Global gradient-norm clip (per mini-batch mean gradient).
    pub clip: f64,
    /// Scale of the conditioners' output layer at initialisation (small =
    /// near identity).
    pub init_scale: f32,
    /// Soft clamp of the affine log-scales.
    pub clamp: f32,
    /// Solver steps of a continuous flow.
    pub cnf_steps: usize,
    /// Spline bins `K` of nsf / nsf-ar layers.
    pub bins: usize,
    /// Splines act on `[−B, B]` of the standardised data (identity outside).
    pub tail_bound: f32,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            flow: FlowKind::Auto,
            layers: None,
            hidden: None,
            depth: 2,
            epochs: None,
            batch: 64,
            lr: 2e-3,
            weight_decay: 1e-4,
            patience: None,
            val_fraction: 0.1,
            seed: 0,
            val_split: ValSplit::Last,
            folds: None,
            fold: None,
            whiten: true,
            mixture: true,
            max_params: None,
            max_macs: None,
            dequantize: true,
            noise: None,
            clip: 5.0,
            init_scale: 0.1,
            clamp: flowmote::coupling::DEFAULT_CLAMP,
            cnf_steps: 8,
            bins: 8,
            tail_bound: flowmote::spline::DEFAULT_TAIL_BOUND,
        }
    }
}

/// Default number of layers and hidden width for `n` training rows of
/// dimension `d`: small models for few rows (they generalise better).
pub fn default_size(flow: FlowKind, n: usize, d: usize) -> (usize, usize) {
    let _ = d;
    match flow {
        FlowKind::Cnf => (1, if n < 1000 { 32 } else { 64 }),
        _ if n < 500 => (2, 16),
        _ if n < 2000 => (3, 32),
        _ => (4, 32),
    }
}

/// The flow families `FlowKind::Auto` tries for `d` columns.
pub fn auto_candidates(d: usize) -> Vec<FlowKind> {
    if d >= 2 {
        vec![FlowKind::Maf, FlowKind::Nsf]
    } else {
        vec![FlowKind::Maf, FlowKind::NsfAr]
    }
}

/// A seeded uniformly random permutation of `0..d`.
pub fn random_permutation<R: Rng + ?Sized>(rng: &mut R, d: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..d).collect();
    for i in (1..d).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    p
}

/// What happened during training.
#[derive(Clone, Debug, Serialize)]
pub struct TrainSummary {
    /// Rows used for training.
    pub train_rows: usize,
    /// Rows held out.
    pub val_rows: usize,
    /// Rows left out because they were labelled anomalous.
    pub labelled_out: usize,
    /// Epochs run (for a mixture: by its best member).
    pub epochs_run: usize,
    /// Epoch of the kept model (1-based; for a mixture: of its best member).
    pub best_epoch: usize,
    /// Validation NLL of the kept model, mixture or flow (nats/row, data units).
    pub best_val_nll: f64,
    /// Columns dequantised (names) and their quantisation step.
    pub dequantized: Vec<(String, f32)>,
    /// Rows skipped while training because their NLL overflowed.
    pub skipped_rows: usize,
    /// Wall time (s).
    pub seconds: f64,
    /// Parameters trained.
    pub parameters: usize,
    /// The held-out validation rows (for calibration on unseen data).
    #[serde(skip)]
    pub validation: Vec<Vec<f32>>,
}

fn uniform<R: Rng + ?Sized>(rng: &mut R) -> f32 {
    (rng.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0)
}

fn normal<R: Rng + ?Sized>(rng: &mut R) -> f32 {
    let mut z = [0.0f32];
    flowmote::normal::fill_standard_normal(rng, &mut z);
    z[0]
}

fn fill_uniform<R: Rng + ?Sized>(rng: &mut R, v: &mut [f32], scale: f32) {
    for x in v {
        *x = (2.0 * uniform(rng) - 1.0) * scale;
    }
}

/// Seeded conditioner parameters: hidden layers uniform in `±1/√fan_in`,
/// output layer (and its bias) scaled by `out_scale` so that the layer
/// starts near the identity; MADE-masked if `made_heads > 0`.
pub fn init_params<R: Rng + ?Sized>(rng: &mut R, shape: MlpShape, made_heads: usize, out_scale: f32) -> Vec<f32> {
    let mut p = vec![0.0; shape.n_params()];
    {
        let g = MlpGrad::from_flat(shape, &mut p).expect("shape");
        fill_uniform(rng, g.w_in, 1.0 / ((shape.input + shape.cond).max(1) as f32).sqrt());
        fill_uniform(rng, g.w_cond, 1.0);
        fill_uniform(rng, g.b_in, 0.1);
        fill_uniform(rng, g.w_hid, 1.0 / (shape.hidden as f32).sqrt());
        fill_uniform(rng, g.b_hid, 0.1);
        fill_uniform(rng, g.w_out, out_scale / (shape.hidden as f32).sqrt());
        fill_uniform(rng, g.b_out, 0.1 * out_scale);
    }
    mask(shape, made_heads, &mut p);
    p
}

fn mask(shape: MlpShape, heads: usize, p: &mut [f32]) {
    match heads {
        0 => {}
        2 => made_mask_params(shape, p).expect("MADE shape"),
        h => flowmote::spline::made_mask_heads(shape, h, p).expect("MADE shape"),
    }
}

/// MADE heads of a layer's conditioner (0 = not autoregressive).
fn made_heads(l: &Layer) -> usize {
    match l {
        Layer::Maf { .. } => 2,
        Layer::SplineAutoregressive { bins, .. } => flowmote::spline::spline_params(*bins),
        _ => 0,
    }
}

fn params_mut(l: &mut Layer) -> Option<&mut Vec<f32>> {
    match l {
        Layer::AffineCoupling { params, .. }
        | Layer::Maf { params, .. }
        | Layer::SplineCoupling { params, .. }
        | Layer::SplineAutoregressive { params, .. }
        | Layer::LuLinear { params, .. }
        | Layer::Cnf { params, .. } => Some(params),
        _ => None,
    }
}

/// The frozen standardising layer for `mean`, `std`.
pub fn standardize_layer(mean: &[f32], std: &[f32]) -> Layer {
    let d = mean.len();
    let (mut log_scale, mut shift) = (vec![0.0; d], vec![0.0; d]);
    ActNormRef::standardizing(mean, std, &mut log_scale, &mut shift);
    Layer::ActNorm {
        log_scale,
        shift,
        frozen: true,
    }
}

/// A trainable LU linear layer initialised to whiten the standardised
/// training rows: `W = C⁻¹` where `C·Cᵀ = Σ + ridge·I` is the Cholesky factor
/// of their covariance (plus `ridge` on the diagonal). Placed after the
/// standardisation it makes the untrained flow the full-covariance Gaussian
/// fit; training then only has to model what a Gaussian misses.
pub fn whitening_layer(rows: &[Vec<f32>], mean: &[f32], std: &[f32], ridge: f64) -> Result<Layer> {
    let d = mean.len();
    let z: Vec<Vec<f32>> = rows
        .iter()
        .map(|r| (0..d).map(|j| (r[j] - mean[j]) / std[j]).collect())
        .collect();
    let (_, mut cov) = covariance(&z);
    for i in 0..d {
        cov[i * d + i] += ridge;
    }
    let c = cholesky(&cov, d)?;
    // W = C⁻¹ (lower triangular), by forward substitution column by column.
    let mut w = vec![0.0f32; d * d];
    for col in 0..d {
        let mut x = vec![0.0f64; d];
        for i in col..d {
            let rhs = if i == col { 1.0 } else { 0.0 };
            let acc: f64 = (col..i).map(|k| c[i * d + k] * x[k]).sum();
            x[i] = (rhs - acc) / c[i * d + i];
        }
        for i in 0..d {
            w[i * d + col] = x[i] as f32;
        }
    }
    let mut perm = vec![0usize; d];
    let mut sign = vec![0.0f32; d];
    flowmote::linear::lu_decompose(&mut w, &mut perm, &mut sign)
        .map_err(|e| anyhow::anyhow!("whitening layer: {e:?}"))?;
    w.resize(d * d + d, 0.0);
    Ok(Layer::LuLinear { perm, sign, params: w })
}

/// Why `bad` rows of `rows` cannot be scored even by the starting model
/// (the standardisation and a Gaussian): names the file, the column whose
/// standardised value is furthest out, and the reason.
fn unscorable_rows(ds: &Dataset, mean: &[f32], std: &[f32], rows: &[Vec<f32>], bad: usize, validation: bool) -> String {
    let mut worst = (0usize, 0.0f64, 0.0f32);
    for r in rows {
        for (j, &v) in r.iter().enumerate() {
            // NaN (an overflowed scale) ranks above every number.
            let z = ((v as f64 - mean[j] as f64) / std[j] as f64).abs();
            if z.total_cmp(&worst.1).is_gt() || z.is_nan() {
                worst = (j, z, v);
            }
        }
    }
    let (j, z, v) = worst;
    format!(
        "{}: {bad} of the {} {} rows cannot be scored, so no model can be trained or selected on them: \
         column {:?} holds {v:e}, {z:.1e} standard deviations from the training rows' mean {} \
         (the log-density overflows f32){}",
        ds.path,
        rows.len(),
        if validation { "validation" } else { "training" },
        ds.features[j],
        mean[j],
        if validation {
            "; the held-out rows (a block of the file, see --val-split) differ wildly from the training rows — \
             check those rows, or hold out a random sample with --val-split random"
        } else {
            ""
        }
    )
}

/// Most hidden units per layer `--hidden` accepts: far beyond any model a
/// microcontroller can hold, small enough to be refused before allocating.
pub const MAX_HIDDEN: usize = 4096;
/// Most flow layers `--layers` accepts.
pub const MAX_LAYERS: usize = 256;
/// Most hidden layers per conditioner `--depth` accepts.
pub const MAX_DEPTH: usize = 16;
/// Most weights a model may have (2²⁷ f32 = 512 MiB during training).
pub const MAX_WEIGHTS: usize = 1 << 27;

/// An untrained flow: `[standardise, blocks…]` with seeded near-identity
/// conditioners (see the module docs for the layer lists).
pub fn build_flow<R: Rng + ?Sized>(
    kind: FlowKind,
    mean: &[f32],
    std: &[f32],
    layers: usize,
    net: Net,
    cfg: &TrainConfig,
    rng: &mut R,
) -> Result<DynFlow> {
    let d = mean.len();
    ensure!(
        (1..=MAX_LAYERS).contains(&layers),
        "--layers must be 1..={MAX_LAYERS} (got {layers})"
    );
    ensure!(
        (1..=MAX_HIDDEN).contains(&net.hidden) && (1..=MAX_DEPTH).contains(&net.depth),
        "--hidden must be 1..={MAX_HIDDEN} and --depth 1..={MAX_DEPTH} (got {} and {})",
        net.hidden,
        net.depth
    );
    // A bound on the weights (generous: spline conditioners have up to 3·K
    // outputs per column) checked before anything is allocated.
    let per_layer = net
        .hidden
        .saturating_mul(
            net.hidden
                .saturating_add(d.saturating_mul(3 * flowmote::spline::MAX_BINS + 2)),
        )
        .saturating_mul(net.depth);
    ensure!(
        layers.saturating_mul(per_layer) <= MAX_WEIGHTS,
        "{layers} layers of {}×{} hidden units on {d} columns would need about {} weights, over the {} this tool \
         allocates — choose a smaller --layers/--hidden/--depth",
        net.hidden,
        net.depth,
        layers.saturating_mul(per_layer),
        MAX_WEIGHTS
    );
    let mut ls = vec![standardize_layer(mean, std)];
    match kind {
        FlowKind::Auto => bail!("build_flow needs a concrete flow family (auto is resolved by train)"),
        FlowKind::Maf => {
            for i in 0..layers {
                if i > 0 {
                    ls.push(Layer::Permutation {
                        perm: random_permutation(rng, d),
                    });
                }
                let mut l = Layer::Maf {
                    net,
                    clamp: cfg.clamp,
                    params: vec![],
                };
                let p = init_params(rng, l.mlp_shape(d).unwrap(), 2, cfg.init_scale);
                *params_mut(&mut l).unwrap() = p;
                ls.push(l);
            }
        }
        FlowKind::Coupling => {
            ensure!(
                d >= 2,
                "a coupling flow needs at least 2 columns (the data has {d}): one half conditions the other — use --flow maf or --flow cnf for 1-D data"
            );
            let mut a = d / 2;
            for i in 0..layers {
                let b = d - a;
                if i > 0 {
                    // Rotate the previous layer's transformed half to the front.
                    let prev_a = d - a;
                    ls.push(Layer::Permutation {
                        perm: (0..d).map(|j| (j + prev_a) % d).collect(),
                    });
                }
                let mut l = Layer::AffineCoupling {
                    a,
                    b,
                    net,
                    clamp: cfg.clamp,
                    params: vec![],
                };
                let p = init_params(rng, l.mlp_shape(d).unwrap(), 0, cfg.init_scale);
                *params_mut(&mut l).unwrap() = p;
                ls.push(l);
                a = b;
            }
        }
        FlowKind::Nsf | FlowKind::NsfAr => {
            ensure!(
                (1..=flowmote::spline::MAX_BINS).contains(&cfg.bins),
                "--bins must be 1..={}",
                flowmote::spline::MAX_BINS
            );
            ensure!(
                cfg.tail_bound.is_finite() && cfg.tail_bound > 0.0,
                "--tail-bound must be a positive number"
            );
            ensure!(
                kind == FlowKind::NsfAr || d >= 2,
                "a spline coupling flow needs at least 2 columns (the data has {d}) — use --flow nsf-ar for 1-D data"
            );
            for i in 0..layers {
                if i > 0 {
                    ls.push(Layer::Permutation {
                        perm: random_permutation(rng, d),
                    });
                }
                let mut l = if kind == FlowKind::Nsf {
                    Layer::SplineCoupling {
                        a: d / 2,
                        b: d - d / 2,
                        bins: cfg.bins,
                        tail_bound: cfg.tail_bound,
                        net,
                        params: vec![],
                    }
                } else {
                    Layer::SplineAutoregressive {
                        bins: cfg.bins,
                        tail_bound: cfg.tail_bound,
                        net,
                        params: vec![],
                    }
                };
                let heads = made_heads(&l);
                let p = init_params(rng, l.mlp_shape(d).unwrap(), heads, cfg.init_scale);
                *params_mut(&mut l).unwrap() = p;
                ls.push(l);
            }
        }
        FlowKind::Cnf => {
            let mut l = Layer::Cnf {
                net,
                solver: SolverKind::Rk4,
                steps: cfg.cnf_steps.max(1),
                params: vec![],
            };
            let p = init_params(rng, l.mlp_shape(d).unwrap(), 0, cfg.init_scale);
            *params_mut(&mut l).unwrap() = p;
            ls.push(l);
        }
    }
    let f = DynFlow { dim: d, layers: ls };
    f.validate()?;
    Ok(f)
}

/// AdamW (β₁ = 0.9, β₂ = 0.999, ε = 1e-8) on one flat parameter vector.
#[derive(Clone, Debug)]
pub struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl Adam {
    /// State for `n` parameters.
    pub fn new(n: usize) -> Self {
        Adam {
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    /// `p ← p − lr·(m̂/(√v̂ + ε) + wd·p)` for the gradient `g·scale`.
    pub fn step(&mut self, p: &mut [f32], g: &[f32], scale: f32, lr: f32, wd: f32) {
        const B1: f32 = 0.9;
        const B2: f32 = 0.999;
        self.t += 1;
        let c1 = 1.0 - B1.powi(self.t);
        let c2 = 1.0 - B2.powi(self.t);
        for i in 0..p.len() {
            let gi = g[i] * scale;
            self.m[i] = B1 * self.m[i] + (1.0 - B1) * gi;
            self.v[i] = B2 * self.v[i] + (1.0 - B2) * gi * gi;
            p[i] -= lr * ((self.m[i] / c1) / ((self.v[i] / c2).sqrt() + 1e-8) + wd * p[i]);
        }
    }
}

/// Rows per parallel gradient chunk (fixed, so results do not depend on the
/// number of threads).
const CHUNK: usize = 16;

/// Mean NLL (nats/row) of `rows` and the number of rows that could not be
/// scored (non-finite log p), in parallel.
pub fn mean_nll(flow: &DynFlow, rows: &[Vec<f32>]) -> (f64, usize) {
    let parts: Vec<(f64, usize, usize)> = rows
        .par_chunks(64)
        .map_init(
            || Workspace::new(flow),
            |ws, ch| {
                let (mut s, mut n, mut bad) = (0.0f64, 0usize, 0usize);
                for x in ch {
                    match flow.log_prob(x, ws) {
                        Ok(lp) => {
                            s -= lp as f64;
                            n += 1;
                        }
                        Err(_) => bad += 1,
                    }
                }
                (s, n, bad)
            },
        )
        .collect();
    let s: f64 = parts.iter().map(|p| p.0).sum();
    let n: usize = parts.iter().map(|p| p.1).sum();
    let bad: usize = parts.iter().map(|p| p.2).sum();
    (if n > 0 { s / n as f64 } else { f64::NAN }, bad)
}

/// Sum of gradients of one mini-batch; returns (loss sum, rows used).
fn batch_grad(
    flow: &DynFlow,
    batch: &[Vec<f32>],
    noise: &[(Vec<f32>, f32)],
    grads: &mut [Vec<f32>],
) -> (f64, usize, usize) {
    let d = flow.dim;
    let parts: Vec<(Vec<Vec<f32>>, f64, usize, usize)> = batch
        .par_chunks(CHUNK)
        .enumerate()
        .map(|(ci, ch)| {
            let mut ws = Workspace::new(flow);
            let mut g: Vec<Vec<f32>> = flow.layers.iter().map(|l| vec![0.0; l.params().len()]).collect();
            let (mut loss, mut used, mut bad) = (0.0f64, 0usize, 0usize);
            if let Some(ci_layer) = flow.layers.iter().position(|l| matches!(l, Layer::Cnf { .. })) {
                // Flow matching on the standardised rows.
                let Layer::Cnf {
                    net,
                    solver,
                    steps,
                    params,
                } = &flow.layers[ci_layer]
                else {
                    unreachable!()
                };
                let shape = flow.layers[ci_layer].mlp_shape(d).unwrap();
                let v = ContinuousFlowRef::new(
                    MlpRef::from_flat(shape, net.act.into(), params).expect("valid"),
                    (*solver).into(),
                    *steps,
                );
                let mut scratch = vec![0.0; v.train_scratch_len()];
                let mut gr = MlpGrad::from_flat(shape, &mut g[ci_layer]).expect("shape");
                for (k, x) in ch.iter().enumerate() {
                    let mut xs = x.clone();
                    for l in &flow.layers[..ci_layer] {
                        if let Layer::ActNorm { log_scale, shift, .. } = l {
                            ActNormRef { log_scale, shift }.forward(&mut xs);
                        }
                    }
                    let (z, t) = &noise[ci * CHUNK + k];
                    let l = v.flow_matching_backward(&xs, z, *t, &mut gr, &mut scratch);
                    if l.is_finite() {
                        loss += l as f64;
                        used += 1;
                    } else {
                        bad += 1;
                    }
                }
            } else {
                for x in ch {
                    match flow.nll_backward(x, &mut g, &mut ws) {
                        Ok(nll) => {
                            loss += nll as f64;
                            used += 1;
                        }
                        Err(_) => bad += 1,
                    }
                }
            }
            (g, loss, used, bad)
        })
        .collect();
    for g in grads.iter_mut() {
        g.fill(0.0);
    }
    let (mut loss, mut used, mut bad) = (0.0, 0, 0);
    for (g, l, u, b) in &parts {
        for (acc, gi) in grads.iter_mut().zip(g) {
            for (a, v) in acc.iter_mut().zip(gi) {
                *a += v;
            }
        }
        loss += l;
        used += u;
        bad += b;
    }
    (loss, used, bad)
}

/// Rows `lo..hi` of `total` that fold `k` of `n` holds out: `n` contiguous
/// blocks, as equal as whole rows allow, covering every row once (the last
/// block ends at the last row).
pub fn fold_block(total: usize, k: usize, n: usize) -> (usize, usize) {
    let edge = |i: usize| (total as u128 * i as u128 / n as u128) as usize;
    (edge(k), edge(k + 1))
}

/// Rows `lo..hi` of `total` usable rows (in the split's order) that `c`
/// validates on: its fold's block, or the last `val_fraction` of them.
fn val_block(total: usize, c: &TrainConfig) -> (usize, usize) {
    match c.fold {
        Some((k, n)) => fold_block(total, k, n),
        None => (split_sizes(total, c.val_fraction).0, total),
    }
}

/// How many of `total` usable rows `c` trains on.
fn train_rows(total: usize, c: &TrainConfig) -> usize {
    let (lo, hi) = val_block(total, c);
    total - (hi - lo)
}

/// Mean and variance (divided by the row count) of column `j` of `rows`.
fn column_moments(rows: &[Vec<f32>], j: usize) -> (f64, f64) {
    let n = rows.len() as f64;
    let mean = rows.iter().map(|r| r[j] as f64).sum::<f64>() / n;
    let var = rows.iter().map(|r| (r[j] as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var)
}

/// Training and validation row counts for `total` usable rows.
fn split_sizes(total: usize, val_fraction: f64) -> (usize, usize) {
    let n_val = ((total as f64) * val_fraction).round() as usize;
    (total - n_val, n_val)
}

/// What a candidate would cost: its size before training.
#[derive(Clone, Copy, Debug)]
struct CandidateSize {
    layers: usize,
    hidden: usize,
    /// As [`TrainSummary::parameters`] counts them.
    parameters: usize,
    /// [`DynFlow::macs`].
    macs: usize,
}

/// The size of the model `c` would train on `ds`.
fn candidate_size(ds: &Dataset, c: &TrainConfig) -> Result<CandidateSize> {
    let d = ds.dim();
    let n = train_rows(ds.n_normal(), c);
    let (l, h) = default_size(c.flow, n, d);
    let (layers, hidden) = (c.layers.unwrap_or(l), c.hidden.unwrap_or(h));
    let net = Net {
        hidden,
        depth: c.depth,
        act: Act::Tanh,
    };
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
    let mut f = build_flow(c.flow, &vec![0.0; d], &vec![1.0; d], layers, net, c, &mut rng)?;
    if c.whiten && c.flow != FlowKind::Cnf {
        // The whitening layer's shape (its values need the data).
        f.layers.insert(
            1,
            Layer::LuLinear {
                perm: (0..d).collect(),
                sign: vec![1.0; d],
                params: vec![0.0; d * d + d],
            },
        );
    }
    Ok(CandidateSize {
        layers,
        hidden,
        parameters: f.parameters(),
        macs: f.macs(),
    })
}

/// The device budget of `--max-params` and `--max-macs`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// Most parameters ([`DynMixture::parameters`]).
    pub params: Option<usize>,
    /// Most multiply-adds per score ([`DynMixture::macs`]).
    pub macs: Option<usize>,
}

impl Budget {
    /// The budget of a training configuration.
    pub fn of(cfg: &TrainConfig) -> Self {
        Budget {
            params: cfg.max_params,
            macs: cfg.max_macs,
        }
    }

    /// Why a model of `params` parameters and `macs` multiply-adds does not
    /// fit, or `None` if it does.
    pub fn exceeded(&self, params: usize, macs: usize) -> Option<String> {
        match (self.params, self.macs) {
            (Some(max), _) if params > max => Some(format!("{params} parameters > --max-params {max}")),
            (_, Some(max)) if macs > max => Some(format!("{macs} multiply-adds > --max-macs {max}")),
            _ => None,
        }
    }
}

/// Noise levels (standard deviations per column) the search tries, in order.
pub const NOISE_LEVELS: [f32; 4] = [0.0, 0.1, 0.2, 0.3];

/// Folds [`default_folds`] chooses when a validation split would hold
/// fewer rows than [`MIN_VALIDATION_ROWS`].
pub const SMALL_DATA_FOLDS: usize = 5;

/// Below this many validation rows one split is too small to choose and
/// stack by: [`default_folds`] cross-validates instead.
pub const MIN_VALIDATION_ROWS: usize = 100;

/// Cross-validation folds when the user gives none: [`SMALL_DATA_FOLDS`]
/// if `rows × val_fraction` (the rows one split would validate on) is below
/// [`MIN_VALIDATION_ROWS`], else 1 (one split); 1 when `val_fraction` is 0
/// (no validation asked for).
pub fn default_folds(rows: usize, val_fraction: f64) -> usize {
    let (_, n_val) = split_sizes(rows, val_fraction);
    if val_fraction > 0.0 && n_val < MIN_VALIDATION_ROWS {
        SMALL_DATA_FOLDS
    } else {
        1
    }
}

/// Train a model on `ds` (rows labelled anomalous are left out). With
/// `progress`, shows an indicatif bar with training and validation NLL.
///
/// With `k ≥ 2` folds ([`TrainConfig::folds`], by default [`default_folds`]:
/// small data) the search below runs `k` times, fold `i` holding out block
/// `i` of the rows ([`fold_block`]) for its validation, early stopping and
/// stacking, and the model kept is the equal-weight mixture of the `k`
/// results (weights `wᵢⱼ / k`): every row is validated on once, and the
/// members' different errors average out (a cross-validation committee).
/// `--max-params` (less one weight per fold) and `--max-macs` are split
/// evenly over the folds. The validation NLL reported is the folds' mean on
/// their own blocks, an estimate for one fold's model; no row is unseen by
/// the whole mixture.
///
/// Settings left open (`FlowKind::Auto`, `noise: None`, no `layers` and no
/// `hidden`) are chosen by validation NLL, every candidate on the same split
/// and seed, in three steps:
/// 1. noise: the first family of [`auto_candidates`] (or the requested one)
///    at each of [`NOISE_LEVELS`] in turn, stopping at the first level that
///    does worse than the one before;
/// 2. family: the other candidates at the chosen noise;
/// 3. size (not for cnf): the winner with two more layers and twice the
///    hidden units.
///
/// The kept model is the candidate with the lowest validation NLL — or,
/// unless `mixture` is off, the stacked mixture of the candidates when it
/// beats that ([`stack`]); every candidate's figures are stored in the
/// provenance settings (`search`), a mixture's members in `members`.
pub fn train(ds: &Dataset, cfg: &TrainConfig, progress: bool) -> Result<(ModelFile, TrainSummary)> {
    let folds = match (cfg.folds, cfg.fold) {
        (Some(k), _) => k,
        (None, Some(_)) => 1,
        (None, None) => default_folds(ds.n_normal(), cfg.val_fraction),
    };
    ensure!((1..=10).contains(&folds), "--folds must be 1 to 10, not {folds}");
    if folds == 1 {
        let c = TrainConfig {
            folds: Some(1),
            ..cfg.clone()
        };
        return search(ds, &c, progress, DynMixture::MAX_MEMBERS);
    }
    ensure!(cfg.fold.is_none(), "a fold cannot be cross-validated again");
    let start = Instant::now();
    let budget = Budget::of(cfg);
    let mut parts = Vec::with_capacity(folds);
    for k in 0..folds {
        let (lo, hi) = fold_block(ds.n_normal(), k, folds);
        if progress {
            eprintln!(
                "fold {}/{folds}: validation on {} rows ({lo}..{hi} of the {} order)",
                k + 1,
                hi - lo,
                match cfg.val_split {
                    ValSplit::Last => "file's",
                    ValSplit::Random => "shuffled",
                }
            );
        }
        let c = TrainConfig {
            folds: Some(1),
            fold: Some((k, folds)),
            // The committee stores one weight per member, one per fold at least.
            max_params: budget.params.map(|p| p.saturating_sub(folds) / folds),
            max_macs: budget.macs.map(|m| m / folds),
            ..cfg.clone()
        };
        parts.push(search(ds, &c, progress, DynMixture::MAX_MEMBERS / folds)?);
    }
    Ok(committee(ds, parts, start))
}

/// The equal-weight mixture of the folds' models (see [`train`]).
fn committee(ds: &Dataset, parts: Vec<(ModelFile, TrainSummary)>, start: Instant) -> (ModelFile, TrainSummary) {
    let k = parts.len();
    let mut log_weights = Vec::new();
    let mut flows = Vec::new();
    let mut members = Vec::new();
    let mut folds = Vec::new();
    let (mut val_sum, mut val_rows, mut skipped) = (0.0, 0, 0);
    for (i, (m, s)) in parts.iter().enumerate() {
        for (j, (lw, f)) in m.model.log_weights.iter().zip(&m.model.flows).enumerate() {
            let weight = (*lw as f64).exp() / k as f64;
            log_weights.push(weight.ln() as f32);
            flows.push(f.clone());
            let st = &m.provenance.settings;
            let mut t = match st.get("members") {
                Some(serde_json::Value::Array(a)) => a[j].clone(),
                _ => serde_json::json!({
                    "flow": m.kind, "noise": st["noise"], "layers": st["layers"], "hidden": st["hidden"],
                    "parameters": f.parameters(), "macs": f.macs(), "val_nll": s.best_val_nll,
                }),
            };
            t["fold"] = (i + 1).into();
            t["weight"] = weight.into();
            members.push(t);
        }
        folds.push(serde_json::json!({
            "fold": i + 1, "kind": m.kind, "val_rows": s.val_rows, "val_nll": s.best_val_nll,
            "search": m.provenance.settings.get("search").cloned().unwrap_or_default(),
        }));
        val_sum += s.best_val_nll * s.val_rows as f64;
        val_rows += s.val_rows;
        skipped += s.skipped_rows;
    }
    let (mut m, mut s) = parts.into_iter().next().expect("at least two folds");
    let model = DynMixture { log_weights, flows };
    // Mean and std of every usable row (each fold's flows carry their own).
    let rows = ds.normal_rows();
    let d = ds.dim();
    for j in 0..d {
        let (mean, var) = column_moments(&rows, j);
        m.mean[j] = mean as f32;
        m.std[j] = var.sqrt() as f32;
    }
    let val_nll = val_sum / val_rows as f64;
    m.kind = "mixture".into();
    m.provenance.train_rows = rows.len();
    m.provenance.val_rows = val_rows;
    m.provenance.val_nll = val_nll;
    let st = &mut m.provenance.settings;
    if let Some(o) = st.as_object_mut() {
        o.remove("search");
        o.remove("fold");
    }
    st["folds"] = k.into();
    st["fold_results"] = serde_json::Value::Array(folds);
    st["members"] = serde_json::Value::Array(members);
    s.train_rows = rows.len();
    s.val_rows = val_rows;
    s.best_val_nll = val_nll;
    s.skipped_rows = skipped;
    s.parameters = model.parameters();
    s.validation = Vec::new();
    s.seconds = start.elapsed().as_secs_f64();
    m.model = model;
    (m, s)
}

/// One search on one split (see [`train`]); a stacked mixture holds at most
/// `max_members` flows.
fn search(ds: &Dataset, cfg: &TrainConfig, progress: bool, max_members: usize) -> Result<(ModelFile, TrainSummary)> {
    let start = Instant::now();
    let first = if cfg.flow == FlowKind::Auto {
        auto_candidates(ds.dim())[0]
    } else {
        cfg.flow
    };
    let budget = Budget::of(cfg);
    let mut best: Option<(ModelFile, TrainSummary, TrainConfig)> = None;
    let mut tried = Vec::new();
    // Every trained candidate: its number in `tried` (0-based) and model.
    let mut trained: Vec<(usize, ModelFile)> = Vec::new();
    let mut run = |c: TrainConfig, best: &mut Option<(ModelFile, TrainSummary, TrainConfig)>| -> Result<bool> {
        if budget != Budget::default() {
            let z = candidate_size(ds, &c)?;
            if let Some(why) = budget.exceeded(z.parameters, z.macs) {
                tried.push(serde_json::json!({
                    "flow": c.flow.name(), "noise": c.noise, "layers": z.layers, "hidden": z.hidden,
                    "parameters": z.parameters, "macs": z.macs, "skipped": why,
                }));
                if progress {
                    eprintln!(
                        "candidate {}: {} {}×{} skipped ({why})",
                        tried.len(),
                        c.flow.name(),
                        z.layers,
                        z.hidden
                    );
                }
                return Ok(false);
            }
        }
        let (m, s) = train_one(ds, &c, progress)?;
        let st = &m.provenance.settings;
        tried.push(serde_json::json!({
            "flow": c.flow.name(), "noise": c.noise, "layers": st["layers"], "hidden": st["hidden"],
            "parameters": s.parameters, "macs": m.model.macs(), "val_nll": s.best_val_nll, "seconds": s.seconds,
        }));
        let better = match best {
            None => true,
            Some((_, b, _)) => s.best_val_nll < b.best_val_nll || !b.best_val_nll.is_finite(),
        };
        if progress {
            eprintln!(
                "candidate {}: {} {}×{} noise {:.1}: validation NLL {:.3} ({:.0} s){}",
                tried.len(),
                c.flow.name(),
                st["layers"],
                st["hidden"],
                c.noise.unwrap_or(0.0),
                s.best_val_nll,
                s.seconds,
                if better { "  ← best so far" } else { "" }
            );
        }
        trained.push((tried.len() - 1, m.clone()));
        if better {
            *best = Some((m, s, c));
        }
        Ok(better)
    };
    // 1. noise
    let noises: Vec<f32> = match cfg.noise {
        Some(v) => vec![v],
        None => NOISE_LEVELS.to_vec(),
    };
    for (k, &noise) in noises.iter().enumerate() {
        let c = TrainConfig {
            flow: first,
            noise: Some(noise),
            ..cfg.clone()
        };
        if !run(c, &mut best)? && k > 0 {
            break;
        }
    }
    if best.is_none() {
        let z = candidate_size(
            ds,
            &TrainConfig {
                flow: first,
                ..cfg.clone()
            },
        )?;
        bail!(
            "the smallest model tried does not fit the budget ({}): give smaller --layers/--hidden",
            budget.exceeded(z.parameters, z.macs).unwrap_or_default()
        );
    }
    // 2. family
    if cfg.flow == FlowKind::Auto {
        let noise = best.as_ref().expect("a candidate").2.noise;
        for kind in auto_candidates(ds.dim()).into_iter().skip(1) {
            run(
                TrainConfig {
                    flow: kind,
                    noise,
                    ..cfg.clone()
                },
                &mut best,
            )?;
        }
    }
    // 3. size
    let (c, n) = {
        let (_, s, c) = best.as_ref().expect("a candidate");
        (c.clone(), s.train_rows)
    };
    if cfg.layers.is_none() && cfg.hidden.is_none() && c.flow != FlowKind::Cnf {
        let (l, h) = default_size(c.flow, n, ds.dim());
        run(
            TrainConfig {
                layers: Some(l + 2),
                hidden: Some(2 * h),
                ..c
            },
            &mut best,
        )?;
    }
    let (mut m, mut s, _) = best.expect("at least one candidate");
    if cfg.mixture && trained.len() > 1 {
        if let Some(st) = stack(&trained, &s.validation, s.best_val_nll, budget, max_members) {
            if progress {
                eprintln!(
                    "stacked: a mixture of {} candidates ({}) has validation NLL {:.3} (best single {:.3}); kept",
                    st.members.len(),
                    st.members
                        .iter()
                        .map(|(i, w)| format!("{} × {w:.2}", i + 1))
                        .collect::<Vec<_>>()
                        .join(", "),
                    st.val_nll,
                    s.best_val_nll
                );
            }
            let members: Vec<serde_json::Value> = st
                .members
                .iter()
                .map(|&(i, w)| {
                    let mut t = tried[i].clone();
                    t["candidate"] = (i + 1).into();
                    t["weight"] = w.into();
                    t
                })
                .collect();
            m.provenance.settings["members"] = serde_json::Value::Array(members);
            m.provenance.val_nll = st.val_nll;
            m.kind = "mixture".into();
            s.best_val_nll = st.val_nll;
            s.parameters = st.model.parameters();
            m.model = st.model;
        } else if progress {
            eprintln!(
                "stacked: no mixture of the candidates{} beats the best single one on validation",
                if budget == Budget::default() {
                    ""
                } else {
                    " within the budget"
                }
            );
        }
    }
    if tried.len() > 1 {
        m.provenance.settings["search"] = serde_json::Value::Array(tried);
        s.seconds = start.elapsed().as_secs_f64();
    }
    Ok((m, s))
}

/// The outcome of [`stack`].
#[derive(Debug)]
pub struct Stacked {
    /// The mixture.
    pub model: DynMixture,
    /// `(candidate index, weight)` of every member, in model order.
    pub members: Vec<(usize, f64)>,
    /// Validation NLL of the mixture as stored (f32 weights), nats/row.
    pub val_nll: f64,
}

/// Weights below this are dropped from a stacked mixture (the rest refitted).
pub const MIN_MIXTURE_WEIGHT: f64 = 0.01;

/// Stacking (Smyth & Wolpert, 1999): the mixture `Σₖ wₖ pₖ` of the trained
/// `candidates` (`(index, model)`, each a single flow) whose weights maximise
/// the likelihood of the `validation` rows (EM on the members' fixed
/// densities). Members below [`MIN_MIXTURE_WEIGHT`], members that cannot
/// score every validation row, and — smallest weight first — members that
/// would take the mixture over the `budget` or over `max_members` flows are
/// dropped, the rest refitted. Returns the mixture only if it has at least two members and
/// its validation NLL plus an AIC-style penalty for the fitted weights,
/// `(k − 1)/n` nats per row, is below `best_single` (the search's winner).
pub fn stack(
    candidates: &[(usize, ModelFile)],
    validation: &[Vec<f32>],
    best_single: f64,
    budget: Budget,
    max_members: usize,
) -> Option<Stacked> {
    let n = validation.len();
    if n == 0 || !best_single.is_finite() {
        return None;
    }
    // Members' log-densities on the validation rows; drop any that fail.
    let mut pool: Vec<(usize, &DynFlow, Vec<f64>)> = candidates
        .iter()
        .filter_map(|(i, m)| {
            let f = m.model.as_single()?;
            let lps: Vec<Option<f64>> = validation
                .par_iter()
                .map_init(|| Workspace::new(f), |ws, x| f.log_prob(x, ws).ok().map(f64::from))
                .collect();
            let lps: Option<Vec<f64>> = lps.into_iter().collect();
            Some((*i, f, lps?))
        })
        .collect();
    let fit = |pool: &[(usize, &DynFlow, Vec<f64>)]| -> Vec<f64> {
        let k = pool.len();
        let mut w = vec![1.0 / k as f64; k];
        let mut r = vec![0.0; k];
        for _ in 0..1000 {
            let mut next = vec![0.0; k];
            for row in 0..n {
                let mut top = f64::NEG_INFINITY;
                for (j, (_, _, lp)) in pool.iter().enumerate() {
                    r[j] = w[j].ln() + lp[row];
                    top = top.max(r[j]);
                }
                let tot: f64 = r.iter().map(|v| (v - top).exp()).sum();
                for j in 0..k {
                    next[j] += (r[j] - top).exp() / tot / n as f64;
                }
            }
            let change = next.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            w = next;
            if change < 1e-9 {
                break;
            }
        }
        w
    };
    let too_big = |pool: &[(usize, &DynFlow, Vec<f64>)]| -> bool {
        let (params, macs) = DynMixture::cost(pool.iter().map(|(_, f, _)| *f));
        budget.exceeded(params, macs).is_some()
    };
    let mut w = fit(&pool);
    loop {
        let (j, wmin) = w.iter().copied().enumerate().min_by(|a, b| a.1.total_cmp(&b.1))?;
        if pool.len() > 1 && (wmin < MIN_MIXTURE_WEIGHT || too_big(&pool) || pool.len() > max_members) {
            pool.remove(j);
            w = fit(&pool);
        } else {
            break;
        }
    }
    if pool.len() < 2 {
        return None;
    }
    let total: f64 = w.iter().sum();
    let model = DynMixture {
        log_weights: w.iter().map(|v| (v / total).ln() as f32).collect(),
        flows: pool.iter().map(|(_, f, _)| (*f).clone()).collect(),
    };
    // The validation NLL the stored (f32) mixture gives, as the device
    // computes it: the members' log-densities (each exactly an f32) combined
    // with the f32 weights.
    let mut terms = vec![0.0f32; pool.len()];
    let mut sum = 0.0f64;
    for row in 0..n {
        for (t, (_, _, lp)) in terms.iter_mut().zip(&pool) {
            *t = lp[row] as f32;
        }
        sum += flowmote::mixture::combine(&model.log_weights, &terms).map_or(f64::NEG_INFINITY, f64::from);
    }
    let val_nll = -sum / n as f64;
    let penalty = (pool.len() - 1) as f64 / n as f64;
    (val_nll.is_finite() && val_nll + penalty < best_single).then(|| Stacked {
        members: pool.iter().zip(&w).map(|((i, _, _), w)| (*i, w / total)).collect(),
        model,
        val_nll,
    })
}

fn train_one(ds: &Dataset, cfg: &TrainConfig, progress: bool) -> Result<(ModelFile, TrainSummary)> {
    let start = Instant::now();
    let d = ds.dim();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
    ensure!(
        (0.0..0.9).contains(&cfg.val_fraction),
        "--val-fraction must be in [0, 0.9)"
    );
    ensure!(cfg.batch >= 1, "--batch must be at least 1");
    ensure!(cfg.epochs != Some(0), "--epochs must be at least 1");
    ensure!(cfg.lr.is_finite() && cfg.lr > 0.0, "--lr must be a positive number");
    for (i, r) in ds.rows.iter().enumerate() {
        if let Some(j) = r.iter().position(|v| !v.is_finite()) {
            bail!(
                "{} line {}, column {:?}: value {} is not finite — training needs finite numbers",
                ds.path,
                ds.lines.get(i).copied().unwrap_or(0),
                ds.features[j],
                r[j]
            );
        }
    }
    let mut rows = ds.normal_rows();
    let labelled_out = ds.len() - rows.len();
    let min_rows = 10.max(2 * d);
    ensure!(
        rows.len() >= min_rows,
        "{}: {} usable rows{}; training needs at least {min_rows} (10, and 2 per column)",
        ds.path,
        rows.len(),
        if labelled_out > 0 {
            format!(" ({labelled_out} labelled anomalous were left out)")
        } else {
            String::new()
        }
    );
    if let Some((k, n)) = cfg.fold {
        ensure!(k < n, "fold {k} of {n} does not exist");
    }
    let (lo, hi) = val_block(rows.len(), cfg);
    let shuffle = |rows: &mut Vec<Vec<f32>>, rng: &mut Xoshiro256PlusPlus| {
        for i in (1..rows.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            rows.swap(i, j);
        }
    };
    // The validation rows are rows lo..hi of the file's order (`Last`) or of
    // a seeded shuffle (`Random`); the training rows are the rest, shuffled.
    if cfg.val_split == ValSplit::Random {
        shuffle(&mut rows, &mut rng);
    }
    let after = rows.split_off(hi);
    let val: Vec<Vec<f32>> = rows.split_off(lo);
    rows.extend(after);
    if cfg.val_split == ValSplit::Last {
        shuffle(&mut rows, &mut rng);
    }
    let train_rows = rows;
    let n = train_rows.len();

    // Dequantisation steps (from the training rows only).
    let tmp = Dataset {
        features: ds.features.clone(),
        rows: train_rows.clone(),
        ..Default::default()
    };
    let steps: Vec<Option<f32>> = if cfg.dequantize {
        tmp.quantisation_steps()
    } else {
        vec![None; d]
    };
    // Standardisation: mean and std of the (dequantised) training rows.
    let mut mean = vec![0.0f32; d];
    let mut std = vec![0.0f32; d];
    for j in 0..d {
        let (m, mut var) = column_moments(&train_rows, j);
        if let Some(s) = steps[j] {
            var += (s as f64).powi(2) / 12.0;
        }
        ensure!(
            var > 0.0 && var.is_finite(),
            "{}: column {:?} is constant ({m}) in the training rows — a density over it is degenerate; drop the column",
            ds.path,
            ds.features[j]
        );
        let sd = var.sqrt() as f32;
        ensure!(
            sd.is_normal() && (1.0 / sd).is_normal() && (m as f32).is_finite(),
            "{}: column {:?} cannot be standardised in f32: its training rows' standard deviation is {:e} \
             (f32 scales from about 1e-37 to 1e37; the device computes in f32) — rescale the column, e.g. to other units",
            ds.path,
            ds.features[j],
            var.sqrt()
        );
        mean[j] = m as f32;
        std[j] = sd;
    }

    let noise = cfg.noise.unwrap_or(0.0);
    let (def_layers, def_hidden) = default_size(cfg.flow, n, d);
    let layers = cfg.layers.unwrap_or(def_layers);
    let hidden = cfg.hidden.unwrap_or(def_hidden);
    let net = Net {
        hidden,
        depth: cfg.depth,
        act: Act::Tanh,
    };
    let mut flow = build_flow(cfg.flow, &mean, &std, layers, net, cfg, &mut rng)?;
    if cfg.whiten && cfg.flow != FlowKind::Cnf {
        let ridge = (noise as f64).powi(2) + 1e-3;
        flow.layers.insert(1, whitening_layer(&train_rows, &mean, &std, ridge)?);
    }
    let parameters = flow.parameters();

    let batch = cfg.batch.min(n);
    let batches_per_epoch = n / batch; // drop the short last batch
    let epochs = cfg.epochs.unwrap_or((4000 / batches_per_epoch).clamp(200, 2000));
    let patience = cfg.patience.unwrap_or((400 / batches_per_epoch).clamp(20, 200));
    let total_steps = (batches_per_epoch * epochs).max(1);
    let warmup = (total_steps / 50).clamp(1, 200);
    let lr_at = |step: usize| -> f32 {
        let lr = cfg.lr;
        let v = if step < warmup {
            lr * (step + 1) as f64 / warmup as f64
        } else {
            let p = (step - warmup) as f64 / (total_steps - warmup).max(1) as f64;
            0.01 * lr + 0.99 * lr * 0.5 * (1.0 + (std::f64::consts::PI * p.min(1.0)).cos())
        };
        v as f32
    };

    let mut grads: Vec<Vec<f32>> = flow.layers.iter().map(|l| vec![0.0; l.params().len()]).collect();
    let mut adam: Vec<Adam> = grads.iter().map(|g| Adam::new(g.len())).collect();
    let is_cnf = cfg.flow == FlowKind::Cnf;
    let sel_rows = if val.is_empty() { &train_rows } else { &val };

    let bar = if progress {
        let b = indicatif::ProgressBar::new(epochs as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} epochs {elapsed} {msg}")
                .unwrap()
                .progress_chars("=> "),
        );
        b.set_prefix(format!("{} {}×{} noise {}", cfg.flow.name(), layers, hidden, noise));
        b
    } else {
        indicatif::ProgressBar::hidden()
    };

    let (init_val, init_bad) = mean_nll(&flow, sel_rows);
    // Rows even the starting model (standardisation, whitening, near-identity
    // layers) cannot score are a property of the data, not of training: more
    // than 1 in 20 would otherwise count as a divergence at every epoch.
    if init_bad > 0 && init_bad * 20 > sel_rows.len() {
        bail!(unscorable_rows(ds, &mean, &std, sel_rows, init_bad, !val.is_empty()));
    }
    let mut best = (init_val, 0usize, flow.clone());
    let mut history = Vec::new();
    let mut step = 0usize;
    let mut skipped = 0usize;
    let mut since_best = 0usize;
    let mut epochs_run = 0;
    let mut order: Vec<usize> = (0..n).collect();
    let mut blowups = 0;
    let mut epoch_rows: Vec<Vec<f32>> = train_rows.clone();
    let mut epoch = 0usize;
    while epoch < epochs {
        epoch += 1;
        for i in (1..n).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        for (k, &i) in order.iter().enumerate() {
            let r = &mut epoch_rows[k];
            r.copy_from_slice(&train_rows[i]);
            for (j, (v, s)) in r.iter_mut().zip(&steps).enumerate() {
                if let Some(s) = s {
                    *v += (uniform(&mut rng) - 0.5) * s;
                }
                if noise > 0.0 {
                    *v += noise * std[j] * normal(&mut rng);
                }
            }
        }
        let mut tot = 0.0f64;
        let mut cnt = 0usize;
        let mut lr = 0.0;
        let mut diverged = false;
        for b in 0..batches_per_epoch {
            let rows_b = &epoch_rows[b * batch..(b + 1) * batch];
            let noise: Vec<(Vec<f32>, f32)> = if is_cnf {
                rows_b
                    .iter()
                    .map(|_| {
                        let mut z = vec![0.0; d];
                        flowmote::normal::fill_standard_normal(&mut rng, &mut z);
                        (z, uniform(&mut rng))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let (loss, used, bad) = batch_grad(&flow, rows_b, &noise, &mut grads);
            skipped += bad;
            if used == 0 {
                continue;
            }
            tot += loss;
            cnt += used;
            let scale = 1.0 / used as f32;
            for (i, l) in flow.layers.iter().enumerate() {
                if let Some(s) = l.mlp_shape(d) {
                    mask(s, made_heads(l), &mut grads[i]);
                }
            }
            let norm = grads
                .iter()
                .flatten()
                .map(|g| (*g as f64 * scale as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            let clip = if norm.is_finite() && norm > cfg.clip {
                (cfg.clip / norm) as f32
            } else {
                1.0
            };
            if !norm.is_finite() {
                diverged = true;
                break;
            }
            lr = lr_at(step);
            step += 1;
            for (i, l) in flow.layers.iter_mut().enumerate() {
                if let Some(p) = params_mut(l) {
                    adam[i].step(p, &grads[i], scale * clip, lr, cfg.weight_decay as f32);
                }
            }
        }
        let finite = flow.layers.iter().all(|l| l.params().iter().all(|v| v.is_finite()));
        let (val_nll, val_bad) = if finite && !diverged {
            mean_nll(&flow, sel_rows)
        } else {
            (f64::NAN, 0)
        };
        if !finite || diverged || !val_nll.is_finite() || val_bad > 0 && val_bad * 20 > sel_rows.len() {
            // Diverged: go back to the best model with fresh optimiser state.
            blowups += 1;
            ensure!(
                blowups <= 5,
                "training diverged 5 times (non-finite loss); try a smaller --lr"
            );
            flow = best.2.clone();
            adam = grads.iter().map(|g| Adam::new(g.len())).collect();
            bar.println(format!(
                "epoch {epoch}: training diverged; restarting from the best model (epoch {})",
                best.1
            ));
            since_best += 1;
            continue;
        }
        let train_nll = if cnt > 0 { tot / cnt as f64 } else { f64::NAN };
        epochs_run = epoch;
        history.push(Epoch {
            epoch,
            train_nll,
            val_nll,
            lr: lr as f64,
        });
        if val_nll < best.0 || best.1 == 0 && !best.0.is_finite() {
            best = (val_nll, epoch, flow.clone());
            since_best = 0;
        } else {
            since_best += 1;
        }
        bar.set_position(epoch as u64);
        bar.set_message(format!(
            "{} {:.3}  val NLL {:.3}  (best {:.3} @ {})",
            if is_cnf { "train FM loss" } else { "train NLL" },
            train_nll,
            val_nll,
            best.0,
            best.1
        ));
        if patience > 0 && since_best >= patience {
            break;
        }
    }
    bar.finish_and_clear();
    let (best_val, best_epoch, flow) = best;
    let steps_used: Vec<(String, f32)> = steps
        .iter()
        .zip(&ds.features)
        .filter_map(|(s, f)| s.map(|s| (f.clone(), s)))
        .collect();
    let summary = TrainSummary {
        train_rows: n,
        val_rows: val.len(),
        labelled_out,
        epochs_run,
        best_epoch,
        best_val_nll: best_val,
        dequantized: steps_used,
        skipped_rows: skipped,
        seconds: start.elapsed().as_secs_f64(),
        parameters,
        validation: val.clone(),
    };
    let mut settings = serde_json::to_value(cfg)?;
    settings["layers"] = layers.into();
    settings["hidden"] = hidden.into();
    settings["batch"] = batch.into();
    settings["epochs"] = epochs.into();
    settings["patience"] = patience.into();
    settings["dequantized"] = serde_json::to_value(&summary.dequantized)?;
    let model = ModelFile {
        format: FORMAT.into(),
        version: VERSION,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        kind: cfg.flow.name().into(),
        features: ds.features.clone(),
        mean,
        std,
        model: DynMixture::single(flow),
        threshold: None,
        provenance: Provenance {
            data_file: ds.path.clone(),
            data_sha256: ds.sha256.clone(),
            train_rows: n,
            val_rows: val.len(),
            val_nll: best_val,
            settings,
            history,
        },
    };
    model.validate()?;
    Ok((model, summary))
}

/// Run `f` on a rayon pool of `n` threads (training results do not depend
/// on `n`; tests check it).
pub fn with_threads<T: Send>(n: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .expect("thread pool")
        .install(f)
}

/// Maximum-likelihood mean and covariance (row-major `d × d`, lower
/// triangle filled) of `rows`, in f64.
fn covariance(rows: &[Vec<f32>]) -> (Vec<f64>, Vec<f64>) {
    let d = rows.first().map_or(0, |r| r.len());
    let n = rows.len().max(1) as f64;
    let mut mean = vec![0.0; d];
    for r in rows {
        for j in 0..d {
            mean[j] += r[j] as f64 / n;
        }
    }
    let mut cov = vec![0.0; d * d];
    for r in rows {
        for i in 0..d {
            for j in 0..=i {
                cov[i * d + j] += (r[i] as f64 - mean[i]) * (r[j] as f64 - mean[j]) / n;
            }
        }
    }
    (mean, cov)
}

/// Lower Cholesky factor of the `d × d` covariance `cov` (lower triangle read).
fn cholesky(cov: &[f64], d: usize) -> Result<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s = cov[i * d + j] - (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum::<f64>();
            if i == j {
                ensure!(
                    s > 0.0 && s.is_finite(),
                    "covariance is singular (a column is constant or a combination of others); drop redundant columns"
                );
                l[i * d + i] = s.sqrt();
            } else {
                l[i * d + j] = s / l[j * d + j];
            }
        }
    }
    Ok(l)
}

/// A full-covariance Gaussian fitted by maximum likelihood (the baseline a
/// flow must beat).
#[derive(Clone, Debug)]
pub struct Gaussian {
    mean: Vec<f64>,
    /// Lower Cholesky factor of the covariance.
    chol: Vec<f64>,
    log_det: f64,
}

impl Gaussian {
    /// Fit mean and covariance of `rows` (a tiny ridge keeps it positive definite).
    pub fn fit(rows: &[Vec<f32>]) -> Result<Self> {
        ensure!(!rows.is_empty(), "no rows to fit a Gaussian to");
        let d = rows[0].len();
        let (mean, mut cov) = covariance(rows);
        for i in 0..d {
            cov[i * d + i] += 1e-9 * cov[i * d + i].abs().max(1e-12);
        }
        let l = cholesky(&cov, d)?;
        let log_det = (0..d).map(|i| 2.0 * l[i * d + i].ln()).sum();
        Ok(Gaussian { mean, chol: l, log_det })
    }

    /// `log N(x; μ, Σ)`.
    #[allow(clippy::needless_range_loop)]
    pub fn log_prob(&self, x: &[f32]) -> f64 {
        let d = self.mean.len();
        let mut y = vec![0.0; d];
        for i in 0..d {
            let mut s = x[i] as f64 - self.mean[i];
            for k in 0..i {
                s -= self.chol[i * d + k] * y[k];
            }
            y[i] = s / self.chol[i * d + i];
        }
        let q: f64 = y.iter().map(|v| v * v).sum();
        -0.5 * (q + self.log_det + d as f64 * (2.0 * std::f64::consts::PI).ln())
    }
}
