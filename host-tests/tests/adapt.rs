//! On-device adaptation (`flowmote::adapt`) with the bundled model's layers
//! as a device holds them (its const-generic layers' views): the gradient
//! against finite differences, commissioning under a gain/offset drift of
//! the bundled gait recording, NaN/Inf windows, and tracking's rejection
//! and rollback.

use flowmote::adapt::{AdaptConfig, Adapter, Tracked, Views};
use flowmote::gradient::{Gradient, InputGradient};
use flowmote::permutation::PermutationRef;
use flowmote::{AdaptTarget, SliceBackward};
use flowmote_fixtures::model;

const D: usize = model::DIM;
/// Held-back windows in these tests.
const H: usize = 8;

/// The bundled model's layers as views, in order (what a device builds
/// from its `static MODEL`).
fn with_views<R>(f: impl FnOnce(&mut Views) -> R) -> R {
    let l = &model::MODEL.layers;
    let (p3, p5, p7) = (
        PermutationRef { perm: l.3.indices() },
        PermutationRef { perm: l.5.indices() },
        PermutationRef { perm: l.7.indices() },
    );
    let (v0, v1, v2, v4, v6, v8) = (l.0.view(), l.1.view(), l.2.view(), l.4.view(), l.6.view(), l.8.view());
    let layers: [&dyn SliceBackward; 9] = [&v0, &v1, &v2, &p3, &v4, &p5, &v6, &p7, &v8];
    let mut work = vec![0.0; Views::work_len(&layers, D)];
    let mut views = Views {
        layers: &layers,
        work: &mut work,
    };
    f(&mut views)
}

/// The test recording's windows (the model's pipeline on its ankle axes),
/// every reading mapped by `drift` first.
fn windows(drift: impl Fn(usize, f32) -> f32) -> Vec<[f32; D]> {
    let text = include_str!("../../examples/data/daphnet_gait.test.csv");
    let mut p = model::pipeline();
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let v: Vec<f32> = line.split(',').take(3).map(|c| c.trim().parse().unwrap()).collect();
        let r = [drift(0, v[0]), drift(1, v[1]), drift(2, v[2])];
        if let Some(Ok(w)) = p.push(r) {
            out.push(w);
        }
    }
    out
}

/// Gain 1.3 and an offset of +120, −200, +80 mg on the three axes.
fn drifted(c: usize, v: f32) -> f32 {
    1.3 * v + [120.0, -200.0, 80.0][c]
}

fn new_adapter() -> Adapter<D, H> {
    Adapter::new(AdaptConfig::DEFAULT, model::MEAN, model::STD)
}

fn mean_nll(a: &mut Adapter<D, H>, views: &mut Views, rows: &[[f32; D]]) -> f64 {
    rows.iter().map(|x| a.nll(views, x).unwrap() as f64).sum::<f64>() / rows.len() as f64
}

#[test]
fn views_score_like_the_static_model() {
    with_views(|v| {
        for x in windows(|_, v| v).iter().take(50) {
            assert_eq!(v.nll(x).unwrap(), -model::MODEL.log_prob(x).unwrap());
        }
    });
}

/// Central difference of the adapted NLL in parameter `k` at step `h`
/// (f64 accumulation), the correction restored afterwards.
fn central(a: &mut Adapter<D, H>, v: &mut Views, x: &[f32; D], k: usize, h: f32) -> f64 {
    let (u0, l0) = a.correction();
    let mut at = |s: f32| {
        let (mut u, mut l) = (u0, l0);
        if k < D {
            u[k] += s;
        } else {
            l[k - D] += s;
        }
        a.set_correction(u, l);
        a.nll(v, x).unwrap() as f64
    };
    let d = (at(h) - at(-h)) / (2.0 * h as f64);
    a.set_correction(u0, l0);
    d
}

