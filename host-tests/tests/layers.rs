//! Every core layer, alone and composed: round trips, log-determinants against
//! finite-difference Jacobians, parity with independent f64 references, the
//! MAF's autoregressive structure, and `static` instantiation.
//!
//! Bounds reached (f32, seeded random inputs in `[−3, 3)ᴰ`, random weights in
//! `[−1, 1)` so log-scales and shifts are O(1), i.e. far from identity):
//! * round trips, `max|x' − x| / max(1, ‖x‖∞)`: measured ≤ 2.4e-6 for ActNorm,
//!   sigmoid/logit, permutations, couplings and composed stacks (asserted
//!   ≤ 1e-5, ≤ 2e-5 for the logit-first composite); MAF ≤ 5.4e-5 (asserted
//!   ≤ 1e-4, see [`check_maf`]);
//! * `inverse`'s log-det is minus `forward`'s at the round-trip point to
//!   `max(rt_tol, 1e-5)·(1 + |ld|)` (measured ≤ 2.3e-6 relative);
//! * log-det vs `log|det|` of a Richardson FD Jacobian of the f32 code: measured
//!   ≤ 2e-3 absolute (typically 1e-4), asserted against the propagated f32
//!   round-off bound of [`fd_log_det_error`] (worst measured/bound ratio 0.2);
//! * core vs the independent f64 references: outputs ≤ 2.8e-7 relative
//!   (asserted 1e-5), log-det vs `log|det|` of the reference's f64 FD Jacobian
//!   ≤ 6.2e-7 absolute (asserted 1e-4).

use flowmote::permutation::{is_permutation, permute_forward, permute_inverse};
use flowmote::sigmoid::{logit_forward, sigmoid_forward};
use flowmote::{
    ActNorm, ActNormRef, Activation, AffineCoupling, Bijector, Flow, Logit, Maf, Mlp, MlpRef, Permutation, Reverse,
    Sigmoid,
};
use flowmote_host_tests::*;

/// Round-trip and log-det statistics of one layer over many random points.
#[derive(Debug, Default)]
struct Stats {
    round_trip: f64,
    ld_pair: f64,
    ld_fd: f64,
    ld_fd_ratio: f64,
}

/// `|ld − log|det J_FD||` for the Richardson FD Jacobian of `f` at `x` (whose
/// value is `y`), and the tolerance it must meet: `trunc` (truncation
/// budget) plus the propagated f32 round-off. Each f32 evaluation of `f` is
/// off by up to `k·ε·‖y‖` (`k = 4` allows for a few roundings per layer), so a
/// central difference with step `h` is off by `k·ε·‖y‖/h` and the Richardson
/// combination `(4·D(h/2) − D(h))/3` by `3·k·ε·‖y‖/h =: η` per entry; that
/// moves `log|det J|` by at most `η·Σ|J⁻¹|` (first order).
fn fd_log_det_error(
    f: &mut dyn FnMut(&[f32]) -> Vec<f32>,
    x: &[f32],
    y: &[f32],
    ld: f64,
    h: f32,
    trunc: f64,
) -> (f64, f64) {
    let n = x.len();
    let jac = fd_jacobian_richardson(f, x, h);
    let size = x.iter().chain(y).fold(1.0f64, |m, v| m.max(v.abs() as f64));
    let eta = 12.0 * f32::EPSILON as f64 * size / h as f64;
    (
        (log_abs_det(&jac, n) - ld).abs(),
        trunc + log_det_error_bound(&jac, n, eta),
    )
}

