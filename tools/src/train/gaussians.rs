//! A Gaussian mixture beside a distilled student.
//!
//! A student small enough for a microcontroller fits the bulk of the rows
//! well and their clusters less so; a few Gaussians cost a few hundred bytes
//! each. The kept model may therefore be the mixture
//! `w·q(x) + (1 − w)·Σₖ πₖ N(x; μₖ, Σₖ)` of the student `q` and a Gaussian
//! mixture — still an exact density, and still a mixture of flows the core
//! evaluates and exports: each Gaussian is the flow `[standardise, T·x + b]`
//! with `T` the inverse of its covariance's Cholesky factor (full or tied
//! covariance, [`Layer::TriLinear`]) or `[standardise, e^s ⊙ x + b]`
//! (diagonal, a trainable [`Layer::ActNorm`]).
//!
//! The Gaussians are fitted by EM (k-means++ start) on the student's
//! training rows, standardised; their number (1 to 31) and covariance kind
//! are chosen by BIC on those rows, among the mixtures that fit a reserve of
//! an eighth of the budget (students sized for the rest compete with them,
//! the full budget's students without). The held-out rows only fit `w` and
//! decide whether the Gaussians are kept at all. On a lattice column (one that is dequantised) no Gaussian is
//! narrower than `step / √(2π)`, whose peak density is that of the
//! dequantisation's uniform cell: a spike on a repeated value is not
//! rewarded at the points themselves.

use super::baseline::{cholesky, inverse_lower};
use super::build::standardize_layer;
use crate::model::{DynFlow, DynMixture, Layer, Storage, Weights};
use crate::target::ModelCost;
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;

/// How the components' covariances are shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Covariance {
    /// Each component its own full covariance.
    Full,
    /// One full covariance shared by all components.
    Tied,
    /// Each component its own diagonal covariance.
    Diag,
}

impl Covariance {
    /// Its name (`full`, `tied`, `diagonal`).
    pub fn name(self) -> &'static str {
        match self {
            Covariance::Full => "full",
            Covariance::Tied => "tied",
            Covariance::Diag => "diagonal",
        }
    }
}

/// Numbers of components tried.
const COMPONENTS: [usize; 10] = [1, 2, 3, 4, 6, 8, 12, 16, 24, 31];
/// Ridge added to every covariance's diagonal, in standard deviations²
/// (scikit-learn's `reg_covar`, at the value its users pick on standardised
/// data).
const RIDGE: f64 = 1e-3;
/// Most EM iterations (scikit-learn's default, as is the tolerance).
const MAX_ITER: usize = 100;
/// EM stops when the mean log-likelihood per row improves by less.
const TOL: f64 = 1e-3;
/// Lloyd iterations of the k-means start.
const KMEANS_ITER: usize = 10;

/// A fitted Gaussian mixture on standardised rows.
#[derive(Clone, Debug)]
pub struct Gmm {
    /// Covariance shape.
    pub kind: Covariance,
    /// Mixing weights (sum 1).
    pub weights: Vec<f64>,
    /// Means, standardised units.
    pub means: Vec<Vec<f64>>,
    /// Lower Cholesky factors (`d × d`, row-major) of the covariances.
    pub chols: Vec<Vec<f64>>,
    /// Bayesian information criterion on those rows, `−2·log_lik + p·ln n`.
    pub bic: f64,
}

/// Free parameters of a `k`-component mixture on `d` columns.
pub fn free_params(kind: Covariance, k: usize, d: usize) -> usize {
    let cov = match kind {
        Covariance::Full => k * d * (d + 1) / 2,
        Covariance::Tied => d * (d + 1) / 2,
        Covariance::Diag => k * d,
    };
    (k - 1) + k * d + cov
}

/// `log N(x; mean, L·Lᵀ)` with `log_diag = Σ ln L_ii` precomputed; `y` is
/// scratch of `d`.
fn log_normal(x: &[f64], mean: &[f64], l: &[f64], log_diag: f64, diag_only: bool, y: &mut [f64]) -> f64 {
    let d = x.len();
    let mut q = 0.0;
    for i in 0..d {
        let mut s = x[i] - mean[i];
        if !diag_only {
            let row = &l[i * d..i * d + i];
            for (a, b) in row.iter().zip(&y[..i]) {
                s -= a * b;
            }
        }
        y[i] = s / l[i * d + i];
        q += y[i] * y[i];
    }
    -0.5 * q - log_diag - 0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln()
}

