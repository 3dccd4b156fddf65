//! The cross-validation committee: the equal-weight mixture of the folds'
//! models.

use super::fit::column_moments;
use super::TrainSummary;
use crate::data::Dataset;
use crate::model::{DynMixture, ModelFile};
use crate::provenance::{Candidate, FoldResult};
use std::time::Instant;

/// The equal-weight mixture of the folds' models (see [`train`](super::train)).
pub(super) fn committee(
    ds: &Dataset,
    parts: Vec<(ModelFile, TrainSummary)>,
    start: Instant,
) -> (ModelFile, TrainSummary) {
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
            let t = match &st.members {
                Some(a) => a[j].clone(),
                None => Candidate {
                    flow: m.kind.clone(),
                    noise: st.config.noise,
                    layers: st.config.layers.unwrap_or(0),
                    hidden: st.config.hidden.unwrap_or(0),
                    parameters: f.parameters(),
                    macs: f.macs(),
                    val_nll: Some(s.best_val_nll),
                    ..Candidate::default()
                },
            };
            members.push(Candidate {
                fold: Some(i + 1),
                weight: Some(weight),
                ..t
            });
        }
        folds.push(FoldResult {
            fold: i + 1,
            kind: m.kind.clone(),
            val_rows: s.val_rows,
            val_nll: s.best_val_nll,
            search: m.provenance.settings.search.clone(),
        });
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
    st.search = None;
    st.config.fold = None;
    st.config.folds = Some(k);
    st.fold_results = Some(folds);
    st.members = Some(members);
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
