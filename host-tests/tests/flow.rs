//! Whole flows: densities that integrate to one, samples that follow the
//! density, sampling determinism, and bad input (errors, never panics).

use flowmote::mixture::{log_sum_exp, pick};
use flowmote::{
    ActNorm, Activation, AffineCoupling, Bijector, Density, Error, Flow, Logit, Maf, Mixture, Permutation, Reverse,
    Sigmoid,
};
use flowmote_host_tests::*;

// ---------------------------------------------------------------------------
// Normalisation and sampling of 2-D models.

/// Per-axis `[min, max]` and median of `n` samples.
fn sample_box<M: Density<2>>(flow: &M, n: usize, seed: u64) -> ([f64; 2], [f64; 2], [f64; 2]) {
    let mut r = rng(seed);
    let xs: Vec<[f32; 2]> = (0..n).map(|_| flow.sample(&mut r).unwrap()).collect();
    let axis = |k: usize| {
        let mut v: Vec<f64> = xs.iter().map(|x| x[k] as f64).collect();
        v.sort_by(f64::total_cmp);
        (v[0], v[n - 1], v[n / 2])
    };
    let (a, b) = (axis(0), axis(1));
    ([a.0, b.0], [a.1, b.1], [a.2, b.2])
}

/// `∫ p = 1` by the midpoint rule on a grid covering the samples' range
/// widened by half of it on each side (the mass outside is ≪ 1e-4: the
/// widening reaches ≳ 8 latent standard deviations for these models), and
/// `P(x₀ < m₀, x₁ < m₁)` (`m` = sample medians) by the same quadrature agrees with the fraction of
/// samples in that quadrant (statistical tolerance `4σ` of a binomial), so
/// `sample` draws from the density `log_prob` describes.
fn check_density<M: Density<2>>(name: &str, flow: &M, seed: u64) {
    let (lo, hi, m) = sample_box(flow, 4000, seed);
    // Centred on the medians (so that, with an even `n`, the quadrant's edges
    // are grid lines) and widened by half the samples' range.
    let w: [f64; 2] = core::array::from_fn(|k| (m[k] - lo[k]).max(hi[k] - m[k]) + 0.5 * (hi[k] - lo[k]));
    let (lo, hi) = ([m[0] - w[0], m[1] - w[1]], [m[0] + w[0], m[1] + w[1]]);
    let mut quadrant = 0.0;
    let n = 300;
    let cell = (hi[0] - lo[0]) / n as f64 * (hi[1] - lo[1]) / n as f64;
    let total = integrate_2d(
        &mut |x, y| {
            let p = flow.log_prob(&[x as f32, y as f32]).unwrap() as f64;
            let p = p.exp();
            if x < m[0] && y < m[1] {
                quadrant += p * cell;
            }
            p
        },
        lo,
        hi,
        n,
    );
    assert!((total - 1.0).abs() < 1e-3, "{name}: ∫p = {total}");

    let mut r = rng(seed + 1);
    let ns = 20_000;
    let inside = (0..ns)
        .filter(|_| {
            let x = flow.sample(&mut r).unwrap();
            (x[0] as f64) < m[0] && (x[1] as f64) < m[1]
        })
        .count() as f64
        / ns as f64;
    let sd = (quadrant * (1.0 - quadrant) / ns as f64).sqrt();
    assert!(
        (inside - quadrant).abs() < 4.0 * sd + 1e-3,
        "{name}: P(quadrant) {quadrant:.4} by quadrature, {inside:.4} by sampling"
    );
    assert!(
        quadrant > 0.05 && quadrant < 0.95,
        "{name}: uninformative quadrant ({quadrant})"
    );
    eprintln!(
        "{name}: ∫p − 1 = {:.1e}, quadrant {quadrant:.4} vs sampled {inside:.4}",
        total - 1.0
    );
}

#[test]
fn affine_flow_density_integrates_to_one() {
    let flow = Flow::<2, _>::new((
        ActNorm::new([0.7, -0.4], [1.0, -2.0]),
        Reverse,
        ActNorm::new([-0.3, 0.2], [0.5, 0.0]),
    ));
    check_density("affine", &flow, 10);
}