/// k-means++ centres, refined by a few Lloyd iterations: each row's cluster.
fn kmeans(rows: &[Vec<f64>], k: usize, rng: &mut Xoshiro256PlusPlus) -> Vec<usize> {
    let n = rows.len();
    let dist = |a: &[f64], b: &[f64]| -> f64 { a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum() };
    let uniform = |rng: &mut Xoshiro256PlusPlus| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let mut centres: Vec<Vec<f64>> = vec![rows[(rng.next_u64() % n as u64) as usize].clone()];
    let mut near: Vec<f64> = rows.iter().map(|r| dist(r, &centres[0])).collect();
    while centres.len() < k {
        let total: f64 = near.iter().sum();
        let mut pick = n - 1;
        if total > 0.0 {
            let mut u = uniform(rng) * total;
            for (i, v) in near.iter().enumerate() {
                u -= v;
                if u < 0.0 {
                    pick = i;
                    break;
                }
            }
        }
        centres.push(rows[pick].clone());
        let c = centres.last().expect("just pushed");
        for (v, r) in near.iter_mut().zip(rows) {
            *v = v.min(dist(r, c));
        }
    }
    let d = rows[0].len();
    let mut assign = vec![0usize; n];
    for _ in 0..KMEANS_ITER {
        for (a, r) in assign.iter_mut().zip(rows) {
            *a = (0..k)
                .min_by(|&i, &j| dist(r, &centres[i]).total_cmp(&dist(r, &centres[j])))
                .unwrap_or(0);
        }
        let mut sums = vec![vec![0.0; d]; k];
        let mut counts = vec![0usize; k];
        for (&a, r) in assign.iter().zip(rows) {
            counts[a] += 1;
            for (s, v) in sums[a].iter_mut().zip(r) {
                *s += v;
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                centres[c] = sums[c].iter().map(|s| s / counts[c] as f64).collect();
            }
        }
    }
    assign
}

