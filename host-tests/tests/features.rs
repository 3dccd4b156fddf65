//! Window features against independent f64 references: statistics computed
//! directly, band energies from a direct DFT and Parseval's identity, the
//! fixed-size pipeline equal bit for bit to the slice function on the same
//! readings, and bad input as errors.

use flowmote::features::{window_features, Pipeline, Stat};
use flowmote::Error;
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

fn uniform(rng: &mut Xoshiro256PlusPlus, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32
}

/// f64 reference of one statistic of `x`.
fn reference(x: &[f64], s: Stat) -> f64 {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    match s {
        Stat::Mean => mean,
        Stat::Std => (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt(),
        Stat::Rms => (x.iter().map(|v| v * v).sum::<f64>() / n).sqrt(),
        Stat::Min => x.iter().copied().fold(f64::INFINITY, f64::min),
        Stat::Max => x.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Stat::Ptp => {
            x.iter().copied().fold(f64::NEG_INFINITY, f64::max) - x.iter().copied().fold(f64::INFINITY, f64::min)
        }
        Stat::Band { lo, hi } => (lo..=hi)
            .map(|k| {
                // Direct DFT bin k.
                let (mut re, mut im) = (0.0f64, 0.0f64);
                for (i, v) in x.iter().enumerate() {
                    let w = -2.0 * std::f64::consts::PI * k as f64 * i as f64 / n;
                    re += v * w.cos();
                    im += v * w.sin();
                }
                let c = if k == 0 || 2 * k as usize == x.len() { 1.0 } else { 2.0 };
                c * (re * re + im * im) / (n * n)
            })
            .sum(),
    }
}

const ALL: [Stat; 8] = [
    Stat::Mean,
    Stat::Std,
    Stat::Rms,
    Stat::Min,
    Stat::Max,
    Stat::Ptp,
    Stat::Band { lo: 1, hi: 3 },
    Stat::Band { lo: 0, hi: 0 },
];

#[test]
fn statistics_match_f64_references() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
    for &(channels, n) in &[(1usize, 1usize), (1, 7), (3, 25), (2, 64), (9, 128)] {
        for _ in 0..20 {
            let offset = uniform(&mut rng, -1000.0, 1000.0);
            let window: Vec<f32> = (0..channels * n)
                .map(|_| offset + uniform(&mut rng, -3.0, 3.0))
                .collect();
            let stats: Vec<Stat> = ALL.iter().copied().filter(|s| s.fits(n)).collect();
            let mut out = vec![0.0f32; channels * stats.len()];
            window_features(&window, channels, &stats, &mut out).unwrap();
            for c in 0..channels {
                let col: Vec<f64> = window.iter().skip(c).step_by(channels).map(|&v| v as f64).collect();
                let scale = col.iter().map(|v| v.abs()).fold(0.0, f64::max);
                let mu = col.iter().sum::<f64>() / n as f64;
                // Bins above 0 see only the deviations from the mean.
                let dev = col.iter().map(|v| (v - mu).abs()).fold(0.0, f64::max);
                for (j, &s) in stats.iter().enumerate() {
                    let want = reference(&col, s);
                    let got = out[c * stats.len() + j] as f64;
                    // f32 sums of N values of magnitude `scale`: a few ulp of scale·√N.
                    let tol = match s {
                        Stat::Std => 1e-6 * scale * (n as f64).sqrt() + 1e-6 * want.abs(),
                        Stat::Band { lo: 0, .. } => 2e-6 * scale * scale + 1e-6 * want.abs(),
                        Stat::Band { .. } => 2e-5 * dev * dev + 1e-5 * want.abs(),
                        _ => 1e-6 * scale * (n as f64).sqrt() + 1e-6 * want.abs(),
                    };
                    assert!(
                        (got - want).abs() <= tol,
                        "{channels}×{n} channel {c} {s}: {got} vs {want} (tol {tol:e})"
                    );
                }
            }
        }
    }
}

