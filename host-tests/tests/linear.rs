//! LU-parametrised invertible linear layer: the map equals `P·L·U·x + b`,
//! round trips, log-det against finite-difference Jacobians, gradients
//! against central differences, LU decomposition, `static` instances and
//! extreme inputs/parameters.

use flowmote::linear::{lu_decompose, LOG_SCALE_LIMIT};
use flowmote::{Bijector, Error, Flow, LuLinear, LuLinearRef, Mlp, Reverse, SplineCoupling};
use flowmote_host_tests::{check_gradient, check_log_det, SplitMix as Rng};

struct Params {
    perm: Vec<usize>,
    sign: Vec<f32>,
    p: Vec<f32>,
}

fn random_params(rng: &mut Rng, d: usize) -> Params {
    Params {
        perm: rng.perm(d),
        sign: (0..d).map(|_| if rng.u64() & 1 == 0 { 1.0 } else { -1.0 }).collect(),
        p: rng.vec(LuLinearRef::n_params(d), 0.6),
    }
}

/// The dense matrix `P·L·U` in f64, row-major.
fn dense(pr: &Params) -> Vec<f64> {
    let d = pr.perm.len();
    let lu = &pr.p[..d * d];
    let mut l = vec![0.0f64; d * d];
    let mut u = vec![0.0f64; d * d];
    for i in 0..d {
        for j in 0..d {
            let v = lu[i * d + j] as f64;
            if i > j {
                l[i * d + j] = v;
            } else if i < j {
                u[i * d + j] = v;
            } else {
                l[i * d + i] = 1.0;
                u[i * d + i] = pr.sign[i].signum() as f64 * v.exp();
            }
        }
    }
    let mut w = vec![0.0f64; d * d];
    for i in 0..d {
        for j in 0..d {
            let lu_ij: f64 = (0..d).map(|k| l[pr.perm[i] * d + k] * u[k * d + j]).sum();
            w[i * d + j] = lu_ij;
        }
    }
    w
}

#[test]
fn forward_is_plu_plus_bias_and_round_trips() {
    let mut rng = Rng(1);
    for d in 1..=6 {
        for _ in 0..20 {
            let pr = random_params(&mut rng, d);
            let layer = LuLinearRef::from_flat(&pr.perm, &pr.sign, &pr.p).unwrap();
            let w = dense(&pr);
            let bias = &pr.p[d * d..];
            let mut tmp = vec![0.0; d];
            for t in 0..10 {
                let mut x = rng.vec(d, 3.0);
                if t == 1 {
                    x.iter_mut().for_each(|v| *v = v.round()); // integer-valued data
                }
                let mut y = x.clone();
                let ld = layer.forward(&mut y, &mut tmp);
                let ld_ref: f64 = (0..d).map(|i| pr.p[i * d + i] as f64).sum();
                assert!((ld as f64 - ld_ref).abs() < 1e-5);
                for i in 0..d {
                    let r: f64 = (0..d).map(|j| w[i * d + j] * x[j] as f64).sum::<f64>() + bias[i] as f64;
                    assert!(
                        (y[i] as f64 - r).abs() < 1e-5 * (1.0 + r.abs()),
                        "d {d}: {} vs {r}",
                        y[i]
                    );
                }
                let mut x2 = y.clone();
                let ld2 = layer.inverse(&mut x2, &mut tmp);
                assert_eq!(ld2, -ld);
                for i in 0..d {
                    assert!((x2[i] - x[i]).abs() < 1e-4 * (1.0 + x[i].abs()), "{x:?} -> {x2:?}");
                }
                // Log-det against the f64 finite-difference Jacobian.
                let mut f = |v: &[f32]| {
                    let mut y = v.to_vec();
                    layer.forward(&mut y, &mut vec![0.0; d]);
                    y
                };
                check_log_det(&format!("d {d}"), &mut f, &x, ld, 1e-2, 2e-3);
            }
        }
    }
}

