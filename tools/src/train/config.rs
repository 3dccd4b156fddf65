//! The training settings, written once: one clap-derived struct the CLI
//! flattens, its defaults, and the choices left open to the data.

use super::fit::{check_data, split_sizes};
use crate::data::Dataset;
use crate::model::Storage;
use crate::target::{ModelCost, Target};
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

/// Flow family. The layer lists below are [`build_flow`](super::build_flow)'s; [`train`](super::train) also
/// puts a [`whitening_layer`](super::whitening_layer) right after the standardisation (all families
/// but cnf) unless [`TrainConfig::whiten`](super::TrainConfig::whiten) is off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ValSplit {
    /// The last rows of the file: the model is judged on readings later than
    /// those it learnt from, as the detector will be.
    Last,
    /// A seeded random sample of the rows (for files whose row order means
    /// nothing).
    Random,
}

/// How the kept student is chosen among those a device target trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Select {
    /// The lowest validation NLL.
    Best,
    /// The smallest (fewest bytes of weights) whose validation NLL is within
    /// one standard error of the best's, the error of the per-row
    /// differences on the held-out rows: the simpler model when those rows
    /// cannot tell the two apart.
    OneSe,
}

/// Training settings, written once: the flags of `flowmote train` (the CLI
/// flattens this struct), their defaults, and what the model file's
/// provenance stores. `None` fields are chosen from the data (see
/// [`train`](super::train) and [`default_size`](super::default_size)). [`TrainConfig::check`](super::TrainConfig::check)
/// validates them, once, before any training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default)]
pub struct TrainConfig {
    /// Flow family. The default, `auto`, chooses by validation NLL: `maf`
    /// first, then `nsf` (neural spline coupling; `nsf-ar` for one column)
    /// at the noise level `maf` chose. `maf` (masked autoregressive: fast
    /// scoring, slow sampling), `coupling` (RealNVP affine: fastest sampling,
    /// ≥ 2 columns), `nsf` / `nsf-ar` (rational-quadratic spline coupling /
    /// autoregressive: bounded, identity tails), `cnf` (continuous flow,
    /// flow matching).
    ///
    /// What the defaults do: every setting you leave open is chosen by the
    /// validation NLL, each candidate trained on the same split and seed —
    /// first the noise (--noise), then the family, then the size (one model
    /// with two more layers and twice the hidden units) — and keeps the
    /// candidates' validation-weighted mixture if that beats them all
    /// (--no-mixture). That is 4–7 trainings, so several times the time of
    /// one; give --flow, --noise, --layers and --hidden to train exactly one
    /// model. Every candidate's validation NLL is stored in the model file
    /// (provenance, `search`). On small files (a validation split under 100
    /// rows, i.e. fewer than 1 000 rows) all of this runs once per fold of a
    /// 5-fold cross-validation and the folds' models are averaged (--folds).
    #[arg(long, value_enum, default_value_t = FlowKind::Auto)]
    pub flow: FlowKind,
    /// Flow layers [default: 2 below 500 training rows, 3 below 2000, else 4,
    /// or two more if that wins on validation; 1 for cnf].
    #[arg(long)]
    pub layers: Option<usize>,
    /// Hidden units per conditioner layer [default: 16 below 500 training
    /// rows, else 32, or twice that if it wins on validation].
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Hidden layers per conditioner network.
    #[arg(long, default_value_t = 2)]
    pub depth: usize,
    /// Maximum epochs; early stopping usually ends sooner [default: 200, more
    /// for small files so that ~4000 optimiser steps are possible, ≤ 2000;
    /// fewer for large files, so that at most ~16 000 steps are, ≥ 20].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Mini-batch size (a short last batch is dropped each epoch).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Peak learning rate of Adam (linear warm-up, then cosine decay to 1 %).
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    /// Decoupled (AdamW) weight decay.
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Weight averaging (Polyak): validate and keep a running average of
    /// the weights instead of the last step's, which smooths out the noise
    /// of the mini-batch steps — on small files the difference between a
    /// lucky and an unlucky seed. After optimiser step t the average moves
    /// towards the weights by max(1 − β, 9/(t + 10)): early on it forgets
    /// fast, later it remembers about the last 1/(1 − β) steps. The average
    /// keeps improving for longer, so early stopping comes later: training
    /// takes longer (1.1–3× on the files measured; most on the smallest).
    /// 0 = off (the last step's weights).
    #[arg(long, value_name = "BETA", default_value_t = 0.999)]
    #[serde(default)]
    pub average: f64,
    /// Early stopping: stop after this many epochs without a better
    /// validation NLL (the best model is kept); 0 = run all epochs
    /// [default: 20, or as many epochs as ~400 optimiser steps for small files, ≤ 200].
    #[arg(long)]
    pub patience: Option<usize>,
    /// Seed of every random choice (split, initial weights, batches,
    /// dequantisation noise): the same seed and data give the same model.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fraction of the rows held out (see --val-split) for validation,
    /// early stopping and choosing the kept model. 0 = select on training
    /// NLL (and no cross-validation). With --folds K ≥ 2 each fold holds out
    /// 1/K of the rows instead.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Which rows to hold out (--val-fraction of them) for validation, early
    /// stopping and the choices above. `last` (default): the last rows of
    /// the file — sensor logs are time series, neighbouring rows are near
    /// copies, and a random split would reward memorising them; holding out
    /// the most recent rows judges the model on later readings, as the
    /// detector will be. `random`: a seeded random sample, for files whose
    /// row order means nothing.
    #[arg(long, value_enum, default_value_t = ValSplit::Last)]
    pub val_split: ValSplit,
    /// Cross-validation folds. With K ≥ 2 the rows (in --val-split order)
    /// are cut into K contiguous blocks (so a time series is validated on
    /// stretches of time); the whole search runs K times, each time
    /// validating on one block and training on the rest, and the model kept
    /// is the equal-weight mixture of the K results. Every row is validated
    /// on once, and the K models' different errors average out — what a
    /// 20-row validation split cannot do — at K times the training time,
    /// flash and cycles (--max-params and --max-macs are split over the
    /// folds). 1 = one split of --val-fraction [default: 5 when that split
    /// would hold fewer than 100 rows, else 1].
    #[arg(long)]
    pub folds: Option<usize>,
    // The field: dequantise integer-valued columns (the flag turns it off).
    /// Do not dequantise integer-valued columns. By default a column holding
    /// only integers gets uniform noise of one quantisation step (the gcd of
    /// its differences) in every epoch, so the density covers each value's
    /// cell instead of spiking on it; scores are still the density at the
    /// reading itself.
    #[arg(long = "no-dequantize", action = clap::ArgAction::SetFalse)]
    pub dequantize: bool,
    /// The part the model is for (`flowmote list-targets` lists them with
    /// their clocks, memories and measured costs). On a device target the
    /// kept model must fit its budget — by default 64 KB of weights and
    /// 2 ms per score at the part's clock (--max-flash, --max-ms,
    /// --max-params, --max-macs override): the search trains the best
    /// model it can find as a *teacher*, and when that is over the budget
    /// distils it into one small *student* flow that fits (see
    /// --teacher-samples). `host` trains without a budget
    /// [default: nrf52840, the firmware's board].
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,
    /// Most bytes of weights the kept model may put in flash (suffixes K
    /// and M: 64K = 65 536) [default: the target's budget, 64K on devices].
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub max_flash: Option<u64>,
    /// Most milliseconds one score may take on the target, estimated from
    /// its multiply-adds and activations at the part's clock with the
    /// target's measured instruction costs [default: 2 on devices].
    #[arg(long, value_name = "MS")]
    pub max_ms: Option<f64>,
    /// Most parameters the kept model may have (4 bytes of flash each as
    /// f32), on top of the target's budget.
    #[arg(long)]
    pub max_params: Option<usize>,
    /// Most multiply-adds per score the kept model may cost (`MACS` of the
    /// exported model; a mixture costs its members' sum), on top of the
    /// target's budget.
    #[arg(long)]
    pub max_macs: Option<usize>,
    /// Distillation: teacher samples per real training row in each epoch of
    /// a student's training (fresh from a pool of four epochs' worth, at
    /// most 8 192 per epoch); 0 trains the students on the real rows alone.
    /// Only on files too small for one validation split of 100 rows (under
    /// about 1 000 rows, where the search runs as a committee by default):
    /// on larger ones the students train on the real rows alone, which won
    /// on every large file measured.
    #[arg(long, value_name = "RATIO", default_value_t = 20.0)]
    pub teacher_samples: f64,
    /// Distillation: weight `w` of a broad Gaussian mixed into the kept
    /// model, `(1 − w)·model + w·broad` (the broad Gaussian: each column's
    /// training mean, four times its standard deviation, no correlations).
    /// A row far outside the training rows then scores no more than about
    /// `−ln w` nats above the broad Gaussian's score, whatever a flow's
    /// tails would give it (which a few held-out rows cannot check); every
    /// row pays at most `−ln(1 − w)`, 0.001 nats at the default. Added when
    /// it fits the budget; 0 leaves it out.
    #[arg(long, value_name = "W", default_value_t = DEFENSIVE_WEIGHT)]
    #[serde(default)]
    pub defensive_weight: f64,
    /// Distillation: weight of the regression term `(log q(x) − log p(x))²`
    /// that pulls the student's log-density q towards the teacher's p on
    /// the teacher's samples (0 = maximum likelihood on them alone).
    #[arg(long, value_name = "LAMBDA", default_value_t = 0.0)]
    #[serde(serialize_with = "crate::provenance::f32_wide")]
    pub distil_weight: f32,
    /// Distillation: how the students' conditioner weights are stored in
    /// flash: `f32` as trained; `i8`, one byte per weight and a scale per
    /// matrix row, so that a student about 3× larger fits the flash budget,
    /// at about 2 more instructions per multiply-add on a Cortex-M4F (70 on
    /// a Cortex-M0); `f16`, half the bytes at 11 more on a Cortex-M4F.
    /// Students are trained in f32, compressed, and judged and kept
    /// compressed (their validation NLL is what the device computes)
    /// [default: i8 where the whitening LU layer alone would take over a
    /// quarter of the flash budget (wide data: from 64 columns at 64
    /// KB), else f32].
    #[arg(long, value_enum, value_name = "STORAGE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub student_weights: Option<Storage>,
    /// Distillation: how the kept student is chosen among those trained
    /// (`best`: lowest validation NLL; `one-se`: the smallest within one
    /// standard error of it).
    #[arg(long, value_enum, default_value_t = Select::Best)]
    pub select: Select,
    // The field: start with the whitening layer (the flag leaves it out).
    /// Leave out the whitening layer: by default a trainable LU linear layer
    /// follows the standardisation, initialised to the full-covariance
    /// Gaussian fit of the training rows (d² multiply-adds on the device),
    /// so training starts from that Gaussian and only has to add what it
    /// misses.
    #[arg(long = "no-whiten", action = clap::ArgAction::SetFalse)]
    pub whiten: bool,
    /// Make the whitening layer lower-triangular: the same Gaussian fit at
    /// the start with d(d+1)/2 + d weights and d(d+1)/2 multiply-adds
    /// instead of the LU layer's d² + d and d², but column i is then
    /// mixed only with columns before it. Students on a device budget are
    /// also offered it (and no whitening layer) where the LU layer would
    /// take over half the flash or time budget.
    #[arg(long, conflicts_with = "whiten")]
    #[serde(default)]
    pub whiten_triangular: bool,
    // The field: allow a stacked mixture (the flag forbids it).
    /// Keep the search's best single flow, never a mixture. By default, when
    /// the search trained several candidates, their weighted mixture
    /// `Σ wₖ pₖ(x)` (weights fitted on the validation rows, members under 1 %
    /// dropped) is kept if its validation NLL, plus (members − 1)/rows nats
    /// for the fitted weights, beats the best single flow. A mixture is still
    /// an exact density, but the device evaluates every member: its flash
    /// and cycles are the members' sum.
    #[arg(long = "no-mixture", action = clap::ArgAction::SetFalse)]
    pub mixture: bool,
    // The field: try Gaussians beside a student (the flag forbids it).
    /// Distillation: keep the student alone. By default a Gaussian mixture
    /// (1–31 components, full, tied or diagonal covariances, chosen by BIC
    /// on the training rows within an eighth of the budget) is fitted too,
    /// students are also trained for the budget it leaves, and the mixture
    /// `w·student + (1 − w)·Gaussians` is kept if on the validation rows it
    /// beats its student by more than 1/rows nats and the full budget's
    /// best student alone.
    #[arg(long = "no-gaussians", action = clap::ArgAction::SetFalse)]
    pub gaussians: bool,
    // The field: try committees of students (the flag forbids it).
    /// Distillation on a small file (one whose teacher is a committee of
    /// folds): keep to single students. By default committees of students
    /// compete too — per student shape within 1/k of the budget, k flows
    /// of it, one per fold, averaged with equal weights — judged on the
    /// same held-out rows.
    #[arg(long = "no-committee-students", action = clap::ArgAction::SetFalse)]
    pub committee_students: bool,
    /// Gaussian noise added to the training rows, in standard deviations of
    /// each column: a regulariser that smooths the density, so readings a
    /// little outside the training data are not scored as impossible
    /// [default: chosen by validation among 0, 0.1, 0.2, 0.3, stopping at
    /// the first level that does worse].
    #[arg(long)]
    #[serde(serialize_with = "crate::provenance::opt_f32_wide")]
    pub noise: Option<f32>,
    /// Soft clamp of the affine log-scales (|log-scale| < clamp): smaller
    /// values give gentler tails, i.e. less extreme scores far from the data.
    #[arg(long, default_value_t = flowmote::coupling::DEFAULT_CLAMP)]
    #[serde(serialize_with = "crate::provenance::f32_wide")]
    pub clamp: f32,
    /// Solver steps of a continuous flow (RK4).
    #[arg(long, default_value_t = 8)]
    pub cnf_steps: usize,
    /// Spline bins K of `nsf` / `nsf-ar` layers.
    #[arg(long, default_value_t = 8)]
    pub bins: usize,
    /// Spline layers act on [−B, B] of the standardised data (identity
    /// outside, so far-out readings keep bounded, honest scores).
    #[arg(long, default_value_t = flowmote::spline::DEFAULT_TAIL_BOUND)]
    #[serde(serialize_with = "crate::provenance::f32_wide")]
    pub tail_bound: f32,
    /// Hold out block `k` of `n` (`Some((k, n))`) instead of `val_fraction`
    /// of the rows: the blocks, contiguous in the split's row order, cover
    /// every row once. Set by [`train`](super::train) for each fold; not a flag.
    #[arg(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fold: Option<(usize, usize)>,
    /// Global gradient-norm clip (per mini-batch mean gradient); not a flag.
    #[arg(skip = 5.0)]
    pub clip: f64,
    /// Scale of the conditioners' output layer at initialisation (small =
    /// near identity); not a flag.
    #[arg(skip = 0.1)]
    #[serde(serialize_with = "crate::provenance::f32_wide")]
    pub init_scale: f32,
}

