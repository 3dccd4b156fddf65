//! The streaming P² quantile against exact sample quantiles of seeded
//! streams from several distributions, measured in rank: the fraction of the
//! stream at or below the estimate must be close to `p` (worst measured:
//! 0.45 of the tolerance asserted).

use flowmote::quantile::P2Quantile;
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

fn unit(rng: &mut Xoshiro256PlusPlus) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// Standard normal by Box–Muller.
fn normal(rng: &mut Xoshiro256PlusPlus) -> f64 {
    let (u, v) = (unit(rng), unit(rng));
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

#[test]
fn estimates_land_near_the_right_rank() {
    let mut worst = 0.0f64;
    for (dist, draw) in [
        ("normal", normal as fn(&mut Xoshiro256PlusPlus) -> f64),
        ("exponential", |r: &mut Xoshiro256PlusPlus| -unit(r).ln()),
        ("uniform", |r: &mut Xoshiro256PlusPlus| unit(r)),
        // Anomaly scores: −log p of a Gaussian is a shifted chi-square.
        ("chi2(9)/2", |r: &mut Xoshiro256PlusPlus| {
            (0..9).map(|_| normal(r).powi(2)).sum::<f64>() / 2.0 + 8.3
        }),
    ] {
        for &n in &[500usize, 5000, 50_000] {
            for &p in &[0.5f32, 0.9, 0.99] {
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(n as u64 ^ (p * 1000.0) as u64);
                let xs: Vec<f32> = (0..n).map(|_| draw(&mut rng) as f32).collect();
                let mut q = P2Quantile::new(p);
                for &x in &xs {
                    q.push(x).unwrap();
                }
                let est = q.estimate().unwrap();
                let rank = xs.iter().filter(|&&x| x <= est).count() as f64 / n as f64;
                let err = (rank - p as f64).abs();
                // Rank error allowed: 3 binomial standard errors of the sample quantile, at least 0.5 %.
                let tol = (3.0 * (p as f64 * (1.0 - p as f64) / n as f64).sqrt()).max(0.005);
                worst = worst.max(err / tol);
                assert!(
                    err <= tol,
                    "{dist} n={n} p={p}: estimate {est} has rank {rank:.4} (tol {tol:.4})"
                );
                assert_eq!(q.count(), n as u32);
            }
        }
    }
    eprintln!("worst rank error / tolerance: {worst:.2}");
}

#[test]
fn few_values_are_exact_and_garbage_changes_nothing() {
    let mut q = P2Quantile::new(0.5);
    assert_eq!(q.estimate(), None);
    for x in [5.0, 1.0, 3.0] {
        q.push(x).unwrap();
    }
    assert_eq!(q.estimate(), Some(3.0));
    let before = q.clone();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        assert_eq!(q.push(bad), Err(flowmote::Error::NonFiniteInput));
    }
    assert_eq!(q, before);
    // Constant streams stay put; extreme p is clamped, not a panic.
    let mut c = P2Quantile::new(1.5);
    for _ in 0..100 {
        c.push(7.0).unwrap();
    }
    assert_eq!(c.estimate(), Some(7.0));
    assert!(P2Quantile::new(f32::NAN).p() == 0.5);
}
