//! Rational-quadratic spline layers: round trips (tails, knots), log-dets
//! against finite-difference Jacobians, triangular autoregressive Jacobians,
//! gradients against central differences, normalisation of a 2-D flow,
//! `static` instances and extreme inputs.

use flowmote::mlp::{Mlp, MlpGrad, MlpRef, MlpShape};
use flowmote::spline::{
    is_made_masked, made_mask_heads, rq_spline_backward, rq_spline_forward, rq_spline_inverse, rq_spline_knots,
    spline_params, DEFAULT_TAIL_BOUND,
};
use flowmote::{
    Activation, Bijector, Flow, Reverse, SplineAutoregressive, SplineAutoregressiveRef, SplineCoupling,
    SplineCouplingRef,
};
use flowmote_host_tests::{fd_jacobian, log_abs_det, SplitMix as Rng};

fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
    (a - b).abs() <= abs + rel * a.abs().max(b.abs())
}

/// Expected error of `log|det|` of a central-difference Jacobian (step `h`)
/// of a (block-)triangular map in f32 at output `y`: an ulp of each output,
/// divided by the difference it is part of.
fn fd_noise(jac: &[f64], y: &[f32], h: f32) -> f64 {
    let n = y.len();
    (0..n)
        .map(|i| 4.0 * f32::EPSILON as f64 * y[i].abs().max(1.0) as f64 / (2.0 * h as f64 * jac[i * n + i].abs()))
        .sum()
}

/// Copy a flat parameter vector into a const-generic MLP.
fn fill_mlp<const IN: usize, const H: usize, const L: usize, const OUT: usize, const HEADS: usize>(
    act: Activation,
    p: &[f32],
) -> Mlp<IN, H, L, OUT, HEADS> {
    let mut m = Mlp::<IN, H, L, OUT, HEADS>::zeroed(act);
    let r = MlpRef::from_flat(Mlp::<IN, H, L, OUT, HEADS>::shape(), act, p).unwrap();
    m.w_in.as_flattened_mut().copy_from_slice(r.w_in);
    m.b_in.copy_from_slice(r.b_in);
    m.w_hid.as_flattened_mut().as_flattened_mut().copy_from_slice(r.w_hid);
    m.b_hid.as_flattened_mut().copy_from_slice(r.b_hid);
    m.w_out.as_flattened_mut().as_flattened_mut().copy_from_slice(r.w_out);
    m.b_out.as_flattened_mut().copy_from_slice(r.b_out);
    m
}

// ---------------------------------------------------------------- scalar spline

const K: usize = 6;
const B: f32 = 2.5;

fn knots(raw: &[f32], stride: usize, k: usize, b: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (mut xs, mut ys, mut ds) = (vec![0.0; k + 1], vec![0.0; k + 1], vec![0.0; k + 1]);
    rq_spline_knots(raw, stride, k, b, &mut xs, &mut ys, &mut ds);
    (xs, ys, ds)
}

/// Test points: a grid across and beyond [−B, B], integers, the bound itself,
/// huge values and every knot.
fn test_points(xs: &[f32]) -> Vec<f32> {
    let mut pts: Vec<f32> = (0..=1000).map(|i| -6.0 + 12.0 * i as f32 / 1000.0).collect();
    pts.extend((-10..=10).map(|i| i as f32));
    pts.extend([
        B,
        -B,
        B.next_down(),
        (-B).next_up(),
        1e30,
        -1e30,
        3e38,
        -3e38,
        1e-30,
        -0.0,
    ]);
    pts.extend_from_slice(xs);
    pts
}