#[test]
fn gradient_matches_finite_differences() {
    let rows = windows(drifted);
    with_views(|v| {
        let mut a = new_adapter();
        a.set_correction([0.1, -0.2, 0.3], [0.05, -0.1, 0.2]);
        for x in rows.iter().step_by(20) {
            let mut g = [0.0; 2 * D];
            a.view().gradient(v, x, &mut g).unwrap();
            for k in 0..2 * D {
                // The splines' second derivative jumps at their knots: a
                // stencil straddling one is off by O(h), so the closest of
                // four steps counts (f32 round-off ~1e-6·|L|/h).
                let fd: Vec<f64> = [1e-2, 3e-3, 1e-3, 3e-4]
                    .iter()
                    .map(|&h| central(&mut a, v, x, k, h))
                    .collect();
                let err = fd.iter().map(|f| (f - g[k] as f64).abs()).fold(f64::INFINITY, f64::min);
                assert!(
                    err <= 1e-2 * (g[k] as f64).abs() + 1e-2,
                    "param {k}: backward {} vs FD {fd:?}",
                    g[k]
                );
            }
        }
    });
}

#[test]
fn commissioning_recovers_most_of_the_nll_lost_to_drift() {
    let clean = windows(|_, v| v);
    let drift = windows(drifted);
    with_views(|v| {
        let mut a = new_adapter();
        let base = mean_nll(&mut a, v, &clean);
        let before = mean_nll(&mut a, v, &drift);
        for x in &drift {
            a.commission(v, x).unwrap();
        }
        let after = mean_nll(&mut a, v, &drift);
        let recovered = (before - after) / (before - base);
        eprintln!(
            "clean {base:.3}, drifted {before:.3}, adapted {after:.3}: {:.1} % recovered",
            100.0 * recovered
        );
        assert!(recovered > 0.8, "recovered only {:.1} %", 100.0 * recovered);
        // The device's scoring path (correct, then the static model) agrees.
        let x = drift[100];
        let (xc, ld) = a.correct(&x).unwrap();
        let dev = -model::MODEL.log_prob(&xc).unwrap() - ld;
        assert_eq!(dev, a.nll(v, &x).unwrap());
    });
}

#[test]
fn commissioning_is_deterministic() {
    let drift = windows(drifted);
    let run = || {
        with_views(|v| {
            let mut a = new_adapter();
            for x in drift.iter().take(100) {
                a.commission(v, x).unwrap();
            }
            a.correction()
        })
    };
    let (a, b) = (run(), run());
    assert_eq!(a.0.map(f32::to_bits), b.0.map(f32::to_bits));
    assert_eq!(a.1.map(f32::to_bits), b.1.map(f32::to_bits));
}

#[test]
fn non_finite_windows_never_update() {
    let drift = windows(drifted);
    with_views(|v| {
        let mut a = new_adapter();
        for x in drift.iter().take(20) {
            a.commission(v, x).unwrap();
        }
        let (state, steps) = (a.correction(), a.steps());
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut x = drift[30];
            x[1] = bad;
            assert!(a.commission(v, &x).is_err());
            assert!(a.track(v, &x, 1e9).is_err());
            assert_eq!(a.correction(), state);
            assert_eq!(a.steps(), steps);
        }
    });
}

#[test]
fn tracking_rejects_an_anomaly_burst() {
    let clean = windows(|_, v| v);
    with_views(|v| {
        let mut a = new_adapter();
        for x in clean.iter().take(50) {
            a.commission(v, x).unwrap();
        }
        let state = a.correction();
        // A burst of windows far off the normal range: none may move the correction.
        for x in clean.iter().skip(50).take(30) {
            let burst = [x[0] + 2000.0, x[1] - 1500.0, x[2] + 900.0];
            match a.track(v, &burst, model::THRESHOLD).unwrap() {
                Tracked::NotNormal(s) => assert!(s >= model::THRESHOLD - a.config.margin),
                other => panic!("an anomaly was used: {other:?}"),
            }
        }
        assert_eq!(a.correction(), state);
        // Normal windows still update, each parameter by at most max_step.
        let mut updated = 0;
        for x in clean.iter().skip(80).take(40) {
            let before = a.correction();
            match a.track(v, x, model::THRESHOLD).unwrap() {
                Tracked::Updated(_) => updated += 1,
                Tracked::RolledBack(_) => assert_eq!(a.correction(), before),
                _ => {}
            }
            let after = a.correction();
            for i in 0..D {
                assert!((after.0[i] - before.0[i]).abs() <= a.config.max_step * 1.0001);
                assert!((after.1[i] - before.1[i]).abs() <= a.config.max_step * 1.0001);
            }
        }
        assert!(updated > 0);
    });
}

