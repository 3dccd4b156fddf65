//! Shared pieces of the flowmote benchmarks: seeded random models of the
//! const-generic (`static`-style) types, the benchmark architectures, input
//! data (read with the tools' CSV loader).
//!
//! Every model here is built from a seeded generator, so two runs time the
//! same numbers. Weights are drawn like a usual initialisation (uniform in
//! `±1/√fan_in`), with the output layer scaled down so that log-scales stay
//! moderate and no layer saturates; MAF conditioners are masked with the
//! core's own [`made_mask_params`] on the flat parameter view, exactly as the
//! trainer keeps them.
#![deny(missing_docs)]

use flowmote::cnf::Solver;
use flowmote::coupling::DEFAULT_CLAMP;
use flowmote::maf::made_mask_params;
use flowmote::mlp::MlpShape;
use flowmote::{Activation, AffineCoupling, Cnf, Flow, Maf, Mlp, Reverse};
pub use rand_core::{Rng, SeedableRng};
pub use rand_xoshiro::Xoshiro256PlusPlus;

/// A seeded generator.
pub fn rng(seed: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(seed)
}

/// Uniform draw in `[lo, hi)`.
#[inline]
pub fn uniform<R: Rng + ?Sized>(rng: &mut R, lo: f32, hi: f32) -> f32 {
    let u = (rng.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0);
    lo + (hi - lo) * u
}

/// Fill `v` uniformly in `±scale`.
pub fn fill_uniform<R: Rng + ?Sized>(rng: &mut R, v: &mut [f32], scale: f32) {
    for x in v {
        *x = uniform(rng, -scale, scale);
    }
}

/// `n` rows of `d` standard-normal values, flat row-major.
pub fn normal_rows(seed: u64, n: usize, d: usize) -> Vec<f32> {
    let mut r = rng(seed);
    let mut v = vec![0.0; n * d];
    flowmote::normal::fill_standard_normal(&mut r, &mut v);
    v
}

/// Scale of the output layer relative to `1/√fan_in` (keeps log-scales small).
pub const OUT_SCALE: f32 = 0.1;

/// An MLP with seeded random weights: `±1/√fan_in` per layer, the output
/// layer `OUT_SCALE` times that, biases `±0.1`.
pub fn random_mlp<const IN: usize, const H: usize, const L: usize, const OUT: usize, const HEADS: usize, R: Rng>(
    rng: &mut R,
    act: Activation,
) -> Mlp<IN, H, L, OUT, HEADS> {
    let mut m = Mlp::<IN, H, L, OUT, HEADS>::zeroed(act);
    fill_uniform(rng, m.w_in.as_flattened_mut(), 1.0 / (IN.max(1) as f32).sqrt());
    fill_uniform(rng, &mut m.b_in, 0.1);
    fill_uniform(
        rng,
        m.w_hid.as_flattened_mut().as_flattened_mut(),
        1.0 / (H as f32).sqrt(),
    );
    fill_uniform(rng, m.b_hid.as_flattened_mut(), 0.1);
    fill_uniform(
        rng,
        m.w_out.as_flattened_mut().as_flattened_mut(),
        OUT_SCALE / (H as f32).sqrt(),
    );
    fill_uniform(rng, m.b_out.as_flattened_mut(), 0.1 * OUT_SCALE);
    m
}

/// The flat parameter vector of a const-generic MLP, in `MlpRef::from_flat`
/// order (`w_in, w_cond (empty), b_in, w_hid, b_hid, w_out, b_out`).
pub fn mlp_to_flat<const IN: usize, const H: usize, const L: usize, const OUT: usize, const HEADS: usize>(
    m: &Mlp<IN, H, L, OUT, HEADS>,
) -> Vec<f32> {
    let v = m.view();
    [v.w_in, v.w_cond, v.b_in, v.w_hid, v.b_hid, v.w_out, v.b_out].concat()
}

/// Write a flat parameter vector (see [`mlp_to_flat`]) back into the arrays.
pub fn mlp_from_flat<const IN: usize, const H: usize, const L: usize, const OUT: usize, const HEADS: usize>(
    m: &mut Mlp<IN, H, L, OUT, HEADS>,
    p: &[f32],
) {
    assert_eq!(p.len(), Mlp::<IN, H, L, OUT, HEADS>::shape().n_params());
    let (w_in, p) = p.split_at(H * IN);
    let (b_in, p) = p.split_at(H);
    let (w_hid, p) = p.split_at(L * H * H);
    let (b_hid, p) = p.split_at(L * H);
    let (w_out, b_out) = p.split_at(HEADS * OUT * H);
    m.w_in.as_flattened_mut().copy_from_slice(w_in);
    m.b_in.copy_from_slice(b_in);
    m.w_hid.as_flattened_mut().as_flattened_mut().copy_from_slice(w_hid);
    m.b_hid.as_flattened_mut().copy_from_slice(b_hid);
    m.w_out.as_flattened_mut().as_flattened_mut().copy_from_slice(w_out);
    m.b_out.as_flattened_mut().copy_from_slice(b_out);
}

