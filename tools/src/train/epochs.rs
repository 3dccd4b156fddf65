//! The epochs of one training: the schedule, each epoch's rows (real rows
//! dequantised and noised, a student's teacher samples), the optimiser step
//! and early stopping.

use super::build::{mask, normal, shuffle, uniform};
use super::config::{FlowKind, TrainConfig};
use super::fit::Standardisation;
use super::optim::{batch_grad, mean_nll, Adam, WeightAverage};
use crate::model::{DynFlow, Epoch};
use anyhow::{ensure, Result};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Most optimiser steps of a default schedule on a large file (where 200
/// epochs would take more): about what 200 epochs of 5 000 rows take.
const MAX_STEPS: usize = 16_000;
/// Fewest epochs of a default schedule, however large the file.
const MIN_EPOCHS: usize = 20;

/// Batch size, epochs, patience and the learning-rate schedule (linear
/// warm-up, then cosine decay to 1 %) for `n` training rows.
pub(super) struct Schedule {
    pub(super) batch: usize,
    pub(super) batches_per_epoch: usize,
    pub(super) epochs: usize,
    pub(super) patience: usize,
    pub(super) total_steps: usize,
    pub(super) warmup: usize,
    pub(super) lr: f64,
}

impl Schedule {
    /// The schedule for `n` rows per epoch: ~4 000 optimiser steps and a
    /// patience of ~400, at least `min_epochs` epochs (200 on real rows;
    /// fewer when teacher samples make every epoch long) but no more than
    /// [`MAX_STEPS`] steps unless that leaves fewer than [`MIN_EPOCHS`]
    /// (large files), and a patience of at least a tenth of `min_epochs`.
    pub(super) fn new(cfg: &TrainConfig, n: usize, min_epochs: usize) -> Self {
        let batch = cfg.batch.min(n);
        let batches_per_epoch = n / batch; // drop the short last batch
        let floor = min_epochs.min((MAX_STEPS / batches_per_epoch).max(MIN_EPOCHS));
        let epochs = cfg.epochs.unwrap_or((4000 / batches_per_epoch).clamp(floor, 2000));
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
pub(super) fn progress_bar(progress: bool, epochs: usize, prefix: String) -> indicatif::ProgressBar {
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
pub(super) struct Fitted {
    pub(super) best_val: f64,
    pub(super) best_epoch: usize,
    pub(super) flow: DynFlow,
    pub(super) history: Vec<Epoch>,
    pub(super) epochs_run: usize,
    pub(super) skipped: usize,
}

/// The epochs' inputs: the training rows, dequantised (`std.steps`) and
/// with Gaussian noise of `noise` standard deviations, redrawn every epoch.
pub(super) struct Rows<'a> {
    pub(super) train: &'a [Vec<f32>],
    /// Rows the kept epoch is chosen on.
    pub(super) sel: &'a [Vec<f32>],
    pub(super) std: &'a Standardisation,
    pub(super) noise: f32,
    /// Teacher samples added to every epoch (distillation).
    pub(super) teacher: Option<&'a TeacherPool>,
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
    /// Per layer, the gradient entries the MADE masks zero (computed once:
    /// the same zeros as [`mask`] on every step).
    masked: Vec<Vec<u32>>,
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
        let (loss, used, bad) = batch_grad(flow, batch, (targets, self.distil_weight), noise, &mut self.grads);
        if used == 0 {
            return (loss, used, bad, Outcome::Idle);
        }
        let scale = 1.0 / used as f32;
        for (g, m) in self.grads.iter_mut().zip(&self.masked) {
            for &k in m {
                g[k as usize] = 0.0;
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
/// diverges; keeps the best epoch's model. With `--average β` (the default)
/// what each epoch is judged on, and what is kept, is the running average
/// of the weights ([`WeightAverage`]), not the last step's.
pub(super) fn fit(
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
    // The entries of each layer's parameters that its MADE mask zeroes.
    let masked = flow
        .layers
        .iter()
        .map(|l| match l.mlp_shape(d) {
            Some(s) => {
                let mut ones = vec![1.0f32; l.params().len()];
                mask(s, l.made_heads(), &mut ones);
                (0..ones.len() as u32).filter(|&k| ones[k as usize] == 0.0).collect()
            }
            None => Vec::new(),
        })
        .collect();
    let mut opt = Step {
        cfg,
        masked,
        distil_weight: rows.teacher.map_or(0.0, |t| t.weight),
        adam: grads.iter().map(|g| Adam::new(g.len())).collect(),
        grads,
    };
    let is_cnf = cfg.flow == FlowKind::Cnf;
    let mut best = (init_val, 0usize, flow.clone());
    let mut avg = (cfg.average > 0.0).then(|| (flow.clone(), WeightAverage::new(cfg.average as f32)));
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
                Outcome::Stepped(v) => {
                    lr = v;
                    if let Some((a, w)) = avg.as_mut() {
                        w.update(a, &flow);
                    }
                }
                Outcome::Idle => {}
                Outcome::Diverged => {
                    diverged = true;
                    break;
                }
            }
        }
        let finite = flow.layers.iter().all(|l| l.params().iter().all(|v| v.is_finite()));
        // The model this epoch is judged on: the average, or the weights.
        let judged = avg.as_ref().map_or(&flow, |(a, _)| a);
        let (val_nll, val_bad) = if finite && !diverged {
            mean_nll(judged, rows.sel)
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
            if let Some((a, w)) = avg.as_mut() {
                a.clone_from(&best.2);
                w.reset();
            }
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
            best = (val_nll, epoch, judged.clone());
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

#[cfg(test)]
mod tests {
    use super::{Schedule, MAX_STEPS, MIN_EPOCHS};
    use crate::train::TrainConfig;

    #[test]
    fn large_files_get_at_most_max_steps_small_ones_are_unchanged() {
        let cfg = TrainConfig::default();
        let at = |n: usize| {
            let s = Schedule::new(&cfg, n, 200);
            (s.batches_per_epoch, s.epochs, s.patience, s.total_steps)
        };
        // A small file: ~4 000 steps, more than 200 epochs.
        assert_eq!(at(300), (4, 1000, 100, 4000));
        // daphnet_gait's size: 200 epochs, as before the cap.
        assert_eq!(at(5069), (79, 200, 20, 15_800));
        // Large files: the cap, but never fewer than MIN_EPOCHS epochs.
        let (bpe, epochs, patience, steps) = at(22_154);
        assert_eq!((bpe, epochs, patience), (346, MAX_STEPS / 346, 20));
        assert!(steps <= MAX_STEPS);
        assert_eq!(at(1_000_000).1, MIN_EPOCHS);
        // A student's long epochs (teacher samples) keep their own floor.
        assert_eq!(Schedule::new(&cfg, 10_000, 20).epochs, 25);
        // --epochs always wins.
        let pinned = TrainConfig {
            epochs: Some(300),
            ..TrainConfig::default()
        };
        assert_eq!(Schedule::new(&pinned, 22_154, 200).epochs, 300);
    }
}
