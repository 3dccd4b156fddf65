//! Training one flow on one split: the rows held out, the standardisation,
//! the epochs with early stopping.

use super::build::mask;
use super::build::{build_flow, normal, shuffle, uniform, whitening_layer};
use super::config::{default_size, FlowKind, TrainConfig, ValSplit};
use super::optim::{batch_grad, mean_nll, Adam};
use super::TrainSummary;
use crate::data::Dataset;
use crate::model::{Act, DynFlow, DynMixture, Epoch, ModelFile, Net, Provenance, FORMAT, VERSION};
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

/// Training and validation row counts for `total` usable rows.
pub(super) fn split_sizes(total: usize, val_fraction: f64) -> (usize, usize) {
    let n_val = ((total as f64) * val_fraction).round() as usize;
    (total - n_val, n_val)
}

/// The data checks training needs, run once before any training: finite
/// values, and at least 10 usable rows and 2 per column.
pub(super) fn check_data(ds: &Dataset) -> Result<()> {
    let d = ds.dim();
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
    let min_rows = 10.max(2 * d);
    ensure!(
        rows >= min_rows,
        "{}: {} usable rows{}; training needs at least {min_rows} (10, and 2 per column)",
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
    let mut rows = ds.normal_rows();
    let labelled_out = ds.len() - rows.len();
    let (lo, hi) = val_block(rows.len(), cfg);
    if cfg.val_split == ValSplit::Random {
        shuffle(&mut rows, rng);
    }
    let after = rows.split_off(hi);
    let val: Vec<Vec<f32>> = rows.split_off(lo);
    rows.extend(after);
    if cfg.val_split == ValSplit::Last {
        shuffle(&mut rows, rng);
    }
    Split {
        train: rows,
        val,
        labelled_out,
    }
}

/// What the training rows fix before training: each column's dequantisation
/// step (if dequantised) and the standardisation's mean and std.
struct Standardisation {
    steps: Vec<Option<f32>>,
    mean: Vec<f32>,
    std: Vec<f32>,
}

/// Dequantisation steps and mean and std of the (dequantised) training rows.
fn standardisation(ds: &Dataset, train: &[Vec<f32>], cfg: &TrainConfig) -> Result<Standardisation> {
    let d = ds.dim();
    let tmp = Dataset {
        features: ds.features.clone(),
        rows: train.to_vec(),
        ..Default::default()
    };
    let steps: Vec<Option<f32>> = if cfg.dequantize {
        tmp.quantisation_steps()
    } else {
        vec![None; d]
    };
    let mut mean = vec![0.0f32; d];
    let mut std = vec![0.0f32; d];
    for j in 0..d {
        let (m, mut var) = column_moments(train, j);
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

/// Batch size, epochs, patience and the learning-rate schedule (linear
/// warm-up, then cosine decay to 1 %) for `n` training rows.
struct Schedule {
    batch: usize,
    batches_per_epoch: usize,
    epochs: usize,
    patience: usize,
    total_steps: usize,
    warmup: usize,
    lr: f64,
}

impl Schedule {
    /// The schedule for `n` rows per epoch: ~4 000 optimiser steps and a
    /// patience of ~400, at least `min_epochs` epochs (200 on real rows;
    /// fewer when teacher samples make every epoch long) and a patience of
    /// at least a tenth of that.
    fn new(cfg: &TrainConfig, n: usize, min_epochs: usize) -> Self {
        let batch = cfg.batch.min(n);
        let batches_per_epoch = n / batch; // drop the short last batch
        let epochs = cfg.epochs.unwrap_or((4000 / batches_per_epoch).clamp(min_epochs, 2000));
        let patience = cfg
            .patience
            .unwrap_or((400 / batches_per_epoch).clamp(min_epochs / 10, 200));
        let total_steps = (batches_per_epoch * epochs).max(1);
        let warmup = (total_steps / 50).clamp(1, 200);
        Schedule {
            batch,
            batches_per_epoch,
            epochs,
            patience,
            total_steps,
            warmup,
            lr: cfg.lr,
        }
    }

    /// The learning rate of optimiser step `step`.
    fn lr_at(&self, step: usize) -> f32 {
        let (lr, warmup) = (self.lr, self.warmup);
        let v = if step < warmup {
            lr * (step + 1) as f64 / warmup as f64
        } else {
            let p = (step - warmup) as f64 / (self.total_steps - warmup).max(1) as f64;
            0.01 * lr + 0.99 * lr * 0.5 * (1.0 + (std::f64::consts::PI * p.min(1.0)).cos())
        };
        v as f32
    }
}

/// The progress bar of one training (hidden without `progress`).
fn progress_bar(progress: bool, epochs: usize, prefix: String) -> indicatif::ProgressBar {
    if !progress {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(epochs as u64);
    b.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} epochs {elapsed} {msg}")
            .unwrap()
            .progress_chars("=> "),
    );
    b.set_prefix(prefix);
    b
}

/// The outcome of [`fit`]: the best epoch's model and the history.
struct Fitted {
    best_val: f64,
    best_epoch: usize,
    flow: DynFlow,
    history: Vec<Epoch>,
    epochs_run: usize,
    skipped: usize,
}

/// The epochs' inputs: the training rows, dequantised (`std.steps`) and
/// with Gaussian noise of `noise` standard deviations, redrawn every epoch.
struct Rows<'a> {
    train: &'a [Vec<f32>],
    /// Rows the kept epoch is chosen on.
    sel: &'a [Vec<f32>],
    std: &'a Standardisation,
    noise: f32,
    /// Teacher samples added to every epoch (distillation).
    teacher: Option<&'a TeacherPool>,
}

/// Samples of a teacher model for a student's training: each epoch takes
/// the next `per_epoch` of the pool (cyclically), so an epoch sees samples
/// the last few did not.
pub(super) struct TeacherPool {
    /// The samples, in data units.
    pub rows: Vec<Vec<f32>>,
    /// The teacher's `−log p` of each sample.
    pub nll: Vec<f32>,
    /// Samples per epoch.
    pub per_epoch: usize,
    /// Weight λ of the regression term `λ (log q − log p)²`.
    pub weight: f32,
}

/// Fill `epoch_rows` with epoch `epoch`'s rows in a fresh shuffled `order`:
/// the training rows dequantised and noised (`targets` NaN), and the
/// teacher's samples of this epoch (`targets` the teacher's `−log p`).
fn epoch_rows(
    rows: &Rows,
    epoch: usize,
    order: &mut [usize],
    epoch_rows: &mut [Vec<f32>],
    targets: &mut [f32],
    rng: &mut Xoshiro256PlusPlus,
) {
    shuffle(order, rng);
    let n = rows.train.len();
    for (k, &i) in order.iter().enumerate() {
        let r = &mut epoch_rows[k];
        if i >= n {
            let t = rows.teacher.expect("teacher rows only with a teacher");
            let p = (epoch * t.per_epoch + (i - n)) % t.rows.len();
            r.copy_from_slice(&t.rows[p]);
            targets[k] = t.nll[p];
            continue;
        }
        targets[k] = f32::NAN;
        r.copy_from_slice(&rows.train[i]);
        for (j, (v, s)) in r.iter_mut().zip(&rows.std.steps).enumerate() {
            if let Some(s) = s {
                *v += (uniform(rng) - 0.5) * s;
            }
            if rows.noise > 0.0 {
                *v += rows.noise * rows.std.std[j] * normal(rng);
            }
        }
    }
}

/// What one mini-batch step did.
enum Outcome {
    /// No row could be used: no step.
    Idle,
    /// A step at this learning rate.
    Stepped(f32),
    /// The gradient was not finite: no step, the epoch ends.
    Diverged,
}

/// The optimiser: one mini-batch step is gradient, MADE masks, global-norm
/// clip, Adam.
struct Step<'a> {
    cfg: &'a TrainConfig,
    grads: Vec<Vec<f32>>,
    adam: Vec<Adam>,
    /// λ of the distillation regression term.
    distil_weight: f32,
}

