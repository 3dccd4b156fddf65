//! The broad Gaussian in every model kept for a device
//! (`--defensive-weight`): `(1 − w)·model + w·broad`, `broad` the Gaussian
//! of the model's own standardisation with [`DEFENSIVE_SPREAD`] times its
//! standard deviations (the "defensive" component of importance sampling).
//! It bounds the score of a row far from the training rows by about
//! `−ln w` nats above the broad Gaussian's own, and costs every row at most
//! `−ln(1 − w)`.
//!
//! The choices a device training makes on its held-out rows (which
//! student, whether Gaussians beside or alone) judge every candidate as it
//! would be kept, with the broad Gaussian in place ([`Defence::per_row`]):
//! a small file's held-out NLL is dominated by its few rows in a flow's
//! tails, which the broad Gaussian bounds.

use super::build::standardize_layer;
use super::config::{Budget, DEFENSIVE_SPREAD};
use super::TrainSummary;
use crate::model::{DynFlow, DynMixture, ModelFile, Weights};
use crate::target::ModelCost;

/// The broad Gaussian at weight `w`, within `budget`.
#[derive(Clone, Copy)]
pub(super) struct Defence<'a> {
    /// `--defensive-weight` (0: none).
    pub w: f64,
    /// The budget the model with it must fit.
    pub budget: &'a Budget,
}

impl Defence<'_> {
    /// `model` (standardisation `mean`, `std`) with the broad Gaussian, or
    /// `None` where it is left out: `w` is 0, the model has the most
    /// members a mixture may, or the result would not fit the budget.
    pub fn apply(&self, model: &DynMixture, mean: &[f32], std: &[f32]) -> Option<DynMixture> {
        if self.w <= 0.0 || model.flows.len() >= DynMixture::MAX_MEMBERS {
            return None;
        }
        let spread: Vec<f32> = std.iter().map(|v| v * DEFENSIVE_SPREAD).collect();
        let broad = DynFlow {
            dim: mean.len(),
            layers: vec![standardize_layer(mean, &spread)],
            weights: Weights::F32,
        }
        .compressed(model.storage())
        .ok()?;
        let w = self.w;
        let with = model.blend((-w).ln_1p(), &DynMixture::single(broad), w.ln());
        (with.validate().is_ok() && self.budget.exceeded(&ModelCost::of(&with)).is_none()).then_some(with)
    }

    /// `−log p` of each of `rows` under `model` as it would be kept (with
    /// the broad Gaussian where [`apply`](Self::apply) adds it); `None` if
    /// a row cannot be scored.
    pub fn per_row(&self, model: &DynMixture, mean: &[f32], std: &[f32], rows: &[Vec<f32>]) -> Option<Vec<f64>> {
        let with = self.apply(model, mean, std);
        per_row_nll(with.as_ref().unwrap_or(model), rows)
    }

    /// The mean of [`per_row`](Self::per_row) (+∞ if a row cannot be
    /// scored, NaN without rows).
    pub fn nll(&self, model: &DynMixture, mean: &[f32], std: &[f32], rows: &[Vec<f32>]) -> f64 {
        mean_of(self.per_row(model, mean, std, rows).as_deref())
    }

    /// Mix the broad Gaussian into the kept model `m` (summary `s`) where
    /// [`apply`](Self::apply) adds it: its validation NLL judged again on
    /// the summary's held-out rows, the weight recorded in the provenance
    /// (`broad_weight`) and a distillation's `kept` line. A committee's
    /// summary has no held-out rows (its NLL is each fold's model on its
    /// own fold): that figure stays, which the broad Gaussian can raise by
    /// at most `−ln(1 − w)`.
    pub fn keep(&self, m: &mut ModelFile, s: &mut TrainSummary) {
        let Some(model) = self.apply(&m.model, &m.mean, &m.std) else {
            return;
        };
        let v = if s.validation.is_empty() {
            f64::NAN
        } else {
            super::distil::mean_nll_of(&model.log_probs(&s.validation))
        };
        let cost = ModelCost::of(&model);
        m.model = model;
        if v.is_finite() {
            s.best_val_nll = v;
            m.provenance.val_nll = v;
        }
        let w = self.w;
        m.provenance.settings.broad_weight = w;
        if let Some(d) = m.provenance.settings.distillation.as_mut() {
            d.kept.push_str(&format!(
                "; with a broad Gaussian at weight {w} ({}): validation NLL {v:.3}",
                self.budget.cost_text(&cost)
            ));
        }
    }
}