/// Check a bijector on `n` random data points from `sample_x` and `n` random
/// latent points from `sample_z`:
/// * `inverse(forward(x)) ≈ x` and `forward(inverse(z)) ≈ z` within `rt_tol`
///   (relative to `max(1, ‖·‖∞)`), with `inverse`'s log-det the negative of
///   `forward`'s within `rt_tol·(1 + |ld|)`;
/// * `forward` and `inverse` log-dets against `log|det|` of the Richardson FD
///   Jacobian with step `h`, within `ld_tol`.
#[allow(clippy::too_many_arguments)]
fn check_bijector<const D: usize, B: Bijector<D>>(
    name: &str,
    layer: &B,
    sample_x: &mut dyn FnMut(&mut Xoshiro128PlusPlus) -> [f32; D],
    sample_z: &mut dyn FnMut(&mut Xoshiro128PlusPlus) -> [f32; D],
    seed: u64,
    h: f32,
    rt_tol: f64,
    ld_tol: f64,
) -> Stats {
    let mut r = rng(seed);
    let mut st = Stats::default();
    let fwd = |v: &[f32]| {
        let mut a: [f32; D] = v.try_into().unwrap();
        layer.forward(&mut a).unwrap();
        a.to_vec()
    };
    let inv = |v: &[f32]| {
        let mut a: [f32; D] = v.try_into().unwrap();
        layer.inverse(&mut a).unwrap();
        a.to_vec()
    };
    let rel = |a: &[f32; D], b: &[f32; D]| {
        let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs() as f64));
        a.iter()
            .zip(b)
            .map(|(p, q)| (*p as f64 - *q as f64).abs())
            .fold(0.0, f64::max)
            / scale
    };
    for _ in 0..20 {
        // data → latent → data
        let x = sample_x(&mut r);
        let mut z = x;
        let ld_f = layer.forward(&mut z).unwrap() as f64;
        let mut x2 = z;
        let ld_i = layer.inverse(&mut x2).unwrap() as f64;
        let e = rel(&x2, &x);
        assert!(e <= rt_tol, "{name}: inverse∘forward error {e:.3e} at {x:?}");
        st.round_trip = st.round_trip.max(e);
        let e = (ld_f + ld_i).abs() / (1.0 + ld_f.abs());
        // −ld_inverse is evaluated at the recovered x, off by the round trip.
        assert!(e <= rt_tol.max(1e-5), "{name}: forward ld {ld_f} vs inverse ld {ld_i}");
        st.ld_pair = st.ld_pair.max(e);
        let (e, tol) = fd_log_det_error(&mut { fwd }, &x, &z, ld_f, h, ld_tol);
        assert!(
            e <= tol,
            "{name}: forward ld {ld_f}: FD error {e:.3e} > {tol:.3e} at {x:?}"
        );
        st.ld_fd = st.ld_fd.max(e);
        st.ld_fd_ratio = st.ld_fd_ratio.max(e / tol);

        // latent → data → latent
        let z = sample_z(&mut r);
        let mut x = z;
        let ld_i = layer.inverse(&mut x).unwrap() as f64;
        let mut z2 = x;
        layer.forward(&mut z2).unwrap();
        let e = rel(&z2, &z);
        assert!(e <= rt_tol, "{name}: forward∘inverse error {e:.3e} at {z:?}");
        st.round_trip = st.round_trip.max(e);
        let (e, tol) = fd_log_det_error(&mut { inv }, &z, &x, ld_i, h, ld_tol);
        assert!(
            e <= tol,
            "{name}: inverse ld {ld_i}: FD error {e:.3e} > {tol:.3e} at {z:?}"
        );
        st.ld_fd = st.ld_fd.max(e);
        st.ld_fd_ratio = st.ld_fd_ratio.max(e / tol);
    }
    eprintln!("{name}: {st:?}");
    st
}

/// Uniform sampler on `[lo, hi)ᴰ`.
fn unif<const D: usize>(lo: f32, hi: f32) -> impl FnMut(&mut Xoshiro128PlusPlus) -> [f32; D] {
    move |r| random_array(r, lo, hi)
}

/// Standard checks for a layer on ℝᴰ: inputs in `[−3, 3)ᴰ`, `h = 1e-2`,
/// round trips within `1e-5`.
fn check_real<const D: usize, B: Bijector<D>>(name: &str, layer: &B, seed: u64) -> Stats {
    check_bijector(
        name,
        layer,
        &mut unif(-3.0, 3.0),
        &mut unif(-3.0, 3.0),
        seed,
        1e-2,
        1e-5,
        1e-4,
    )
}

#[test]
fn actnorm_round_trip_and_log_det() {
    let mut r = rng(1);
    let layer = ActNorm::<5>::new(random_array(&mut r, -2.0, 2.0), random_array(&mut r, -3.0, 3.0));
    check_real("ActNorm<5>", &layer, 10);
    // The log-det is exactly Σ s, independent of x.
    let mut x = [0.3; 5];
    let ld = layer.forward(&mut x).unwrap();
    assert_eq!(ld, layer.log_scale().iter().sum::<f32>());
}

/// The const-generic layer scores with scales cached at construction (no
/// `exp` per coordinate): the same bits as the uncached view of the same
/// parameters, forward, log-det and input gradient, over extreme log-scales
/// too (the core's `exp` clamps them); `set_log_scale` keeps the cache in step.
#[test]
fn actnorm_cached_scales_are_the_uncached_bits() {
    let mut r = rng(3);
    let mut log_scale: [f32; 7] = random_array(&mut r, -3.0, 3.0);
    log_scale[5] = 120.0;
    log_scale[6] = -150.0;
    let mut layer = ActNorm::<7>::new(log_scale, random_array(&mut r, -3.0, 3.0));
    for round in 0..2 {
        assert!(layer.view().is_cached());
        let flat = ActNormRef::new(layer.log_scale(), &layer.shift);
        assert!(!flat.is_cached());
        for _ in 0..200 {
            let x: [f32; 7] = random_array(&mut r, -50.0, 50.0);
            let (mut a, mut b) = (x, x);
            let (la, lb) = (layer.view().forward(&mut a), flat.forward(&mut b));
            assert_eq!(
                (la.to_bits(), a.map(f32::to_bits)),
                (lb.to_bits(), b.map(f32::to_bits)),
                "round {round}"
            );
            let (mut ga, mut gb) = (x, x);
            layer.view().backward_input(&mut ga);
            flat.backward_input(&mut gb);
            assert_eq!(ga.map(f32::to_bits), gb.map(f32::to_bits));
        }
        layer.set_log_scale(random_array(&mut r, -1.0, 1.0));
    }
}