impl TrainConfig {
    /// Whether the flow gets a whitening layer after its standardisation
    /// (the LU one, or the triangular one with `whiten_triangular`): asked
    /// for (`whiten`, the default) and not a continuous flow, which never
    /// has one.
    pub fn whitens(&self) -> bool {
        self.whiten && self.flow != FlowKind::Cnf
    }

    /// Validate the settings and the data (`check_data`), once, before any
    /// training; returns the number of folds to run (see [`default_folds`](super::default_folds)).
    pub fn check(&self, ds: &Dataset) -> Result<usize> {
        let (d, rows) = (ds.dim(), ds.n_normal());
        let folds = match (self.folds, self.fold) {
            (Some(k), _) => k,
            (None, Some(_)) => 1,
            (None, None) => default_folds(rows, self.val_fraction),
        };
        ensure!((1..=10).contains(&folds), "--folds must be 1 to 10, not {folds}");
        ensure!(
            folds == 1 || self.fold.is_none(),
            "a fold cannot be cross-validated again"
        );
        if let Some((k, n)) = self.fold {
            ensure!(k < n, "fold {k} of {n} does not exist");
        }
        ensure!(
            (0.0..0.9).contains(&self.val_fraction),
            "--val-fraction must be in [0, 0.9)"
        );
        ensure!(self.batch >= 1, "--batch must be at least 1");
        ensure!(self.epochs != Some(0), "--epochs must be at least 1");
        ensure!(self.lr.is_finite() && self.lr > 0.0, "--lr must be a positive number");
        ensure!(
            (0.0..1.0).contains(&self.average),
            "--average must be a number in [0, 1) (0 = off), not {}",
            self.average
        );
        Budget::of(self)?;
        ensure!(
            self.max_ms.is_none_or(|v| v.is_finite() && v > 0.0),
            "--max-ms must be a positive number of milliseconds"
        );
        ensure!(
            self.teacher_samples.is_finite() && (0.0..=1000.0).contains(&self.teacher_samples),
            "--teacher-samples must be between 0 and 1000"
        );
        ensure!(
            self.defensive_weight.is_finite() && (0.0..0.5).contains(&self.defensive_weight),
            "--defensive-weight must be at least 0 and below 0.5"
        );
        ensure!(
            self.distil_weight.is_finite() && self.distil_weight >= 0.0,
            "--distil-weight must be a number ≥ 0"
        );
        check_data(ds)?;
        ensure!(
            self.flow != FlowKind::Coupling || d >= 2,
            "a coupling flow needs at least 2 columns (the data has {d}): one half conditions the other — use --flow maf or --flow cnf for 1-D data"
        );
        if matches!(self.flow, FlowKind::Auto | FlowKind::Nsf | FlowKind::NsfAr) {
            ensure!(
                (1..=flowmote::spline::MAX_BINS).contains(&self.bins),
                "--bins must be 1..={}",
                flowmote::spline::MAX_BINS
            );
            ensure!(
                self.tail_bound.is_finite() && self.tail_bound > 0.0,
                "--tail-bound must be a positive number"
            );
        }
        ensure!(
            self.flow != FlowKind::Nsf || d >= 2,
            "a spline coupling flow needs at least 2 columns (the data has {d}) — use --flow nsf-ar for 1-D data"
        );
        Ok(folds)
    }
}