#[test]
fn scalar_round_trip_tails_and_knots() {
    let mut rng = Rng(1);
    for trial in 0..20 {
        let scale = if trial < 10 { 1.5 } else { 4.0 };
        // Interleave with stride 3 to exercise head-major indexing.
        let raw = rng.vec(3 * spline_params(K), scale);
        let stride = 3;
        let (xs, ys, ds) = knots(&raw, stride, K, B);
        assert_eq!((xs[0], xs[K], ys[0], ys[K]), (-B, B, -B, B));
        assert_eq!((ds[0], ds[K]), (1.0, 1.0));
        assert!(xs.windows(2).all(|w| w[1] > w[0]) && ys.windows(2).all(|w| w[1] > w[0]));
        for x in test_points(&xs) {
            let (y, ld) = rq_spline_forward(x, &raw, stride, K, B);
            assert!(y.is_finite() && ld.is_finite(), "x {x}: y {y} ld {ld}");
            let (x2, ld2) = rq_spline_inverse(y, &raw, stride, K, B);
            assert!(x2.is_finite() && ld2.is_finite());
            // f32 conditioning of the inverse: an ulp of y becomes ulp/slope in x.
            let cond = 4.0 * f32::EPSILON * y.abs().max(1.0) / ld.exp().min(1.0);
            assert!(
                (x2 - x).abs() <= 2e-5 * x.abs().max(1.0) + cond,
                "trial {trial}: x {x} -> y {y} -> {x2}"
            );
            // The inverse's log-det is minus the forward one at its result;
            // against the forward log-det at `x` it differs by
            // x-error × ∂(log-det)/∂x, large in steep, strongly curved bins.
            let back = rq_spline_forward(x2, &raw, stride, K, B).1;
            assert!((ld2 + back).abs() < 1e-4, "x {x}: inverse log-det {ld2} vs {back}");
            assert!((ld + ld2).abs() < 2e-2, "x {x}: ld {ld} vs {ld2}");
            if !(x > -B && x < B) {
                assert_eq!((y, ld), (x, 0.0), "tails are the identity");
            }
        }
        // Knots map exactly to knots and back.
        for j in 0..=K {
            let (y, ld) = rq_spline_forward(xs[j], &raw, stride, K, B);
            assert_eq!(y, ys[j], "knot {j}");
            assert!(
                (ld - ds[j].ln()).abs() < 1e-4,
                "log-slope at knot {j}: {ld} vs {}",
                ds[j].ln()
            );
            let (x, _) = rq_spline_inverse(ys[j], &raw, stride, K, B);
            assert_eq!(x, xs[j], "knot {j} inverse");
        }
    }
}

#[test]
fn scalar_monotone_and_zero_params_identity() {
    let mut rng = Rng(2);
    let raw = rng.vec(spline_params(K), 3.0);
    let mut prev = f32::NEG_INFINITY;
    for i in 0..=20000 {
        let x = -3.0 + 6.0 * i as f32 / 20000.0;
        let (y, _) = rq_spline_forward(x, &raw, 1, K, B);
        assert!(y >= prev, "not monotone at {x}");
        prev = y;
    }
    let zero = vec![0.0; spline_params(K)];
    for i in 0..=100 {
        let x = -3.0 + 6.0 * i as f32 / 100.0;
        let (y, ld) = rq_spline_forward(x, &zero, 1, K, B);
        assert!((y - x).abs() < 2e-6 && ld.abs() < 2e-6, "zero params: {x} -> {y}, {ld}");
    }
}

#[test]
fn scalar_log_det_matches_finite_differences() {
    let mut rng = Rng(3);
    for _ in 0..10 {
        let raw = rng.vec(spline_params(K), 2.0);
        let (xs, _, _) = knots(&raw, 1, K, B);
        for _ in 0..50 {
            let x = 2.8 * rng.sym();
            let h = 1e-3f32;
            if xs.iter().any(|k| (k - x).abs() < 2.0 * h) {
                continue;
            }
            let (_, ld) = rq_spline_forward(x, &raw, 1, K, B);
            let yp = rq_spline_forward(x + h, &raw, 1, K, B).0 as f64;
            let ym = rq_spline_forward(x - h, &raw, 1, K, B).0 as f64;
            let fd = ((yp - ym) / ((x + h) as f64 - (x - h) as f64)).ln();
            // f32 rounding of y, relative to the difference it is divided by.
            let noise = 4.0 * f32::EPSILON as f64 * yp.abs().max(1.0) / (h as f64 * fd.exp());
            assert!(close(ld as f64, fd, 0.0, 2e-3 + noise), "x {x}: ld {ld} fd {fd}");
        }
    }
}