#[test]
fn coupling_flow_density_integrates_to_one() {
    let mut r = rng(11);
    let flow = Flow::<2, _>::new((
        random_coupling::<1, 1, 16, 1, _>(&mut r, Activation::Tanh, 1.0, 1.5),
        Permutation::new([1, 0]),
        random_coupling::<1, 1, 12, 0, _>(&mut r, Activation::Tanh, 1.0, 1.5),
    ));
    check_density("coupling + permutation + coupling", &flow, 12);
}

#[test]
fn maf_flow_density_integrates_to_one() {
    let mut r = rng(13);
    let flow = Flow::<2, _>::new((
        random_maf::<2, 16, 1, _>(&mut r, Activation::Tanh, 1.0, 1.5),
        Reverse,
        random_maf::<2, 12, 0, _>(&mut r, Activation::Elu, 1.0, 1.5),
    ));
    check_density("MAF + reverse + MAF", &flow, 14);
}

#[test]
fn mixture_density_integrates_to_one() {
    let mut r = rng(15);
    let mix = Mixture::<2, 3, _>::new(
        [0.35f32.ln(), 0.5f32.ln(), 0.15f32.ln()],
        (
            Flow::<2, _>::new((
                random_coupling::<1, 1, 16, 1, _>(&mut r, Activation::Tanh, 1.0, 1.5),
                Reverse,
                ActNorm::new([0.3, 0.1], [2.0, -1.0]),
            )),
            Flow::<2, _>::new((random_maf::<2, 12, 1, _>(&mut r, Activation::Elu, 1.0, 1.5),)),
            Flow::<2, _>::new((ActNorm::new([1.0, 0.8], [-3.0, 4.0]),)),
        ),
    );
    assert!((mix.weights_sum() - 1.0).abs() < 1e-6);
    check_density("mixture of coupling, MAF and Gaussian flows", &mix, 16);
}

/// `Mixture::log_prob` against an f64 log-sum-exp of its members' own
/// `log_prob`s; `sample_with_log_prob` reports the mixture's density of the
/// sample; member errors and bad input come back as errors.
#[test]
fn mixture_log_prob_matches_an_f64_reference() {
    let mut r = rng(17);
    let a = Flow::<3, _>::new((random_maf::<3, 8, 1, _>(&mut r, Activation::Tanh, 1.0, 2.0), Reverse));
    let b = Flow::<3, _>::new((ActNorm::new([0.5, -0.2, 0.1], [1.0, 0.0, -2.0]),));
    let c = Flow::<3, _>::new((Logit,));
    let w = [0.2f64, 0.7, 0.1];
    let lw = w.map(|v| v.ln() as f32);
    let mix = Mixture::<3, 3, _>::new(lw, (a.clone(), b.clone(), c));
    for _ in 0..500 {
        let x: [f32; 3] = random_array(&mut r, 0.01, 0.99);
        let terms = [
            w[0].ln() + a.log_prob(&x).unwrap() as f64,
            w[1].ln() + b.log_prob(&x).unwrap() as f64,
            w[2].ln() + mix.components.2.log_prob(&x).unwrap() as f64,
        ];
        let top = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let want = top + terms.iter().map(|t| (t - top).exp()).sum::<f64>().ln();
        let got = mix.log_prob(&x).unwrap() as f64;
        assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "{got} vs {want}");
    }
    let mut s = rng(18);
    for _ in 0..200 {
        let (x, lp) = mix.sample_with_log_prob(&mut s).unwrap();
        assert_eq!(lp.to_bits(), mix.log_prob(&x).unwrap().to_bits());
    }
    // Outside the Logit member's domain (0, 1) its density is 0: the other
    // members score the row.
    let x = [2.0, 0.5, 0.5];
    assert_eq!(mix.components.2.log_prob(&x), Err(Error::OutOfDomain));
    let terms = [
        w[0].ln() + a.log_prob(&x).unwrap() as f64,
        w[1].ln() + b.log_prob(&x).unwrap() as f64,
    ];
    let top = terms[0].max(terms[1]);
    let want = top + terms.iter().map(|t| (t - top).exp()).sum::<f64>().ln();
    assert!((mix.log_prob(&x).unwrap() as f64 - want).abs() <= 1e-5 * want.abs().max(1.0));
    // Outside every member's domain: OutOfDomain.
    let only_logit = Mixture::<3, 2, _>::new(
        [0.5f32.ln(); 2],
        (Flow::<3, _>::new((Logit,)), Flow::<3, _>::new((Logit,))),
    );
    assert_eq!(only_logit.log_prob(&x), Err(Error::OutOfDomain));
    // A member that overflows makes the row unscorable.
    let big = Flow::<3, _>::new((ActNorm::new([80.0; 3], [0.0; 3]),));
    let with_big = Mixture::<3, 2, _>::new([0.5f32.ln(); 2], (b.clone(), big));
    assert_eq!(with_big.log_prob(&[1e30; 3]), Err(Error::Overflow));
    assert_eq!(mix.log_prob(&[f32::NAN, 0.5, 0.5]), Err(Error::NonFiniteInput));
    assert_eq!(mix.log_prob(&[f32::INFINITY; 3]), Err(Error::NonFiniteInput));
}