#[test]
fn actnorm_standardizing_standardizes() {
    let (mean, std) = ([1.0, -2.0, 0.5], [2.0, 0.25, 1.0]);
    let (mut s, mut b) = ([0.0; 3], [0.0; 3]);
    ActNormRef::standardizing(&mean, &std, &mut s, &mut b);
    let layer = ActNorm::new(s, b);
    for (k, want) in [(0.0f32, 0.0f32), (1.0, 1.0), (-1.5, -1.5)] {
        let mut x: [f32; 3] = core::array::from_fn(|i| mean[i] + k * std[i]);
        layer.forward(&mut x).unwrap();
        for v in x {
            assert!((v - want).abs() < 1e-6, "{x:?}");
        }
    }
    // A zero or non-finite std falls back to 1 instead of producing Inf.
    ActNormRef::standardizing(&[3.0, 3.0], &[0.0, f32::NAN], &mut s[..2], &mut b[..2]);
    assert_eq!((&s[..2], &b[..2]), (&[0.0, 0.0][..], &[-3.0, -3.0][..]));
}

#[test]
fn sigmoid_and_logit_round_trip_and_log_det() {
    // Sigmoid: x ∈ [−4, 4) keeps σ(x) away from 0/1 where f32 loses the
    // round trip (σ(x) rounds to 1 for x ≳ 17). Logit: (0.05, 0.95).
    check_bijector(
        "Sigmoid",
        &Sigmoid,
        &mut unif::<4>(-4.0, 4.0),
        &mut unif(0.05, 0.95),
        20,
        1e-2,
        1e-5,
        1e-4,
    );
    check_bijector(
        "Logit",
        &Logit,
        &mut unif::<4>(0.05, 0.95),
        &mut unif(-4.0, 4.0),
        21,
        1e-2,
        1e-5,
        1e-4,
    );
    // Closed forms at a few points.
    let mut x = [0.0f32, 2.0, -2.0];
    let ld = sigmoid_forward(&mut x);
    let want_ld: f64 = [0.0f64, 2.0, -2.0]
        .iter()
        .map(|&v| {
            let s = 1.0 / (1.0 + (-v).exp());
            (s * (1.0 - s)).ln()
        })
        .sum();
    assert!((ld as f64 - want_ld).abs() < 1e-6);
    assert_eq!(x[0], 0.5);
    let mut y = [0.25f32];
    let ld = logit_forward(&mut y).unwrap();
    assert!((y[0] as f64 - (1.0f64 / 3.0).ln()).abs() < 1e-6);
    assert!((ld as f64 + (0.25f64 * 0.75).ln()).abs() < 1e-6);
    // The log-det of the sigmoid stays finite far in the tails.
    let mut x = [-80.0f32, 80.0, 1e30, -1e30];
    let ld = sigmoid_forward(&mut x);
    assert!(ld.is_finite() && (ld - (-160.0 - 2e30)).abs() / 2e30 < 1e-6, "{ld}");
}

#[test]
fn permutations_round_trip_and_log_det() {
    let p = Permutation::new([3, 0, 4, 1, 2]);
    check_real("Permutation<5>", &p, 30);
    check_real::<5, _>("Reverse<5>", &Reverse, 31);
    check_real::<4, _>("Reverse<4>", &Reverse, 32);
    let mut x = [10.0, 11.0, 12.0, 13.0, 14.0];
    assert_eq!(p.forward(&mut x).unwrap(), 0.0);
    assert_eq!(x, [13.0, 10.0, 14.0, 11.0, 12.0]); // y[i] = x[perm[i]]
    let mut x = [1.0, 2.0, 3.0];
    assert_eq!(Bijector::<3>::forward(&Reverse, &mut x).unwrap(), 0.0);
    assert_eq!(x, [3.0, 2.0, 1.0]);
    // The slice functions agree with the const-generic type.
    let (mut v, mut tmp) = ([10.0, 11.0, 12.0, 13.0, 14.0], [0.0; 5]);
    permute_forward(p.indices(), &mut v, &mut tmp);
    assert_eq!(v, [13.0, 10.0, 14.0, 11.0, 12.0]);
    permute_inverse(p.indices(), &mut v, &mut tmp);
    assert_eq!(v, [10.0, 11.0, 12.0, 13.0, 14.0]);
}

#[test]
fn permutation_try_new_rejects_non_permutations() {
    assert!(Permutation::try_new([2, 0, 1]).is_some());
    assert!(Permutation::try_new([0usize; 0]).is_some());
    assert!(Permutation::try_new([0, 0, 1]).is_none()); // repeat
    assert!(Permutation::try_new([0, 1, 3]).is_none()); // out of range
    assert!(Permutation::try_new([1, 2, 3]).is_none());
    assert!(Permutation::try_new([usize::MAX, 0]).is_none());
    assert!(is_permutation(&[4, 3, 2, 1, 0]));
    assert!(!is_permutation(&[4, 3, 2, 1, 1]));
    assert_eq!(Permutation::try_new([1, 0]).unwrap().indices(), &[1, 0]);
}