#[test]
fn scalar_backward_matches_finite_differences() {
    let mut rng = Rng(4);
    let np = spline_params(K);
    let mut worst = 0.0f64;
    for trial in 0..30 {
        let raw = rng.vec(np, 2.0);
        let (xs, _, _) = knots(&raw, 1, K, B);
        // Points in every bin, incl. first and last (boundary derivatives).
        let x = if trial < K {
            0.5 * (xs[trial] + xs[trial + 1])
        } else if trial == K {
            4.0 // tail
        } else {
            2.4 * rng.sym()
        };
        let (gy, gl) = (rng.sym() as f64, rng.sym() as f64);
        let loss = |x: f32, raw: &[f32]| {
            let (y, ld) = rq_spline_forward(x, raw, 1, K, B);
            gy * y as f64 + gl * ld as f64
        };
        let mut g_raw = vec![f32::NAN; np];
        let gx = rq_spline_backward(x, &raw, 1, K, B, gy as f32, gl as f32, &mut g_raw);
        let h = 1e-3f32;
        let fd_x = (loss(x + h, &raw) - loss(x - h, &raw)) / ((x + h) as f64 - (x - h) as f64);
        let err = (gx as f64 - fd_x).abs() / (1.0 + fd_x.abs());
        worst = worst.max(err);
        assert!(err < 3e-3, "trial {trial} x {x}: gx {gx} fd {fd_x}");
        for p in 0..np {
            let (mut rp, mut rm) = (raw.clone(), raw.clone());
            rp[p] += h;
            rm[p] -= h;
            let fd = (loss(x, &rp) - loss(x, &rm)) / (rp[p] as f64 - rm[p] as f64);
            let err = (g_raw[p] as f64 - fd).abs() / (1.0 + fd.abs());
            worst = worst.max(err);
            assert!(err < 3e-3, "trial {trial} x {x} param {p}: {} vs fd {fd}", g_raw[p]);
        }
    }
    eprintln!("scalar spline backward: worst relative error {worst:.2e}");
}

#[test]
fn scalar_extreme_parameters_stay_finite() {
    let mut rng = Rng(5);
    let np = spline_params(K);
    let specials = [
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1e30,
        -1e30,
        f32::MAX,
        60.0,
        -60.0,
        0.0,
    ];
    let mut ld_range = (0.0f32, 0.0f32);
    for trial in 0..40 {
        let raw: Vec<f32> = (0..np)
            .map(|_| {
                let u = rng.u64();
                if u % 3 < 1 {
                    specials[(u / 3) as usize % specials.len()]
                } else {
                    100.0 * rng.sym()
                }
            })
            .collect();
        for b in [B, 1e-3, 1e30, f32::INFINITY, f32::NAN, -1.0] {
            let (xs, _, _) = knots(&raw, 1, K, b);
            for x in test_points(&xs).into_iter().chain([0.5 * b, -0.999 * b]) {
                if !x.is_finite() {
                    continue;
                }
                let (y, ld) = rq_spline_forward(x, &raw, 1, K, b);
                assert!(y.is_finite() && ld.is_finite(), "trial {trial} b {b} x {x}: {y} {ld}");
                // The documented range of one coordinate's log-det.
                assert!((-28.0..=9.0).contains(&ld), "log-det {ld}");
                ld_range = (ld_range.0.min(ld), ld_range.1.max(ld));
                let (x2, ld2) = rq_spline_inverse(y, &raw, 1, K, b);
                assert!(x2.is_finite() && ld2.is_finite());
                let mut g = vec![0.0; np];
                let gx = rq_spline_backward(x, &raw, 1, K, b, 1.0, 1.0, &mut g);
                assert!(gx.is_finite() && g.iter().all(|v| v.is_finite()), "trial {trial} x {x}");
            }
        }
    }
    eprintln!("extreme raw parameters: log-det range {ld_range:?}");
}

