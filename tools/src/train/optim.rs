//! One optimiser step's ingredients: Adam(W), the mini-batch gradient
//! (maximum likelihood, or flow matching for a continuous flow) and the
//! mean NLL of a set of rows.

use crate::model::{DynFlow, View};
use flowmote::block::BLOCK;
use flowmote::mlp::MlpGrad;
use rayon::prelude::*;

/// AdamW (β₁ = 0.9, β₂ = 0.999, ε = 1e-8) on one flat parameter vector.
#[derive(Clone, Debug)]
pub struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl Adam {
    /// State for `n` parameters.
    pub fn new(n: usize) -> Self {
        Adam {
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    /// `p ← p − lr·(m̂/(√v̂ + ε) + wd·p)` for the gradient `g·scale`.
    pub fn step(&mut self, p: &mut [f32], g: &[f32], scale: f32, lr: f32, wd: f32) {
        const B1: f32 = 0.9;
        const B2: f32 = 0.999;
        self.t += 1;
        let c1 = 1.0 - B1.powi(self.t);
        let c2 = 1.0 - B2.powi(self.t);
        // Iterators, not indices: no bounds checks, so the loop vectorises
        // (the same operations on every element).
        let n = p.len();
        for ((pi, gi), (mi, vi)) in p
            .iter_mut()
            .zip(&g[..n])
            .zip(self.m[..n].iter_mut().zip(self.v[..n].iter_mut()))
        {
            let gi = gi * scale;
            *mi = B1 * *mi + (1.0 - B1) * gi;
            *vi = B2 * *vi + (1.0 - B2) * gi * gi;
            *pi -= lr * ((*mi / c1) / ((*vi / c2).sqrt() + 1e-8) + wd * *pi);
        }
    }
}

/// Polyak averaging of a flow's weights (`--average β`): after optimiser
/// step `t` (counted from 1) the average moves towards the weights by
/// `γₜ = max(1 − β, 9/(t + 10))`, so early steps are soon forgotten and
/// later the average spans about the last `1/(1 − β)` steps.
#[derive(Clone, Debug)]
pub struct WeightAverage {
    beta: f32,
    t: usize,
}

impl WeightAverage {
    /// An average with memory `beta` (in `(0, 1)`), before any step.
    pub fn new(beta: f32) -> Self {
        WeightAverage { beta, t: 0 }
    }

    /// The rate `γₜ` of step `t` (≥ 1).
    pub fn rate(&self, t: usize) -> f32 {
        (1.0 - self.beta).max(9.0 / (t as f32 + 10.0))
    }

    /// Start over (after a restart from `avg`'s weights).
    pub fn reset(&mut self) {
        self.t = 0;
    }

    /// One step: `avg ← avg + γₜ (flow − avg)`, layer by layer (the two
    /// flows have the same layers).
    pub fn update(&mut self, avg: &mut DynFlow, flow: &DynFlow) {
        self.t += 1;
        let g = self.rate(self.t);
        for (la, l) in avg.layers.iter_mut().zip(&flow.layers) {
            if let Some(pa) = la.params_mut() {
                for (a, p) in pa.iter_mut().zip(l.params()) {
                    *a += g * (*p - *a);
                }
            }
        }
    }
}

/// Rows per parallel gradient chunk (fixed, so results do not depend on the
/// number of threads).
const CHUNK: usize = 16;

/// Mean NLL (nats/row) of `rows` and the number of rows that could not be
/// scored (non-finite log p), in parallel.
pub fn mean_nll(flow: &DynFlow, rows: &[Vec<f32>]) -> (f64, usize) {
    // Summed per chunk of 64 rows, then over chunks: the order the numbers
    // have always been added in.
    let lps = flow.log_probs(rows);
    let parts: Vec<(f64, usize, usize)> = lps
        .chunks(64)
        .map(|ch| {
            let (mut s, mut n, mut bad) = (0.0f64, 0usize, 0usize);
            for lp in ch {
                match lp {
                    Ok(lp) => {
                        s -= *lp as f64;
                        n += 1;
                    }
                    Err(_) => bad += 1,
                }
            }
            (s, n, bad)
        })
        .collect();
    let s: f64 = parts.iter().map(|p| p.0).sum();
    let n: usize = parts.iter().map(|p| p.1).sum();
    let bad: usize = parts.iter().map(|p| p.2).sum();
    (if n > 0 { s / n as f64 } else { f64::NAN }, bad)
}

/// Sum of gradients of one mini-batch; returns (loss sum, rows used).
///
/// `targets.0` (empty, or one per row) holds a teacher's `−log p` of the
/// teacher samples among the rows (NaN for real rows): their loss gains the
/// regression term `λ (log q − log p)²`, `λ = targets.1`, whose gradient is
/// the NLL's times `2λ (nll − target)` (rows are weighted in the backward
/// pass). The loss returned is the NLL alone.
pub(super) fn batch_grad(
    flow: &DynFlow,
    batch: &[Vec<f32>],
    targets: (&[f32], f32),
    noise: &[(Vec<f32>, f32)],
    grads: &mut [Vec<f32>],
) -> (f64, usize, usize) {
    let parts: Vec<(Vec<Vec<f32>>, f64, usize, usize)> = batch
        .par_chunks(CHUNK)
        .enumerate()
        .map(|(ci, ch)| {
            let mut g: Vec<Vec<f32>> = flow.layers.iter().map(|l| vec![0.0; l.params().len()]).collect();
            let (mut loss, mut used, mut bad) = (0.0f64, 0usize, 0usize);
            let Ok(view) = flow.view() else {
                return (g, loss, used, ch.len());
            };
            let mut ws = view.workspace();
            let fm = view.layers.iter().enumerate().find_map(|(i, v)| match v {
                View::FlowMatching(c) => Some((i, c)),
                View::Likelihood(_) | View::Fixed(_) => None,
            });
            if let Some((ci_layer, v)) = fm {
                // Flow matching on the rows as the continuous flow sees them
                // (after the standardisation).
                let mut scratch = vec![0.0; v.train_scratch_len()];
                let mut gr = MlpGrad::from_flat(v.net.shape, &mut g[ci_layer]).expect("shape");
                for (k, x) in ch.iter().enumerate() {
                    let mut xs = x.clone();
                    for l in &view.layers[..ci_layer] {
                        l.bijector().forward_flat(&mut xs, &mut ws.scratch);
                    }
                    let (z, t) = &noise[ci * CHUNK + k];
                    let l = v.flow_matching_backward(&xs, z, *t, &mut gr, &mut scratch);
                    if l.is_finite() {
                        loss += l as f64;
                        used += 1;
                    } else {
                        bad += 1;
                    }
                }
            } else {
                // Blocks of rows through the blocked passes: per row, and
                // in the gradients, bit for bit the single-row
                // `nll_backward(_weighted)` in row order.
                let (tg, lambda) = targets;
                let mut nll = [Ok(0.0f32); BLOCK];
                for (bi, blk) in ch.chunks(BLOCK).enumerate() {
                    let first = ci * CHUNK + bi * BLOCK;
                    let weight = |r: usize, nll: f32| {
                        let t = tg.get(first + r).copied().unwrap_or(f32::NAN);
                        (lambda > 0.0 && t.is_finite()).then_some(1.0 + 2.0 * lambda * (nll - t))
                    };
                    view.nll_backward_block(blk, &weight, &mut g, &mut ws, &mut nll);
                    for r in &nll[..blk.len()] {
                        match r {
                            Ok(nll) => {
                                loss += *nll as f64;
                                used += 1;
                            }
                            Err(_) => bad += 1,
                        }
                    }
                }
            }
            (g, loss, used, bad)
        })
        .collect();
    for g in grads.iter_mut() {
        g.fill(0.0);
    }
    let (mut loss, mut used, mut bad) = (0.0, 0, 0);
    for (g, l, u, b) in &parts {
        for (acc, gi) in grads.iter_mut().zip(g) {
            for (a, v) in acc.iter_mut().zip(gi) {
                *a += v;
            }
        }
        loss += l;
        used += u;
        bad += b;
    }
    (loss, used, bad)
}