#[test]
fn backward_matches_finite_differences() {
    let mut rng = Rng(2);
    let mut worst = 0.0f64;
    for d in 1..=5 {
        for _ in 0..4 {
            let pr = random_params(&mut rng, d);
            let x = rng.vec(d, 2.0);
            let c: Vec<f64> = (0..d).map(|_| rng.sym() as f64).collect();
            let c_ld = 0.8f64;
            let loss = |p: &[f32], x: &[f32]| {
                let layer = LuLinearRef::from_flat(&pr.perm, &pr.sign, p).unwrap();
                let mut y = x.to_vec();
                let ld = layer.forward(&mut y, &mut vec![0.0; d]);
                y.iter().zip(&c).map(|(a, b)| *a as f64 * b).sum::<f64>() + c_ld * ld as f64
            };
            let layer = LuLinearRef::from_flat(&pr.perm, &pr.sign, &pr.p).unwrap();
            let mut g: Vec<f32> = c.iter().map(|&v| v as f32).collect();
            let mut grad = vec![0.0; pr.p.len()];
            let mut scratch = vec![0.0; layer.train_scratch_len()];
            layer.backward(&x, &mut g, c_ld as f32, &mut grad, &mut scratch);
            let at_x = check_gradient(&format!("d {d}: ∂x"), &|v| loss(&pr.p, v), &x, &g, 1e-3, 3e-3);
            let at_p = check_gradient(&format!("d {d}: ∂θ"), &|p| loss(p, &x), &pr.p, &grad, 1e-3, 3e-3);
            worst = worst.max(at_x).max(at_p);
        }
    }
    eprintln!("LU linear backward: worst relative error {worst:.2e}");
}

#[test]
fn lu_decompose_reproduces_the_matrix() {
    let mut rng = Rng(3);
    for d in 1..=7 {
        let w0 = rng.vec(d * d, 1.0);
        let mut packed = w0.clone();
        let (mut perm, mut sign) = (vec![0usize; d], vec![0.0f32; d]);
        lu_decompose(&mut packed, &mut perm, &mut sign).unwrap();
        let mut p = packed.clone();
        p.extend(std::iter::repeat_n(0.0, d));
        let layer = LuLinearRef::from_flat(&perm, &sign, &p).unwrap();
        let x = rng.vec(d, 1.0);
        let mut y = x.clone();
        layer.forward(&mut y, &mut vec![0.0; d]);
        for i in 0..d {
            let r: f32 = (0..d).map(|j| w0[i * d + j] * x[j]).sum();
            assert!((y[i] - r).abs() < 1e-4, "d {d}: {y:?} row {i} vs {r}");
        }
    }
    // Singular, non-finite and mis-sized inputs are refused.
    let (mut perm, mut sign) = (vec![0usize; 2], vec![0.0f32; 2]);
    assert_eq!(
        lu_decompose(&mut [1.0, 2.0, 2.0, 4.0], &mut perm, &mut sign),
        Err(Error::OutOfDomain)
    );
    assert_eq!(
        lu_decompose(&mut [1.0, f32::NAN, 2.0, 4.0], &mut perm, &mut sign),
        Err(Error::OutOfDomain)
    );
    assert_eq!(
        lu_decompose(&mut [1.0; 3], &mut perm, &mut sign),
        Err(Error::ShapeMismatch)
    );
    assert!(LuLinearRef::from_flat(&[0, 0], &[1.0, 1.0], &[0.0; 6]).is_err());
    assert!(LuLinearRef::from_flat(&[0, 1], &[1.0, 1.0], &[0.0; 5]).is_err());
}

static IDENTITY: LuLinear<4> = LuLinear::identity();
static MIXER: LuLinear<3> = LuLinear::new(
    [2, 0, 1],
    [1.0, -1.0, 1.0],
    [[0.2, 0.5, -0.3], [0.4, -0.1, 0.7], [-0.6, 0.25, 0.05]],
    [0.1, -0.2, 0.3],
);
static FLOW: Flow<2, (LuLinear<2>, SplineCoupling<1, 1, 4, 0, 4, 11>, Reverse, LuLinear<2>)> = Flow::new((
    LuLinear::new([1, 0], [-1.0, 1.0], [[0.3, 0.8], [-0.5, -0.2]], [0.5, -0.5]),
    SplineCoupling::new(3.0, Mlp::zeroed(flowmote::Activation::Tanh)),
    Reverse,
    LuLinear::identity(),
));