// ---------------------------------------------------------------- coupling

const KC: usize = 5;
const PC: usize = 3 * KC - 1;

fn coupling_params(rng: &mut Rng, a: usize, b: usize, hidden: usize, depth: usize) -> (MlpShape, Vec<f32>) {
    let shape = MlpShape {
        input: a,
        cond: 0,
        hidden,
        depth,
        output: b * PC,
    };
    (shape, rng.vec(shape.n_params(), 0.7))
}

#[test]
fn coupling_round_trip_log_det_and_const_parity() {
    let mut rng = Rng(10);
    let (shape, p) = coupling_params(&mut rng, 1, 2, 8, 2);
    let net = MlpRef::from_flat(shape, Activation::Tanh, &p).unwrap();
    let layer = SplineCouplingRef::new(1, 2, KC, DEFAULT_TAIL_BOUND, net).unwrap();
    let konst = SplineCoupling::<1, 2, 8, 1, KC, PC>::new(DEFAULT_TAIL_BOUND, fill_mlp(Activation::Tanh, &p));
    let (mut h0, mut h1, mut out) = (vec![0.0; 8], vec![0.0; 8], vec![0.0; layer.n_out()]);
    let fwd = |x: &[f32]| {
        let (mut h0, mut h1, mut out) = (vec![0.0; 8], vec![0.0; 8], vec![0.0; 2 * PC]);
        let mut y = x.to_vec();
        let ld = layer.forward(&mut y, &mut h0, &mut h1, &mut out);
        (y, ld)
    };
    for t in 0..300 {
        let mut x = [3.5 * rng.sym(), 3.5 * rng.sym(), 3.5 * rng.sym()];
        if t % 10 == 1 {
            x[1] = 1e30 * rng.sym();
        }
        if t % 10 == 2 {
            // Put a transformed coordinate exactly on one of its knots.
            net.forward(&x[..1], 0.0, &mut h0, &mut h1, &mut out);
            let (xs, _, _) = knots(&out[1..], 2, KC, DEFAULT_TAIL_BOUND);
            x[2] = xs[t % (KC + 1)];
        }
        let (y, ld) = fwd(&x);
        // Const-generic type computes bit-identical numbers.
        let mut yc = x;
        let ldc = Bijector::<3>::forward(&konst, &mut yc).unwrap();
        assert_eq!((yc.to_vec(), ldc), (y.clone(), ld));
        let mut x2 = y.clone();
        let ld2 = layer.inverse(&mut x2, &mut h0, &mut h1, &mut out);
        for i in 0..3 {
            assert!((x2[i] - x[i]).abs() <= 1e-4 * x[i].abs().max(1.0), "{x:?} -> {x2:?}");
        }
        assert!((ld + ld2).abs() < 1e-3);
        let mut x3 = yc;
        Bijector::<3>::inverse(&konst, &mut x3).unwrap();
        assert_eq!(x3.to_vec(), x2);
        // Log-det against an f64 finite-difference Jacobian.
        // (Not on knots or at ±B: the log-det is only continuous there.)
        let near_bound = x.iter().any(|v| (v.abs() - DEFAULT_TAIL_BOUND).abs() < 3e-3);
        if t % 3 == 0 && t % 10 != 2 && !near_bound && x.iter().all(|v| v.abs() < 10.0) {
            let jac = fd_jacobian(&mut |v: &[f32]| fwd(v).0, &x, 1e-3);
            let fd = log_abs_det(&jac, 3);
            let tol = 3e-3 + fd_noise(&jac, &y, 1e-3);
            assert!(close(ld as f64, fd, 0.0, tol), "x {x:?}: ld {ld} fd {fd}");
        }
    }
}