#[test]
fn log_sum_exp_and_pick() {
    assert_eq!(log_sum_exp(&[], &[]), f32::NEG_INFINITY);
    // Huge terms do not overflow; −∞ terms drop out.
    let v = log_sum_exp(&[0.0, 0.0], &[1e30, 1e30]);
    assert_eq!(v, 1e30);
    assert!((log_sum_exp(&[0.5f32.ln(), 0.5f32.ln()], &[-1000.0, -1000.0]) + 1000.0).abs() < 1e-3);
    assert_eq!(log_sum_exp(&[0.0, 0.0], &[2.0, f32::NEG_INFINITY]), 2.0);
    assert_eq!(log_sum_exp(&[0.0], &[f32::NEG_INFINITY]), f32::NEG_INFINITY);
    let lw = [0.25f32.ln(), 0.5f32.ln(), 0.25f32.ln()];
    assert_eq!(pick(&lw, 0), 0);
    assert_eq!(pick(&lw, u32::MAX), 2);
    assert_eq!(pick(&lw, 1 << 31), 1);
    assert_eq!(pick(&[], 7), 0);
    // Weights that sum to a little less than 1 by rounding: the last member.
    assert_eq!(pick(&[0.3f32.ln(), 0.69f32.ln()], u32::MAX), 1);
    let mut r = rng(19);
    let mut counts = [0usize; 3];
    let n = 30_000;
    for _ in 0..n {
        counts[pick(&lw, rand_core::Rng::next_u32(&mut r))] += 1;
    }
    for (c, p) in counts.iter().zip([0.25, 0.5, 0.25]) {
        let sd = (p * (1.0 - p) * n as f64).sqrt();
        assert!((*c as f64 - p * n as f64).abs() < 4.0 * sd, "{counts:?}");
    }
}

/// Sample mean and covariance of `n` draws.
fn moments<const D: usize>(draw: &mut dyn FnMut() -> [f32; D], n: usize) -> ([f64; D], [[f64; D]; D]) {
    let xs: Vec<[f32; D]> = (0..n).map(|_| draw()).collect();
    let mut mean = [0.0; D];
    for x in &xs {
        for i in 0..D {
            mean[i] += x[i] as f64 / n as f64;
        }
    }
    let mut cov = [[0.0; D]; D];
    for x in &xs {
        for i in 0..D {
            for j in 0..D {
                cov[i][j] += (x[i] as f64 - mean[i]) * (x[j] as f64 - mean[j]) / (n - 1) as f64;
            }
        }
    }
    (mean, cov)
}

