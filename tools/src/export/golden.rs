//! Golden vectors: deterministic inputs with their log-densities, and the
//! first samples of a seeded generator.

use super::{GOLDEN_SEED, INPUT_SAMPLE_SEED};
use crate::model::{DynMixture, ModelFile};
use rand_core::{Rng, SeedableRng};
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

/// Windows of raw readings the feature pipeline turns into feature vectors
/// on the device: `readings` (`WINDOW + 3·HOP` rows of `CHANNELS`, four
/// windows in the order `Pipeline::push` completes them), the `features`
/// the host's `window_features` computes from each window, and their
/// `log_probs` (NaN where the model cannot score a window: the device must
/// fail there too). Empty without a pipeline.
pub struct GoldenRaw {
    /// Raw readings, one `Vec` of `CHANNELS` values per reading.
    pub readings: Vec<Vec<f32>>,
    /// Features of each complete window.
    pub features: Vec<Vec<f32>>,
    /// `log p` of each window's features.
    pub log_probs: Vec<f32>,
}

/// Deterministic raw readings for the pipeline's golden check (seeded with
/// `GOLDEN_SEED`), plausible for the model: window `w` of channel `c` is
/// centred on the training mean of the channel's `mean` feature (0 without
/// one) moved by `0, +½, −½, +1` of its standard deviation (signs
/// alternating over channels, as `GOLDEN_INPUTS`), and its readings spread
/// uniformly with the training mean of the channel's `std` (else
/// `ptp / √12`, else the spread of its means, else 1). Readings are rounded
/// to the grid of `2⁻⁶` of that spread's power of two, so small-unit
/// sensors keep their precision and integer sensors get integers.
pub fn golden_raw(model: &ModelFile) -> GoldenRaw {
    use flowmote::features::{window_features, Stat};
    let empty = GoldenRaw {
        readings: Vec::new(),
        features: Vec::new(),
        log_probs: Vec::new(),
    };
    let Some(spec) = &model.features_pipeline else {
        return empty;
    };
    let (c, k, n, hop) = (spec.channels.len(), spec.stats.len(), spec.window, spec.hop.max(1));
    let feature = |ch: usize, want: fn(&Stat) -> bool| spec.stats.iter().position(want).map(|j| ch * k + j);
    let finite_or = |v: f32, d: f32| if v.is_finite() && v > 0.0 { v } else { d };
    let mut rng = Xoshiro128PlusPlus::seed_from_u64(GOLDEN_SEED);
    let windows = 4usize;
    let rows = n + (windows - 1) * hop;
    let mut readings = vec![vec![0.0f32; c]; rows];
    for ch in 0..c {
        let mean_f = feature(ch, |s| matches!(s, Stat::Mean));
        let (center, between) = mean_f.map_or((0.0, 1.0), |f| (model.mean[f], finite_or(model.std[f], 1.0)));
        let spread = match (
            feature(ch, |s| matches!(s, Stat::Std)),
            feature(ch, |s| matches!(s, Stat::Ptp)),
        ) {
            (Some(f), _) => finite_or(model.mean[f], between),
            (None, Some(f)) => finite_or(model.mean[f] / 12f32.sqrt(), between),
            _ => between,
        };
        let grid = 2f32.powi(spread.log2().floor() as i32 - 6);
        let sign = if ch % 2 == 0 { 1.0f32 } else { -1.0 };
        for (i, r) in readings.iter_mut().enumerate() {
            // The window this reading starts in (readings of overlapping
            // windows belong to the earliest).
            let w = (i / hop).min(windows - 1);
            let shift = [0.0f32, 0.5, -0.5, 1.0][w] * sign * between;
            let u = (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
            let v = center + shift + u * 3f32.sqrt() * spread;
            r[ch] = (v / grid).round() * grid;
        }
    }
    if readings.iter().flatten().any(|v| !v.is_finite()) {
        return empty;
    }
    let mut ws = model.model.workspace();
    let mut features = Vec::new();
    let mut log_probs = Vec::new();
    for w in 0..windows {
        let flat: Vec<f32> = readings[w * hop..w * hop + n].iter().flatten().copied().collect();
        let mut f = vec![0.0f32; c * k];
        if window_features(&flat, c, &spec.stats, &mut f).is_err() {
            return empty;
        }
        log_probs.push(model.model.log_prob(&f, &mut ws).unwrap_or(f32::NAN));
        features.push(f);
    }
    GoldenRaw {
        readings,
        features,
        log_probs,
    }
}