#[test]
fn statics_work() {
    let mut x = [1.0, -2.0, 3.0, 0.5];
    assert_eq!(Bijector::<4>::forward(&IDENTITY, &mut x), Ok(0.0));
    assert_eq!(x, [1.0, -2.0, 3.0, 0.5]);
    assert_eq!(MIXER.perm(), &[2, 0, 1]);
    let mut v = [0.3, -0.7, 1.9];
    let ld = Bijector::<3>::forward(&MIXER, &mut v).unwrap();
    assert!((ld - 0.15).abs() < 1e-6);
    Bijector::<3>::inverse(&MIXER, &mut v).unwrap();
    assert!((v[0] - 0.3).abs() < 1e-5 && (v[1] + 0.7).abs() < 1e-5 && (v[2] - 1.9).abs() < 1e-5);
    // A 2-D flow with linear layers still normalises (coarse grid check).
    let (lo, hi, n) = (-9.0f64, 9.0f64, 360);
    let h = (hi - lo) / n as f64;
    let mut total = 0.0;
    for i in 0..n {
        for j in 0..n {
            let x = [(lo + (i as f64 + 0.5) * h) as f32, (lo + (j as f64 + 0.5) * h) as f32];
            total += (FLOW.log_prob(&x).unwrap() as f64).exp();
        }
    }
    assert!((total * h * h - 1.0).abs() < 1e-3, "{}", total * h * h);
}

#[test]
fn extreme_inputs_and_parameters() {
    let mut rng = Rng(4);
    // Moderate weights: ±1e30 and integer inputs stay finite both ways.
    for _ in 0..50 {
        let pr = random_params(&mut rng, 4);
        let mut m = LuLinear::<4>::identity();
        m = LuLinear::new(
            pr.perm.clone().try_into().unwrap(),
            pr.sign.clone().try_into().unwrap(),
            *m.lu(),
            m.bias,
        );
        let mut lu = *m.lu();
        for i in 0..4 {
            lu[i].copy_from_slice(&pr.p[i * 4..i * 4 + 4]);
        }
        m.set_lu(lu);
        m.bias.copy_from_slice(&pr.p[16..]);
        for x0 in [
            [1e30, -1e30, 1e30, 1.0],
            [-1e30; 4],
            [0.0, 1.0, 2.0, -3.0],
            [1e-38, 0.0, -0.0, 5.0],
        ] {
            let mut x = x0;
            let ld = Bijector::<4>::forward(&m, &mut x).unwrap();
            assert!(ld.is_finite() && x.iter().all(|v| v.is_finite()), "{x0:?} -> {x:?}");
            let ld2 = Bijector::<4>::inverse(&m, &mut x).unwrap();
            assert!(ld2.is_finite() && x.iter().all(|v| v.is_finite()));
            // f32 round trip: error relative to the largest coordinate.
            let scale = x0.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            for i in 0..4 {
                assert!((x[i] - x0[i]).abs() <= 1e-3 * scale, "{x0:?} -> {x:?}");
            }
        }
    }
    // Absurd log-scales are clamped: finite log-det, invertible diagonal.
    let mut m = LuLinear::<2>::identity();
    m.set_lu([[1e30, 0.5], [0.5, -f32::INFINITY]]);
    let mut x = [1e-10, 1.0];
    let ld = Bijector::<2>::forward(&m, &mut x).unwrap();
    assert_eq!(ld, 0.0); // +LIMIT − LIMIT
    let ld2 = Bijector::<2>::inverse(&m, &mut x).unwrap();
    assert_eq!(ld2, 0.0);
    assert!(x.iter().all(|v| v.is_finite()), "{x:?}");
    m.set_lu([[1e30, 0.5], [0.5, f32::NAN]]);
    let mut x = [1.0, 1.0];
    let ld = Bijector::<2>::forward(&m, &mut x).unwrap();
    assert_eq!(ld, LOG_SCALE_LIMIT);
    assert!(x.iter().all(|v| v.is_finite()));
    // A result beyond the f32 range is an error, never a non-finite vector.
    let mut big = LuLinear::<2>::identity();
    big.set_lu([[2.0, 0.0], [0.0, 0.0]]);
    let mut x = [3e38, 0.0];
    assert_eq!(Bijector::<2>::forward(&big, &mut x), Err(Error::Overflow));
    let mut z = [3e38, 0.0];
    big.set_lu([[-2.0, 0.0], [0.0, 0.0]]);
    assert_eq!(Bijector::<2>::inverse(&big, &mut z), Err(Error::Overflow));
    // Through a flow: huge finite inputs give an error value, no panic.
    assert!(Flow::<2, _>::new(big.clone()).log_prob(&[3e38, 1.0]).is_err());
}

