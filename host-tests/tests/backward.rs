//! Every backward pass against central finite differences, for the scalar loss
//! `L = Σ wᵢ yᵢ + c·logdet` (random `w`, `c = 0.7`; for the MLP alone
//! `L = Σ wᵢ outᵢ`).
//!
//! Two references, because f32 forward passes are too noisy for plain
//! finite differences at a useful step:
//! * **f64 reference FD** (all activations): the independent f64
//!   implementations in `flowmote_host_tests` (checked against the core's
//!   forward passes in `layers.rs`) are differentiated by central differences
//!   with `h = 1e-6`; truncation `~h²·L'''` and round-off `~1e-16·|L|/h` are
//!   both ≲ 1e-9, far below f32. The core's f32 gradients must match to
//!   `|err| ≤ 1e-4·|want| + 1e-5·max|want|` — the f32 backward pass sums
//!   `O(hidden)` products per entry, each with relative error ~ε = 1.2e-7, so a
//!   cancelling entry can be off by `ε·Σ|terms|`, which the `max|want|` floor
//!   covers. Measured worst `|err|/max|want|`: 8.4e-7 (MLP), 6.3e-7
//!   (coupling), 3.2e-7 (MAF), 7.7e-8 (ActNorm), 1.4e-7 (chained model).
//! * **f32 code FD, Richardson** (smooth `tanh` conditioners): the core's own
//!   forward pass, perturbed by `h = 1e-2` and `h/2`, loss accumulated in f64;
//!   `(4·D(h/2) − D(h))/3` cancels the `h²` term, leaving `O(h⁴)` truncation and
//!   round-off `~ε·Σ|wᵢ yᵢ|/h ≈ 1e-5·scale`: checked to `1e-3` of the
//!   gradient's scale. (ReLU kinks inside a 1e-2 stencil would break this, so
//!   piecewise activations rely on the f64 reference.)

use flowmote::mlp::MlpGrad;
use flowmote::permutation::{permute_forward, permute_inverse};
use flowmote::{ActNormRef, Activation, AffineCouplingRef, MafRef, MlpRef, MlpShape};
use flowmote_host_tests::*;

/// `∂L/∂logdet` in every test.
const C_LD: f32 = 0.7;

/// Check an f32 gradient against an f64 reference (see the module docs for
/// the tolerance); returns the worst `|err| / max|want|`.
fn check_grad(what: &str, got: &[f32], want: &[f64]) -> f64 {
    let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    assert_close(what, &to_f64(got), want, 1e-4, 1e-5 * scale);
    got.iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - w).abs() / scale)
        .fold(0.0, f64::max)
}

/// Richardson-extrapolated central-difference gradient of a scalar function
/// of f32 inputs (evaluated in f64), step `h` and `h/2`.
fn fd_richardson(f: &mut dyn FnMut(&[f32]) -> f64, x: &[f32], h: f32) -> Vec<f64> {
    let mut p = x.to_vec();
    let mut d = |j: usize, h: f32, p: &mut Vec<f32>| {
        p[j] = x[j] + h;
        let (fp, sp) = (f(p), p[j] as f64);
        p[j] = x[j] - h;
        let (fm, sm) = (f(p), p[j] as f64);
        p[j] = x[j];
        (fp - fm) / (sp - sm)
    };
    (0..x.len())
        .map(|j| {
            let (d1, d2) = (d(j, h, &mut p), d(j, h / 2.0, &mut p));
            (4.0 * d2 - d1) / 3.0
        })
        .collect()
}

/// Check against the f32-code Richardson FD (tanh only): `1e-3` of the scale.
fn check_grad_f32_fd(what: &str, got: &[f32], want: &[f64]) {
    let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    assert_close(what, &to_f64(got), want, 0.0, 1e-3 * scale);
}

fn dot64(w: &[f32], y: &[f64]) -> f64 {
    w.iter().zip(y).map(|(a, b)| *a as f64 * b).sum()
}