/// Fit a `k`-component mixture to the standardised `rows` by EM, with
/// `floor[j]` added to every covariance's diagonal. `None` if the rows are
/// too few or a covariance cannot be factored.
pub fn fit(rows: &[Vec<f64>], k: usize, kind: Covariance, floor: &[f64], seed: u64) -> Option<Gmm> {
    let n = rows.len();
    let d = rows.first()?.len();
    if k == 0 || n < k * (d + 1) {
        return None;
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x6a55 ^ ((k as u64) << 40));
    let assign = kmeans(rows, k, &mut rng);
    // Responsibilities, row-major n × k: from the k-means clusters at first.
    let mut resp = vec![0.0; n * k];
    for (i, &a) in assign.iter().enumerate() {
        resp[i * k + a] = 1.0;
    }
    let mut k = k;
    let mut prev = f64::NEG_INFINITY;
    for _ in 0..MAX_ITER {
        // M-step. Components left without rows are dropped.
        let counts: Vec<f64> = (0..k).map(|c| (0..n).map(|i| resp[i * k + c]).sum()).collect();
        let alive: Vec<usize> = (0..k).filter(|&c| counts[c] > 1e-9 * n as f64).collect();
        if alive.len() < k {
            let mut next = Vec::with_capacity(n * alive.len());
            for i in 0..n {
                next.extend(alive.iter().map(|&c| resp[i * k + c]));
            }
            resp = next;
            k = alive.len();
            if k == 0 {
                return None;
            }
            continue;
        }
        let weights: Vec<f64> = counts.iter().map(|c| c / n as f64).collect();
        let means: Vec<Vec<f64>> = (0..k)
            .map(|c| {
                let mut m = vec![0.0; d];
                for (i, r) in rows.iter().enumerate() {
                    let w = resp[i * k + c];
                    for (mj, v) in m.iter_mut().zip(r) {
                        *mj += w * v;
                    }
                }
                m.iter_mut().for_each(|v| *v /= counts[c]);
                m
            })
            .collect();
        let scatter = |c: usize| -> Vec<f64> {
            let mut s = vec![0.0; d * d];
            for (i, r) in rows.iter().enumerate() {
                let w = resp[i * k + c];
                if w == 0.0 {
                    continue;
                }
                for a in 0..d {
                    let da = w * (r[a] - means[c][a]);
                    if kind == Covariance::Diag {
                        s[a * d + a] += da * (r[a] - means[c][a]);
                    } else {
                        for b in 0..=a {
                            s[a * d + b] += da * (r[b] - means[c][b]);
                        }
                    }
                }
            }
            s
        };
        let regularised = |mut s: Vec<f64>, count: f64| -> Vec<f64> {
            s.iter_mut().for_each(|v| *v /= count);
            for (j, f) in floor.iter().enumerate() {
                s[j * d + j] += f;
            }
            s
        };
        let scatters: Vec<Vec<f64>> = (0..k).into_par_iter().map(scatter).collect();
        let chols: Vec<Vec<f64>> = match kind {
            // One covariance, factored once.
            Covariance::Tied => {
                let mut all = vec![0.0; d * d];
                for sc in &scatters {
                    for (a, b) in all.iter_mut().zip(sc) {
                        *a += b;
                    }
                }
                vec![cholesky(&regularised(all, n as f64), d).ok()?; k]
            }
            _ => scatters
                .into_iter()
                .zip(&counts)
                .map(|(sc, c)| cholesky(&regularised(sc, *c), d).ok())
                .collect::<Option<_>>()?,
        };
        // E-step, and the log-likelihood of these parameters.
        let log_diag: Vec<f64> = chols.iter().map(|l| (0..d).map(|i| l[i * d + i].ln()).sum()).collect();
        let log_w: Vec<f64> = weights.iter().map(|w| w.ln()).collect();
        let diag_only = kind == Covariance::Diag;
        // Rows in blocks of 256 in parallel; the total summed in block order.
        let blocks: Vec<f64> = rows
            .par_chunks(256)
            .zip(resp.par_chunks_mut(256 * k))
            .map(|(rows, resp)| {
                let (mut y, mut total) = (vec![0.0; d], 0.0);
                for (r, lp) in rows.iter().zip(resp.chunks_mut(k)) {
                    for c in 0..k {
                        lp[c] = log_w[c] + log_normal(r, &means[c], &chols[c], log_diag[c], diag_only, &mut y);
                    }
                    let top = lp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = lp.iter().map(|v| (v - top).exp()).sum();
                    let ll = top + sum.ln();
                    total += ll;
                    lp.iter_mut().for_each(|v| *v = (*v - ll).exp());
                }
                total
            })
            .collect();
        let total: f64 = blocks.iter().sum();
        if !total.is_finite() {
            return None;
        }
        let done = (total - prev) / (n as f64) < TOL;
        prev = total;
        if done {
            let p = free_params(kind, k, d) as f64;
            return Some(Gmm {
                kind,
                weights,
                means,
                chols,
                bic: -2.0 * total + p * (n as f64).ln(),
            });
        }
    }
    None
}

impl Gmm {
    /// Its components.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// The mixture as flows on the raw columns: each Gaussian behind the
    /// frozen standardisation `mean`, `std` (so that a device can adapt it
    /// like a student), stored as `storage` (the student's: a model's
    /// members share one). `None` if a factor's inverse is not finite in f32.
    pub fn flows(&self, mean: &[f32], std: &[f32], storage: Storage) -> Option<DynMixture> {
        let d = mean.len();
        let mut flows = Vec::with_capacity(self.len());
        for (mu, l) in self.means.iter().zip(&self.chols) {
            let second = match self.kind {
                Covariance::Diag => {
                    let sd: Vec<f64> = (0..d).map(|i| l[i * d + i]).collect();
                    Layer::ActNorm {
                        log_scale: sd.iter().map(|s| -s.ln() as f32).collect(),
                        shift: mu.iter().zip(&sd).map(|(m, s)| (-m / s) as f32).collect(),
                        frozen: false,
                    }
                }
                _ => {
                    let t = inverse_lower(l, d);
                    let mut params = Vec::with_capacity(flowmote::TriLinearRef::n_params(d));
                    for i in 0..d {
                        params.extend(t[i * d..i * d + i].iter().map(|v| *v as f32));
                        params.push(t[i * d + i].ln() as f32);
                    }
                    // bias = −T·μ
                    for i in 0..d {
                        params.push(-(0..=i).map(|j| t[i * d + j] * mu[j]).sum::<f64>() as f32);
                    }
                    Layer::TriLinear { params }
                }
            };
            let flow = DynFlow {
                dim: d,
                layers: vec![standardize_layer(mean, std), second],
                weights: Weights::F32,
            };
            flows.push(flow.compressed(storage).ok()?);
        }
        let model = DynMixture {
            log_weights: self.weights.iter().map(|w| w.ln() as f32).collect(),
            flows,
        };
        let ok = model
            .flows
            .iter()
            .all(|f| f.layers.iter().all(|l| l.params().iter().all(|v| v.is_finite())));
        ok.then_some(model)
    }
}