/// The typed layer's cached diagonal and log-det give the bits of a view
/// from flat parameters (which computes them on every call), forward,
/// inverse and log-det, including clamped, NaN and infinite log-scales;
/// the setters keep the cache in step.
fn cached_matches_uncached<const D: usize>(rng: &mut Rng) {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for trial in 0..40 {
        let mut pr = random_params(rng, D);
        if trial % 4 == 3 {
            // Log-scales beyond the clamp, NaN and infinities on the diagonal.
            let specials = [
                25.0,
                -1e30,
                f32::NAN,
                f32::INFINITY,
                -f32::INFINITY,
                -0.0,
                LOG_SCALE_LIMIT,
            ];
            for i in 0..D {
                pr.p[i * D + i] = specials[(trial + i) % specials.len()];
            }
        }
        let lu: [[f32; D]; D] = std::array::from_fn(|i| std::array::from_fn(|j| pr.p[i * D + j]));
        let bias: [f32; D] = std::array::from_fn(|i| pr.p[D * D + i]);
        let mut m = LuLinear::<D>::new(pr.perm.clone().try_into().unwrap(), [1.0; D], [[0.0; D]; D], bias);
        m.set_sign(pr.sign.clone().try_into().unwrap());
        m.set_lu(lu);
        let fresh = LuLinear::new(*m.perm(), *m.sign(), lu, bias);
        assert_eq!(bits(m.diagonal()), bits(fresh.diagonal()));
        assert_eq!(m.log_det().to_bits(), fresh.log_det().to_bits());
        let flat = LuLinearRef::from_flat(&pr.perm, &pr.sign, &pr.p).unwrap();
        assert!(m.view().is_cached() && !flat.is_cached());
        assert_eq!(m.log_det().to_bits(), flat.log_det().to_bits());
        assert_eq!(m.view().log_det().to_bits(), flat.log_det().to_bits());
        for i in 0..D {
            let (ls, s) = (pr.p[i * D + i], pr.sign[i]);
            let ls = if ls.is_nan() {
                0.0
            } else {
                ls.clamp(-LOG_SCALE_LIMIT, LOG_SCALE_LIMIT)
            };
            let u = if s < 0.0 { -1.0 } else { 1.0 } * flowmote::activation::exp(std::hint::black_box(ls));
            assert_eq!(m.diagonal()[i].to_bits(), u.to_bits(), "D {D}, row {i}");
        }
        for _ in 0..5 {
            let x = rng.vec(D, 3.0);
            let (mut a, mut b) = (x.clone(), x.clone());
            let (la, lb) = (
                m.view().forward(&mut a, &mut [0.0; D]),
                flat.forward(&mut b, &mut [0.0; D]),
            );
            assert_eq!((la.to_bits(), bits(&a)), (lb.to_bits(), bits(&b)), "D {D} forward");
            let (la, lb) = (
                m.view().inverse(&mut a, &mut [0.0; D]),
                flat.inverse(&mut b, &mut [0.0; D]),
            );
            assert_eq!((la.to_bits(), bits(&a)), (lb.to_bits(), bits(&b)), "D {D} inverse");
        }
    }
}

#[test]
fn cached_diagonal_is_bit_identical_to_computing_it() {
    let mut rng = Rng(11);
    cached_matches_uncached::<1>(&mut rng);
    cached_matches_uncached::<2>(&mut rng);
    cached_matches_uncached::<3>(&mut rng);
    cached_matches_uncached::<5>(&mut rng);
    cached_matches_uncached::<9>(&mut rng);
    cached_matches_uncached::<16>(&mut rng);
}