fn dot32(w: &[f32], y: &[f32]) -> f64 {
    w.iter().zip(y).map(|(a, b)| *a as f64 * *b as f64).sum()
}

// ---------------------------------------------------------------------------
// MLP alone.

fn check_mlp(shape: MlpShape, act: Activation, seed: u64) -> f64 {
    let mut r = rng(seed);
    let p = random_params(&mut r, shape, 1.0);
    let x = random_vec(&mut r, shape.input, -2.0, 2.0);
    let c = uniform(&mut r, -1.0, 1.0);
    let w = random_vec(&mut r, shape.output, -1.0, 1.0);
    let net = MlpRef::from_flat(shape, act, &p).unwrap();
    let (h, o) = (shape.hidden, shape.output);
    let mut acts = vec![f32::NAN; shape.n_activations()];
    let mut out = vec![0.0; o];
    net.forward_cached(&x, c, &mut acts, &mut out);
    let mut out2 = vec![0.0; o];
    net.forward(&x, c, &mut vec![0.0; h], &mut vec![0.0; h], &mut out2);
    assert_eq!(out, out2, "forward_cached and forward differ");

    // Buffers start non-zero: backward must add to them.
    let g0 = random_vec(&mut r, p.len(), -1.0, 1.0);
    let gx0 = random_vec(&mut r, x.len(), -1.0, 1.0);
    let (mut grad, mut g_x) = (g0.clone(), gx0.clone());
    let (mut t0, mut t1) = (vec![f32::NAN; h], vec![f32::NAN; h]);
    net.backward(
        &x,
        c,
        &acts,
        &w,
        Some(&mut g_x),
        &mut t0,
        &mut t1,
        &mut MlpGrad::from_flat(shape, &mut grad).unwrap(),
    );
    let dp: Vec<f32> = grad.iter().zip(&g0).map(|(a, b)| a - b).collect();
    let dx: Vec<f32> = g_x.iter().zip(&gx0).map(|(a, b)| a - b).collect();

    // Without ∂L/∂x the parameter gradient is the same.
    let mut grad2 = vec![0.0; p.len()];
    net.backward(
        &x,
        c,
        &acts,
        &w,
        None,
        &mut t0,
        &mut t1,
        &mut MlpGrad::from_flat(shape, &mut grad2).unwrap(),
    );
    for (a, b) in grad2.iter().zip(&dp) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()));
    }

    let (p64, x64, c64) = (to_f64(&p), to_f64(&x), c as f64);
    let want_p = fd_gradient_f64(&mut |q| dot64(&w, &ref_mlp(shape, act, q, &x64, c64)), &p64, 1e-6);
    let want_x = fd_gradient_f64(&mut |v| dot64(&w, &ref_mlp(shape, act, &p64, v, c64)), &x64, 1e-6);
    let name = format!("mlp {shape:?} {act:?}");
    let e = check_grad(&format!("{name} ∂θ"), &dp, &want_p).max(check_grad(&format!("{name} ∂x"), &dx, &want_x));

    if act == Activation::Tanh {
        let mut f = |q: &[f32]| {
            let mut out = vec![0.0; o];
            MlpRef::from_flat(shape, act, q)
                .unwrap()
                .forward(&x, c, &mut vec![0.0; h], &mut vec![0.0; h], &mut out);
            dot32(&w, &out)
        };
        check_grad_f32_fd(&format!("{name} ∂θ (f32 FD)"), &dp, &fd_richardson(&mut f, &p, 1e-2));
    }
    e
}

