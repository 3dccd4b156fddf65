//! Shared helpers for flowmote's host integration tests (see `tests/`).
//!
//! Three kinds of helpers:
//! * finite differences and linear algebra in f64 ([`fd_jacobian`],
//!   [`fd_jacobian_richardson`], [`fd_jacobian_f64`], [`fd_gradient_f64`],
//!   [`log_abs_det`]);
//! * seeded random inputs and random-weight layers ([`rng`], [`random_mlp`],
//!   [`random_coupling`], [`random_maf`], …);
//! * *independent* f64 reference implementations of the core layers, written
//!   from the formulas rather than from the core's code ([`ref_mlp`],
//!   [`ref_actnorm`], [`ref_coupling`], [`ref_maf`]), so that gradients can be
//!   checked against finite differences without f32 round-off.
//!
//! ## The firmware's feature pipeline is checked when it is built
//!
//! The board images feed the accelerometer (3 axes) into the model's
//! exported `pipeline()` and score what comes out. The bundled model fits:
//! ```
//! use flowmote_firmware::{sim::RecordingPin, Alarm, Detector, KOfN, Lis3dh, Monitor};
//! use flowmote_fixtures::model;
//! fn build<I: embedded_hal::i2c::I2c>(i2c: I) {
//!     let alarm = Alarm::new(Detector::new(&model::MODEL, model::THRESHOLD), KOfN::<1>::new(1), RecordingPin::default());
//!     let _m: Monitor<_, _, _, { model::DIM }, _, 1> = Monitor::new(Lis3dh::new(i2c, 0x19), model::pipeline(), alarm);
//! }
//! ```
//! A model trained on two channels does not build into the 3-axis monitor:
//! ```compile_fail
//! use flowmote::{features::{Pipeline, Stat}, ActNorm, Flow};
//! use flowmote_firmware::{sim::RecordingPin, Alarm, Detector, KOfN, Lis3dh, Monitor};
//! static FLOW2: Flow<2, (ActNorm<2>,)> = Flow::new((ActNorm::new([0.0; 2], [0.0; 2]),));
//! fn build<I: embedded_hal::i2c::I2c>(i2c: I) {
//!     let alarm = Alarm::new(Detector::new(&FLOW2, 1.0), KOfN::<1>::new(1), RecordingPin::default());
//!     let p: Pipeline<2, 25, 1, 2> = Pipeline::new([Stat::Mean], 25);
//!     let _m: Monitor<_, _, _, 2, _, 1> = Monitor::new(Lis3dh::new(i2c, 0x19), p, alarm);
//! }
//! ```
//! nor does a pipeline whose output is not the model's input (6 features
//! for a 3-dimensional model):
//! ```compile_fail
//! use flowmote::features::{Pipeline, Stat};
//! use flowmote_firmware::{sim::RecordingPin, Alarm, Detector, KOfN, Lis3dh, Monitor};
//! use flowmote_fixtures::model;
//! fn build<I: embedded_hal::i2c::I2c>(i2c: I) {
//!     let alarm = Alarm::new(Detector::new(&model::MODEL, model::THRESHOLD), KOfN::<1>::new(1), RecordingPin::default());
//!     let p: Pipeline<3, 25, 2, 6> = Pipeline::new([Stat::Mean, Stat::Std], 25);
//!     let _m = Monitor::new(Lis3dh::new(i2c, 0x19), p, alarm);
//! }
//! ```
#![deny(missing_docs)]

use flowmote::maf::made_mask_params;
use flowmote::{Activation, AffineCoupling, Maf, Mlp, MlpRef, MlpShape};
pub use rand_core::{Rng, SeedableRng};
pub use rand_xoshiro::Xoshiro128PlusPlus;

// ---------------------------------------------------------------------------
// Finite differences and linear algebra.

/// Central finite-difference Jacobian of `f: ℝⁿ → ℝⁿ` at `x`, in f64 from f32
/// evaluations, with step `h`. Row-major `n × n`, `J[i][j] = ∂f_i/∂x_j`.
pub fn fd_jacobian(f: &mut dyn FnMut(&[f32]) -> Vec<f32>, x: &[f32], h: f32) -> Vec<f64> {
    let n = x.len();
    let mut jac = vec![0.0f64; n * n];
    for j in 0..n {
        let mut xp = x.to_vec();
        let mut xm = x.to_vec();
        xp[j] += h;
        xm[j] -= h;
        let (fp, fm) = (f(&xp), f(&xm));
        let step = (xp[j] as f64) - (xm[j] as f64);
        for i in 0..n {
            jac[i * n + j] = (fp[i] as f64 - fm[i] as f64) / step;
        }
    }
    jac
}