/// The defaults, as the flags give them.
#[derive(clap::Parser)]
struct Defaults {
    #[command(flatten)]
    config: TrainConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        <Defaults as clap::Parser>::parse_from(["flowmote"]).config
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

/// The budget of the kept model: the target's (flash and time per score)
/// and the flags that override or add to it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    /// The part the model is for.
    pub target: &'static Target,
    /// Most bytes of weights in flash.
    pub weight_bytes: Option<u64>,
    /// Most estimated milliseconds per score on the target.
    pub ms: Option<f64>,
    /// Most parameters ([`DynMixture::parameters`](crate::model::DynMixture::parameters)).
    pub params: Option<usize>,
    /// Most multiply-adds per score ([`DynMixture::macs`](crate::model::DynMixture::macs)).
    pub macs: Option<usize>,
}

impl Budget {
    /// The budget of a training configuration: the target's default budget
    /// with the flags' overrides. An unknown target is an error listing the
    /// known ones.
    pub fn of(cfg: &TrainConfig) -> Result<Self> {
        let target = match &cfg.target {
            Some(name) => crate::target::find(name)?,
            None => crate::target::default_target(),
        };
        let def = target.default_budget();
        Ok(Budget {
            target,
            weight_bytes: cfg.max_flash.or(def.max_weight_bytes),
            ms: if target.is_host() {
                None
            } else {
                cfg.max_ms.or(def.max_ms)
            },
            params: cfg.max_params,
            macs: cfg.max_macs,
        })
    }

