//! One search on one split: noise, family and size chosen by validation
//! NLL, then stacking.

use super::build::candidate_size;
use super::config::{auto_candidates, default_size, Budget, FlowKind, TrainConfig, NOISE_LEVELS};
use super::fit::train_one;
use super::stack::stack;
use super::TrainSummary;
use crate::data::Dataset;
use crate::model::ModelFile;
use anyhow::{bail, Result};
use std::time::Instant;

/// One search on one split (see [`train`]); a stacked mixture holds at most
/// `max_members` flows.
pub(super) fn search(
    ds: &Dataset,
    cfg: &TrainConfig,
    progress: bool,
    max_members: usize,
) -> Result<(ModelFile, TrainSummary)> {
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
