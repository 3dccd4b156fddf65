//! The `flowmote` commands: argument structs (clap) and their `run`
//! functions, one module per command. `src/main.rs` only parses and
//! dispatches, so tests can call these directly. Every command's items are
//! re-exported here (`cli::TrainArgs`, `cli::run_train`, …); this file holds
//! what several commands share.

pub mod adapt;
pub mod calibrate;
pub mod demo;
pub mod eval;
pub mod monitor;
pub mod record;
pub mod sample;
pub mod score;
pub mod train;

pub use adapt::{run_adapt, AdaptArgs, AdaptReport};
pub use calibrate::{run_calibrate, CalibrateArgs};
pub use demo::{run_demo, DemoArgs, DEMO_NOISE};
pub use eval::{run_eval, EvalArgs};
pub use monitor::{run_monitor, MonitorArgs, MonitorSummary};
pub use record::{run_record, RecordArgs, RecordReport};
pub use sample::{draw_samples, run_sample, SampleArgs};
pub use score::{run_score, ScoreArgs};
pub use train::{run_train, TrainArgs};

use crate::data::{self, Dataset};
use crate::model::{DynMixture, Layer, ModelFile};
use anyhow::Result;
use std::path::Path;

/// Read `path` for scoring with `model`: its feature columns by name, or,
/// when the model has a feature pipeline, the raw channel columns windowed
/// by it ([`FeatureSpec::apply`](crate::features::FeatureSpec::apply)).
pub fn load_scoring(path: &Path, model: &ModelFile, label_column: Option<&str>) -> Result<Dataset> {
    match &model.features_pipeline {
        None => data::load_for_model(path, &model.features, label_column),
        Some(spec) => spec.apply(&data::load_for_model(path, &spec.channels, label_column)?),
    }
}

/// What a trained model is, from its provenance: `maf (4 layers, hidden
/// 32×2)`, `a mixture of 3 flows (maf 4×32 noise 0.1 × 0.40, …)`, or
/// `a 5-fold committee of 22 flows (maf ×18, nsf ×4)`.
pub fn describe_model(model: &ModelFile) -> String {
    let st = &model.provenance.settings;
    let broad = if st.broad_weight > 0.0 {
        format!(" and a broad Gaussian at weight {}", st.broad_weight)
    } else {
        String::new()
    };
    format!("{}{broad}", describe_kept(model))
}

/// [`describe_model`] without the broad Gaussian.
fn describe_kept(model: &ModelFile) -> String {
    let st = &model.provenance.settings;
    let k = st.folds();
    if let (true, Some(members)) = (k > 1, &st.members) {
        let kinds: Vec<&str> = members.iter().map(|m| m.flow.as_str()).collect();
        let mut names = kinds.clone();
        names.sort_unstable();
        names.dedup();
        return format!(
            "a {k}-fold committee of {} flows ({})",
            members.len(),
            names
                .iter()
                .map(|n| format!("{n} ×{}", kinds.iter().filter(|k| *k == n).count()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if model.kind == crate::model::GAUSSIANS_KIND {
        return describe_gaussians(&model.model);
    }
    let n = |v: Option<usize>| v.map_or("?".to_string(), |v| v.to_string());
    match &st.members {
        Some(members) => format!(
            "a mixture of {} flows ({})",
            members.len(),
            members
                .iter()
                .map(|m| format!(
                    "{} {}×{} noise {} × {:.2}",
                    m.flow,
                    m.layers,
                    m.hidden,
                    m.noise.map_or("?".into(), |v| format!("{:.1}", v as f64)),
                    m.weight.unwrap_or(f64::NAN)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => format!(
            "{} ({} layers, hidden {}×{}){}",
            model.kind,
            n(st.config.layers),
            n(st.config.hidden),
            st.config.depth,
            match st.distillation.as_ref().and_then(|d| d.gaussians.as_ref()) {
                Some(g) if g.kept => format!(
                    " with {} Gaussian(s) ({} covariance) beside it at weight {:.2}",
                    g.components, g.covariance, g.weight
                ),
                _ => String::new(),
            }
        ),
    }
}

/// "k Gaussian(s) (… covariance)" for a model of Gaussians alone, read off
/// its layers: a component's second layer is an ActNorm (diagonal) or a
/// triangular layer, the same for every component (tied) or not (full).
fn describe_gaussians(m: &DynMixture) -> String {
    // (A one-layer flow is the broad Gaussian, described apart.)
    let second: Vec<&Layer> = m.flows.iter().filter_map(|f| f.layers.get(1)).collect();
    // The factor without its bias (the last `d` parameters).
    fn factor(l: &Layer, d: usize) -> Option<&[f32]> {
        match l {
            Layer::TriLinear { params } => params.len().checked_sub(d).map(|n| &params[..n]),
            _ => None,
        }
    }
    let covariance = if second.iter().all(|l| matches!(l, Layer::ActNorm { .. })) {
        "diagonal"
    } else if second.len() > 1
        && second
            .windows(2)
            .all(|w| factor(w[0], m.dim()).is_some() && factor(w[0], m.dim()) == factor(w[1], m.dim()))
    {
        "tied"
    } else {
        "full"
    };
    format!("{} Gaussian(s) ({covariance} covariance)", second.len())
}

/// `−log p` of every row (`None` where the row cannot be scored) and the
/// reason for each failure.
pub fn score_rows(model: &ModelFile, ds: &Dataset) -> Vec<std::result::Result<f64, String>> {
    model
        .model
        .log_probs(&ds.rows)
        .into_iter()
        .zip(&ds.row_errors)
        .map(|(lp, e)| match (e, lp) {
            (Some(e), _) => Err(e.clone()),
            (None, Ok(lp)) => Ok(-(lp as f64)),
            (None, Err(e)) => Err(format!("cannot be scored: {e:?}")),
        })
        .collect()
}

/// Write rows as CSV (header = `features`).
pub fn rows_csv(features: &[String], rows: &[Vec<f32>]) -> String {
    let mut s = features.join(",");
    s.push('\n');
    for r in rows {
        let line: Vec<String> = r.iter().map(|v| v.to_string()).collect();
        s.push_str(&line.join(","));
        s.push('\n');
    }
    s
}