fn check_mlp_backward<F>(p: &[f32], x: &[f32], g_x: &[f32], grad: &[f32], loss: F, tag: &str)
where
    F: Fn(&[f32], &[f32]) -> f64,
{
    let h = 1e-3f32;
    let mut worst = 0.0f64;
    for i in 0..x.len() {
        let (mut xp, mut xm) = (x.to_vec(), x.to_vec());
        xp[i] += h;
        xm[i] -= h;
        let fd = (loss(p, &xp) - loss(p, &xm)) / (xp[i] as f64 - xm[i] as f64);
        let err = (g_x[i] as f64 - fd).abs() / (1.0 + fd.abs());
        worst = worst.max(err);
        assert!(err < 5e-3, "{tag}: ∂x[{i}] {} vs fd {fd}", g_x[i]);
    }
    for k in 0..p.len() {
        let (mut pp, mut pm) = (p.to_vec(), p.to_vec());
        pp[k] += h;
        pm[k] -= h;
        let fd = (loss(&pp, x) - loss(&pm, x)) / (pp[k] as f64 - pm[k] as f64);
        let err = (grad[k] as f64 - fd).abs() / (1.0 + fd.abs());
        worst = worst.max(err);
        assert!(err < 5e-3, "{tag}: ∂θ[{k}] {} vs fd {fd}", grad[k]);
    }
    eprintln!("{tag}: worst relative gradient error {worst:.2e}");
}

#[test]
fn coupling_backward_matches_finite_differences() {
    let mut rng = Rng(11);
    for (act, depth) in [(Activation::Tanh, 2), (Activation::Elu, 1)] {
        let (shape, p) = coupling_params(&mut rng, 2, 2, 6, depth);
        let c: Vec<f64> = (0..4).map(|_| rng.sym() as f64).collect();
        let c_ld = 0.7;
        let loss = |p: &[f32], x: &[f32]| {
            let net = MlpRef::from_flat(shape, act, p).unwrap();
            let layer = SplineCouplingRef::new(2, 2, KC, 2.0, net).unwrap();
            let (mut h0, mut h1, mut out) = (vec![0.0; 6], vec![0.0; 6], vec![0.0; layer.n_out()]);
            let mut y = x.to_vec();
            let ld = layer.forward(&mut y, &mut h0, &mut h1, &mut out);
            y.iter().zip(&c).map(|(a, b)| *a as f64 * b).sum::<f64>() + c_ld * ld as f64
        };
        for x in [[0.3f32, -0.8, 0.9, -1.1], [1.5, 0.2, -1.7, 3.0], [-0.4, 2.2, 0.05, 1.3]] {
            let net = MlpRef::from_flat(shape, act, &p).unwrap();
            let layer = SplineCouplingRef::new(2, 2, KC, 2.0, net).unwrap();
            let mut g: Vec<f32> = c.iter().map(|&v| v as f32).collect();
            let mut grad = vec![0.0; shape.n_params()];
            let mut scratch = vec![0.0; layer.train_scratch_len()];
            layer.backward(
                &x,
                &mut g,
                c_ld as f32,
                &mut MlpGrad::from_flat(shape, &mut grad).unwrap(),
                &mut scratch,
            );
            check_mlp_backward(&p, &x, &g, &grad, loss, "spline coupling");
        }
    }
}

