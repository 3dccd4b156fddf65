//! Lower-triangular linear layer: the map equals `T·x + b` against a dense
//! f64 reference, round trips, log-det against finite-difference
//! Jacobians, gradients against central differences (parameters and
//! input), the const-generic layer bit for bit with the view, and extreme
//! parameters and inputs.

use flowmote::triangular::{packed_len, row_start};
use flowmote::{Bijector, Error, SliceBackward, TriLinear, TriLinearRef};
use flowmote_host_tests::{check_gradient, check_log_det, SplitMix as Rng};

/// The dense `T` in f64, row-major.
fn dense(p: &[f32], d: usize) -> Vec<f64> {
    let mut t = vec![0.0f64; d * d];
    for i in 0..d {
        for j in 0..i {
            t[i * d + j] = p[row_start(i) + j] as f64;
        }
        t[i * d + i] = (p[row_start(i) + i] as f64).exp();
    }
    t
}

#[test]
fn forward_is_t_x_plus_bias_and_round_trips() {
    let mut rng = Rng(11);
    for d in 1..=13 {
        for _ in 0..10 {
            let p = rng.vec(TriLinearRef::n_params(d), 0.6);
            let layer = TriLinearRef::from_flat(d, &p).unwrap();
            let (t, bias) = (dense(&p, d), &p[packed_len(d)..]);
            for _ in 0..5 {
                let x = rng.vec(d, 3.0);
                let mut y = x.clone();
                let ld = layer.forward(&mut y);
                let ld_ref: f64 = (0..d).map(|i| p[row_start(i) + i] as f64).sum();
                assert!((ld as f64 - ld_ref).abs() < 1e-5);
                for i in 0..d {
                    let r: f64 = (0..d).map(|j| t[i * d + j] * x[j] as f64).sum::<f64>() + bias[i] as f64;
                    assert!(
                        (y[i] as f64 - r).abs() < 1e-5 * (1.0 + r.abs()),
                        "d {d}: {} vs {r}",
                        y[i]
                    );
                }
                let mut x2 = y.clone();
                assert_eq!(layer.inverse(&mut x2), -ld);
                for i in 0..d {
                    assert!((x2[i] - x[i]).abs() < 1e-4 * (1.0 + x[i].abs()), "{x:?} -> {x2:?}");
                }
                let mut f = |v: &[f32]| {
                    let mut y = v.to_vec();
                    layer.forward(&mut y);
                    y
                };
                check_log_det(&format!("d {d}"), &mut f, &x, ld, 1e-2, 2e-3);
            }
        }
    }
}

#[test]
fn backward_matches_finite_differences() {
    let mut rng = Rng(12);
    let mut worst = 0.0f64;
    for d in 1..=11 {
        for _ in 0..3 {
            let p0 = rng.vec(TriLinearRef::n_params(d), 0.6);
            let x = rng.vec(d, 2.0);
            let c: Vec<f64> = (0..d).map(|_| rng.sym() as f64).collect();
            let c_ld = 0.8f64;
            let loss = |p: &[f32], x: &[f32]| {
                let mut y = x.to_vec();
                let ld = TriLinearRef::from_flat(d, p).unwrap().forward(&mut y);
                y.iter().zip(&c).map(|(a, b)| *a as f64 * b).sum::<f64>() + c_ld * ld as f64
            };
            let layer = TriLinearRef::from_flat(d, &p0).unwrap();
            let mut g: Vec<f32> = c.iter().map(|&v| v as f32).collect();
            let mut grad = vec![0.0; p0.len()];
            layer.backward_flat(&x, &mut g, c_ld as f32, &mut grad, &mut []);
            // The input gradient alone is the same, bit for bit.
            let mut g_in: Vec<f32> = c.iter().map(|&v| v as f32).collect();
            layer.backward_input(&x, &mut g_in, c_ld as f32, &mut []);
            assert_eq!(g_in, g);
            let at_x = check_gradient(&format!("d {d}: ∂x"), &|v| loss(&p0, v), &x, &g, 1e-3, 3e-3);
            let at_p = check_gradient(&format!("d {d}: ∂θ"), &|p| loss(p, &x), &p0, &grad, 1e-3, 3e-3);
            worst = worst.max(at_x).max(at_p);
        }
    }
    eprintln!("triangular backward: worst relative error {worst:.2e}");
}

static WHITEN: TriLinear<3, 6> = TriLinear::new([0.2, 0.5, -0.3, -0.1, 0.4, 0.1], [0.5, -1.0, 0.25]);

#[test]
fn the_static_layer_is_the_view_bit_for_bit() {
    let mut rng = Rng(13);
    let p: Vec<f32> = WHITEN.tri().iter().chain(&WHITEN.bias).copied().collect();
    let view = TriLinearRef::from_flat(3, &p).unwrap();
    assert_eq!(WHITEN.log_det(), view.log_det());
    for _ in 0..50 {
        let x = rng.vec(3, 4.0);
        let (mut a, mut b) = ([x[0], x[1], x[2]], x.clone());
        let la = WHITEN.forward(&mut a).unwrap();
        let lb = view.forward(&mut b);
        assert_eq!((a.to_vec(), la), (b.clone(), lb));
        let li = WHITEN.inverse(&mut a).unwrap();
        let lv = view.inverse(&mut b);
        assert_eq!((a.to_vec(), li), (b, lv));
    }
    // A larger layer takes the four-per-step sums: the same bits.
    const D: usize = 12;
    let mut m = TriLinear::<D, { packed_len(D) }>::identity();
    let tri: Vec<f32> = rng.vec(packed_len(D), 0.3);
    m.set_tri(tri.clone().try_into().unwrap());
    let p: Vec<f32> = tri.iter().chain(&[0.0; D]).copied().collect();
    let view = TriLinearRef::from_flat(D, &p).unwrap();
    let x: [f32; D] = rng.vec(D, 2.0).try_into().unwrap();
    let (mut a, mut b) = (x, x.to_vec());
    assert_eq!(m.forward(&mut a).unwrap(), view.forward(&mut b));
    assert_eq!(a.to_vec(), b);
}

#[test]
fn extreme_parameters_and_inputs_give_errors_not_nan() {
    // log-scales beyond the clamp: finite log-det, exact round trip of 1.
    let mut m = TriLinear::<2, 3>::identity();
    m.set_tri([1e9, 0.0, -1e9]);
    assert_eq!(m.log_det(), 0.0, "±LOG_SCALE_LIMIT cancel");
    let mut x = [1.0, 1.0];
    assert!(m.forward(&mut x).is_ok());
    assert!(m.inverse(&mut x).is_ok());
    assert!((x[0] - 1.0).abs() < 1e-6 && (x[1] - 1.0).abs() < 1e-6);
    // A finite input whose image exceeds f32: Overflow, not infinity.
    m.set_tri([10.0, 0.0, 0.0]);
    let mut big = [3e38, 0.0];
    assert_eq!(m.forward(&mut big), Err(Error::Overflow));
    // NaN in the stored weights: a finite log-det (clamp maps NaN to 0).
    m.set_tri([f32::NAN, 0.0, 0.0]);
    assert!(m.log_det().is_finite());
    // Wrong lengths: refused by the view, NaN (never a panic) on short rows.
    assert!(TriLinearRef::from_flat(3, &[0.0; 8]).is_err());
    let p = [0.0; 9];
    let v = TriLinearRef::from_flat(3, &p).unwrap();
    assert!(v.forward(&mut [0.0; 2]).is_nan());
    assert!(v.inverse(&mut [0.0; 2]).is_nan());
}