/// Richardson-extrapolated central differences on f32 evaluations:
/// `(4·J(h/2) − J(h)) / 3`, which cancels the `O(h²)` truncation term, so a
/// step large enough to keep f32 round-off small (`h ≈ 1e-2`) still gives an
/// `O(h⁴)`-accurate Jacobian.
pub fn fd_jacobian_richardson(f: &mut dyn FnMut(&[f32]) -> Vec<f32>, x: &[f32], h: f32) -> Vec<f64> {
    let j1 = fd_jacobian(f, x, h);
    let j2 = fd_jacobian(f, x, h / 2.0);
    j1.iter().zip(&j2).map(|(a, b)| (4.0 * b - a) / 3.0).collect()
}

/// Central finite-difference Jacobian of `f: ℝⁿ → ℝᵐ` evaluated in f64
/// (for the reference implementations). Row-major `m × n`.
pub fn fd_jacobian_f64(f: &mut dyn FnMut(&[f64]) -> Vec<f64>, x: &[f64], h: f64) -> Vec<f64> {
    let n = x.len();
    let mut cols = Vec::with_capacity(n);
    for j in 0..n {
        let mut xp = x.to_vec();
        let mut xm = x.to_vec();
        xp[j] += h;
        xm[j] -= h;
        let (fp, fm) = (f(&xp), f(&xm));
        cols.push(fp.iter().zip(&fm).map(|(p, m)| (p - m) / (2.0 * h)).collect::<Vec<_>>());
    }
    let m = cols.first().map_or(0, |c| c.len());
    let mut jac = vec![0.0; m * n];
    for (j, col) in cols.iter().enumerate() {
        for i in 0..m {
            jac[i * n + j] = col[i];
        }
    }
    jac
}

/// Central finite-difference gradient of a scalar `f: ℝⁿ → ℝ` in f64.
pub fn fd_gradient_f64(f: &mut dyn FnMut(&[f64]) -> f64, x: &[f64], h: f64) -> Vec<f64> {
    let mut p = x.to_vec();
    (0..x.len())
        .map(|j| {
            p[j] = x[j] + h;
            let fp = f(&p);
            p[j] = x[j] - h;
            let fm = f(&p);
            p[j] = x[j];
            (fp - fm) / (2.0 * h)
        })
        .collect()
}

/// Checks a layer's log-det `ld` at `x` against `log|det J|` of the f64
/// finite-difference Jacobian of `f` (step `h`): panics naming `what` when
/// they differ by more than `tol`.
pub fn check_log_det(what: &str, f: &mut dyn FnMut(&[f32]) -> Vec<f32>, x: &[f32], ld: f32, h: f32, tol: f64) {
    let jac = fd_jacobian(f, x, h);
    let fd = log_abs_det(&jac, x.len());
    assert!(
        (fd - ld as f64).abs() < tol,
        "{what}: log-det {ld}, finite differences {fd}"
    );
}

/// Checks an analytic gradient `grad` of the f64 loss `f` at the f32 point
/// `x` against central differences of step `h` (each divided by the step the
/// f32 arithmetic actually took): panics naming `what` and the index when an
/// error relative to `1 + |fd|` exceeds `tol`; returns the worst such error.
pub fn check_gradient(what: &str, f: &dyn Fn(&[f32]) -> f64, x: &[f32], grad: &[f32], h: f32, tol: f64) -> f64 {
    let mut worst = 0.0f64;
    for (i, &g) in grad.iter().enumerate() {
        let (mut xp, mut xm) = (x.to_vec(), x.to_vec());
        xp[i] += h;
        xm[i] -= h;
        let fd = (f(&xp) - f(&xm)) / (xp[i] as f64 - xm[i] as f64);
        let err = (g as f64 - fd).abs() / (1.0 + fd.abs());
        assert!(err < tol, "{what}[{i}]: {g} vs finite differences {fd}");
        worst = worst.max(err);
    }
    worst
}