/// A 2-D flow of two spline couplings integrates to 1 over a grid.
#[test]
fn coupling_flow_density_integrates_to_one() {
    const K2: usize = 8;
    const P2: usize = 3 * K2 - 1;
    type C = SplineCoupling<1, 1, 8, 0, K2, P2>;
    let mut rng = Rng(12);
    let mut layer = || {
        let shape = Mlp::<1, 8, 0, 1, P2>::shape();
        let mut p = rng.vec(shape.n_params(), 0.6);
        let nb = shape.output;
        let len = p.len();
        for v in &mut p[len - nb..] {
            *v *= 2.0; // output biases: a clearly non-trivial spline
        }
        C::new(3.0, fill_mlp(Activation::Tanh, &p))
    };
    let flow = Flow::<2, _>::new((layer(), Reverse, layer()));
    // The flow is far from the identity (not a Gaussian).
    let lp0 = flow.log_prob(&[0.0, 0.0]).unwrap();
    assert!((lp0 - (-(2.0 * std::f32::consts::PI).ln())).abs() > 0.05, "{lp0}");
    let (lo, hi, n) = (-7.0f64, 7.0f64, 560);
    let h = (hi - lo) / n as f64;
    let mut total = 0.0f64;
    for i in 0..n {
        for j in 0..n {
            let x = [(lo + (i as f64 + 0.5) * h) as f32, (lo + (j as f64 + 0.5) * h) as f32];
            total += (flow.log_prob(&x).unwrap() as f64).exp();
        }
    }
    total *= h * h;
    eprintln!("∫ p = {total:.6}");
    assert!((total - 1.0).abs() < 1e-3, "density integrates to {total}");
}

// ---------------------------------------------------------------- autoregressive

const D: usize = 3;
const KA: usize = 4;
const PA: usize = 3 * KA - 1;

fn ar_params(rng: &mut Rng, hidden: usize, depth: usize) -> (MlpShape, Vec<f32>) {
    let shape = MlpShape {
        input: D,
        cond: 0,
        hidden,
        depth,
        output: D * PA,
    };
    let mut p = rng.vec(shape.n_params(), 0.8);
    made_mask_heads(shape, PA, &mut p).unwrap();
    assert!(is_made_masked(
        &MlpRef::from_flat(shape, Activation::Tanh, &p).unwrap(),
        PA
    ));
    (shape, p)
}

#[test]
fn autoregressive_round_trip_triangular_jacobian_and_const_parity() {
    let mut rng = Rng(20);
    let (shape, p) = ar_params(&mut rng, 10, 2);
    let net = MlpRef::from_flat(shape, Activation::Tanh, &p).unwrap();
    let layer = SplineAutoregressiveRef::new(KA, 2.0, net).unwrap();
    let konst = SplineAutoregressive::<D, 10, 1, KA, PA>::new(2.0, fill_mlp(Activation::Tanh, &p));
    assert!(konst.is_masked());
    let mut unmasked = konst.clone();
    unmasked.net.w_in[0][2] = 1.0;
    assert!(!unmasked.is_masked());
    let fwd = |x: &[f32]| {
        let (mut h0, mut h1, mut out) = (vec![0.0; 10], vec![0.0; 10], vec![0.0; D * PA]);
        let mut y = x.to_vec();
        let ld = layer.forward(&mut y, &mut h0, &mut h1, &mut out);
        (y, ld)
    };
    for t in 0..200 {
        let mut x: Vec<f32> = (0..D).map(|_| 2.6 * rng.sym()).collect();
        if t % 7 == 3 {
            x[t % D] = -1e30;
        }
        if t % 7 == 4 {
            x[t % D] = (t % 5) as f32 - 2.0; // integers, incl. ±2 = ±B
        }
        let (y, ld) = fwd(&x);
        let mut yc: [f32; D] = x.clone().try_into().unwrap();
        let ldc = Bijector::<D>::forward(&konst, &mut yc).unwrap();
        assert_eq!((yc.to_vec(), ldc), (y.clone(), ld));
        let mut z = yc;
        let ld2 = Bijector::<D>::inverse(&konst, &mut z).unwrap();
        for i in 0..D {
            assert!(
                (z[i] - x[i]).abs() <= 1e-4 * x[i].abs().max(1.0),
                "{x:?} -> {y:?} -> {z:?}"
            );
        }
        assert!((ld + ld2).abs() < 1e-3);
        if t % 4 == 0 && x.iter().all(|v| v.abs() < 10.0) {
            let jac = fd_jacobian(&mut |v: &[f32]| fwd(v).0, &x, 1e-3);
            for i in 0..D {
                for j in i + 1..D {
                    assert_eq!(jac[i * D + j], 0.0, "∂y{i}/∂x{j} must vanish");
                }
            }
            let fd = log_abs_det(&jac, D);
            let diag: f64 = (0..D).map(|i| jac[i * D + i].abs().ln()).sum();
            assert!(close(fd, diag, 0.0, 1e-9));
            let tol = 3e-3 + fd_noise(&jac, &y, 1e-3);
            assert!(close(ld as f64, fd, 0.0, tol), "x {x:?}: ld {ld} fd {fd}");
        }
    }
}