/// The base distribution: mean 0, covariance I, kurtosis 3. Tolerances are
/// 4 standard errors: `1/√n` for means and covariances, `√(2/n)` for
/// variances, `√(24/n)` for the kurtosis.
#[test]
fn base_samples_are_standard_normal() {
    const D: usize = 3; // odd, so Box–Muller's unpaired last draw is covered
    let n = 40_000;
    let flow = Flow::<D, ()>::new(());
    let mut r = rng(20);
    let (mean, cov) = moments(&mut || flow.sample(&mut r).unwrap(), n);
    let se = 1.0 / (n as f64).sqrt();
    for i in 0..D {
        assert!(mean[i].abs() < 4.0 * se, "mean {mean:?}");
        for j in 0..D {
            let want = if i == j { 1.0 } else { 0.0 };
            let tol = if i == j { 4.0 * 2f64.sqrt() * se } else { 4.0 * se };
            assert!((cov[i][j] - want).abs() < tol, "cov {cov:?}");
        }
    }
    let mut r = rng(21);
    let k = (0..n)
        .map(|_| flow.sample(&mut r).unwrap()[2] as f64)
        .map(|v| v.powi(4))
        .sum::<f64>()
        / n as f64;
    assert!((k - 3.0).abs() < 4.0 * (24.0 / n as f64).sqrt(), "kurtosis {k}");
}

/// `x = (z − b)·e^{−s}` for ActNorm `z = e^s x + b`: mean `−b·e^{−s}`, std
/// `e^{−s}`, independent coordinates. Tolerances: 4 standard errors
/// (`σ/√n` for the mean, `σ/√(2n)` for the std).
#[test]
fn actnorm_flow_samples_have_the_parameters_moments() {
    let (s, b) = ([0.7f32, -1.2, 0.0], [1.5f32, -2.0, 0.3]);
    let flow = Flow::<3, _>::new(ActNorm::new(s, b));
    let n = 40_000;
    let mut r = rng(22);
    let (mean, cov) = moments(&mut || flow.sample(&mut r).unwrap(), n);
    for i in 0..3 {
        let sd = (-s[i] as f64).exp();
        let m = -b[i] as f64 * sd;
        assert!(
            (mean[i] - m).abs() < 4.0 * sd / (n as f64).sqrt(),
            "mean {i}: {} vs {m}",
            mean[i]
        );
        let got_sd = cov[i][i].sqrt();
        assert!(
            (got_sd - sd).abs() < 4.0 * sd / (2.0 * n as f64).sqrt(),
            "std {i}: {got_sd} vs {sd}"
        );
        for j in 0..i {
            let corr = cov[i][j] / (cov[i][i] * cov[j][j]).sqrt();
            assert!(corr.abs() < 4.0 / (n as f64).sqrt(), "corr {i}{j}: {corr}");
        }
    }
    // log_prob in closed form: Σ log N((x − μ)/σ) − log σ.
    let x = [0.25f32, -1.0, 2.0];
    let want: f64 = (0..3)
        .map(|i| {
            let sd = (-s[i] as f64).exp();
            let u = (x[i] as f64 + b[i] as f64 * sd) / sd;
            -0.5 * (u * u + (2.0 * std::f64::consts::PI).ln()) - sd.ln()
        })
        .sum();
    assert!((flow.log_prob(&x).unwrap() as f64 - want).abs() < 1e-5);
}