/// `MlpRef::backward` alone, depth 1, 2, 3, every activation, with and
/// without the scalar condition input.
#[test]
fn mlp_backward_matches_finite_differences() {
    let mut worst = 0.0f64;
    for (i, act) in ACTIVATIONS.into_iter().enumerate() {
        for depth in 1..=3 {
            for cond in 0..=1 {
                let shape = MlpShape {
                    input: 3,
                    cond,
                    hidden: 7,
                    depth,
                    output: 4,
                };
                worst = worst.max(check_mlp(
                    shape,
                    act,
                    1000 + 100 * i as u64 + 10 * depth as u64 + cond as u64,
                ));
            }
        }
    }
    // One wide, one with a single input and output.
    worst = worst.max(check_mlp(
        MlpShape {
            input: 6,
            cond: 0,
            hidden: 24,
            depth: 2,
            output: 12,
        },
        Activation::Tanh,
        1999,
    ));
    worst = worst.max(check_mlp(
        MlpShape {
            input: 1,
            cond: 1,
            hidden: 3,
            depth: 3,
            output: 1,
        },
        Activation::Elu,
        1998,
    ));
    eprintln!("MLP backward: worst |err|/max|grad| = {worst:.2e}");
}

// ---------------------------------------------------------------------------
// ActNorm.

#[test]
fn actnorm_backward_matches_finite_differences() {
    let mut r = rng(2000);
    let mut worst = 0.0f64;
    for d in [1, 3, 6] {
        let p = random_vec(&mut r, 2 * d, -2.0, 2.0);
        let x = random_vec(&mut r, d, -3.0, 3.0);
        let w = random_vec(&mut r, d, -1.0, 1.0);
        let g0 = random_vec(&mut r, 2 * d, -1.0, 1.0);
        let (mut g, mut grad) = (w.clone(), g0.clone());
        ActNormRef::from_flat(&p).backward(&x, &mut g, C_LD, &mut grad);
        let dp: Vec<f32> = grad.iter().zip(&g0).map(|(a, b)| a - b).collect();
        let (p64, x64) = (to_f64(&p), to_f64(&x));
        let loss = |q: &[f64], v: &[f64]| {
            let (y, ld) = ref_actnorm(q, v);
            dot64(&w, &y) + C_LD as f64 * ld
        };
        let want_p = fd_gradient_f64(&mut |q| loss(q, &x64), &p64, 1e-6);
        let want_x = fd_gradient_f64(&mut |v| loss(&p64, v), &x64, 1e-6);
        worst = worst.max(check_grad("actnorm ∂θ", &dp, &want_p).max(check_grad("actnorm ∂x", &g, &want_x)));
        let mut f = |q: &[f32]| {
            let mut y = x.clone();
            let ld = ActNormRef::from_flat(q).forward(&mut y);
            dot32(&w, &y) + C_LD as f64 * ld as f64
        };
        check_grad_f32_fd("actnorm ∂θ (f32 FD)", &dp, &fd_richardson(&mut f, &p, 1e-2));
    }
    eprintln!("ActNorm backward: worst |err|/max|grad| = {worst:.2e}");
}

// ---------------------------------------------------------------------------
// Affine coupling and MAF.

/// Parameters, input, loss weights, and the analytic gradients
/// `(∂L/∂x, ∂L/∂θ)` of one random layer.
struct Case {
    p: Vec<f32>,
    x: Vec<f32>,
    w: Vec<f32>,
    g_x: Vec<f32>,
    g_p: Vec<f32>,
}

/// `(params, x, g, grad, scratch)`: one layer's backward pass.
type BackwardFn<'f> = dyn FnMut(&[f32], &[f32], &mut [f32], &mut MlpGrad<'_>, &mut [f32]) + 'f;