/// A MAF layer with seeded random weights, masked by [`made_mask_params`].
pub fn random_maf<const D: usize, const H: usize, const L: usize, R: Rng>(rng: &mut R) -> Maf<D, H, L> {
    let mut net = random_mlp::<D, H, L, D, 2, R>(rng, Activation::Tanh);
    let mut flat = mlp_to_flat(&net);
    made_mask_params(Mlp::<D, H, L, D, 2>::shape(), &mut flat).expect("MADE shape");
    mlp_from_flat(&mut net, &flat);
    let maf = Maf {
        clamp: DEFAULT_CLAMP,
        net,
    };
    assert!(maf.is_masked());
    maf
}

/// An affine coupling layer with seeded random weights.
pub fn random_coupling<const A: usize, const B: usize, const H: usize, const L: usize, R: Rng>(
    rng: &mut R,
) -> AffineCoupling<A, B, H, L> {
    AffineCoupling {
        clamp: DEFAULT_CLAMP,
        net: random_mlp::<A, H, L, B, 2, R>(rng, Activation::Tanh),
    }
}

/// Solver of the benchmarked continuous flows.
pub const CNF_SOLVER: Solver = Solver::Rk4;
/// Solver steps of the benchmarked continuous flows (`8 × 4 = 32` field
/// evaluations per `log_prob`).
pub const CNF_STEPS: usize = 8;

/// A continuous flow with a depth-1 field (`L = 0`, the precomputed-trace fast
/// path) and seeded random weights, integrated by [`CNF_SOLVER`] in
/// [`CNF_STEPS`] steps.
pub fn random_cnf<const D: usize, const H: usize, R: Rng>(rng: &mut R) -> Cnf<D, H, 0> {
    let mut net = random_mlp::<D, H, 0, D, 1, R>(rng, Activation::Tanh);
    // The field is a velocity, not a log-scale: use a full-size output layer.
    fill_uniform(
        rng,
        net.w_out.as_flattened_mut().as_flattened_mut(),
        1.0 / (H as f32).sqrt(),
    );
    let mut w_t = [0.0; H];
    fill_uniform(rng, &mut w_t, 1.0);
    Cnf::new(net, w_t, CNF_SOLVER, CNF_STEPS)
}

/// Benchmarked MAF: 4 MAF layers (conditioner `D → H → H → 2D`, i.e. two
/// hidden layers, `L = 1`) with a reversal between consecutive layers.
pub type MafFlow<const D: usize, const H: usize> = Flow<
    D,
    (
        Maf<D, H, 1>,
        Reverse,
        Maf<D, H, 1>,
        Reverse,
        Maf<D, H, 1>,
        Reverse,
        Maf<D, H, 1>,
    ),
>;

/// Benchmarked coupling flow (RealNVP): 4 affine couplings `A + B = D`
/// (conditioner `A → H → H → 2B`) with a reversal between consecutive layers,
/// so each coordinate is transformed by two of them.
pub type CouplingFlow<const D: usize, const A: usize, const B: usize, const H: usize> = Flow<
    D,
    (
        AffineCoupling<A, B, H, 1>,
        Reverse,
        AffineCoupling<A, B, H, 1>,
        Reverse,
        AffineCoupling<A, B, H, 1>,
        Reverse,
        AffineCoupling<A, B, H, 1>,
    ),
>;

/// Benchmarked continuous flow: one field with `H` hidden units (depth 1),
/// RK4 × 8 steps.
pub type CnfFlow<const D: usize, const H: usize> = Flow<D, Cnf<D, H, 0>>;

/// A [`MafFlow`] with seeded random weights, on the heap (large `H` makes it
/// hundreds of kB).
pub fn maf_flow<const D: usize, const H: usize>(seed: u64) -> Box<MafFlow<D, H>> {
    let mut r = rng(seed);
    Box::new(Flow::new((
        random_maf(&mut r),
        Reverse,
        random_maf(&mut r),
        Reverse,
        random_maf(&mut r),
        Reverse,
        random_maf(&mut r),
    )))
}