/// A `static`'s cache is computed in const context: the same bits as the
/// run-time computation (and as the uncached view), for log-scales across
/// the whole clamped range.
#[test]
fn static_cache_has_run_time_bits() {
    const N: usize = 24;
    const fn diag_lu() -> [[f32; N]; N] {
        let mut lu = [[0.25; N]; N];
        let mut i = 0;
        while i < N {
            // −23 … 23 in uneven steps: both clamp edges and values between.
            lu[i][i] = -23.0 + 2.0 * i as f32 + 0.123_456_7 * (i % 5) as f32;
            i += 1;
        }
        lu
    }
    const fn perm() -> [usize; N] {
        let mut p = [0; N];
        let mut i = 0;
        while i < N {
            p[i] = (i * 7) % N;
            i += 1;
        }
        p
    }
    const fn sign() -> [f32; N] {
        let mut s = [1.0; N];
        let mut i = 0;
        while i < N {
            if i % 3 == 0 {
                s[i] = -1.0;
            }
            i += 1;
        }
        s
    }
    static WIDE: LuLinear<N> = LuLinear::new(perm(), sign(), diag_lu(), [0.5; N]);
    let at_run_time = LuLinear::<N>::new(
        std::hint::black_box(perm()),
        std::hint::black_box(sign()),
        std::hint::black_box(diag_lu()),
        [0.5; N],
    );
    assert_eq!(WIDE, at_run_time);
    let p: Vec<f32> = WIDE.lu().as_flattened().iter().copied().chain([0.5; N]).collect();
    let flat = LuLinearRef::from_flat(WIDE.perm(), WIDE.sign(), &p).unwrap();
    assert_eq!(WIDE.log_det().to_bits(), flat.log_det().to_bits());
    let mut rng = Rng(12);
    for _ in 0..20 {
        let x: [f32; N] = rng.vec(N, 1e-3).try_into().unwrap();
        let (mut a, mut b) = (x, x.to_vec());
        let la = Bijector::<N>::forward(&WIDE, &mut a);
        let lb = flat.forward(&mut b, &mut [0.0; N]);
        assert_eq!(la.map(f32::to_bits), Ok(lb.to_bits()));
        assert_eq!(
            a.map(f32::to_bits).to_vec(),
            b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}

/// The forward pass written out naively (the layer's maths as the module
/// docs state it, each sum from its first term in column order), in f32.
fn naive_forward(pr: &Params, x: &[f32]) -> (Vec<f32>, f32) {
    let d = pr.perm.len();
    let lu = &pr.p[..d * d];
    let clamp = |v: f32| {
        if v.is_nan() {
            0.0
        } else {
            v.clamp(-LOG_SCALE_LIMIT, LOG_SCALE_LIMIT)
        }
    };
    let mut u = vec![0.0f32; d];
    let mut ld = 0.0f32;
    for i in 0..d {
        let ls = clamp(lu[i * d + i]);
        ld += ls;
        let s = if pr.sign[i] < 0.0 { -1.0 } else { 1.0 };
        let mut acc = s * flowmote::activation::exp(ls) * x[i];
        for j in i + 1..d {
            acc += lu[i * d + j] * x[j];
        }
        u[i] = acc;
    }
    let mut v = vec![0.0f32; d];
    for i in 0..d {
        let mut acc = u[i];
        for j in 0..i {
            acc += lu[i * d + j] * u[j];
        }
        v[i] = acc;
    }
    let y = (0..d).map(|k| v[pr.perm[k]] + pr.p[d * d + k]).collect();
    (y, ld)
}

/// The kernel (plain loops up to its small-layer size, four terms per step
/// beyond; cached or not) gives the naive loops' bits at every size.
fn kernel_matches_naive<const D: usize>(rng: &mut Rng) {
    for _ in 0..10 {
        let pr = random_params(rng, D);
        let x = rng.vec(D, 2.0);
        let (want, want_ld) = naive_forward(&pr, &x);
        let want: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
        let flat = LuLinearRef::from_flat(&pr.perm, &pr.sign, &pr.p).unwrap();
        let mut y = x.clone();
        let ld = flat.forward(&mut y, &mut vec![0.0; D]);
        assert_eq!(ld.to_bits(), want_ld.to_bits(), "D {D}");
        assert_eq!(
            y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want,
            "D {D}, from_flat"
        );
        let lu: [[f32; D]; D] = std::array::from_fn(|i| std::array::from_fn(|j| pr.p[i * D + j]));
        let m = LuLinear::<D>::new(
            pr.perm.clone().try_into().unwrap(),
            pr.sign.clone().try_into().unwrap(),
            lu,
            std::array::from_fn(|i| pr.p[D * D + i]),
        );
        let mut y: [f32; D] = x.clone().try_into().unwrap();
        let ld = Bijector::<D>::forward(&m, &mut y).unwrap();
        assert_eq!(ld.to_bits(), want_ld.to_bits(), "D {D}");
        assert_eq!(y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want, "D {D}, typed");
    }
}

#[test]
fn kernel_is_bit_identical_to_naive_loops() {
    let mut rng = Rng(13);
    kernel_matches_naive::<1>(&mut rng);
    kernel_matches_naive::<2>(&mut rng);
    kernel_matches_naive::<3>(&mut rng);
    kernel_matches_naive::<4>(&mut rng);
    kernel_matches_naive::<5>(&mut rng);
    kernel_matches_naive::<8>(&mut rng);
    kernel_matches_naive::<9>(&mut rng);
    kernel_matches_naive::<10>(&mut rng);
    kernel_matches_naive::<11>(&mut rng);
    kernel_matches_naive::<13>(&mut rng);
    kernel_matches_naive::<16>(&mut rng);
    kernel_matches_naive::<17>(&mut rng);
    kernel_matches_naive::<30>(&mut rng);
    kernel_matches_naive::<33>(&mut rng);
}