#[test]
fn tracking_rolls_back_a_harmful_update() {
    let clean = windows(|_, v| v);
    with_views(|v| {
        let mut a = new_adapter();
        for x in clean.iter().take(H) {
            a.commission(v, x).unwrap();
        }
        // A window normal enough to pass the margin (a generous threshold)
        // but far from the held-back ones: its step would pull the
        // correction away from them, so it is undone.
        a.config.track_lr = 0.5;
        a.config.max_step = 0.5;
        let state = a.correction();
        let odd = [clean[0][0] + 600.0, clean[0][1] + 300.0, clean[0][2] - 150.0];
        let r = a.track(v, &odd, 1e6).unwrap();
        assert!(matches!(r, Tracked::RolledBack(_)), "{r:?}");
        assert_eq!(a.correction(), state);
    });
}

/// The held-back ring's NLLs are kept between tracked windows instead of
/// being scored again before each step: the outcomes, scores and correction
/// are those of an adapter that rescores the ring every time, bit for bit —
/// through updates, rollbacks, rejected anomalies and a re-commissioning.
#[test]
fn cached_ring_scores_change_nothing() {
    let clean = windows(drifted);
    with_views(|v| {
        let (mut cached, mut fresh) = (new_adapter(), new_adapter());
        for a in [&mut cached, &mut fresh] {
            a.config.track_lr = 0.2;
            a.config.max_step = 0.2;
        }
        let (mut updated, mut rolled_back, mut rejected) = (0, 0, 0);
        for (k, x) in clean.iter().take(120).enumerate() {
            // Every 9th window is far from the others but scored against a
            // generous threshold: its step tends to be rolled back. Every
            // 13th is an anomaly. Windows 60–63 are commissioned again.
            let (x, threshold) = match k {
                _ if k % 13 == 12 => ([x[0] + 2000.0, x[1], x[2]], model::THRESHOLD),
                _ if k % 9 == 8 => ([x[0] + 600.0, x[1] + 300.0, x[2] - 150.0], 1e6),
                _ => (*x, model::THRESHOLD),
            };
            if k < 8 || (60..64).contains(&k) {
                let a = cached.commission(v, &x).unwrap();
                let b = fresh.commission(v, &x).unwrap();
                assert_eq!(a.to_bits(), b.to_bits(), "window {k}");
            } else {
                fresh.view().meta.scored = 0;
                let a = cached.track(v, &x, threshold).unwrap();
                let b = fresh.track(v, &x, threshold).unwrap();
                let bits = |t: Tracked| match t {
                    Tracked::NotNormal(s) => (1, s.to_bits()),
                    Tracked::Held(s) => (2, s.to_bits()),
                    Tracked::Updated(s) => (3, s.to_bits()),
                    Tracked::RolledBack(s) => (4, s.to_bits()),
                };
                assert_eq!(bits(a), bits(b), "window {k}");
                match a {
                    Tracked::Updated(_) => updated += 1,
                    Tracked::RolledBack(_) => rolled_back += 1,
                    Tracked::NotNormal(_) => rejected += 1,
                    Tracked::Held(_) => {}
                }
            }
            let (ca, cb) = (cached.correction(), fresh.correction());
            for i in 0..D {
                assert_eq!(ca.0[i].to_bits(), cb.0[i].to_bits(), "window {k}");
                assert_eq!(ca.1[i].to_bits(), cb.1[i].to_bits(), "window {k}");
            }
        }
        assert!(
            updated > 0 && rolled_back > 0 && rejected > 0,
            "{updated} {rolled_back} {rejected}"
        );
    });
}

/// The device's gradient: the const-generic model with its memory inline,
/// sized by the export's `ADAPT_LAYERS`/`ADAPT_SCRATCH`.
type DeviceGradient = Gradient<'static, D, model::Layers, { model::ADAPT_LAYERS }, { model::ADAPT_SCRATCH }>;

#[test]
fn fixed_ram_of_the_bundled_model() {
    let bytes = core::mem::size_of::<Adapter<D, H>>();
    let work = with_views(|v| v.work.len()) * 4;
    let device = core::mem::size_of::<DeviceGradient>();
    eprintln!("Adapter<{D}, {H}>: {bytes} B; the views' work buffer: {work} B; the device's gradient: {device} B");
    assert!(bytes <= (18 + H) * D * 4 + 2 * H * 4 + 64);
    assert!(device <= work + 16, "the device keeps no more than the host's views");
}

