//! Building an untrained flow: seeded initial weights, the frozen
//! standardisation, the whitening layer and the layer lists of each family.

use super::baseline::{cholesky, covariance, inverse_lower};
use super::config::{default_size, FlowKind, TrainConfig, MAX_DEPTH, MAX_HIDDEN, MAX_LAYERS, MAX_WEIGHTS};
use super::fit::train_rows;
use crate::data::Dataset;
use crate::model::{Act, DynFlow, Layer, Net, SolverKind, Storage};
use anyhow::{bail, ensure, Result};
use flowmote::mlp::{MlpGrad, MlpShape};
use flowmote::ActNormRef;
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// A seeded uniformly random permutation of `0..d`.
pub fn random_permutation<R: Rng + ?Sized>(rng: &mut R, d: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..d).collect();
    shuffle(&mut p, rng);
    p
}

/// Seeded Fisher–Yates shuffle in place (the one every draw of the trainer uses).
pub fn shuffle<T, R: Rng + ?Sized>(v: &mut [T], rng: &mut R) {
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

pub(super) fn uniform<R: Rng + ?Sized>(rng: &mut R) -> f32 {
    (rng.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0)
}

pub(super) fn normal<R: Rng + ?Sized>(rng: &mut R) -> f32 {
    let mut z = [0.0f32];
    flowmote::normal::fill_standard_normal(rng, &mut z);
    z[0]
}

fn fill_uniform<R: Rng + ?Sized>(rng: &mut R, v: &mut [f32], scale: f32) {
    for x in v {
        *x = (2.0 * uniform(rng) - 1.0) * scale;
    }
}

/// Seeded conditioner parameters: hidden layers uniform in `±1/√fan_in`,
/// output layer (and its bias) scaled by `out_scale` so that the layer
/// starts near the identity; MADE-masked if `made_heads > 0`.
pub fn init_params<R: Rng + ?Sized>(rng: &mut R, shape: MlpShape, made_heads: usize, out_scale: f32) -> Vec<f32> {
    let mut p = vec![0.0; shape.n_params()];
    {
        let g = MlpGrad::from_flat(shape, &mut p).expect("shape");
        fill_uniform(rng, g.w_in, 1.0 / ((shape.input + shape.cond).max(1) as f32).sqrt());
        fill_uniform(rng, g.w_cond, 1.0);
        fill_uniform(rng, g.b_in, 0.1);
        fill_uniform(rng, g.w_hid, 1.0 / (shape.hidden as f32).sqrt());
        fill_uniform(rng, g.b_hid, 0.1);
        fill_uniform(rng, g.w_out, out_scale / (shape.hidden as f32).sqrt());
        fill_uniform(rng, g.b_out, 0.1 * out_scale);
    }
    mask(shape, made_heads, &mut p);
    p
}

pub(super) fn mask(shape: MlpShape, heads: usize, p: &mut [f32]) {
    if heads > 0 {
        flowmote::maf::made_mask_heads(shape, heads, p).expect("MADE shape");
    }
}

/// The frozen standardising layer for `mean`, `std`.
pub fn standardize_layer(mean: &[f32], std: &[f32]) -> Layer {
    let d = mean.len();
    let (mut log_scale, mut shift) = (vec![0.0; d], vec![0.0; d]);
    ActNormRef::standardizing(mean, std, &mut log_scale, &mut shift);
    Layer::ActNorm {
        log_scale,
        shift,
        frozen: true,
    }
}

/// A trainable LU linear layer initialised to whiten the standardised
/// training rows: `W = C⁻¹` where `C·Cᵀ = Σ + ridge·I` is the Cholesky factor
/// of their covariance (plus `ridge` on the diagonal). Placed after the
/// standardisation it makes the untrained flow the full-covariance Gaussian
/// fit; training then only has to model what a Gaussian misses.
pub fn whitening_layer(rows: &[Vec<f32>], mean: &[f32], std: &[f32], ridge: f64) -> Result<Layer> {
    let d = mean.len();
    let mut w = whitening_matrix(rows, mean, std, ridge)?;
    let mut perm = vec![0usize; d];
    let mut sign = vec![0.0f32; d];
    flowmote::linear::lu_decompose(&mut w, &mut perm, &mut sign)
        .map_err(|e| anyhow::anyhow!("whitening layer: {e:?}"))?;
    w.resize(d * d + d, 0.0);
    Ok(Layer::LuLinear { perm, sign, params: w })
}

/// [`whitening_layer`] as a lower-triangular layer ([`Layer::TriLinear`]):
/// `W = C⁻¹` is lower-triangular with a positive diagonal, so it is the
/// same map at the start with half the weights.
pub fn triangular_whitening_layer(rows: &[Vec<f32>], mean: &[f32], std: &[f32], ridge: f64) -> Result<Layer> {
    let d = mean.len();
    let w = whitening_matrix(rows, mean, std, ridge)?;
    let mut params = Vec::with_capacity(flowmote::TriLinearRef::n_params(d));
    for i in 0..d {
        params.extend_from_slice(&w[i * d..i * d + i]);
        let wii = w[i * d + i];
        ensure!(
            wii > 0.0 && wii.is_finite(),
            "whitening layer: diagonal {wii} in row {i}"
        );
        params.push(wii.ln());
    }
    params.resize(flowmote::TriLinearRef::n_params(d), 0.0);
    Ok(Layer::TriLinear { params })
}

/// `W = C⁻¹` (row-major, lower-triangular) for the Cholesky factor `C` of
/// the standardised rows' covariance plus `ridge·I`.
fn whitening_matrix(rows: &[Vec<f32>], mean: &[f32], std: &[f32], ridge: f64) -> Result<Vec<f32>> {
    let d = mean.len();
    let z: Vec<Vec<f32>> = rows
        .iter()
        .map(|r| (0..d).map(|j| (r[j] - mean[j]) / std[j]).collect())
        .collect();
    let (_, mut cov) = covariance(&z);
    for i in 0..d {
        cov[i * d + i] += ridge;
    }
    let c = cholesky(&cov, d)?;
    Ok(inverse_lower(&c, d).into_iter().map(|v| v as f32).collect())
}

/// An upper bound on the conditioner weights of `layers` flow layers with
/// networks `net` on `d` columns, checked before anything is allocated: each
/// layer's network has `depth` hidden layers of `hidden` units and at most
/// `3·bins + 2` outputs per column (a spline's `3K − 1`, an affine map's 2).
pub fn weight_bound(d: usize, layers: usize, net: Net, bins: usize) -> usize {
    let outputs = d.saturating_mul(bins.saturating_mul(3).saturating_add(2));
    let per_layer = net
        .hidden
        .saturating_mul(net.hidden.saturating_add(outputs))
        .saturating_mul(net.depth);
    layers.saturating_mul(per_layer)
}

/// An untrained flow: `[standardise, blocks…]` with seeded near-identity
/// conditioners (see the module docs for the layer lists).
pub fn build_flow<R: Rng + ?Sized>(
    kind: FlowKind,
    mean: &[f32],
    std: &[f32],
    layers: usize,
    net: Net,
    cfg: &TrainConfig,
    rng: &mut R,
) -> Result<DynFlow> {
    let d = mean.len();
    ensure!(
        (1..=MAX_LAYERS).contains(&layers),
        "--layers must be 1..={MAX_LAYERS} (got {layers})"
    );
    ensure!(
        (1..=MAX_HIDDEN).contains(&net.hidden) && (1..=MAX_DEPTH).contains(&net.depth),
        "--hidden must be 1..={MAX_HIDDEN} and --depth 1..={MAX_DEPTH} (got {} and {})",
        net.hidden,
        net.depth
    );
    let bound = weight_bound(d, layers, net, cfg.bins);
    ensure!(
        bound <= MAX_WEIGHTS,
        "{layers} layers of {}×{} hidden units on {d} columns would need about {bound} weights, over the {} this \
         tool allocates — choose a smaller --layers/--hidden/--depth",
        net.hidden,
        net.depth,
        MAX_WEIGHTS
    );
    let mut ls = vec![standardize_layer(mean, std)];
    match kind {
        FlowKind::Auto => bail!("build_flow needs a concrete flow family (auto is resolved by train)"),
        FlowKind::Maf => {
            for i in 0..layers {
                if i > 0 {
                    ls.push(Layer::Permutation {
                        perm: random_permutation(rng, d),
                    });
                }
                let mut l = Layer::Maf {
                    net,
                    clamp: cfg.clamp,
                    params: vec![],
                };
                let p = init_params(rng, l.mlp_shape(d).unwrap(), 2, cfg.init_scale);
                *l.params_mut().unwrap() = p;
                ls.push(l);
            }
        }
        FlowKind::Coupling => {
            let mut a = d / 2;
            for i in 0..layers {
                let b = d - a;
                if i > 0 {
                    // Rotate the previous layer's transformed half to the front.
                    let prev_a = d - a;
                    ls.push(Layer::Permutation {
                        perm: (0..d).map(|j| (j + prev_a) % d).collect(),
                    });
                }
                let mut l = Layer::AffineCoupling {
                    a,
                    b,
                    net,
                    clamp: cfg.clamp,
                    params: vec![],
                };
                let p = init_params(rng, l.mlp_shape(d).unwrap(), 0, cfg.init_scale);
                *l.params_mut().unwrap() = p;
                ls.push(l);
                a = b;
            }
        }
        FlowKind::Nsf | FlowKind::NsfAr => {
            for i in 0..layers {
                if i > 0 {
                    ls.push(Layer::Permutation {
                        perm: random_permutation(rng, d),
                    });
                }
                let mut l = if kind == FlowKind::Nsf {
                    Layer::SplineCoupling {
                        a: d / 2,
                        b: d - d / 2,
                        bins: cfg.bins,
                        tail_bound: cfg.tail_bound,
                        net,
                        params: vec![],
                    }
                } else {
                    Layer::SplineAutoregressive {
                        bins: cfg.bins,
                        tail_bound: cfg.tail_bound,
                        net,
                        params: vec![],
                    }
                };
                let heads = l.made_heads();
                let p = init_params(rng, l.mlp_shape(d).unwrap(), heads, cfg.init_scale);
                *l.params_mut().unwrap() = p;
                ls.push(l);
            }
        }
        FlowKind::Cnf => {
            let mut l = Layer::Cnf {
                net,
                solver: SolverKind::Rk4,
                steps: cfg.cnf_steps.max(1),
                params: vec![],
            };
            let p = init_params(rng, l.mlp_shape(d).unwrap(), 0, cfg.init_scale);
            *l.params_mut().unwrap() = p;
            ls.push(l);
        }
    }
    let f = DynFlow::new(d, ls);
    f.validate()?;
    Ok(f)
}

/// What the model `c` would train on `ds` costs on a device with its
/// conditioners' weights stored as `storage` (its parameters as
/// [`TrainSummary::parameters`](super::TrainSummary::parameters) counts them).
pub(super) fn candidate_cost(ds: &Dataset, c: &TrainConfig, storage: Storage) -> Result<crate::target::ModelCost> {
    let d = ds.dim();
    let n = train_rows(ds.n_normal(), c);
    let (l, h) = default_size(c.flow, n, d);
    let (layers, hidden) = (c.layers.unwrap_or(l), c.hidden.unwrap_or(h));
    let net = Net {
        hidden,
        depth: c.depth,
        act: Act::Tanh,
    };
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
    let mut f = build_flow(c.flow, &vec![0.0; d], &vec![1.0; d], layers, net, c, &mut rng)?;
    if c.whitens() {
        // The whitening layer's shape (its values need the data).
        let layer = if c.whiten_triangular {
            Layer::TriLinear {
                params: vec![0.0; flowmote::TriLinearRef::n_params(d)],
            }
        } else {
            Layer::LuLinear {
                perm: (0..d).collect(),
                sign: vec![1.0; d],
                params: vec![0.0; flowmote::LuLinearRef::n_params(d)],
            }
        };
        f.layers.insert(1, layer);
    }
    let f = f.compressed(storage)?;
    Ok(crate::target::ModelCost::of(&crate::model::DynMixture::single(f)))
}