/// `log|det A|` of a row-major `n × n` matrix by LU with partial pivoting (f64).
pub fn log_abs_det(a: &[f64], n: usize) -> f64 {
    let mut m = a.to_vec();
    let mut ld = 0.0;
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| m[i * n + c].abs().total_cmp(&m[j * n + c].abs()))
            .unwrap();
        if p != c {
            for k in 0..n {
                m.swap(c * n + k, p * n + k);
            }
        }
        let piv = m[c * n + c];
        ld += piv.abs().ln();
        for r in c + 1..n {
            let f = m[r * n + c] / piv;
            for k in c..n {
                m[r * n + k] -= f * m[c * n + k];
            }
        }
    }
    ld
}

/// Inverse of a row-major `n × n` matrix by Gauss–Jordan elimination with
/// partial pivoting (f64). Panics if the matrix is singular.
pub fn mat_inverse(a: &[f64], n: usize) -> Vec<f64> {
    let mut m = a.to_vec();
    let mut inv = vec![0.0; n * n];
    for i in 0..n {
        inv[i * n + i] = 1.0;
    }
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| m[i * n + c].abs().total_cmp(&m[j * n + c].abs()))
            .unwrap();
        assert!(m[p * n + c] != 0.0, "singular matrix");
        for k in 0..n {
            m.swap(c * n + k, p * n + k);
            inv.swap(c * n + k, p * n + k);
        }
        let piv = m[c * n + c];
        for k in 0..n {
            m[c * n + k] /= piv;
            inv[c * n + k] /= piv;
        }
        for r in 0..n {
            let f = m[r * n + c];
            if r != c && f != 0.0 {
                for k in 0..n {
                    m[r * n + k] -= f * m[c * n + k];
                    inv[r * n + k] -= f * inv[c * n + k];
                }
            }
        }
    }
    inv
}

/// A first-order bound on the error of `log|det J|` when every entry of `J`
/// carries an error of at most `eta`: `|δ log|det J|| = |tr(J⁻¹ δJ)| ≤ eta · Σ_ij |(J⁻¹)_ij|`.
pub fn log_det_error_bound(jac: &[f64], n: usize, eta: f64) -> f64 {
    eta * mat_inverse(jac, n).iter().map(|v| v.abs()).sum::<f64>()
}

/// Largest `|got_i − want_i| / (atol + rtol·|want_i|)`; `≤ 1` means every
/// entry is within tolerance. Panics (with the worst entry) if `got` and
/// `want` differ in length or the ratio exceeds 1.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], rtol: f64, atol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length mismatch");
    let mut worst = (0.0f64, 0usize);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let r = (g - w).abs() / (atol + rtol * w.abs());
        // A NaN anywhere must fail.
        let r = if r.is_nan() { f64::INFINITY } else { r };
        if r > worst.0 {
            worst = (r, i);
        }
    }
    let i = worst.1;
    assert!(
        worst.0 <= 1.0,
        "{what}: entry {i}: got {} want {} (|err| {:.3e}, tol {:.3e})",
        got[i],
        want[i],
        (got[i] - want[i]).abs(),
        atol + rtol * want[i].abs()
    );
    worst.0
}

/// Widen an f32 slice to f64 (exactly).
pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Midpoint-rule integral of `f` over the box `[lo, hi]` with `n × n` cells.
/// For smooth, rapidly decaying integrands this converges much faster than
/// `O(1/n²)` (Euler–Maclaurin), so `n` in the hundreds gives ~1e-6.
pub fn integrate_2d(f: &mut dyn FnMut(f64, f64) -> f64, lo: [f64; 2], hi: [f64; 2], n: usize) -> f64 {
    let (dx, dy) = ((hi[0] - lo[0]) / n as f64, (hi[1] - lo[1]) / n as f64);
    let mut s = 0.0;
    for i in 0..n {
        let x = lo[0] + (i as f64 + 0.5) * dx;
        for j in 0..n {
            s += f(x, lo[1] + (j as f64 + 0.5) * dy);
        }
    }
    s * dx * dy
}

// ---------------------------------------------------------------------------
// Seeded randomness.

/// SplitMix64: a tiny deterministic generator for test data whose values do
/// not go through `rand_core` (the spline, LU and CNF tests).
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [−1, 1) (24 random bits).
    pub fn sym(&mut self) -> f32 {
        (self.u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// `n` draws of `scale · sym()`.
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| scale * self.sym()).collect()
    }
    /// A uniformly random permutation of `0..d`.
    pub fn perm(&mut self, d: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..d).collect();
        for i in (1..d).rev() {
            p.swap(i, self.u64() as usize % (i + 1));
        }
        p
    }
}