#[test]
fn the_export_sizes_the_device_gradient() {
    assert_eq!(model::ADAPT_LAYERS, <model::Layers as InputGradient<D>>::LAYERS);
    assert_eq!(model::ADAPT_SCRATCH, model::MODEL.layers.gradient_scratch_len());
    // One float short of either is refused, not a panic.
    assert!(
        Gradient::<'static, D, model::Layers, { model::ADAPT_LAYERS - 1 }, { model::ADAPT_SCRATCH }>::new(
            &model::MODEL
        )
        .is_err()
    );
    assert!(
        Gradient::<'static, D, model::Layers, { model::ADAPT_LAYERS }, { model::ADAPT_SCRATCH - 1 }>::new(
            &model::MODEL
        )
        .is_err()
    );
}

/// The device's typed gradient and the host's views give the same NLL and
/// input gradient bit for bit, and so the same adapter state after
/// commissioning and tracking on drifted windows.
#[test]
fn device_gradient_equals_the_host_views_bit_for_bit() {
    let rows = windows(drifted);
    let mut dev = DeviceGradient::new(&model::MODEL).unwrap();
    with_views(|v| {
        for x in rows.iter().step_by(7).take(40) {
            let (mut gh, mut gd) = ([0.0; D], [0.0; D]);
            let a = v.nll_grad(x, &mut gh).unwrap();
            let b = dev.nll_grad(x, &mut gd).unwrap();
            assert_eq!(a.to_bits(), b.to_bits());
            assert_eq!(gh.map(f32::to_bits), gd.map(f32::to_bits));
            assert_eq!(v.nll(x).unwrap().to_bits(), dev.nll(x).unwrap().to_bits());
        }
        let (mut host, mut device) = (new_adapter(), new_adapter());
        for x in rows.iter().take(60) {
            let a = host.commission(v, x).unwrap();
            let b = device.commission(&mut dev, x).unwrap();
            assert_eq!(a.to_bits(), b.to_bits());
        }
        for x in rows.iter().skip(60).take(60) {
            let a = host.track(v, x, model::THRESHOLD).unwrap();
            let b = device.track(&mut dev, x, model::THRESHOLD).unwrap();
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
        }
        let (hu, hl) = host.correction();
        let (du, dl) = device.correction();
        assert_eq!(hu.map(f32::to_bits), du.map(f32::to_bits));
        assert_eq!(hl.map(f32::to_bits), dl.map(f32::to_bits));
        assert!(hl.iter().any(|&l| l != 0.0), "commissioning moved the correction");
    });
    // NaN never gets through either.
    let mut g = [0.0; D];
    assert!(dev.nll_grad(&[f32::NAN; D], &mut g).is_err());
}

/// `∂(−log p)/∂x` of the device's gradient against central differences of
/// the model's own `log_prob` (f64 step arithmetic), for a const-generic
/// model: the input-only backward passes of every layer kind it holds.
fn check_device_gradient<const DD: usize, L, const N: usize, const S: usize>(
    model: &'static flowmote::Flow<DD, L>,
    inputs: &[[f32; DD]],
    std: &[f32; DD],
) where
    L: InputGradient<DD>,
{
    let mut dev = Gradient::<'static, DD, L, N, S>::new(model).unwrap();
    for x in inputs {
        let mut g = [0.0; DD];
        let nll = dev.nll_grad(x, &mut g).unwrap();
        assert_eq!(nll.to_bits(), (-model.log_prob(x).unwrap()).to_bits());
        for i in 0..DD {
            let h = 1e-2 * std[i];
            let (mut up, mut down) = (*x, *x);
            up[i] += h;
            down[i] -= h;
            let fd = (-(model.log_prob(&up).unwrap() as f64) + model.log_prob(&down).unwrap() as f64)
                / ((up[i] as f64) - (down[i] as f64));
            let scale = fd.abs().max(1.0 / std[i] as f64);
            assert!(
                (g[i] as f64 - fd).abs() <= 2e-2 * scale,
                "feature {i}: backward {} vs central difference {fd}",
                g[i]
            );
        }
    }
}