/// Run a layer's backward pass on random data, with NaN-filled scratch (it
/// must not be read before written) and a non-zero gradient buffer (it must
/// be added to).
fn run_backward(
    r: &mut Xoshiro128PlusPlus,
    shape: MlpShape,
    mask: bool,
    dim: usize,
    backward: &mut BackwardFn<'_>,
    scratch_len: &dyn Fn(&[f32]) -> usize,
) -> Case {
    let mut p = random_params(r, shape, 1.0);
    if mask {
        flowmote::maf::made_mask_params(shape, &mut p).unwrap();
    }
    let x = random_vec(r, dim, -3.0, 3.0);
    let w = random_vec(r, dim, -1.0, 1.0);
    let g0 = random_vec(r, p.len(), -1.0, 1.0);
    let mut g_p = g0.clone();
    let mut g_x = w.clone();
    let mut scratch = vec![f32::NAN; scratch_len(&p)];
    backward(
        &p,
        &x,
        &mut g_x,
        &mut MlpGrad::from_flat(shape, &mut g_p).unwrap(),
        &mut scratch,
    );
    for (a, b) in g_p.iter_mut().zip(&g0) {
        *a -= b;
    }
    Case { p, x, w, g_x, g_p }
}

/// Pin a closure's signature to "view borrowing the parameter slice".
fn coupling_fn<F: for<'a> Fn(&'a [f32]) -> AffineCouplingRef<'a>>(f: F) -> F {
    f
}

/// Pin a closure's signature to "view borrowing the parameter slice".
fn maf_fn<F: for<'a> Fn(&'a [f32]) -> MafRef<'a>>(f: F) -> F {
    f
}

fn check_coupling(a: usize, b: usize, hidden: usize, depth: usize, act: Activation, clamp: f32, seed: u64) -> f64 {
    let mut r = rng(seed);
    let shape = MlpShape {
        input: a,
        cond: 0,
        hidden,
        depth,
        output: 2 * b,
    };
    let layer = coupling_fn(move |p| AffineCouplingRef {
        a,
        b,
        clamp,
        net: MlpRef::from_flat(shape, act, p).unwrap(),
    });
    let case = run_backward(
        &mut r,
        shape,
        false,
        a + b,
        &mut |p, x, g, grad, s| layer(p).backward(x, g, C_LD, grad, s),
        &|p| layer(p).train_scratch_len(),
    );
    let (p64, x64) = (to_f64(&case.p), to_f64(&case.x));
    let loss = |q: &[f64], v: &[f64]| {
        let (y, ld) = ref_coupling(a, clamp as f64, shape, act, q, v);
        dot64(&case.w, &y) + C_LD as f64 * ld
    };
    let want_p = fd_gradient_f64(&mut |q| loss(q, &x64), &p64, 1e-6);
    let want_x = fd_gradient_f64(&mut |v| loss(&p64, v), &x64, 1e-6);
    let name = format!("coupling {a}|{b} h{hidden} d{depth} {act:?}");
    let e = check_grad(&format!("{name} ∂θ"), &case.g_p, &want_p).max(check_grad(
        &format!("{name} ∂x"),
        &case.g_x,
        &want_x,
    ));
    if act == Activation::Tanh {
        let (mut h0, mut h1, mut out) = (vec![0.0; hidden], vec![0.0; hidden], vec![0.0; 2 * b]);
        let mut f = |q: &[f32]| {
            let mut y = case.x.clone();
            let ld = layer(q).forward(&mut y, &mut h0, &mut h1, &mut out);
            dot32(&case.w, &y) + C_LD as f64 * ld as f64
        };
        check_grad_f32_fd(
            &format!("{name} ∂θ (f32 FD)"),
            &case.g_p,
            &fd_richardson(&mut f, &case.p, 1e-2),
        );
    }
    e
}

#[test]
fn coupling_backward_matches_finite_differences() {
    let mut worst = 0.0f64;
    for (i, act) in ACTIVATIONS.into_iter().enumerate() {
        let s = 3000 + 10 * i as u64;
        worst = worst.max(check_coupling(2, 3, 8, 1, act, 3.0, s));
        worst = worst.max(check_coupling(3, 2, 6, 2, act, 2.0, s + 1));
        worst = worst.max(check_coupling(1, 1, 5, 1, act, 3.0, s + 2));
        worst = worst.max(check_coupling(1, 4, 9, 3, act, 1.5, s + 3));
    }
    eprintln!("coupling backward: worst |err|/max|grad| = {worst:.2e}");
}