/// What `k` Gaussians of shape `kind` on `d` columns add to a one-flow
/// model's cost: their flows and the `k + 1` mixture weights. Their
/// parameters are at least the mixture's [`free_params`] (a diagonal
/// Gaussian's scales and shifts are an ActNorm's, which
/// [`ModelCost::of`] does not count as trained).
pub fn added_cost(kind: Covariance, k: usize, d: usize) -> ModelCost {
    let zero = Gmm {
        kind,
        weights: vec![1.0 / k as f64; k],
        means: vec![vec![0.0; d]; k],
        chols: vec![
            {
                let mut l = vec![0.0; d * d];
                (0..d).for_each(|i| l[i * d + i] = 1.0);
                l
            };
            k
        ],
        bic: 0.0,
    };
    let m = zero
        .flows(&vec![0.0; d], &vec![1.0; d], Storage::F32)
        .expect("the identity is finite");
    let mut c = ModelCost::of(&m);
    let extra = (k + 1) - crate::model::mixture_weights(k);
    c.parameters = (c.parameters + extra).max(free_params(kind, k, d) + 1);
    c.weight_bytes += 4 * extra as u64;
    c
}

/// The diagonal every covariance gets on standardised columns of standard
/// deviation `std`: [`RIDGE`], and on a dequantised column of step `s` at
/// least `(s/std)²/(2π)`, so that no component's peak density there exceeds
/// the uniform cell's.
pub fn lattice_floor(std: &[f32], steps: &[Option<f32>]) -> Vec<f64> {
    std.iter()
        .zip(steps)
        .map(|(sd, step)| {
            let lattice = step.map_or(0.0, |s| (s as f64 / *sd as f64).powi(2) / (2.0 * std::f64::consts::PI));
            lattice.max(RIDGE)
        })
        .collect()
}