#[test]
fn autoregressive_backward_matches_finite_differences() {
    let mut rng = Rng(21);
    let (shape, p) = ar_params(&mut rng, 8, 2);
    let c: Vec<f64> = (0..D).map(|_| rng.sym() as f64).collect();
    let c_ld = -0.6;
    let loss = |p: &[f32], x: &[f32]| {
        let net = MlpRef::from_flat(shape, Activation::Tanh, p).unwrap();
        let layer = SplineAutoregressiveRef::new(KA, 2.0, net).unwrap();
        let (mut h0, mut h1, mut out) = (vec![0.0; 8], vec![0.0; 8], vec![0.0; layer.n_out()]);
        let mut y = x.to_vec();
        let ld = layer.forward(&mut y, &mut h0, &mut h1, &mut out);
        y.iter().zip(&c).map(|(a, b)| *a as f64 * b).sum::<f64>() + c_ld * ld as f64
    };
    for x in [[0.3f32, -0.8, 0.9], [1.5, 0.2, -1.7], [-0.4, 5.0, 0.05]] {
        let net = MlpRef::from_flat(shape, Activation::Tanh, &p).unwrap();
        let layer = SplineAutoregressiveRef::new(KA, 2.0, net).unwrap();
        let mut g: Vec<f32> = c.iter().map(|&v| v as f32).collect();
        let mut grad = vec![0.0; shape.n_params()];
        let mut scratch = vec![0.0; layer.train_scratch_len()];
        layer.backward(
            &x,
            &mut g,
            c_ld as f32,
            &mut MlpGrad::from_flat(shape, &mut grad).unwrap(),
            &mut scratch,
        );
        // The masked (zero) weights get gradients too; the trainer re-masks them.
        check_mlp_backward(&p, &x, &g, &grad, loss, "spline autoregressive");
    }
}

// ---------------------------------------------------------------- statics, extremes

static COUPLING_ZERO: SplineCoupling<2, 2, 16, 1, 8, 23> = SplineCoupling::new(3.0, Mlp::zeroed(Activation::Tanh));
static AR_ZERO: SplineAutoregressive<4, 16, 1, 8, 23> = SplineAutoregressive::new(3.0, Mlp::zeroed(Activation::Relu));
/// A hand-written (non-zero) coupling, as exported source would look.
static COUPLING_SMALL: SplineCoupling<1, 1, 2, 0, 2, 5> = SplineCoupling::new(
    2.0,
    Mlp {
        act: Activation::Tanh,
        w_in: [[0.8], [-1.2]],
        b_in: [0.1, -0.3],
        w_hid: [],
        b_hid: [],
        w_out: [[[0.5, -0.4]], [[-0.7, 0.2]], [[1.1, 0.3]], [[-0.2, 0.9]], [[0.6, -1.5]]],
        b_out: [[0.3], [-0.2], [0.4], [0.1], [-0.5]],
    },
);
static FLOW: Flow<
    2,
    (
        SplineCoupling<1, 1, 2, 0, 2, 5>,
        Reverse,
        SplineAutoregressive<2, 4, 0, 3, 8>,
    ),