    /// This budget with every limit scaled by `f` (a reserve's share).
    pub fn scaled(&self, f: f64) -> Budget {
        Budget {
            target: self.target,
            weight_bytes: self.weight_bytes.map(|b| (b as f64 * f) as u64),
            ms: self.ms.map(|m| m * f),
            params: self.params.map(|p| (p as f64 * f) as usize),
            macs: self.macs.map(|m| (m as f64 * f) as usize),
        }
    }

    /// What is left of this budget after `c` (`None` if nothing is).
    pub fn less(&self, c: &ModelCost) -> Option<Budget> {
        let ms = self.target.estimated_ms_of(c).unwrap_or(0.0);
        let left = Budget {
            target: self.target,
            weight_bytes: self.weight_bytes.map(|b| b.saturating_sub(c.weight_bytes)),
            ms: self.ms.map(|m| m - ms),
            params: self.params.map(|p| p.saturating_sub(c.parameters)),
            macs: self.macs.map(|m| m.saturating_sub(c.macs as usize)),
        };
        let empty = left.weight_bytes == Some(0)
            || left.ms.is_some_and(|m| m <= 0.0)
            || left.params == Some(0)
            || left.macs == Some(0);
        (!empty).then_some(left)
    }

    /// Whether nothing is bounded (the host without budget flags).
    pub fn is_unlimited(&self) -> bool {
        self.weight_bytes.is_none() && self.ms.is_none() && self.params.is_none() && self.macs.is_none()
    }

