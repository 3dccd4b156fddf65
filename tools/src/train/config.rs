//! The training settings, written once: one clap-derived struct the CLI
//! flattens, its defaults, and the choices left open to the data.

use super::fit::split_sizes;
use serde::Serialize;

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
