//! Training one flow on one split: the rows held out, the standardisation,
//! the epochs with early stopping.

use super::build::{build_flow, shuffle, triangular_whitening_layer, whitening_layer};
use super::config::{default_size, TrainConfig, ValSplit};
use super::epochs::{fit, progress_bar, Rows, Schedule, TeacherPool};
use super::optim::mean_nll;
use super::TrainSummary;
use crate::data::Dataset;
use crate::model::{Act, DynMixture, ModelFile, Net, Provenance, FORMAT, VERSION};
use crate::provenance::Settings;
use anyhow::{bail, ensure, Result};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use std::time::Instant;

/// Rows `lo..hi` of `total` that fold `k` of `n` holds out: `n` contiguous
/// blocks, as equal as whole rows allow, covering every row once (the last
/// block ends at the last row).
pub fn fold_block(total: usize, k: usize, n: usize) -> (usize, usize) {
    let edge = |i: usize| (total as u128 * i as u128 / n as u128) as usize;
    (edge(k), edge(k + 1))
}

/// Rows `lo..hi` of `total` usable rows (in the split's order) that `c`
/// validates on: its fold's block, or the last `val_fraction` of them.
pub(super) fn val_block(total: usize, c: &TrainConfig) -> (usize, usize) {
    match c.fold {
        Some((k, n)) => fold_block(total, k, n),
        None => (split_sizes(total, c.val_fraction).0, total),
    }
}

/// How many of `total` usable rows `c` trains on.
pub(super) fn train_rows(total: usize, c: &TrainConfig) -> usize {
    let (lo, hi) = val_block(total, c);
    total - (hi - lo)
}