/// The tests' generator, seeded.
pub fn rng(seed: u64) -> Xoshiro128PlusPlus {
    Xoshiro128PlusPlus::seed_from_u64(seed)
}

/// A uniform draw in `[lo, hi)` (24 random bits).
pub fn uniform<R: Rng + ?Sized>(rng: &mut R, lo: f32, hi: f32) -> f32 {
    let u = (rng.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0);
    lo + (hi - lo) * u
}

/// `n` uniform draws in `[lo, hi)`.
pub fn random_vec<R: Rng + ?Sized>(rng: &mut R, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| uniform(rng, lo, hi)).collect()
}

/// `D` uniform draws in `[lo, hi)`.
pub fn random_array<const D: usize, R: Rng + ?Sized>(rng: &mut R, lo: f32, hi: f32) -> [f32; D] {
    core::array::from_fn(|_| uniform(rng, lo, hi))
}

/// All four activations, for loops over configurations.
pub const ACTIVATIONS: [Activation; 4] = [
    Activation::Tanh,
    Activation::Relu,
    Activation::LeakyRelu,
    Activation::Elu,
];

// ---------------------------------------------------------------------------
// Building layers from flat parameter vectors.

/// The flat parameter vector of an MLP view, in [`MlpRef::from_flat`] order
/// (`w_in, w_cond, b_in, w_hid, b_hid, w_out, b_out`).
pub fn flat_params(v: &MlpRef<'_>) -> Vec<f32> {
    [v.w_in, v.w_cond, v.b_in, v.w_hid, v.b_hid, v.w_out, v.b_out].concat()
}

/// A const-generic [`Mlp`] holding the flat parameters `p` (no `cond` input).
/// Panics if `p` has the wrong length.
pub fn mlp_from_flat<const IN: usize, const H: usize, const L: usize, const OUT: usize, const HEADS: usize>(
    act: Activation,
    p: &[f32],
) -> Mlp<IN, H, L, OUT, HEADS> {
    assert_eq!(p.len(), Mlp::<IN, H, L, OUT, HEADS>::shape().n_params());
    let mut m = Mlp::zeroed(act);
    let mut it = p.iter().copied();
    let blocks: [&mut [f32]; 6] = [
        m.w_in.as_flattened_mut(),
        &mut m.b_in,
        m.w_hid.as_flattened_mut().as_flattened_mut(),
        m.b_hid.as_flattened_mut(),
        m.w_out.as_flattened_mut().as_flattened_mut(),
        m.b_out.as_flattened_mut(),
    ];
    for block in blocks {
        for v in block {
            *v = it.next().unwrap();
        }
    }
    m
}

/// Random flat MLP parameters: every weight and bias uniform in
/// `[−scale, scale)`.
pub fn random_params<R: Rng + ?Sized>(rng: &mut R, shape: MlpShape, scale: f32) -> Vec<f32> {
    random_vec(rng, shape.n_params(), -scale, scale)
}

/// A const-generic [`Mlp`] with random weights in `[−scale, scale)`.
pub fn random_mlp<const IN: usize, const H: usize, const L: usize, const OUT: usize, const HEADS: usize, R>(
    rng: &mut R,
    act: Activation,
    scale: f32,
) -> Mlp<IN, H, L, OUT, HEADS>
where
    R: Rng + ?Sized,
{
    let p = random_params(rng, Mlp::<IN, H, L, OUT, HEADS>::shape(), scale);
    mlp_from_flat(act, &p)
}

/// An affine coupling with random conditioner weights in `[−scale, scale)`.
pub fn random_coupling<const A: usize, const B: usize, const H: usize, const L: usize, R: Rng + ?Sized>(
    rng: &mut R,
    act: Activation,
    scale: f32,
    clamp: f32,
) -> AffineCoupling<A, B, H, L> {
    AffineCoupling {
        clamp,
        net: random_mlp(rng, act, scale),
    }
}

/// A MAF layer with random weights in `[−scale, scale)`, MADE-masked with
/// [`made_mask_params`].
pub fn random_maf<const D: usize, const H: usize, const L: usize, R: Rng + ?Sized>(
    rng: &mut R,
    act: Activation,
    scale: f32,
    clamp: f32,
) -> Maf<D, H, L> {
    let shape = Mlp::<D, H, L, D, 2>::shape();
    let mut p = random_params(rng, shape, scale);
    made_mask_params(shape, &mut p).unwrap();
    Maf {
        clamp,
        net: mlp_from_flat(act, &p),
    }
}