/// The mixture with the lowest BIC among those fitted: for each shape (in
/// parallel), 1, 2, 3, 4, 6, … components while their [`added_cost`]
/// `fits`, the model stays within `max_members` flows and the BIC has not
/// failed to improve twice. `rows` are
/// standardised, `floor` as in [`fit`].
pub fn best_by_bic(
    rows: &[Vec<f64>],
    floor: &[f64],
    max_members: usize,
    seed: u64,
    fits: impl Fn(&ModelCost) -> bool + Sync,
) -> Option<Gmm> {
    let d = rows.first()?.len();
    // Per shape, more components until the BIC has not improved twice.
    let per_kind = |kind: Covariance| -> Option<Gmm> {
        let mut best: Option<Gmm> = None;
        let mut worse = 0;
        for k in COMPONENTS {
            if k > max_members || rows.len() < k * (d + 1) || !fits(&added_cost(kind, k, d)) {
                break;
            }
            if kind == Covariance::Tied && k == 1 {
                continue; // the same as full
            }
            match fit(rows, k, kind, floor, seed) {
                Some(g) if best.as_ref().is_none_or(|b| g.bic < b.bic) => {
                    best = Some(g);
                    worse = 0;
                }
                _ => worse += 1,
            }
            if worse == 2 {
                break;
            }
        }
        best
    };
    [Covariance::Full, Covariance::Tied, Covariance::Diag]
        .par_iter()
        .filter_map(|&kind| per_kind(kind))
        .min_by(|a, b| a.bic.total_cmp(&b.bic))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Standard normal draws (Box–Muller).
    fn normals(rng: &mut Xoshiro256PlusPlus, n: usize) -> Vec<f64> {
        let u = |rng: &mut Xoshiro256PlusPlus| ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        (0..n)
            .map(|_| (-2.0 * u(rng).ln()).sqrt() * (2.0 * std::f64::consts::PI * u(rng)).cos())
            .collect()
    }

    /// Rows of three well-separated correlated clusters in 3 columns.
    fn clusters(n: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let z = normals(&mut rng, 3);
                let c = [-4.0, 0.0, 4.0][i % 3];
                vec![c + 0.5 * z[0], c + 0.4 * z[0] + 0.3 * z[1], -c + 0.2 * z[2]]
            })
            .collect()
    }

    #[test]
    fn bic_finds_the_clusters_and_the_flows_are_its_density() {
        let rows = clusters(600, 1);
        let g = best_by_bic(&rows, &[0.0; 3], 31, 0, |_| true).expect("a fit");
        assert_eq!(g.len(), 3, "{:?} {}", g.kind, g.len());
        // The exported flows compute the fitted density, in f32.
        let m = g.flows(&[0.0; 3], &[1.0; 3], Storage::F32).unwrap();
        m.validate().unwrap();
        let x: Vec<Vec<f32>> = rows
            .iter()
            .take(50)
            .map(|r| r.iter().map(|v| *v as f32).collect())
            .collect();
        let lps = m.log_probs(&x);
        let mut y = vec![0.0; 3];
        for (r, lp) in rows.iter().zip(lps) {
            let want: f64 = (0..g.len())
                .map(|c| {
                    let l = &g.chols[c];
                    let ld: f64 = (0..3).map(|i| l[i * 3 + i].ln()).sum();
                    g.weights[c] * log_normal(r, &g.means[c], l, ld, g.kind == Covariance::Diag, &mut y).exp()
                })
                .sum::<f64>()
                .ln();
            let got = lp.unwrap() as f64;
            assert!((got - want).abs() < 1e-4 * (1.0 + want.abs()), "{got} vs {want}");
        }
        // And the cost that budgeted it is the cost of what it builds.
        let mut c = ModelCost::of(&m);
        let extra = (g.len() + 1) - crate::model::mixture_weights(g.len());
        c.parameters = (c.parameters + extra).max(free_params(g.kind, g.len(), 3) + 1);
        c.weight_bytes += 4 * extra as u64;
        assert_eq!(c, added_cost(g.kind, g.len(), 3));
    }

    #[test]
    fn the_density_of_the_fit_integrates_to_one() {
        // Two columns, two diagonal components: a grid sum of the exported
        // mixture's density over ±8 standard deviations.
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let rows: Vec<Vec<f64>> = (0..400)
            .map(|i| {
                let z = normals(&mut rng, 2);
                let c = if i % 2 == 0 { -1.5 } else { 1.5 };
                vec![c + 0.6 * z[0], 0.8 * z[1] - c]
            })
            .collect();
        for kind in [Covariance::Full, Covariance::Diag] {
            let g = fit(&rows, 2, kind, &[0.0; 2], 0).unwrap();
            let m = g.flows(&[0.0; 2], &[1.0; 2], Storage::F32).unwrap();
            let h = 0.05f32;
            let grid: Vec<Vec<f32>> = (0..320)
                .flat_map(|i| (0..320).map(move |j| vec![-8.0 + h * i as f32, -8.0 + h * j as f32]))
                .collect();
            let mass: f64 = m
                .log_probs(&grid)
                .iter()
                .map(|lp| (*lp.as_ref().unwrap() as f64).exp())
                .sum::<f64>()
                * (h * h) as f64;
            assert!((mass - 1.0).abs() < 2e-3, "{kind:?}: {mass}");
        }
    }

    #[test]
    fn a_lattice_floor_keeps_a_spike_no_sharper_than_its_cell() {
        // A column that is 0 on most rows: without the floor the component
        // on the spike shrinks to the ridge; with it, its density at 0 is at
        // most the uniform cell's, 1/step (here the column is in units of
        // its step).
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        let rows: Vec<Vec<f64>> = (0..300)
            .map(|i| {
                let z = normals(&mut rng, 2);
                vec![if i % 3 == 0 { (3.0 * z[0]).round() } else { 0.0 }, z[1]]
            })
            .collect();
        let floor = lattice_floor(&[1.0, 1.0], &[Some(1.0), None]);
        for f in [vec![RIDGE, RIDGE], floor] {
            let g = fit(&rows, 2, Covariance::Diag, &f, 0).unwrap();
            let narrowest = g.chols.iter().map(|l| l[0]).fold(f64::INFINITY, f64::min);
            let peak = 1.0 / ((2.0 * std::f64::consts::PI).sqrt() * narrowest);
            if f[0] > RIDGE {
                assert!(peak <= 1.0 + 1e-9, "{peak}");
            } else {
                assert!(peak > 5.0, "without the floor the spike is sharp: {peak}");
            }
        }
    }
}