/// `sample_with_log_prob` returns `log_prob` of its sample (the inverse's
/// log-det vs the forward's: agree to ~1e-5 relative, the round-trip error).
#[test]
fn sample_with_log_prob_agrees_with_log_prob() {
    let mut r = rng(30);
    let coupling_flow = Flow::<4, _>::new((
        ActNorm::new(random_array(&mut r, -1.0, 1.0), random_array(&mut r, -1.0, 1.0)),
        random_coupling::<2, 2, 12, 1, _>(&mut r, Activation::Tanh, 1.0, 2.0),
        Permutation::new([3, 1, 0, 2]),
        random_coupling::<1, 3, 8, 0, _>(&mut r, Activation::LeakyRelu, 1.0, 2.0),
    ));
    let maf_flow = Flow::<3, _>::new((
        random_maf::<3, 12, 1, _>(&mut r, Activation::Elu, 0.8, 2.0),
        Reverse,
        random_maf::<3, 8, 0, _>(&mut r, Activation::Relu, 0.8, 2.0),
    ));
    // Data in (0, 1)³: logit first, a sigmoid-bounded model.
    let bounded = Flow::<3, _>::new((
        Logit,
        random_coupling::<1, 2, 8, 0, _>(&mut r, Activation::Tanh, 1.0, 2.0),
    ));
    let mut worst = 0.0f64;
    let mut check = |lp_s: f32, lp: f32| {
        let e = (lp_s - lp).abs() as f64 / (1.0 + lp.abs() as f64);
        assert!(e < 2e-5, "sample_with_log_prob {lp_s} vs log_prob {lp}");
        worst = worst.max(e);
    };
    let mut r = rng(31);
    for _ in 0..500 {
        let (x, lp) = coupling_flow.sample_with_log_prob(&mut r).unwrap();
        check(lp, coupling_flow.log_prob(&x).unwrap());
        let (x, lp) = maf_flow.sample_with_log_prob(&mut r).unwrap();
        check(lp, maf_flow.log_prob(&x).unwrap());
        let (x, lp) = bounded.sample_with_log_prob(&mut r).unwrap();
        assert!(x.iter().all(|&v| v > 0.0 && v < 1.0));
        check(lp, bounded.log_prob(&x).unwrap());
    }
    eprintln!("sample_with_log_prob vs log_prob: worst {worst:.2e} relative");
}

