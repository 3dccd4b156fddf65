//! Training one flow on one split: the rows held out, the standardisation,
//! the epochs with early stopping.

use super::build::mask;
use super::build::{build_flow, normal, shuffle, uniform, whitening_layer};
use super::config::{default_size, FlowKind, TrainConfig, ValSplit};
use super::optim::{batch_grad, mean_nll, Adam};
use super::TrainSummary;
use crate::data::Dataset;
use crate::model::{Act, DynMixture, Epoch, ModelFile, Net, Provenance, FORMAT, VERSION};
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

/// Train one flow on one split: `cfg` has passed [`TrainConfig::check`] and
/// the data [`check_data`].
pub(super) fn train_one(ds: &Dataset, cfg: &TrainConfig, progress: bool) -> Result<(ModelFile, TrainSummary)> {
    let start = Instant::now();
    let d = ds.dim();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
    let mut rows = ds.normal_rows();
    let labelled_out = ds.len() - rows.len();
    let (lo, hi) = val_block(rows.len(), cfg);
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
        mean[j] = m as f32;
        std[j] = var.sqrt() as f32;
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

    let (init_val, _) = mean_nll(&flow, sel_rows);
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
        shuffle(&mut order, &mut rng);
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
                    mask(s, l.made_heads(), &mut grads[i]);
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
                if let Some(p) = l.params_mut() {
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