#[test]
#[should_panic(expected = "not a permutation")]
fn permutation_new_panics_at_run_time_on_non_permutation() {
    let perm = std::hint::black_box([0, 2, 2]);
    let _ = Permutation::new(perm);
}

/// Affine couplings: every activation on several splits, widths and depths.
#[test]
fn coupling_round_trip_and_log_det() {
    let mut r = rng(40);
    for (i, act) in ACTIVATIONS.into_iter().enumerate() {
        let s = 100 + 10 * i as u64;
        check_real::<5, _>(
            &format!("AC<2,3,8,0> {act:?}"),
            &random_coupling::<2, 3, 8, 0, _>(&mut r, act, 1.0, 3.0),
            s,
        );
        check_real::<5, _>(
            &format!("AC<3,2,16,1> {act:?}"),
            &random_coupling::<3, 2, 16, 1, _>(&mut r, act, 1.0, 3.0),
            s + 1,
        );
        check_real::<5, _>(
            &format!("AC<1,4,5,1> {act:?}"),
            &random_coupling::<1, 4, 5, 1, _>(&mut r, act, 1.5, 2.0),
            s + 2,
        );
        check_real::<5, _>(
            &format!("AC<4,1,6,0> {act:?}"),
            &random_coupling::<4, 1, 6, 0, _>(&mut r, act, 1.0, 3.0),
            s + 3,
        );
        check_real::<2, _>(
            &format!("AC<1,1,8,1> {act:?}"),
            &random_coupling::<1, 1, 8, 1, _>(&mut r, act, 1.5, 3.0),
            s + 4,
        );
    }
}

/// Degenerate sizes: a coupling with no conditioning coordinates (its
/// conditioner sees only biases: an unconditional affine layer) and a
/// one-dimensional MAF (every output weight is masked).
#[test]
fn degenerate_sizes_round_trip_and_log_det() {
    let mut r = rng(42);
    for act in ACTIVATIONS {
        check_real::<3, _>(
            &format!("AC<0,3,4,0> {act:?}"),
            &random_coupling::<0, 3, 4, 0, _>(&mut r, act, 1.0, 3.0),
            43,
        );
        let m = random_maf::<1, 4, 1, _>(&mut r, act, 1.0, 3.0);
        assert!(m.net.w_out.as_flattened().as_flattened().iter().all(|&w| w == 0.0));
        check_maf(&format!("Maf<1,4,1> {act:?}"), &m, 44);
    }
}

/// A random point where a coupling is far from the identity: log-scales of
/// order one and shifts of order one.
#[test]
fn random_layers_are_far_from_identity() {
    let mut r = rng(41);
    for act in ACTIVATIONS {
        let c = random_coupling::<2, 3, 8, 0, _>(&mut r, act, 1.0, 3.0);
        let m = random_maf::<4, 16, 1, _>(&mut r, act, 1.0, 3.0);
        let (mut max_ld, mut max_move) = (0.0f32, 0.0f32);
        for _ in 0..20 {
            let x: [f32; 5] = random_array(&mut r, -3.0, 3.0);
            let mut y = x;
            max_ld = max_ld.max(c.forward(&mut y).unwrap().abs());
            max_move = max_move.max(x.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max));
            let x: [f32; 4] = random_array(&mut r, -3.0, 3.0);
            let mut y = x;
            max_ld = max_ld.max(m.forward(&mut y).unwrap().abs());
        }
        assert!(max_ld > 1.0 && max_move > 1.0, "{act:?}: ld {max_ld}, move {max_move}");
    }
}

/// MAF round trips are looser than couplings': the inverse runs `D`
/// sequential passes, and an error in `x_j` reaches `x_i` (i > j) amplified by
/// `|∂t_i/∂x_j|·e^{−s_i}` (up to ~e³ per step). Measured ≤ 6e-5; bound 1e-4.
fn check_maf<const D: usize, const H: usize, const L: usize>(name: &str, layer: &Maf<D, H, L>, seed: u64) -> Stats {
    check_bijector(
        name,
        layer,
        &mut unif(-3.0, 3.0),
        &mut unif(-3.0, 3.0),
        seed,
        1e-2,
        1e-4,
        1e-4,
    )
}

#[test]
fn maf_round_trip_and_log_det() {
    let mut r = rng(50);
    for (i, act) in ACTIVATIONS.into_iter().enumerate() {
        let s = 200 + 10 * i as u64;
        check_maf(
            &format!("Maf<2,8,0> {act:?}"),
            &random_maf::<2, 8, 0, _>(&mut r, act, 1.0, 3.0),
            s,
        );
        check_maf(
            &format!("Maf<3,8,1> {act:?}"),
            &random_maf::<3, 8, 1, _>(&mut r, act, 1.0, 3.0),
            s + 1,
        );
        check_maf(
            &format!("Maf<4,16,1> {act:?}"),
            &random_maf::<4, 16, 1, _>(&mut r, act, 1.0, 3.0),
            s + 2,
        );
        check_maf(
            &format!("Maf<5,12,0> {act:?}"),
            &random_maf::<5, 12, 0, _>(&mut r, act, 1.5, 2.0),
            s + 3,
        );
    }
}