#[test]
fn same_seed_same_samples() {
    let mut r = rng(40);
    let flow = Flow::<3, _>::new((
        random_coupling::<1, 2, 8, 1, _>(&mut r, Activation::Tanh, 1.0, 2.0),
        random_maf::<3, 8, 0, _>(&mut r, Activation::Tanh, 1.0, 2.0),
    ));
    let draw = |seed: u64| {
        let mut r = rng(seed);
        (0..50)
            .map(|_| flow.sample_with_log_prob(&mut r).unwrap())
            .collect::<Vec<_>>()
    };
    let (a, b, c) = (draw(7), draw(7), draw(8));
    assert_eq!(a, b);
    assert_ne!(a, c);
    // `sample` is `sample_with_log_prob` without the log-density.
    let mut r = rng(7);
    let xs: Vec<[f32; 3]> = (0..50).map(|_| flow.sample(&mut r).unwrap()).collect();
    assert_eq!(xs, a.iter().map(|(x, _)| *x).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------
// Bad input.

fn coupling_maf_flow(act: Activation, seed: u64) -> Flow<3, impl Bijector<3>> {
    let mut r = rng(seed);
    Flow::new((
        ActNorm::new(random_array(&mut r, -1.0, 1.0), random_array(&mut r, -1.0, 1.0)),
        random_coupling::<1, 2, 8, 1, _>(&mut r, act, 1.0, 3.0),
        Reverse,
        random_maf::<3, 8, 1, _>(&mut r, act, 1.0, 3.0),
        random_coupling::<2, 1, 6, 0, _>(&mut r, act, 1.0, 3.0),
    ))
}

#[test]
fn non_finite_input_is_an_error() {
    let flow = coupling_maf_flow(Activation::Tanh, 50);
    let logit_flow = Flow::<3, _>::new((Logit, ActNorm::<3>::identity()));
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN] {
        for k in 0..3 {
            let mut x = [0.5f32; 3];
            x[k] = bad;
            assert_eq!(flow.log_prob(&x), Err(Error::NonFiniteInput));
            assert_eq!(flow.forward(&x).map(|_| ()), Err(Error::NonFiniteInput));
            assert_eq!(flow.inverse(&x).map(|_| ()), Err(Error::NonFiniteInput));
            // Checked before any layer's domain.
            assert_eq!(logit_flow.log_prob(&x), Err(Error::NonFiniteInput));
        }
    }
}

#[test]
fn logit_outside_unit_interval_is_out_of_domain() {
    let flow = Flow::<2, _>::new((Logit, ActNorm::new([0.5, -0.5], [0.0, 1.0])));
    for bad in [
        0.0f32,
        -0.0,
        1.0,
        -0.5,
        1.5,
        1e30,
        -1e30,
        f32::MAX,
        -f32::MIN_POSITIVE,
        1.0 + f32::EPSILON,
    ] {
        for k in 0..2 {
            let mut x = [0.5f32; 2];
            x[k] = bad;
            assert_eq!(flow.log_prob(&x), Err(Error::OutOfDomain), "{x:?}");
            // The layer leaves its input untouched on error.
            let before = x;
            assert_eq!(Bijector::<2>::forward(&Logit, &mut x), Err(Error::OutOfDomain));
            assert_eq!(x.map(f32::to_bits), before.map(f32::to_bits));
            // Sigmoid's inverse is the logit.
            assert_eq!(Bijector::<2>::inverse(&Sigmoid, &mut x), Err(Error::OutOfDomain));
        }
    }
    // Just inside the interval is fine, and finite.
    for good in [f32::MIN_POSITIVE, 1e-30, 1e-45, 1.0 - f32::EPSILON / 2.0, 0.5] {
        let lp = flow.log_prob(&[good, 0.5]).unwrap();
        assert!(lp.is_finite(), "{good}: {lp}");
    }
    // A sigmoid flow's latent must lie in (0, 1) too.
    let sig = Flow::<2, _>::new((Sigmoid,));
    assert_eq!(sig.inverse(&[0.5, 1.0]).map(|_| ()), Err(Error::OutOfDomain));
    assert!(sig.inverse(&[0.5, 0.25]).is_ok());
}

#[test]
fn overflow_is_an_error() {
    // e^100 overflows f32: inf·x, and NaN = inf·0.
    let big = Flow::<2, _>::new(ActNorm::new([100.0, 0.0], [0.0, 0.0]));
    for x in [[1.0f32, 0.0], [0.0, 0.0], [-1e-30, 1.0]] {
        assert_eq!(big.log_prob(&x), Err(Error::Overflow), "{x:?}");
        assert_eq!(big.forward(&x).map(|_| ()), Err(Error::Overflow));
    }
    // A finite scale times a huge input: 1e30 · e^20 ≈ 4.9e38 > f32::MAX.
    let scale = Flow::<2, _>::new(ActNorm::new([20.0, 20.0], [0.0, 0.0]));
    assert_eq!(scale.log_prob(&[1e30, 0.0]), Err(Error::Overflow));
    assert_eq!(scale.log_prob(&[0.0, -1e30]), Err(Error::Overflow));
    assert!(scale.log_prob(&[1e20, 0.0]).is_err()); // z² overflows in the base density
    assert_eq!(scale.log_prob(&[1e20, 0.0]), Err(Error::Overflow));
    assert!(scale.forward(&[1e20, 0.0]).is_ok()); // the latent itself is finite
    assert!(scale.log_prob(&[1.0, 1.0]).is_ok());
    // The sampling direction: e^{100} in the inverse.
    let tiny = Flow::<2, _>::new(ActNorm::new([-100.0, 0.0], [0.0, 0.0]));
    assert_eq!(tiny.inverse(&[1.0, 0.0]).map(|_| ()), Err(Error::Overflow));
    let mut r = rng(60);
    assert_eq!(tiny.sample(&mut r), Err(Error::Overflow));
    assert_eq!(tiny.sample_with_log_prob(&mut r).map(|_| ()), Err(Error::Overflow));
    // Overflow in the middle of a stack, then through a coupling.
    let mut r = rng(61);
    let stack = Flow::<3, _>::new((
        ActNorm::new([90.0, 0.0, 0.0], [0.0; 3]),
        random_coupling::<1, 2, 8, 1, _>(&mut r, Activation::Relu, 1.0, 3.0),
        random_maf::<3, 8, 0, _>(&mut r, Activation::Tanh, 1.0, 3.0),
    ));
    assert_eq!(stack.log_prob(&[1.0, 0.5, 0.5]), Err(Error::Overflow));
    assert_eq!(stack.log_prob(&[0.0, 0.5, 0.5]), Err(Error::Overflow));
    // A log-det that overflows on its own: Σ s = 2·3e38.
    let ld = Flow::<2, _>::new(ActNorm::new([3e38, 3e38], [0.0, 0.0]));
    assert_eq!(ld.log_prob(&[0.0, 0.0]), Err(Error::Overflow));
}

/// Huge, tiny and subnormal finite inputs through couplings and MAFs with
/// every activation, in both directions: a finite result or
/// `Error::Overflow`, never a panic, NaN or another error.
#[test]
fn extreme_inputs_never_panic() {
    let values = [
        1e30f32,
        -1e30,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        1e-45,
        -1e-45,
        3e38,
        1e19,
        -1e19,
        0.0,
    ];
    for (i, act) in ACTIVATIONS.into_iter().enumerate() {
        let flow = coupling_maf_flow(act, 70 + i as u64);
        let (mut ok, mut overflow) = (0, 0);
        for &a in &values {
            for &b in &values {
                for x in [[a, b, 0.5], [0.5, a, b], [b, 1.0, a]] {
                    match flow.log_prob(&x) {
                        Ok(lp) => {
                            assert!(lp.is_finite());
                            ok += 1;
                        }
                        Err(Error::Overflow) => overflow += 1,
                        Err(e) => panic!("{act:?} log_prob({x:?}): unexpected {e:?}"),
                    }
                    match flow.inverse(&x) {
                        Ok((v, ld)) => assert!(v.iter().all(|t| t.is_finite()) && ld.is_finite()),
                        Err(Error::Overflow) => {}
                        Err(e) => panic!("{act:?} inverse({x:?}): unexpected {e:?}"),
                    }
                    if let Ok((z, ld)) = flow.forward(&x) {
                        assert!(z.iter().all(|t| t.is_finite()) && ld.is_finite());
                    }
                }
            }
        }
        // Both outcomes occur: the test exercises the error path and the
        // finite path.
        assert!(ok > 0 && overflow > 0, "{act:?}: {ok} finite, {overflow} overflowed");
    }
}

#[test]
fn errors_display_and_compare() {
    let all = [
        Error::NonFiniteInput,
        Error::OutOfDomain,
        Error::Overflow,
        Error::ShapeMismatch,
    ];
    for (i, e) in all.iter().enumerate() {
        let msg = e.to_string();
        assert!(!msg.is_empty());
        for (j, f) in all.iter().enumerate() {
            assert_eq!(i == j, e == f);
            assert_eq!(i == j, msg == f.to_string());
        }
        let _: &dyn std::error::Error = e;
    }
}

/// A static model that mixes every layer kind scores and samples.
static MODEL: Flow<
    2,
    (
        ActNorm<2>,
        AffineCoupling<1, 1, 4, 0>,
        Reverse,
        Maf<2, 4, 1>,
        Permutation<2>,
    ),
> = Flow::new((
    ActNorm::new([0.5, -0.5], [1.0, -1.0]),
    AffineCoupling {
        clamp: 3.0,
        net: flowmote::Mlp::zeroed(Activation::Tanh),
    },
    Reverse,
    Maf {
        clamp: 3.0,
        net: flowmote::Mlp::zeroed(Activation::Relu),
    },
    Permutation::new([1, 0]),
));

#[test]
fn static_model_scores_and_samples() {
    // Zero-weight conditioners are identities; Reverse then [1, 0] cancel, so
    // this is the ActNorm alone: x = (z − b)e^{−s}.
    let lp = MODEL.log_prob(&[0.0, 0.0]).unwrap();
    let z = [1.0f32, -1.0];
    let want = -0.5 * (z[0] * z[0] + z[1] * z[1]) - 1.837_877 + 0.0;
    assert!((lp - want).abs() < 1e-5, "{lp} vs {want}");
    let mut r = rng(80);
    let (x, lp) = MODEL.sample_with_log_prob(&mut r).unwrap();
    assert!((MODEL.log_prob(&x).unwrap() - lp).abs() < 1e-5);
}
