//! Stacking: the validation-weighted mixture of a search's candidates.

use crate::model::{DynFlow, DynMixture, ModelFile};

/// The outcome of [`stack`](super::stack).
#[derive(Debug)]
pub struct Stacked {
    /// The mixture.
    pub model: DynMixture,
    /// `(candidate index, weight)` of every member, in model order.
    pub members: Vec<(usize, f64)>,
    /// Validation NLL of the mixture as stored (f32 weights), nats/row.
    pub val_nll: f64,
}

/// Weights below this are dropped from a stacked mixture (the rest refitted).
pub const MIN_MIXTURE_WEIGHT: f64 = 0.01;

/// The weights `w` (summing to 1) of the mixture `Σⱼ wⱼ pⱼ` that maximise
/// the likelihood of rows on which member `j` has the log-densities
/// `members[j]` (each as long as the first): EM from equal weights, until no
/// weight moves by more than 1e-9 (at most 1 000 rounds). A weight can reach
/// 0; empty for no members or no rows.
pub fn mixture_weights(members: &[&[f64]]) -> Vec<f64> {
    let k = members.len();
    let n = members.first().map_or(0, |m| m.len());
    if k == 0 || n == 0 {
        return Vec::new();
    }
    let mut w = vec![1.0 / k as f64; k];
    let mut r = vec![0.0; k];
    for _ in 0..1000 {
        let mut next = vec![0.0; k];
        for row in 0..n {
            let mut top = f64::NEG_INFINITY;
            for (j, lp) in members.iter().enumerate() {
                r[j] = w[j].ln() + lp.get(row).copied().unwrap_or(f64::NEG_INFINITY);
                top = top.max(r[j]);
            }
            let tot: f64 = r.iter().map(|v| (v - top).exp()).sum();
            for j in 0..k {
                next[j] += (r[j] - top).exp() / tot / n as f64;
            }
        }
        let change = next.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        w = next;
        if change < 1e-9 {
            break;
        }
    }
    w
}

/// Stacking (Smyth & Wolpert, 1999): the mixture `Σₖ wₖ pₖ` of the trained
/// `candidates` (`(index, model)`, each a single flow) whose weights maximise
/// the likelihood of the `validation` rows (EM on the members' fixed
/// densities). Members below [`MIN_MIXTURE_WEIGHT`](super::MIN_MIXTURE_WEIGHT), members that cannot
/// score every validation row, and — smallest weight first — members that
/// would take the mixture over `max_members` flows are
/// dropped, the rest refitted. Returns the mixture only if it has at least two members and
/// its validation NLL plus an AIC-style penalty for the fitted weights,
/// `(k − 1)/n` nats per row, is below `best_single` (the search's winner).
pub fn stack(
    candidates: &[(usize, ModelFile)],
    validation: &[Vec<f32>],
    best_single: f64,
    max_members: usize,
) -> Option<Stacked> {
    let n = validation.len();
    if n == 0 || !best_single.is_finite() {
        return None;
    }
    // Members' log-densities on the validation rows; drop any that fail.
    let mut pool: Vec<(usize, &DynFlow, Vec<f64>)> = candidates
        .iter()
        .filter_map(|(i, m)| {
            let f = m.model.as_single()?;
            let lps: Option<Vec<f64>> = f
                .log_probs(validation)
                .into_iter()
                .map(|lp| lp.ok().map(f64::from))
                .collect();
            Some((*i, f, lps?))
        })
        .collect();
    let fit = |pool: &[(usize, &DynFlow, Vec<f64>)]| -> Vec<f64> {
        let members: Vec<&[f64]> = pool.iter().map(|(_, _, lp)| lp.as_slice()).collect();
        mixture_weights(&members)
    };
    let mut w = fit(&pool);
    loop {
        let (j, wmin) = w.iter().copied().enumerate().min_by(|a, b| a.1.total_cmp(&b.1))?;
        if pool.len() > 1 && (wmin < MIN_MIXTURE_WEIGHT || pool.len() > max_members) {
            pool.remove(j);
            w = fit(&pool);
        } else {
            break;
        }
    }
    if pool.len() < 2 {
        return None;
    }
    let total: f64 = w.iter().sum();
    let model = DynMixture {
        log_weights: w.iter().map(|v| (v / total).ln() as f32).collect(),
        flows: pool.iter().map(|(_, f, _)| (*f).clone()).collect(),
    };
    // The validation NLL the stored (f32) mixture gives, as the device
    // computes it: the members' log-densities (each exactly an f32) combined
    // with the f32 weights.
    let mut terms = vec![0.0f32; pool.len()];
    let mut sum = 0.0f64;
    for row in 0..n {
        for (t, (_, _, lp)) in terms.iter_mut().zip(&pool) {
            *t = lp[row] as f32;
        }
        sum += flowmote::mixture::combine(&model.log_weights, &terms).map_or(f64::NEG_INFINITY, f64::from);
    }
    let val_nll = -sum / n as f64;
    let penalty = (pool.len() - 1) as f64 / n as f64;
    (val_nll.is_finite() && val_nll + penalty < best_single).then(|| Stacked {
        members: pool.iter().zip(&w).map(|((i, _, _), w)| (*i, w / total)).collect(),
        model,
        val_nll,
    })
}