/// The MAF Jacobian `∂z/∂x` is lower-triangular: exactly zero above the
/// diagonal (masked weights are exact zeros, so f32 evaluations do not move),
/// `e^{s_i}` on it, and clearly non-zero below it. Without the masks the same
/// check fails, so it has teeth.
#[test]
fn maf_jacobian_is_lower_triangular() {
    const D: usize = 5;
    let mut r = rng(51);
    for act in ACTIVATIONS {
        let maf = random_maf::<D, 12, 1, _>(&mut r, act, 1.0, 3.0);
        assert!(maf.is_masked());
        let mut max_below = 0.0f64;
        for _ in 0..10 {
            let x: [f32; D] = random_array(&mut r, -3.0, 3.0);
            let mut f = |v: &[f32]| {
                let mut a: [f32; D] = v.try_into().unwrap();
                maf.forward(&mut a).unwrap();
                a.to_vec()
            };
            let jac = fd_jacobian(&mut f, &x, 1e-2);
            let mut z = x;
            let ld = maf.forward(&mut z).unwrap() as f64;
            let mut diag_ld = 0.0;
            for i in 0..D {
                for j in i + 1..D {
                    assert_eq!(jac[i * D + j], 0.0, "{act:?}: ∂z_{i}/∂x_{j} at {x:?}");
                }
                for j in 0..i {
                    max_below = max_below.max(jac[i * D + j].abs());
                }
                assert!(jac[i * D + i] > 0.0);
                diag_ld += jac[i * D + i].ln();
            }
            // z_i is affine in x_i, so the diagonal FD is exact up to round-off.
            assert!((diag_ld - ld).abs() < 1e-3, "{act:?}: {diag_ld} vs {ld}");
        }
        assert!(max_below > 0.1, "{act:?}: MAF is nearly diagonal ({max_below})");
    }

    // The same weights without the masks: the upper triangle is not zero.
    let mut unmasked = random_maf::<D, 12, 1, _>(&mut r, Activation::Tanh, 1.0, 3.0);
    for v in unmasked.net.w_in.as_flattened_mut() {
        if *v == 0.0 {
            *v = 0.5;
        }
    }
    assert!(!unmasked.is_masked());
    let x: [f32; D] = random_array(&mut r, -3.0, 3.0);
    let mut f = |v: &[f32]| {
        let mut a: [f32; D] = v.try_into().unwrap();
        unmasked.forward(&mut a).unwrap();
        a.to_vec()
    };
    let jac = fd_jacobian(&mut f, &x, 1e-2);
    assert!((0..D).any(|i| (i + 1..D).any(|j| jac[i * D + j] != 0.0)));
}

/// `made_mask_params` zeros exactly the MADE-forbidden weights: applying it
/// twice changes nothing, and `Maf::is_masked` notices any single forbidden
/// weight set non-zero.
#[test]
fn made_masks_are_idempotent_and_detected() {
    use flowmote::maf::made_mask_params;
    let mut r = rng(52);
    let shape = Mlp::<4, 7, 1, 4, 2>::shape();
    let mut p = random_params(&mut r, shape, 1.0);
    made_mask_params(shape, &mut p).unwrap();
    let once = p.clone();
    made_mask_params(shape, &mut p).unwrap();
    assert_eq!(p, once);
    let zeros: Vec<usize> = (0..p.len()).filter(|&i| p[i] == 0.0).collect();
    assert!(!zeros.is_empty());
    let maf = Maf::<4, 7, 1> {
        clamp: 3.0,
        net: mlp_from_flat(Activation::Tanh, &p),
    };
    assert!(maf.is_masked());
    for &i in &zeros {
        let mut q = p.clone();
        q[i] = 0.25;
        let m = Maf::<4, 7, 1> {
            clamp: 3.0,
            net: mlp_from_flat(Activation::Tanh, &q),
        };
        assert!(!m.is_masked(), "forbidden weight {i} not detected");
    }
    // A wrong shape is an error, not a panic.
    assert!(made_mask_params(Mlp::<4, 7, 1, 3, 2>::shape(), &mut vec![0.0; 100]).is_err());
}