#[test]
fn bands_add_up_to_the_mean_square_and_find_a_sine() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    for n in [8usize, 25, 64] {
        let x: Vec<f32> = (0..n).map(|_| uniform(&mut rng, -2.0, 2.0)).collect();
        let all = [
            Stat::Band {
                lo: 0,
                hi: (n / 2) as u16,
            },
            Stat::Rms,
        ];
        let mut out = [0.0f32; 2];
        window_features(&x, 1, &all, &mut out).unwrap();
        assert!(
            (out[0] - out[1] * out[1]).abs() < 1e-5 * out[0],
            "n={n}: Parseval {} vs {}",
            out[0],
            out[1] * out[1]
        );
        // A sine of amplitude 3 on bin 5: energy 4.5 there, nothing elsewhere.
        let k = 5.0;
        let sine: Vec<f32> = (0..n)
            .map(|i| 3.0 * (2.0 * std::f32::consts::PI * k * i as f32 / n as f32 + 0.4).sin())
            .collect();
        if n / 2 > 6 {
            let bands = [
                Stat::Band { lo: 5, hi: 5 },
                Stat::Band { lo: 1, hi: 4 },
                Stat::Band { lo: 6, hi: 6 },
            ];
            let mut e = [0.0f32; 3];
            window_features(&sine, 1, &bands, &mut e).unwrap();
            assert!((e[0] - 4.5).abs() < 1e-4, "n={n}: {e:?}");
            assert!(e[1] < 1e-4 && e[2] < 1e-4, "n={n}: {e:?}");
        }
    }
}

#[test]
fn the_pipeline_equals_the_slice_function_bit_for_bit() {
    const STATS: [Stat; 4] = [Stat::Mean, Stat::Std, Stat::Ptp, Stat::Band { lo: 1, hi: 4 }];
    let mut p: Pipeline<3, 16, 4, 12> = Pipeline::new(STATS, 5);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
    let readings: Vec<[f32; 3]> = (0..200)
        .map(|_| core::array::from_fn(|_| uniform(&mut rng, -500.0, 500.0)))
        .collect();
    let mut windows = 0;
    for (i, &r) in readings.iter().enumerate() {
        let got = p.push(r);
        let read = i + 1;
        let due = read >= 16 && (read - 16) % 5 == 0;
        assert_eq!(got.is_some(), due, "reading {read}");
        if let Some(f) = got {
            let window: Vec<f32> = readings[read - 16..read].iter().flatten().copied().collect();
            let mut want = [0.0f32; 12];
            window_features(&window, 3, &STATS, &mut want).unwrap();
            assert_eq!(f.unwrap().map(f32::to_bits), want.map(f32::to_bits));
            windows += 1;
        }
    }
    assert_eq!(windows, 1 + (200 - 16) / 5);
}

#[test]
fn bad_readings_are_errors_that_pass() {
    let mut p: Pipeline<2, 4, 2, 4> = Pipeline::new([Stat::Mean, Stat::Rms], 2);
    let mut out = Vec::new();
    for i in 0..12 {
        let r = if i == 5 { [f32::NAN, 0.0] } else { [i as f32, 1.0] };
        if let Some(f) = p.push(r) {
            out.push(f);
        }
    }
    // Windows end at readings 4, 6, 8, 10, 12; reading 6 (index 5) is in the windows ending at 6 and 8.
    assert_eq!(out.len(), 5);
    assert!(out[0].is_ok());
    assert_eq!(out[1], Err(Error::NonFiniteInput));
    assert_eq!(out[2], Err(Error::NonFiniteInput));
    assert!(out[3].is_ok() && out[4].is_ok());
    // Overflowing squares, shapes that disagree, bands that do not fit.
    let mut o = [0.0f32; 1];
    assert_eq!(
        window_features(&[1e30, 1e30], 1, &[Stat::Rms], &mut o),
        Err(Error::Overflow)
    );
    assert_eq!(
        window_features(&[1.0, 2.0, 3.0], 2, &[Stat::Mean], &mut o),
        Err(Error::ShapeMismatch)
    );
    assert_eq!(
        window_features(&[], 1, &[Stat::Mean], &mut o),
        Err(Error::ShapeMismatch)
    );
    assert_eq!(
        window_features(&[1.0; 8], 1, &[Stat::Band { lo: 2, hi: 5 }], &mut o),
        Err(Error::ShapeMismatch)
    );
    let mut bad: Pipeline<1, 4, 1, 1> = Pipeline::new([Stat::Band { lo: 0, hi: 3 }], 4);
    let last = (0..4).filter_map(|i| bad.push([i as f32])).last().unwrap();
    assert_eq!(last, Err(Error::ShapeMismatch));
    assert!(flowmote::features::all_fit(&[Stat::Band { lo: 0, hi: 2 }], 4));
    assert!(!flowmote::features::all_fit(&[Stat::Band { lo: 0, hi: 3 }], 4));
}

#[test]
fn names_are_the_tools_spelling() {
    let names: Vec<String> = ALL.iter().map(|s| s.to_string()).collect();
    assert_eq!(names, ["mean", "std", "rms", "min", "max", "ptp", "band1-3", "band0"]);
}
