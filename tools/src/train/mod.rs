//! Maximum-likelihood training of a [`DynFlow`](crate::model::DynFlow) (and flow matching for
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

mod baseline;
mod build;
mod committee;
mod config;
mod defence;
mod distil;
mod epochs;
mod fit;
mod gaussians;
mod optim;
mod search;
mod stack;

pub use baseline::Gaussian;
pub use build::{
    build_flow, init_params, random_permutation, shuffle, standardize_layer, triangular_whitening_layer,
    whitening_layer,
};
pub use config::{
    auto_candidates, default_folds, default_size, Budget, FlowKind, Select, TrainConfig, ValSplit, MAX_DEPTH,
    MAX_HIDDEN, MAX_LAYERS, MAX_WEIGHTS, MIN_VALIDATION_ROWS, NOISE_LEVELS, SMALL_DATA_FOLDS,
};
pub use fit::{fold_block, MIN_ROWS};
pub use optim::{mean_nll, Adam, WeightAverage};
pub use stack::{stack, Stacked, MIN_MIXTURE_WEIGHT};

use crate::data::Dataset;
use crate::model::{DynMixture, ModelFile};
use anyhow::Result;
use committee::committee;
use search::search;
use serde::Serialize;
use std::time::Instant;

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
    /// The teacher a device budget distilled the kept student from.
    #[serde(skip)]
    pub teacher: Option<Box<ModelFile>>,
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
    let (mut model, summary) = train_search(ds, cfg, progress)?;
    model.provenance.settings.dropped_columns = ds
        .dropped
        .iter()
        .map(|d| crate::provenance::DroppedColumn {
            name: d.name.clone(),
            reason: d.reason.clone(),
        })
        .collect();
    Ok((model, summary))
}

/// [`train`] without the bookkeeping of the file's columns: for a device
/// budget the one model asked for (every setting pinned and within the
/// budget) or [`distil`](distil::distil)'s, with the broad Gaussian
/// ([`defence`]); else [`train_unbounded`].
fn train_search(ds: &Dataset, cfg: &TrainConfig, progress: bool) -> Result<(ModelFile, TrainSummary)> {
    let folds = cfg.check(ds)?;
    let budget = Budget::of(cfg)?;
    if budget.is_unlimited() {
        return train_unbounded(ds, cfg, progress);
    }
    let start = Instant::now();
    let pinned = cfg.flow != FlowKind::Auto && cfg.layers.is_some() && cfg.hidden.is_some() && cfg.noise.is_some();
    let fits = pinned && {
        let cost = build::candidate_cost(ds, cfg, crate::model::Storage::F32)?.repeated(folds);
        budget.exceeded(&cost).is_none()
    };
    let (mut m, mut s) = if fits {
        // Trained as it is on all the rows.
        let (mut m, s) = train_unbounded(ds, cfg, progress)?;
        m.provenance.settings.config.target = Some(budget.target.name.into());
        (m, s)
    } else {
        distil::distil(ds, cfg, budget, progress, start)?
    };
    defence::Defence {
        w: cfg.defensive_weight,
        budget: &budget,
    }
    .keep(&mut m, &mut s);
    s.seconds = start.elapsed().as_secs_f64();
    Ok((m, s))
}

/// The search (and on small data the committee) without a budget: the
/// model `--target host` keeps.
fn train_unbounded(ds: &Dataset, cfg: &TrainConfig, progress: bool) -> Result<(ModelFile, TrainSummary)> {
    train_committee(ds, cfg, progress, None)
}

/// [`train_unbounded`]; with `budget` (a device target's teacher), a
/// committee stops after its first fold when that fold's model alone is
/// over the budget: the committee holds it, so it could not fit either, and
/// the teacher is only a source of samples and a reference, which one
/// fold's model serves at a fraction of the time.
fn train_committee(
    ds: &Dataset,
    cfg: &TrainConfig,
    progress: bool,
    budget: Option<&Budget>,
) -> Result<(ModelFile, TrainSummary)> {
    let folds = cfg.check(ds)?;
    if folds == 1 {
        let c = TrainConfig {
            folds: Some(1),
            ..cfg.clone()
        };
        // A large file's teacher is not grown past the budget; a small
        // file's teacher also makes the samples its students learn from.
        let grow_limit = budget.filter(|_| !distil::is_small(ds, cfg));
        return search(ds, &c, progress, DynMixture::MAX_MEMBERS, grow_limit);
    }
    let start = Instant::now();
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
            ..cfg.clone()
        };
        let part = search(ds, &c, progress, DynMixture::MAX_MEMBERS / folds, None)?;
        let over = budget.and_then(|b| b.exceeded(&crate::target::ModelCost::of(&part.0.model)));
        if let (0, Some(why)) = (k, over) {
            if progress {
                eprintln!("fold 1's model alone is over the budget ({why}): the teacher is that model, the other folds are not trained");
            }
            let (m, mut s) = part;
            s.seconds = start.elapsed().as_secs_f64();
            return Ok((m, s));
        }
        parts.push(part);
    }
    Ok(committee(ds, parts, start))
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