/// The core's f32 forward passes agree with the independent f64 references,
/// and the core's log-dets agree with `log|det|` of the references' f64 FD
/// Jacobians (step 1e-6: truncation and round-off both ≲ 1e-9).
#[test]
fn layers_match_f64_references() {
    let mut r = rng(60);
    let mut worst = (0.0f64, 0.0f64);
    let mut check = |name: &str, got: (&[f32], f32), want: (Vec<f64>, f64), ld_fd: f64| {
        let scale = want.0.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        let e = got
            .0
            .iter()
            .zip(&want.0)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max)
            / scale;
        assert!(e < 1e-5, "{name}: output error {e:.3e}");
        assert!(
            (got.1 as f64 - want.1).abs() < 1e-5 * (1.0 + want.1.abs()),
            "{name}: ld {} vs {}",
            got.1,
            want.1
        );
        let e_ld = (got.1 as f64 - ld_fd).abs();
        assert!(e_ld < 1e-4, "{name}: ld {} vs f64 FD {ld_fd}", got.1);
        worst = (worst.0.max(e), worst.1.max(e_ld));
    };
    for act in ACTIVATIONS {
        for _ in 0..5 {
            // ActNorm
            let p = random_vec(&mut r, 10, -2.0, 2.0);
            let x = random_vec(&mut r, 5, -3.0, 3.0);
            let mut y = x.clone();
            let ld = ActNormRef::from_flat(&p).forward(&mut y);
            let (pd, xd) = (to_f64(&p), to_f64(&x));
            let fd = log_abs_det(&fd_jacobian_f64(&mut |v| ref_actnorm(&pd, v).0, &xd, 1e-6), 5);
            check("ActNorm", (&y, ld), ref_actnorm(&pd, &xd), fd);

            // Coupling 2 | 3, two hidden layers.
            let c = random_coupling::<2, 3, 8, 1, _>(&mut r, act, 1.0, 2.5);
            let x: [f32; 5] = random_array(&mut r, -3.0, 3.0);
            let mut y = x;
            let ld = c.forward(&mut y).unwrap();
            let (pd, xd, sh) = (to_f64(&flat_params(&c.net.view())), to_f64(&x), c.net.view().shape);
            let mut f = |v: &[f64]| ref_coupling(2, 2.5, sh, act, &pd, v).0;
            let fd = log_abs_det(&fd_jacobian_f64(&mut f, &xd, 1e-6), 5);
            check("coupling", (&y, ld), ref_coupling(2, 2.5, sh, act, &pd, &xd), fd);

            // MAF
            let m = random_maf::<4, 10, 1, _>(&mut r, act, 1.0, 3.0);
            let x: [f32; 4] = random_array(&mut r, -3.0, 3.0);
            let mut y = x;
            let ld = m.forward(&mut y).unwrap();
            let (pd, xd, sh) = (to_f64(&flat_params(&m.net.view())), to_f64(&x), m.net.view().shape);
            let mut f = |v: &[f64]| ref_maf(3.0, sh, act, &pd, v).0;
            let fd = log_abs_det(&fd_jacobian_f64(&mut f, &xd, 1e-6), 4);
            check("MAF", (&y, ld), ref_maf(3.0, sh, act, &pd, &xd), fd);
        }
    }
    eprintln!(
        "f64 reference parity: output rel err {:.2e}, ld vs f64 FD {:.2e}",
        worst.0, worst.1
    );
}

/// `mlp_from_flat` / `flat_params` agree with `MlpRef::from_flat`, and the
/// const-generic `Mlp` view computes what the f64 reference computes.
#[test]
fn mlp_layout_matches_reference() {
    let mut r = rng(61);
    for act in ACTIVATIONS {
        let mlp = random_mlp::<3, 6, 2, 2, 2, _>(&mut r, act, 1.0);
        let v = mlp.view();
        let p = flat_params(&v);
        let v2 = MlpRef::from_flat(v.shape, act, &p).unwrap();
        let x = random_vec(&mut r, 3, -2.0, 2.0);
        let (mut h0, mut h1, mut o1, mut o2) = ([0.0; 6], [0.0; 6], [0.0; 4], [0.0; 4]);
        v.forward(&x, 0.0, &mut h0, &mut h1, &mut o1);
        v2.forward(&x, 0.0, &mut h0, &mut h1, &mut o2);
        assert_eq!(o1, o2);
        let want = ref_mlp(v.shape, act, &to_f64(&p), &to_f64(&x), 0.0);
        assert_close("mlp vs reference", &to_f64(&o1), &want, 1e-5, 1e-5);
        // forward_cached computes the same outputs.
        let (mut acts, mut o3) = ([0.0; 18], [0.0; 4]);
        v.forward_cached(&x, 0.0, &mut acts, &mut o3);
        assert_eq!(o1, o3);
    }
    // Wrong lengths are errors.
    let shape = Mlp::<3, 6, 2, 2, 2>::shape();
    assert!(MlpRef::from_flat(shape, Activation::Tanh, &[0.0; 3]).is_err());
}

type Composite = (
    Logit,
    ActNorm<3>,
    AffineCoupling<1, 2, 8, 0>,
    Permutation<3>,
    Maf<3, 8, 1>,
    Reverse,
    AffineCoupling<2, 1, 6, 1>,
);

fn composite(seed: u64, act: Activation) -> Composite {
    let mut r = rng(seed);
    (
        Logit,
        ActNorm::new(random_array(&mut r, -1.0, 1.0), random_array(&mut r, -1.0, 1.0)),
        random_coupling(&mut r, act, 1.0, 2.0),
        Permutation::new([2, 0, 1]),
        random_maf(&mut r, act, 1.0, 2.0),
        Reverse,
        random_coupling(&mut r, act, 1.0, 2.0),
    )
}