/// A raw log-scale deep in the clamp's saturation: `ds/draw` is tiny but the
/// gradient is still exact.
#[test]
fn coupling_backward_in_clamp_saturation() {
    let mut worst = 0.0f64;
    for seed in 0..3 {
        worst = worst.max(check_coupling(2, 2, 6, 1, Activation::Relu, 0.5, 3100 + seed));
    }
    eprintln!("saturated coupling backward: worst {worst:.2e}");
}

fn check_maf(d: usize, hidden: usize, depth: usize, act: Activation, seed: u64) -> f64 {
    let mut r = rng(seed);
    let shape = MlpShape {
        input: d,
        cond: 0,
        hidden,
        depth,
        output: 2 * d,
    };
    let layer = maf_fn(move |p| MafRef {
        clamp: 3.0,
        net: MlpRef::from_flat(shape, act, p).unwrap(),
    });
    let case = run_backward(
        &mut r,
        shape,
        true,
        d,
        &mut |p, x, g, grad, s| layer(p).backward(x, g, C_LD, grad, s),
        &|p| layer(p).train_scratch_len(),
    );
    let (p64, x64) = (to_f64(&case.p), to_f64(&case.x));
    let loss = |q: &[f64], v: &[f64]| {
        let (y, ld) = ref_maf(3.0, shape, act, q, v);
        dot64(&case.w, &y) + C_LD as f64 * ld
    };
    // Over all parameters, masked ones included: the backward pass returns
    // the true gradient there too (the trainer zeros it with the mask).
    let want_p = fd_gradient_f64(&mut |q| loss(q, &x64), &p64, 1e-6);
    let want_x = fd_gradient_f64(&mut |v| loss(&p64, v), &x64, 1e-6);
    let name = format!("maf d{d} h{hidden} depth{depth} {act:?}");
    let e = check_grad(&format!("{name} ∂θ"), &case.g_p, &want_p).max(check_grad(
        &format!("{name} ∂x"),
        &case.g_x,
        &want_x,
    ));
    // Masking the gradient keeps exactly the allowed entries.
    let mut masked = case.g_p.clone();
    flowmote::maf::made_mask_params(shape, &mut masked).unwrap();
    for ((m, g), p) in masked.iter().zip(&case.g_p).zip(&case.p) {
        if m != g {
            assert_eq!((*m, *p), (0.0, 0.0), "{name}: mask removed an allowed gradient");
        }
    }
    if act == Activation::Tanh {
        let (mut h0, mut h1, mut out) = (vec![0.0; hidden], vec![0.0; hidden], vec![0.0; 2 * d]);
        let mut f = |q: &[f32]| {
            let mut y = case.x.clone();
            let ld = layer(q).forward(&mut y, &mut h0, &mut h1, &mut out);
            dot32(&case.w, &y) + C_LD as f64 * ld as f64
        };
        check_grad_f32_fd(
            &format!("{name} ∂θ (f32 FD)"),
            &case.g_p,
            &fd_richardson(&mut f, &case.p, 1e-2),
        );
    }
    e
}

#[test]
fn maf_backward_matches_finite_differences() {
    let mut worst = 0.0f64;
    for (i, act) in ACTIVATIONS.into_iter().enumerate() {
        let s = 4000 + 10 * i as u64;
        worst = worst.max(check_maf(2, 6, 1, act, s));
        worst = worst.max(check_maf(3, 8, 2, act, s + 1));
        worst = worst.max(check_maf(5, 12, 1, act, s + 2));
        worst = worst.max(check_maf(4, 7, 3, act, s + 3));
    }
    eprintln!("MAF backward: worst |err|/max|grad| = {worst:.2e}");
}

// ---------------------------------------------------------------------------
// A composed model, trained the way the trainer composes backward passes.