/// Mean and variance (divided by the row count) of column `j` of `rows`.
pub(super) fn column_moments(rows: &[Vec<f32>], j: usize) -> (f64, f64) {
    let n = rows.len() as f64;
    let mean = rows.iter().map(|r| r[j] as f64).sum::<f64>() / n;
    let var = rows.iter().map(|r| (r[j] as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var)
}

/// The fewest usable rows training accepts.
pub const MIN_ROWS: usize = 10;

/// Training and validation row counts for `total` usable rows.
pub(super) fn split_sizes(total: usize, val_fraction: f64) -> (usize, usize) {
    let n_val = ((total as f64) * val_fraction).round() as usize;
    (total - n_val, n_val)
}

/// The data checks training needs, run once before any training: finite
/// values, and at least [`MIN_ROWS`] usable rows. Fewer rows than columns
/// are allowed: the whitening layer's covariance carries a ridge, the
/// search chooses the noise on held-out rows, and early stopping ends the
/// fit (ODDS arrhythmia, 231 rows × 258 columns, trains; BENCHMARKS.md).
pub(super) fn check_data(ds: &Dataset) -> Result<()> {
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
    let rows = ds.n_normal();
    let labelled_out = ds.len() - rows;
    ensure!(
        rows >= MIN_ROWS,
        "{}: {} usable rows{}; training needs at least {MIN_ROWS}",
        ds.path,
        rows,
        if labelled_out > 0 {
            format!(" ({labelled_out} labelled anomalous were left out)")
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Why `bad` rows of `rows` cannot be scored even by the starting model
/// (the standardisation and a Gaussian): names the file, the column whose
/// standardised value is furthest out, and the reason.
pub(super) fn unscorable_rows(
    ds: &Dataset,
    mean: &[f32],
    std: &[f32],
    rows: &[Vec<f32>],
    bad: usize,
    validation: bool,
) -> String {
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

/// The rows of one split: training rows (shuffled) and validation rows.
pub(super) struct Split {
    /// Training rows.
    pub train: Vec<Vec<f32>>,
    /// Validation rows.
    pub val: Vec<Vec<f32>>,
    /// Rows left out because they were labelled anomalous.
    pub labelled_out: usize,
}

/// The validation rows are rows `lo..hi` (see `val_block`) of the file's
/// order (`Last`) or of a seeded shuffle (`Random`); the training rows are
/// the rest, shuffled.
pub(super) fn split_rows(ds: &Dataset, cfg: &TrainConfig, rng: &mut Xoshiro256PlusPlus) -> Split {
    let (mut rows, val) = hold_out(ds, cfg, rng);
    if cfg.val_split == ValSplit::Last {
        shuffle(&mut rows, rng);
    }
    Split {
        train: rows,
        val,
        labelled_out: ds.len() - ds.n_normal(),
    }
}

/// The normal rows of `ds` without the validation rows `lo..hi` (see
/// `val_block`) of the file's order (`Last`) or of a seeded shuffle
/// (`Random`), and those validation rows; the rest keep that order.
pub(super) fn hold_out(
    ds: &Dataset,
    cfg: &TrainConfig,
    rng: &mut Xoshiro256PlusPlus,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut rows = ds.normal_rows();
    let (lo, hi) = val_block(rows.len(), cfg);
    if cfg.val_split == ValSplit::Random {
        shuffle(&mut rows, rng);
    }
    let after = rows.split_off(hi);
    let val = rows.split_off(lo);
    rows.extend(after);
    (rows, val)
}

/// What the training rows fix before training: each column's dequantisation
/// step (if dequantised) and the standardisation's mean and std.
pub(super) struct Standardisation {
    /// Each column's dequantisation step, if dequantised.
    pub(super) steps: Vec<Option<f32>>,
    /// Mean of each column.
    pub(super) mean: Vec<f32>,
    /// Standard deviation of each column.
    pub(super) std: Vec<f32>,
}

impl Standardisation {
    /// The dequantised columns of `features` (names) and their steps, as
    /// the summary and the model file record them.
    pub(super) fn dequantized(&self, features: &[String]) -> Vec<(String, f32)> {
        self.steps
            .iter()
            .zip(features)
            .filter_map(|(s, f)| s.map(|s| (f.clone(), s)))
            .collect()
    }
}

/// Dequantisation steps and mean and std of the (dequantised) training rows.
pub(super) fn standardisation(ds: &Dataset, train: &[Vec<f32>], cfg: &TrainConfig) -> Result<Standardisation> {
    let d = ds.dim();
    let tmp = Dataset {
        features: ds.features.clone(),
        rows: train.to_vec(),
        ..Default::default()
    };
    let mut steps: Vec<Option<f32>> = if cfg.dequantize {
        tmp.quantisation_steps()
    } else {
        vec![None; d]
    };
    let mut mean = vec![0.0f32; d];
    let mut std = vec![0.0f32; d];
    for j in 0..d {
        let (m, mut var) = column_moments(train, j);
        if var == 0.0 && steps[j].is_none() {
            // Constant on these rows but not in the file (the loader leaves
            // out columns constant in the file): a column that is almost
            // always one value, its rare others all in the validation
            // rows. A density over one value is a spike, so the column is
            // dequantised with the smallest gap between its values in the
            // file; a rare value then scores as the outlier it is.
            steps[j] = ds.smallest_gap(j);
        }
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
    Ok(Standardisation { steps, mean, std })
}

/// Train one flow on one split: `cfg` has passed [`TrainConfig::check`](super::TrainConfig::check)
/// (data included).
pub(super) fn train_one(ds: &Dataset, cfg: &TrainConfig, progress: bool) -> Result<(ModelFile, TrainSummary)> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
    let split = split_rows(ds, cfg, &mut rng);
    train_split(ds, cfg, split, None, &mut rng, progress)
}

/// Train one flow on the rows of `split` (and, for a student, the samples
/// of a `teacher`), drawing from `rng` after the split.
pub(super) fn train_split(
    ds: &Dataset,
    cfg: &TrainConfig,
    split: Split,
    teacher: Option<&TeacherPool>,
    rng: &mut Xoshiro256PlusPlus,
    progress: bool,
) -> Result<(ModelFile, TrainSummary)> {
    let start = Instant::now();
    let d = ds.dim();
    let Split {
        train: train_rows,
        val,
        labelled_out,
    } = split;
    let n = train_rows.len();
    let st = standardisation(ds, &train_rows, cfg)?;
    let noise = cfg.noise.unwrap_or(0.0);
    let (def_layers, def_hidden) = default_size(cfg.flow, n, d);
    let layers = cfg.layers.unwrap_or(def_layers);
    let hidden = cfg.hidden.unwrap_or(def_hidden);
    let net = Net {
        hidden,
        depth: cfg.depth,
        act: Act::Tanh,
    };
    let mut flow = build_flow(cfg.flow, &st.mean, &st.std, layers, net, cfg, rng)?;
    if cfg.whitens() {
        let ridge = (noise as f64).powi(2) + 1e-3;
        let layer = if cfg.whiten_triangular {
            triangular_whitening_layer(&train_rows, &st.mean, &st.std, ridge)?
        } else {
            whitening_layer(&train_rows, &st.mean, &st.std, ridge)?
        };
        flow.layers.insert(1, layer);
    }
    let parameters = flow.parameters();
    let sched = match teacher {
        Some(t) => Schedule::new(cfg, n + t.per_epoch, 20),
        None => Schedule::new(cfg, n, 200),
    };
    let bar = progress_bar(
        progress,
        sched.epochs,
        format!("{} {}×{} noise {}", cfg.flow.name(), layers, hidden, noise),
    );
    let rows = Rows {
        train: &train_rows,
        sel: if val.is_empty() { &train_rows } else { &val },
        std: &st,
        noise,
        teacher,
    };
    let (init_val, init_bad) = mean_nll(&flow, rows.sel);
    // Rows even the starting model (standardisation, whitening, near-identity
    // layers) cannot score are a property of the data, not of training: more
    // than 1 in 20 would otherwise count as a divergence at every epoch.
    if init_bad > 0 && init_bad * 20 > rows.sel.len() {
        bail!(unscorable_rows(
            ds,
            &st.mean,
            &st.std,
            rows.sel,
            init_bad,
            !val.is_empty()
        ));
    }
    let fitted = fit(flow, init_val, &rows, &sched, cfg, rng, &bar)?;
    let steps_used = st.dequantized(&ds.features);
    let Standardisation { mean, std, .. } = st;
    let best_val = fitted.best_val;
    let (batch, epochs, patience) = (sched.batch, sched.epochs, sched.patience);
    let summary = TrainSummary {
        train_rows: n,
        val_rows: val.len(),
        labelled_out,
        epochs_run: fitted.epochs_run,
        best_epoch: fitted.best_epoch,
        best_val_nll: best_val,
        dequantized: steps_used,
        skipped_rows: fitted.skipped,
        seconds: start.elapsed().as_secs_f64(),
        parameters,
        validation: val.clone(),
        teacher: None,
    };
    let settings = Settings {
        config: TrainConfig {
            layers: Some(layers),
            hidden: Some(hidden),
            batch,
            epochs: Some(epochs),
            patience: Some(patience),
            ..cfg.clone()
        },
        dequantized: summary.dequantized.clone(),
        ..Settings::default()
    };
    let model = ModelFile {
        format: FORMAT.into(),
        version: VERSION,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        kind: cfg.flow.name().into(),
        features: ds.features.clone(),
        features_pipeline: None,
        mean,
        std,
        model: DynMixture::single(fitted.flow),
        threshold: None,
        provenance: Provenance {
            data_file: ds.path.clone(),
            data_sha256: ds.sha256.clone(),
            train_rows: n,
            val_rows: val.len(),
            val_nll: best_val,
            settings,
            history: fitted.history,
        },
    };
    model.validate()?;
    Ok((model, summary))
}