/// A composed flow with every layer kind: round trips and log-dets of the
/// tuple and of `Flow::forward`/`inverse`. Smooth conditioners only: a ReLU
/// kink inside the FD stencil corrupts off-diagonal Jacobian entries, which in
/// a composition do reach the determinant.
#[test]
fn composed_flow_round_trip_and_log_det() {
    // ELU is only C¹ (its second derivative jumps at 0), which spoils the
    // Richardson step's O(h⁴) truncation when a kink is inside the stencil; a
    // smaller step keeps that term at O(h·jump) ≲ 1e-4.
    for (i, (act, h)) in [(Activation::Tanh, 1e-2), (Activation::Elu, 1e-3)]
        .into_iter()
        .enumerate()
    {
        let layers = composite(70 + i as u64, act);
        let name = format!("composite {act:?}");
        // Latent points in the image of the data box: far out in latent
        // space the sigmoid (inverse of the first Logit) rounds to 0 or 1 in f32.
        let mut image = |r: &mut Xoshiro128PlusPlus| {
            let mut z: [f32; 3] = random_array(r, 0.1, 0.9);
            layers.forward(&mut z).unwrap();
            z
        };
        check_bijector(&name, &layers, &mut unif(0.1, 0.9), &mut image, 80, h, 2e-5, 1e-4);
        // A 6-D flow of couplings and MAFs only.
        let mut r = rng(90 + i as u64);
        // ELU is unbounded above: with unit-scale weights three conditioners in
        // a row push latents to |z| ~ 1e2, where f32 FD cannot resolve the
        // log-det, so its weights are smaller (latents stay O(10)).
        let w = if act == Activation::Elu { 0.4 } else { 1.0 };
        let deep = (
            random_coupling::<3, 3, 12, 1, _>(&mut r, act, w, 2.0),
            Reverse,
            random_maf::<6, 16, 0, _>(&mut r, act, 0.7 * w, 2.0),
            Permutation::new([1, 3, 5, 0, 2, 4]),
            random_coupling::<2, 4, 8, 0, _>(&mut r, act, w, 2.0),
            ActNorm::new(random_array(&mut r, -0.5, 0.5), random_array(&mut r, -1.0, 1.0)),
        );
        let mut image = |r: &mut Xoshiro128PlusPlus| {
            let mut z: [f32; 6] = random_array(r, -3.0, 3.0);
            deep.forward(&mut z).unwrap();
            z
        };
        check_bijector::<6, _>(
            &format!("6-D stack {act:?}"),
            &deep,
            &mut unif(-3.0, 3.0),
            &mut image,
            91,
            h,
            1e-5,
            1e-4,
        );

        // Flow::forward / inverse agree with the tuple.
        let flow = Flow::<3, _>::new(layers);
        let mut r = rng(100);
        for _ in 0..10 {
            let x: [f32; 3] = random_array(&mut r, 0.1, 0.9);
            let mut z = x;
            let ld = flow.layers.forward(&mut z).unwrap();
            assert_eq!(flow.forward(&x).unwrap(), (z, ld));
            let (x2, ld2) = flow.inverse(&z).unwrap();
            assert!((ld + ld2).abs() < 1e-4 * (1.0 + ld.abs()));
            for k in 0..3 {
                assert!((x2[k] - x[k]).abs() < 1e-5);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// `static` instantiation: the inline-const split asserts fire only when a
// Bijector impl is monomorphised, so each configuration is built in a static
// and run.

static ACTNORM: ActNorm<3> = ActNorm::new([0.5, -0.5, 0.0], [1.0, 0.0, -1.0]);
static ACTNORM_ID: ActNorm<3> = ActNorm::identity();
static PERM: Permutation<3> = Permutation::new([2, 0, 1]);
static PERM_TRY: Option<Permutation<3>> = Permutation::try_new([0, 0, 1]);
static REVERSE: Reverse = Reverse;
static SIGMOID: Sigmoid = Sigmoid;
static LOGIT: Logit = Logit;
static MLP: Mlp<2, 4, 2, 3, 2> = Mlp::zeroed(Activation::Relu);
static AC_1_2_L0: AffineCoupling<1, 2, 4, 0> = AffineCoupling {
    clamp: 3.0,
    net: Mlp::zeroed(Activation::Tanh),
};
static AC_2_1_L1: AffineCoupling<2, 1, 5, 1> = AffineCoupling {
    clamp: 2.0,
    net: Mlp::zeroed(Activation::Elu),
};
static MAF_L0: Maf<3, 4, 0> = Maf {
    clamp: 3.0,
    net: Mlp::zeroed(Activation::LeakyRelu),
};
static MAF_L1: Maf<3, 6, 1> = Maf {
    clamp: 3.0,
    net: Mlp::zeroed(Activation::Tanh),
};
#[allow(clippy::type_complexity)]
static STACK: (
    ActNorm<3>,
    AffineCoupling<1, 2, 4, 0>,
    Permutation<3>,
    Maf<3, 4, 0>,
    Reverse,
    AffineCoupling<2, 1, 5, 1>,
    Maf<3, 6, 1>,
) = (
    ActNorm::new([0.5, -0.5, 0.0], [1.0, 0.0, -1.0]),
    AffineCoupling {
        clamp: 3.0,
        net: Mlp::zeroed(Activation::Tanh),
    },
    Permutation::new([2, 0, 1]),
    Maf {
        clamp: 3.0,
        net: Mlp::zeroed(Activation::LeakyRelu),
    },
    Reverse,
    AffineCoupling {
        clamp: 2.0,
        net: Mlp::zeroed(Activation::Elu),
    },
    Maf {
        clamp: 3.0,
        net: Mlp::zeroed(Activation::Tanh),
    },
);
#[allow(clippy::type_complexity)]
static FLOW: Flow<
    3,
    (
        Sigmoid,
        Logit,
        ActNorm<3>,
        AffineCoupling<1, 2, 4, 0>,
        Permutation<3>,
        Maf<3, 4, 0>,
    ),
> = Flow::new((
    Sigmoid,
    Logit,
    ActNorm::identity(),
    AffineCoupling {
        clamp: 3.0,
        net: Mlp::zeroed(Activation::Relu),
    },
    Permutation::new([1, 2, 0]),
    Maf {
        clamp: 3.0,
        net: Mlp::zeroed(Activation::Tanh),
    },
));
/// Borrowed layers compose too (`&T: Bijector`).
static BORROWED: Flow<3, (&ActNorm<3>, &Permutation<3>, &Maf<3, 6, 1>)> = Flow::new((&ACTNORM, &PERM, &MAF_L1));

/// Zero-weight conditioners make couplings and MAFs the identity, so every
/// static model's result is known in closed form.
#[test]
fn static_layers_instantiate_and_run() {
    let x = [0.25f32, -1.0, 2.0];
    let fwd = |b: &dyn Fn(&mut [f32; 3]) -> f32| {
        let mut v = x;
        let ld = b(&mut v);
        (v, ld)
    };
    assert_eq!(fwd(&|v| ACTNORM_ID.forward(v).unwrap()), (x, 0.0));
    assert_eq!(fwd(&|v| AC_1_2_L0.forward(v).unwrap()), (x, 0.0));
    assert_eq!(fwd(&|v| AC_2_1_L1.forward(v).unwrap()), (x, 0.0));
    assert_eq!(fwd(&|v| MAF_L0.forward(v).unwrap()), (x, 0.0));
    assert_eq!(fwd(&|v| MAF_L1.forward(v).unwrap()), (x, 0.0));
    assert_eq!(fwd(&|v| AC_1_2_L0.inverse(v).unwrap()), (x, 0.0));
    assert_eq!(fwd(&|v| MAF_L1.inverse(v).unwrap()), (x, 0.0));
    assert_eq!(fwd(&|v| PERM.forward(v).unwrap()), ([2.0, 0.25, -1.0], 0.0));
    assert_eq!(fwd(&|v| REVERSE.forward(v).unwrap()), ([2.0, -1.0, 0.25], 0.0));
    assert!(PERM_TRY.is_none());
    assert!(MAF_L0.is_masked() && MAF_L1.is_masked());
    assert_eq!(MLP.view().shape.n_params(), Mlp::<2, 4, 2, 3, 2>::shape().n_params());
    assert_eq!(Mlp::<2, 4, 2, 3, 2>::shape().output, 6);

    // ActNorm: y = e^s x + b, log-det Σ s = 0 here.
    let (y, ld) = fwd(&|v| ACTNORM.forward(v).unwrap());
    let want = [0.25 * 0.5f32.exp() + 1.0, -(-0.5f32).exp(), 1.0];
    assert_eq!(ld, 0.0);
    for k in 0..3 {
        assert!((y[k] - want[k]).abs() < 1e-6);
    }

    // The stack: ActNorm, then a permutation and a reversal (identities in
    // between): (a, b, c) → perm [2,0,1] → (c, a, b) → reverse → (b, a, c).
    let (z, ld) = fwd(&|v| STACK.forward(v).unwrap());
    assert_eq!(ld, 0.0);
    assert_eq!(z, [y[1], y[0], y[2]]);
    let mut back = z;
    assert_eq!(STACK.inverse(&mut back).unwrap(), 0.0);
    for k in 0..3 {
        assert!((back[k] - x[k]).abs() < 1e-6);
    }
    let (z2, ld2) = BORROWED.forward(&x).unwrap();
    assert_eq!(ld2, 0.0);
    assert_eq!(z2, [y[2], y[0], y[1]]);

    // Sigmoid then logit: the identity up to round-off, log-dets cancel.
    let (z, ld) = FLOW.forward(&x).unwrap();
    assert!(ld.abs() < 1e-5, "{ld}");
    // perm [1, 2, 0]: z = (x1, x2, x0)
    assert!((z[0] - x[1]).abs() < 1e-5 && (z[1] - x[2]).abs() < 1e-5 && (z[2] - x[0]).abs() < 1e-5);
    let (u, _) = fwd(&|v| SIGMOID.forward(v).unwrap());
    let mut back = u;
    LOGIT.forward(&mut back).unwrap();
    for k in 0..3 {
        assert!((back[k] - x[k]).abs() < 1e-5);
    }
    let lp = FLOW.log_prob(&x).unwrap();
    let want = -0.5 * (x.iter().map(|v| v * v).sum::<f32>() + 3.0 * 1.837_877);
    assert!((lp - want).abs() < 1e-4, "{lp} vs {want}");
}