/// `ActNorm(3) → coupling 1|2 → permutation → MAF(3)`, loss
/// `Σ wᵢ zᵢ + c·Σ logdets`: the layers' backward passes chained in reverse
/// (a permutation's backward is its inverse applied to `g`) give the
/// gradient of the whole model, checked against FD of the f64 references.
#[test]
fn chained_backward_passes_match_finite_differences() {
    const D: usize = 3;
    let perm = [2usize, 0, 1];
    let act = Activation::Tanh;
    let cs = MlpShape {
        input: 1,
        cond: 0,
        hidden: 6,
        depth: 2,
        output: 4,
    };
    let ms = MlpShape {
        input: D,
        cond: 0,
        hidden: 8,
        depth: 1,
        output: 2 * D,
    };
    let mut r = rng(5000);
    let pa = random_vec(&mut r, 2 * D, -1.0, 1.0);
    let pc = random_params(&mut r, cs, 1.0);
    let mut pm = random_params(&mut r, ms, 1.0);
    flowmote::maf::made_mask_params(ms, &mut pm).unwrap();
    let x = random_vec(&mut r, D, -2.0, 2.0);
    let w = random_vec(&mut r, D, -1.0, 1.0);

    let an = ActNormRef::from_flat(&pa);
    let cp = AffineCouplingRef {
        a: 1,
        b: 2,
        clamp: 2.0,
        net: MlpRef::from_flat(cs, act, &pc).unwrap(),
    };
    let maf = MafRef {
        clamp: 2.0,
        net: MlpRef::from_flat(ms, act, &pm).unwrap(),
    };
    // Forward, keeping each layer's input.
    let (mut h0, mut h1, mut out, mut tmp) = ([0.0; 8], [0.0; 8], [0.0; 6], [0.0; D]);
    let x0 = x.clone();
    let mut v = x.clone();
    an.forward(&mut v);
    let x1 = v.clone();
    cp.forward(&mut v, &mut h0, &mut h1, &mut out);
    permute_forward(&perm, &mut v, &mut tmp);
    let x3 = v.clone();
    // Backward in reverse order.
    let (mut ga, mut gc, mut gm) = (vec![0.0; pa.len()], vec![0.0; pc.len()], vec![0.0; pm.len()]);
    let mut g = w.clone();
    let mut scratch = vec![0.0; maf.train_scratch_len().max(cp.train_scratch_len())];
    maf.backward(
        &x3,
        &mut g,
        C_LD,
        &mut MlpGrad::from_flat(ms, &mut gm).unwrap(),
        &mut scratch,
    );
    permute_inverse(&perm, &mut g, &mut tmp);
    cp.backward(
        &x1,
        &mut g,
        C_LD,
        &mut MlpGrad::from_flat(cs, &mut gc).unwrap(),
        &mut scratch,
    );
    an.backward(&x0, &mut g, C_LD, &mut ga);

    // f64 reference of the whole model, over all parameters and the input.
    let (na, nc) = (pa.len(), pc.len());
    let theta: Vec<f64> = to_f64(&[&pa[..], &pc, &pm, &x].concat());
    let loss = |t: &[f64]| {
        let (qa, rest) = t.split_at(na);
        let (qc, rest) = rest.split_at(nc);
        let (qm, xv) = rest.split_at(pm.len());
        let (y, l1) = ref_actnorm(qa, xv);
        let (y, l2) = ref_coupling(1, 2.0, cs, act, qc, &y);
        let y: Vec<f64> = perm.iter().map(|&k| y[k]).collect();
        let (z, l3) = ref_maf(2.0, ms, act, qm, &y);
        dot64(&w, &z) + C_LD as f64 * (l1 + l2 + l3)
    };
    let want = fd_gradient_f64(&mut { loss }, &theta, 1e-6);
    let got = [&ga[..], &gc, &gm, &g].concat();
    let e = check_grad("chained model ∂(θ, x)", &got, &want);
    eprintln!("chained backward: worst |err|/max|grad| = {e:.2e}");
}