// ---------------------------------------------------------------------------
// Independent f64 reference implementations.

/// The activation in f64, from its definition.
pub fn ref_activation(act: Activation, x: f64) -> f64 {
    match act {
        Activation::Tanh => x.tanh(),
        Activation::Relu => x.max(0.0),
        Activation::LeakyRelu => {
            if x > 0.0 {
                x
            } else {
                0.01 * x
            }
        }
        Activation::Elu => {
            if x > 0.0 {
                x
            } else {
                x.exp_m1()
            }
        }
    }
}

/// MLP in f64 from a flat parameter vector (order `w_in, w_cond, b_in, w_hid,
/// b_hid, w_out, b_out`, matrices row-major `out × in`), input `x` and scalar
/// condition `c` (ignored when `shape.cond == 0`).
pub fn ref_mlp(shape: MlpShape, act: Activation, p: &[f64], x: &[f64], c: f64) -> Vec<f64> {
    assert_eq!(p.len(), shape.n_params());
    let (n, h) = (shape.input, shape.hidden);
    let mut off = 0;
    let mut take = |len: usize| {
        let s = &p[off..off + len];
        off += len;
        s
    };
    let (w_in, w_cond, b_in) = (take(h * n), take(h * shape.cond), take(h));
    let mut a: Vec<f64> = (0..h)
        .map(|k| {
            let mut s = b_in[k] + (0..n).map(|i| w_in[k * n + i] * x[i]).sum::<f64>();
            if shape.cond == 1 {
                s += w_cond[k] * c;
            }
            ref_activation(act, s)
        })
        .collect();
    let (w_hid, b_hid) = (take((shape.depth - 1) * h * h), take((shape.depth - 1) * h));
    for l in 0..shape.depth - 1 {
        let w = &w_hid[l * h * h..];
        a = (0..h)
            .map(|k| ref_activation(act, b_hid[l * h + k] + (0..h).map(|m| w[k * h + m] * a[m]).sum::<f64>()))
            .collect();
    }
    let (w_out, b_out) = (take(shape.output * h), take(shape.output));
    (0..shape.output)
        .map(|j| b_out[j] + (0..h).map(|k| w_out[j * h + k] * a[k]).sum::<f64>())
        .collect()
}

/// ActNorm in f64 from `p = [log_scale…, shift…]`: `(e^s ⊙ x + b, Σ s)`.
pub fn ref_actnorm(p: &[f64], x: &[f64]) -> (Vec<f64>, f64) {
    let d = x.len();
    let y = (0..d).map(|i| p[i].exp() * x[i] + p[d + i]).collect();
    (y, p[..d].iter().sum())
}

/// `x ⊙ e^s + t` with `s = c·tanh(raw/c)`, in f64; returns `(y, Σ s)`.
fn ref_affine(x: &[f64], shift: &[f64], raw: &[f64], clamp: f64) -> (Vec<f64>, f64) {
    let s: Vec<f64> = raw.iter().map(|r| clamp * (r / clamp).tanh()).collect();
    let y = (0..x.len()).map(|j| x[j] * s[j].exp() + shift[j]).collect();
    (y, s.iter().sum())
}

/// Affine coupling in f64: the first `a` coordinates pass through and feed an
/// MLP (flat parameters `p`, `shape.output = 2·(len − a)`: shifts, then raw
/// log-scales) that transforms the rest. Returns `(y, log-det)`.
pub fn ref_coupling(a: usize, clamp: f64, shape: MlpShape, act: Activation, p: &[f64], x: &[f64]) -> (Vec<f64>, f64) {
    let b = x.len() - a;
    let out = ref_mlp(shape, act, p, &x[..a], 0.0);
    let (yb, ld) = ref_affine(&x[a..], &out[..b], &out[b..], clamp);
    ([&x[..a], &yb[..]].concat(), ld)
}

/// MAF layer in f64 (one pass of the MLP on the whole input; the
/// autoregressive structure is whatever the weights make it). Returns
/// `(z, log-det of the map if it is triangular)`.
pub fn ref_maf(clamp: f64, shape: MlpShape, act: Activation, p: &[f64], x: &[f64]) -> (Vec<f64>, f64) {
    let d = x.len();
    let out = ref_mlp(shape, act, p, x, 0.0);
    ref_affine(x, &out[..d], &out[d..], clamp)
}