impl Step<'_> {
    fn reset(&mut self) {
        self.adam = self.grads.iter().map(|g| Adam::new(g.len())).collect();
    }

    /// One step on `batch` (with `noise` for flow matching) at learning rate
    /// `lr()` (called only if the step is taken). Returns the loss sum, the
    /// rows used and skipped, and what happened.
    fn take(
        &mut self,
        flow: &mut DynFlow,
        batch: &[Vec<f32>],
        targets: &[f32],
        noise: &[(Vec<f32>, f32)],
        lr: impl FnOnce() -> f32,
    ) -> (f64, usize, usize, Outcome) {
        let d = flow.dim;
        let (loss, used, bad) = batch_grad(flow, batch, (targets, self.distil_weight), noise, &mut self.grads);
        if used == 0 {
            return (loss, used, bad, Outcome::Idle);
        }
        let scale = 1.0 / used as f32;
        for (i, l) in flow.layers.iter().enumerate() {
            if let Some(s) = l.mlp_shape(d) {
                mask(s, l.made_heads(), &mut self.grads[i]);
            }
        }
        let norm = self
            .grads
            .iter()
            .flatten()
            .map(|g| (*g as f64 * scale as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let clip = if norm.is_finite() && norm > self.cfg.clip {
            (self.cfg.clip / norm) as f32
        } else {
            1.0
        };
        if !norm.is_finite() {
            return (loss, used, bad, Outcome::Diverged);
        }
        let lr = lr();
        for (i, l) in flow.layers.iter_mut().enumerate() {
            if let Some(p) = l.params_mut() {
                self.adam[i].step(p, &self.grads[i], scale * clip, lr, self.cfg.weight_decay as f32);
            }
        }
        (loss, used, bad, Outcome::Stepped(lr))
    }
}

/// Mini-batch Adam over the epochs with early stopping on `rows.sel`,
/// restarting from the best model (fresh optimiser state) when training
/// diverges; keeps the best epoch's model.
fn fit(
    mut flow: DynFlow,
    init_val: f64,
    rows: &Rows,
    sched: &Schedule,
    cfg: &TrainConfig,
    rng: &mut Xoshiro256PlusPlus,
    bar: &indicatif::ProgressBar,
) -> Result<Fitted> {
    let d = flow.dim;
    let n = rows.train.len();
    let grads: Vec<Vec<f32>> = flow.layers.iter().map(|l| vec![0.0; l.params().len()]).collect();
    let mut opt = Step {
        cfg,
        distil_weight: rows.teacher.map_or(0.0, |t| t.weight),
        adam: grads.iter().map(|g| Adam::new(g.len())).collect(),
        grads,
    };
    let is_cnf = cfg.flow == FlowKind::Cnf;
    let mut best = (init_val, 0usize, flow.clone());
    let mut history = Vec::new();
    let (mut step, mut skipped, mut since_best, mut epochs_run, mut blowups) = (0usize, 0usize, 0usize, 0, 0);
    let per_epoch = rows.teacher.map_or(0, |t| t.per_epoch);
    let mut order: Vec<usize> = (0..n + per_epoch).collect();
    let mut ep_rows: Vec<Vec<f32>> = vec![vec![0.0; d]; n + per_epoch];
    let mut targets = vec![f32::NAN; n + per_epoch];
    let mut epoch = 0usize;
    while epoch < sched.epochs {
        epoch += 1;
        epoch_rows(rows, epoch - 1, &mut order, &mut ep_rows, &mut targets, rng);
        let (mut tot, mut cnt, mut lr, mut diverged) = (0.0f64, 0usize, 0.0, false);
        for b in 0..sched.batches_per_epoch {
            let rows_b = &ep_rows[b * sched.batch..(b + 1) * sched.batch];
            let targets_b = &targets[b * sched.batch..(b + 1) * sched.batch];
            let noise: Vec<(Vec<f32>, f32)> = if is_cnf {
                rows_b
                    .iter()
                    .map(|_| {
                        let mut z = vec![0.0; d];
                        flowmote::normal::fill_standard_normal(rng, &mut z);
                        (z, uniform(rng))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let (loss, used, bad, outcome) = opt.take(&mut flow, rows_b, targets_b, &noise, || {
                step += 1;
                sched.lr_at(step - 1)
            });
            skipped += bad;
            if used == 0 {
                continue;
            }
            tot += loss;
            cnt += used;
            match outcome {
                Outcome::Stepped(v) => lr = v,
                Outcome::Idle => {}
                Outcome::Diverged => {
                    diverged = true;
                    break;
                }
            }
        }
        let finite = flow.layers.iter().all(|l| l.params().iter().all(|v| v.is_finite()));
        let (val_nll, val_bad) = if finite && !diverged {
            mean_nll(&flow, rows.sel)
        } else {
            (f64::NAN, 0)
        };
        if !finite || diverged || !val_nll.is_finite() || val_bad > 0 && val_bad * 20 > rows.sel.len() {
            // Diverged: go back to the best model with fresh optimiser state.
            blowups += 1;
            ensure!(
                blowups <= 5,
                "training diverged 5 times (non-finite loss); try a smaller --lr"
            );
            flow = best.2.clone();
            opt.reset();
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
        if sched.patience > 0 && since_best >= sched.patience {
            break;
        }
    }
    bar.finish_and_clear();
    let (best_val, best_epoch, flow) = best;
    Ok(Fitted {
        best_val,
        best_epoch,
        flow,
        history,
        epochs_run,
        skipped,
    })
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
    if cfg.whiten && cfg.flow != FlowKind::Cnf {
        let ridge = (noise as f64).powi(2) + 1e-3;
        flow.layers
            .insert(1, whitening_layer(&train_rows, &st.mean, &st.std, ridge)?);
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
    let Standardisation { steps, mean, std } = st;
    let best_val = fitted.best_val;
    let (batch, epochs, patience) = (sched.batch, sched.epochs, sched.patience);
    let steps_used: Vec<(String, f32)> = steps
        .iter()
        .zip(&ds.features)
        .filter_map(|(s, f)| s.map(|s| (f.clone(), s)))
        .collect();
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