    /// Why a model of cost `c` does not fit, or `None` if it does.
    pub fn exceeded(&self, c: &ModelCost) -> Option<String> {
        if let Some(max) = self.weight_bytes {
            if c.weight_bytes > max {
                return Some(format!(
                    "{} of weights > {} ({})",
                    bytes_text(c.weight_bytes),
                    bytes_text(max),
                    self.source("--max-flash")
                ));
            }
        }
        if let (Some(max), Some(ms)) = (self.ms, self.target.estimated_ms_of(c)) {
            if ms > max {
                return Some(format!(
                    "{ms:.2} ms per score on {} > {max} ms ({})",
                    self.target.name,
                    self.source("--max-ms")
                ));
            }
        }
        match (self.params, self.macs) {
            (Some(max), _) if c.parameters > max => Some(format!("{} parameters > --max-params {max}", c.parameters)),
            (_, Some(max)) if c.macs as usize > max => Some(format!("{} multiply-adds > --max-macs {max}", c.macs)),
            _ => None,
        }
    }

    /// "the nrf52840 budget" or the flag that set a limit.
    fn source(&self, flag: &str) -> String {
        format!("{flag}, the {} budget", self.target.name)
    }

    /// What a kept model costs, for its summary: "40.0 KB, 9113
    /// multiply-adds, 1.95 ms on nrf52840" (no time on the host).
    pub fn cost_text(&self, c: &ModelCost) -> String {
        format!(
            "{:.1} KB, {} multiply-adds{}",
            c.weight_bytes as f64 / 1024.0,
            c.macs,
            self.target
                .estimated_ms_of(c)
                .map_or(String::new(), |ms| format!(", {ms:.2} ms on {}", self.target.name))
        )
    }