> = Flow::new((
    SplineCoupling::new(
        2.0,
        Mlp {
            act: Activation::Tanh,
            w_in: [[0.8], [-1.2]],
            b_in: [0.1, -0.3],
            w_hid: [],
            b_hid: [],
            w_out: [[[0.5, -0.4]], [[-0.7, 0.2]], [[1.1, 0.3]], [[-0.2, 0.9]], [[0.6, -1.5]]],
            b_out: [[0.3], [-0.2], [0.4], [0.1], [-0.5]],
        },
    ),
    Reverse,
    SplineAutoregressive::new(3.0, Mlp::zeroed(Activation::Tanh)),
));

#[test]
fn statics_work() {
    assert!(AR_ZERO.is_masked());
    // Zero conditioners give the identity.
    let mut x = [0.3, -1.0, 2.0, 7.0];
    let ld = Bijector::<4>::forward(&COUPLING_ZERO, &mut x).unwrap();
    assert!(ld.abs() < 1e-5 && (x[2] - 2.0).abs() < 1e-5 && x[3] == 7.0);
    let ld = Bijector::<4>::forward(&AR_ZERO, &mut x).unwrap();
    assert!(ld.abs() < 1e-5 && (x[0] - 0.3).abs() < 1e-5);
    let mut v = [0.4, -0.9];
    let ld = Bijector::<2>::forward(&COUPLING_SMALL, &mut v).unwrap();
    assert!(ld != 0.0 && v[0] == 0.4 && v[1] != -0.9);
    Bijector::<2>::inverse(&COUPLING_SMALL, &mut v).unwrap();
    assert!((v[1] + 0.9).abs() < 1e-5);
    let lp = FLOW.log_prob(&[0.2, -0.4]).unwrap();
    assert!(lp.is_finite());
}

#[test]
fn extreme_inputs_and_conditioners_stay_finite() {
    // ReLU conditioners with huge weights overflow to ±inf/NaN raw parameters
    // on huge inputs; the splines clamp them.
    let mut rng = Rng(30);
    let (_, mut p) = coupling_params(&mut rng, 2, 2, 6, 2);
    for v in &mut p {
        *v *= 1e20;
    }
    let konst = SplineCoupling::<2, 2, 6, 1, KC, PC>::new(3.0, fill_mlp(Activation::Relu, &p));
    let ar_shape = MlpShape {
        input: 4,
        cond: 0,
        hidden: 6,
        depth: 2,
        output: 4 * PC,
    };
    let mut pa = rng.vec(ar_shape.n_params(), 1e20);
    made_mask_heads(ar_shape, PC, &mut pa).unwrap();
    let ar = SplineAutoregressive::<4, 6, 1, KC, PC>::new(3.0, fill_mlp(Activation::Relu, &pa));
    let vals = [
        0.0,
        1.0,
        -1.0,
        3.0,
        -3.0,
        2.9999,
        1e30,
        -1e30,
        f32::MAX,
        f32::MIN,
        1e-38,
        17.0,
        -250.0,
    ];
    for t in 0..2000 {
        let mut x = [0.0f32; 4];
        for v in &mut x {
            let u = rng.u64() as usize;
            *v = if u & 1 == 0 {
                vals[u / 2 % vals.len()]
            } else {
                4.0 * rng.sym()
            };
        }
        let mut y = x;
        let ld = Bijector::<4>::forward(&konst, &mut y).unwrap();
        assert!(
            ld.is_finite() && y.iter().all(|v| v.is_finite()),
            "t {t}: {x:?} -> {y:?} {ld}"
        );
        let ld2 = Bijector::<4>::inverse(&konst, &mut y).unwrap();
        assert!(ld2.is_finite() && y.iter().all(|v| v.is_finite()));
        let mut y = x;
        let ld = Bijector::<4>::forward(&ar, &mut y).unwrap();
        assert!(
            ld.is_finite() && y.iter().all(|v| v.is_finite()),
            "t {t}: {x:?} -> {y:?} {ld}"
        );
        let ld2 = Bijector::<4>::inverse(&ar, &mut y).unwrap();
        assert!(ld2.is_finite() && y.iter().all(|v| v.is_finite()));
    }
}