#[test]
fn device_gradient_of_maf_and_affine_coupling_models_matches_finite_differences() {
    use flowmote_fixtures::{coupling, maf};
    check_device_gradient::<{ maf::DIM }, maf::Layers, { maf::ADAPT_LAYERS }, { maf::ADAPT_SCRATCH }>(
        &maf::MODEL,
        &maf::GOLDEN_INPUTS,
        &maf::STD,
    );
    check_device_gradient::<{ coupling::DIM }, coupling::Layers, { coupling::ADAPT_LAYERS }, { coupling::ADAPT_SCRATCH }>(
        &coupling::MODEL,
        &coupling::GOLDEN_INPUTS,
        &coupling::STD,
    );
}

/// Every export names an `AdaptGradient` a board builds with
/// `AdaptGradient::new(&MODEL)`: the device gradient of a flow or of a
/// mixture of flows (the committee: 12 flows), and for a model a device
/// cannot differentiate (int8 and f16 weights) one whose `new` fails with
/// `Unsupported`, so the board compiles and runs with adaptation off.
#[test]
fn every_export_names_an_adapt_gradient() {
    use flowmote_fixtures::{committee, quant_f16, quant_i8};
    let mut g = model::AdaptGradient::new(&model::MODEL).expect("the bundled flow adapts");
    let x = model::GOLDEN_INPUTS[0];
    let mut grad = [0.0f32; D];
    let nll = g.nll_grad(&x, &mut grad).unwrap();
    assert_eq!(nll, -model::GOLDEN_LOG_PROBS[0]);
    let mut g = committee::AdaptGradient::new(&committee::MODEL).expect("the committee adapts");
    let x = committee::GOLDEN_INPUTS[0];
    let mut grad = [0.0f32; committee::DIM];
    assert_eq!(g.nll_grad(&x, &mut grad).unwrap(), -committee::GOLDEN_LOG_PROBS[0]);
    assert_eq!(g.nll(&x).unwrap(), -committee::GOLDEN_LOG_PROBS[0]);
    assert!(matches!(
        quant_i8::AdaptGradient::new(&quant_i8::MODEL),
        Err(flowmote::Error::Unsupported)
    ));
    assert!(matches!(
        quant_f16::AdaptGradient::new(&quant_f16::MODEL),
        Err(flowmote::Error::Unsupported)
    ));
}

/// A mixture's input gradient (the committee's `MixtureGradient`: the
/// members' gradients weighted by their responsibilities) against central
/// finite differences of its `−log p` in f64 steps, at the golden inputs
/// and at points between the members' modes.
#[test]
fn mixture_gradient_matches_finite_differences() {
    use flowmote_fixtures::committee;
    const C: usize = committee::DIM;
    let mut g = committee::AdaptGradient::new(&committee::MODEL).unwrap();
    let mut points: Vec<[f32; C]> = committee::GOLDEN_INPUTS.to_vec();
    for (a, b) in committee::GOLDEN_SAMPLES
        .iter()
        .zip(committee::GOLDEN_SAMPLES.iter().skip(1))
    {
        points.push([0.5 * (a[0] + b[0]), 0.5 * (a[1] + b[1])]);
    }
    let nll = |x: [f64; C]| -> f64 {
        let x = [x[0] as f32, x[1] as f32];
        -f64::from(committee::MODEL.log_prob(&x).unwrap())
    };
    let mut checked = 0;
    for x in &points {
        let mut grad = [0.0f32; C];
        let v = g.nll_grad(x, &mut grad).unwrap();
        assert_eq!(v, -committee::MODEL.log_prob(x).unwrap());
        for i in 0..C {
            let h = 1e-2 * f64::from(committee::STD[i]);
            let (mut up, mut down) = ([f64::from(x[0]), f64::from(x[1])], [f64::from(x[0]), f64::from(x[1])]);
            up[i] += h;
            down[i] -= h;
            let fd = (nll(up) - nll(down)) / (2.0 * h);
            let tol = 2e-2 * fd.abs().max(1.0 / f64::from(committee::STD[i]));
            assert!(
                (f64::from(grad[i]) - fd).abs() <= tol,
                "x {x:?} feature {i}: gradient {} vs finite difference {fd}",
                grad[i]
            );
            checked += 1;
        }
    }
    assert_eq!(checked, C * points.len());
}