    /// One line for summaries: "nrf52840: ≤ 64.0 KB, ≤ 2 ms per score".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = self.weight_bytes {
            parts.push(format!("≤ {} of weights", bytes_text(b)));
        }
        if let Some(ms) = self.ms {
            parts.push(format!("≤ {ms} ms per score"));
        }
        if let Some(p) = self.params {
            parts.push(format!("≤ {p} parameters"));
        }
        if let Some(m) = self.macs {
            parts.push(format!("≤ {m} multiply-adds"));
        }
        if parts.is_empty() {
            parts.push("no budget".into());
        }
        format!("{}: {}", self.target.name, parts.join(", "))
    }
}

/// Parse a byte count with an optional K or M suffix (×1024, ×1024²).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_uppercase();
            let mul = match unit.as_str() {
                "K" | "KB" | "KIB" => 1024,
                "M" | "MB" | "MIB" => 1024 * 1024,
                "B" => 1,
                _ => return Err(format!("unknown unit {:?} (use a number of bytes, or K / M)", &t[i..])),
            };
            (&t[..i], mul)
        }
        None => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count (e.g. 65536, 64K, 1M)"))?;
    n.checked_mul(mul).ok_or_else(|| format!("{s:?} is too large"))
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

/// Noise levels (standard deviations per column) the search tries, in order.
pub const NOISE_LEVELS: [f32; 4] = [0.0, 0.1, 0.2, 0.3];

/// Folds [`default_folds`](super::default_folds) chooses when a validation split would hold
/// fewer rows than [`MIN_VALIDATION_ROWS`](super::MIN_VALIDATION_ROWS).
pub const SMALL_DATA_FOLDS: usize = 5;

/// Below this many validation rows one split is too small to choose and
/// stack by: [`default_folds`](super::default_folds) cross-validates instead.
pub const MIN_VALIDATION_ROWS: usize = 100;

/// Cross-validation folds when the user gives none: [`SMALL_DATA_FOLDS`](super::SMALL_DATA_FOLDS)
/// if `rows × val_fraction` (the rows one split would validate on) is below
/// [`MIN_VALIDATION_ROWS`](super::MIN_VALIDATION_ROWS), else 1 (one split); 1 when `val_fraction` is 0
/// (no validation asked for).
pub fn default_folds(rows: usize, val_fraction: f64) -> usize {
    let (_, n_val) = split_sizes(rows, val_fraction);
    if val_fraction > 0.0 && n_val < MIN_VALIDATION_ROWS {
        SMALL_DATA_FOLDS
    } else {
        1
    }
}

/// Default `--defensive-weight`.
pub const DEFENSIVE_WEIGHT: f64 = 1e-3;
/// How much broader than the training rows (standard deviations) the
/// defensive Gaussian is.
pub const DEFENSIVE_SPREAD: f32 = 4.0;

/// Bytes for a message: "64.0 KB", or "152 bytes" under 1 KB (where a
/// tenth of a KB would hide the difference to a small budget).
fn bytes_text(b: u64) -> String {
    if b < 1024 {
        format!("{b} bytes")
    } else {
        format!("{:.1} KB", b as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts_take_k_and_m() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("64K"), Ok(65536));
        assert_eq!(parse_bytes("64 kb"), Ok(65536));
        assert_eq!(parse_bytes("1M"), Ok(1 << 20));
        assert!(parse_bytes("12Q").unwrap_err().contains("unknown unit"));
        assert!(parse_bytes("K").is_err());
        assert!(parse_bytes("99999999999999999999M").is_err());
    }
}
