//! Golden vectors: deterministic inputs with their log-densities, and the
//! first samples of a seeded generator.

use super::{GOLDEN_SEED, INPUT_SAMPLE_SEED};
use crate::model::{DynMixture, ModelFile};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;

/// Deterministic test inputs with finite `log p` and their log-densities:
/// the standardisation mean, mean ± 1 and ± 2.5 standard deviations (signs
/// alternating over features), then model samples (seed 7) — at most 8.
pub fn golden_inputs(model: &ModelFile) -> (Vec<Vec<f32>>, Vec<f32>) {
    let flow = &model.model;
    let d = flow.dim();
    let mut ws = flow.workspace();
    let mut cands: Vec<Vec<f32>> = Vec::new();
    let alt = |i: usize| if i.is_multiple_of(2) { 1.0f32 } else { -1.0 };
    for k in [0.0f32, 1.0, -1.0, 2.5] {
        cands.push((0..d).map(|i| model.mean[i] + k * alt(i) * model.std[i]).collect());
    }
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(INPUT_SAMPLE_SEED);
    for _ in 0..16 {
        if let Ok((x, _)) = flow.sample_with_log_prob(&mut rng, &mut ws) {
            cands.push(x);
        }
    }
    let mut xs = Vec::new();
    let mut lps = Vec::new();
    for x in cands {
        if xs.len() == 8 {
            break;
        }
        if let Ok(lp) = flow.log_prob(&x, &mut ws) {
            xs.push(x);
            lps.push(lp);
        }
    }
    (xs, lps)
}

/// The first samples with `Xoshiro128PlusPlus::seed_from_u64(GOLDEN_SEED)`,
/// stopping before the first that fails (the device would get the same error).
pub fn golden_samples(model: &DynMixture, n: usize) -> Vec<Vec<f32>> {
    let mut ws = model.workspace();
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(GOLDEN_SEED);
    let mut out = Vec::new();
    while out.len() < n {
        match model.sample(&mut rng, &mut ws) {
            Ok(x) => out.push(x),
            Err(_) => break,
        }
    }
    out
}