/// `−log p` of each of `rows` under `model` as it is; `None` if a row
/// cannot be scored.
pub(super) fn per_row_nll(model: &DynMixture, rows: &[Vec<f32>]) -> Option<Vec<f64>> {
    model
        .log_probs(rows)
        .into_iter()
        .map(|lp| lp.ok().filter(|v| v.is_finite()).map(|v| -f64::from(v)))
        .collect()
}

/// Mean of per-row NLLs: +∞ for `None` (a row that cannot be scored), NaN
/// for no rows.
pub(super) fn mean_of(per_row: Option<&[f64]>) -> f64 {
    match per_row {
        None => f64::INFINITY,
        Some([]) => f64::NAN,
        Some(r) => r.iter().sum::<f64>() / r.len() as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::TrainConfig;

    /// `−log N(x; mean, (k·std)²)`, diagonal, in f64.
    fn gaussian_nll(x: &[f32], mean: &[f32], std: &[f32], k: f64) -> f64 {
        x.iter()
            .zip(mean.iter().zip(std))
            .map(|(x, (m, s))| {
                let sd = k * *s as f64;
                let z = (*x as f64 - *m as f64) / sd;
                0.5 * z * z + sd.ln() + 0.5 * (2.0 * std::f64::consts::PI).ln()
            })
            .sum()
    }

    /// The model as kept is `(1 − w)·model + w·broad`, scored row by row
    /// against an independent log-sum-exp; it is left out at `w` = 0, at the
    /// most members a mixture may have, and where the budget has no room.
    #[test]
    fn the_broad_gaussian_mixes_in_at_its_weight_within_the_budget() {
        let (mean, std) = ([1.0f32, -2.0], [0.5f32, 3.0]);
        let flow = DynFlow {
            dim: 2,
            layers: vec![standardize_layer(&mean, &std)],
            weights: Weights::F32,
        };
        let model = DynMixture::single(flow.clone());
        let budget = Budget::of(&TrainConfig::default()).unwrap();
        let w = 0.01;
        let d = Defence { w, budget: &budget };
        let rows = vec![vec![1.0, -2.0], vec![2.0, 4.0], vec![30.0, 40.0]];
        let got = d.per_row(&model, &mean, &std, &rows).unwrap();
        for (x, g) in rows.iter().zip(&got) {
            let (a, b) = (
                (1.0 - w).ln() - gaussian_nll(x, &mean, &std, 1.0),
                w.ln() - gaussian_nll(x, &mean, &std, DEFENSIVE_SPREAD as f64),
            );
            let hi = a.max(b);
            let want = -(hi + ((a - hi).exp() + (b - hi).exp()).ln());
            assert!((g - want).abs() < 1e-4 * want.abs().max(1.0), "{x:?}: {g} vs {want}");
        }
        assert!((d.nll(&model, &mean, &std, &rows) - got.iter().sum::<f64>() / 3.0).abs() < 1e-12);
        // Left out: no weight, a full mixture, no room in the budget.
        assert!(Defence {
            w: 0.0,
            budget: &budget
        }
        .apply(&model, &mean, &std)
        .is_none());
        let n = DynMixture::MAX_MEMBERS;
        let full = DynMixture {
            log_weights: vec![-(n as f32).ln(); n],
            flows: vec![flow; n],
        };
        assert!(d.apply(&full, &mean, &std).is_none());
        let tight = Budget::of(&TrainConfig {
            max_flash: Some(ModelCost::of(&model).weight_bytes),
            ..TrainConfig::default()
        })
        .unwrap();
        assert!(Defence { w, budget: &tight }.apply(&model, &mean, &std).is_none());
        let with = d.apply(&model, &mean, &std).unwrap();
        assert_eq!(with.flows.len(), 2);
        assert!(ModelCost::of(&with).weight_bytes > ModelCost::of(&model).weight_bytes);
    }
}