/// A [`CouplingFlow`] with seeded random weights.
pub fn coupling_flow<const D: usize, const A: usize, const B: usize, const H: usize>(
    seed: u64,
) -> Box<CouplingFlow<D, A, B, H>> {
    let mut r = rng(seed);
    Box::new(Flow::new((
        random_coupling(&mut r),
        Reverse,
        random_coupling(&mut r),
        Reverse,
        random_coupling(&mut r),
        Reverse,
        random_coupling(&mut r),
    )))
}

/// A [`CnfFlow`] with seeded random weights.
pub fn cnf_flow<const D: usize, const H: usize>(seed: u64) -> Box<CnfFlow<D, H>> {
    let mut r = rng(seed);
    Box::new(Flow::new(random_cnf(&mut r)))
}

/// Multiply–accumulates of one `log_prob` of a [`MafFlow`] (4 conditioner passes).
pub const fn maf_macs(d: usize, h: usize) -> usize {
    4 * MlpShape {
        input: d,
        cond: 0,
        hidden: h,
        depth: 2,
        output: 2 * d,
    }
    .macs()
}

/// Multiply–accumulates of one `log_prob` of a [`CouplingFlow`].
pub const fn coupling_macs(a: usize, b: usize, h: usize) -> usize {
    4 * MlpShape {
        input: a,
        cond: 0,
        hidden: h,
        depth: 2,
        output: 2 * b,
    }
    .macs()
}

/// Multiply–accumulates of one `log_prob` of a [`CnfFlow`] (field plus the
/// precomputed trace, per evaluation).
pub const fn cnf_macs(d: usize, h: usize) -> usize {
    CNF_STEPS
        * CNF_SOLVER.stages()
        * (MlpShape {
            input: d,
            cond: 1,
            hidden: h,
            depth: 1,
            output: d,
        }
        .macs()
            + h)
}

/// Score every row of `rows` (flat, `D` per row) with `log_prob`, summing the
/// results (so the work cannot be optimised away). Rows that fail add nothing.
#[inline]
pub fn score_rows<const D: usize, L: flowmote::Bijector<D>>(flow: &Flow<D, L>, rows: &[f32]) -> f32 {
    let mut s = 0.0;
    for row in rows.chunks_exact(D) {
        let x: &[f32; D] = row.try_into().expect("row of D values");
        if let Ok(lp) = flow.log_prob(x) {
            s += lp;
        }
    }
    s
}

/// [`score_rows`] split over `threads` OS threads (scoped, spawned per call).
pub fn score_rows_par<const D: usize, L: flowmote::Bijector<D> + Sync>(
    flow: &Flow<D, L>,
    rows: &[f32],
    threads: usize,
) -> f32 {
    let n = rows.len() / D;
    let per = n.div_ceil(threads.max(1)) * D;
    std::thread::scope(|s| {
        let hs: Vec<_> = rows
            .chunks(per.max(D))
            .map(|c| s.spawn(move || score_rows(flow, c)))
            .collect();
        hs.into_iter().map(|h| h.join().expect("scoring thread")).sum()
    })
}

/// Rows of a CSV file, read with the tool's own loader
/// (`flowmote_tools::data::load_training`; a `label` column is dropped), as
/// `(rows flat, columns)`.
pub fn read_rows(path: &std::path::Path) -> Result<(Vec<f32>, usize), String> {
    let label = flowmote_tools::data::header(path)
        .map_err(|e| format!("reading {}: {e:#}", path.display()))?
        .iter()
        .any(|h| h == "label")
        .then_some("label");
    let ds =
        flowmote_tools::data::load_training(path, label).map_err(|e| format!("reading {}: {e:#}", path.display()))?;
    Ok((ds.rows.concat(), ds.dim()))
}

/// Standardise flat rows of `d` columns in place with their own per-column
/// mean and standard deviation.
pub fn standardise(rows: &mut [f32], d: usize) {
    let n = (rows.len() / d).max(1) as f64;
    for j in 0..d {
        let mean = rows.iter().skip(j).step_by(d).map(|&v| v as f64).sum::<f64>() / n;
        let var = rows
            .iter()
            .skip(j)
            .step_by(d)
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let sd = if var > 0.0 { var.sqrt() } else { 1.0 };
        for v in rows.iter_mut().skip(j).step_by(d) {
            *v = ((*v as f64 - mean) / sd) as f32;
        }
    }
}
