//! Monotonic rational-quadratic splines (Durkan et al. 2019, "Neural Spline
//! Flows"), as a coupling layer ([`SplineCoupling`]) and as an autoregressive
//! layer with a MADE conditioner ([`SplineAutoregressive`]).
//!
//! ## The elementwise map
//! Each transformed coordinate goes through a monotonic spline of `K` bins on
//! `[−B, B]` (`B` = tail bound) and the identity outside it. Its `3K − 1` raw
//! parameters, in this order, are
//! * `K` raw bin widths `w̃`: widths `2B·(MIN_BIN_WIDTH + (1 − K·MIN_BIN_WIDTH)·softmax(w̃))`,
//! * `K` raw bin heights `h̃`: heights likewise with [`MIN_BIN_HEIGHT`],
//! * `K − 1` raw interior knot derivatives `d̃`:
//!   `d = MIN_DERIVATIVE + softplus(d̃ + DERIVATIVE_SHIFT)`; the two boundary
//!   derivatives are 1, so the spline joins the identity tails with matching
//!   slope (C¹). [`DERIVATIVE_SHIFT`] is chosen so that **all-zero raw
//!   parameters give the identity map**: a zero-initialised conditioner
//!   ([`crate::Mlp::zeroed`]) makes the layer the identity, as for affine couplings.
//!   (This is the plain `softplus(d̃) + MIN_DERIVATIVE` of the paper with `d̃`
//!   shifted by a constant; the model class is the same.)
//!
//! Inside bin `k` (`ξ = (x − x_k)/w_k`, `s_k = h_k/w_k`):
//! `y = y_k + h_k·(s_k ξ² + d_k ξ(1−ξ)) / (s_k + (d_k + d_{k+1} − 2s_k) ξ(1−ξ))`.
//! The inverse solves the quadratic for `ξ` in whichever of the forms
//! `2c / (−b − √(b² − 4ac))` (the paper's) and `(−b + √(b² − 4ac)) / 2a` has
//! no cancellation for the sign of `b` — the paper's form alone loses up to
//! half the digits when `b < 0` (steep knot next to a flat bin) — with the
//! quadratic normalised by the bin height so no intermediate grows with `B`. A point exactly on a knot maps exactly to the
//! matching knot in both directions (it falls in the bin to its right, `ξ = 0`).
//!
//! ## Robust by construction
//! A finite input always gives a finite output and a finite log-det:
//! * raw parameters are clamped to `[−RAW_LIMIT, RAW_LIMIT]` (`±∞` to the
//!   nearest bound, NaN — which only an overflowing ReLU conditioner can
//!   produce — to 0, i.e. the identity's value). So softmax needs no max
//!   subtraction, every bin has width and height ≥ `2B·10⁻³`, every slope
//!   `s_k` lies in about `[10⁻³, 10³]` and every knot derivative in
//!   `[MIN_DERIVATIVE, ≈ 51]`. The gradient through a clamped value is 0;
//! * the spline derivative is then bounded above and below by positive
//!   constants: the denominator is ≥ `s_k/2`, so
//!   `dy/dx ≤ 4·max(d_k, d_{k+1}, s_k) ≤ 4·10³`, and
//!   `dy/dx ≥ s_k²·min(d_k, d_{k+1}, s_k)/(s_k + (d_k + d_{k+1})/4)² > 10⁻¹²`;
//!   the log-det of one coordinate lies in about `[−28, 9]`;
//! * outside `(−B, B)` the map is the identity with log-det 0, so inputs like
//!   `±1e30` pass through unchanged;
//! * the tail bound used is `B` clamped to `[MIN_TAIL_BOUND, MAX_TAIL_BOUND]`
//!   (NaN → `MIN_TAIL_BOUND`); `new` of the const types rejects a bound
//!   outside that range at compile time when used in a `static`.
//!
//! ## Example
//! ```
//! use flowmote::{Activation, Bijector, Flow, Mlp, Reverse, SplineCoupling};
//!
//! // Two 1+1 couplings with 8 bins (P = 3·8 − 1 = 23 raw parameters per
//! // coordinate) on [−3, 3]; a zero conditioner is the identity.
//! type C = SplineCoupling<1, 1, 16, 0, 8, 23>;
//! static MODEL: Flow<2, (C, Reverse, C)> = Flow::new((
//!     C::new(3.0, Mlp::zeroed(Activation::Tanh)),
//!     Reverse,
//!     C::new(3.0, Mlp::zeroed(Activation::Tanh)),
//! ));
//! let lp = MODEL.log_prob(&[0.5, -1e30]);
//! assert!(lp.is_err()); // the Gaussian base overflows at 1e30, the splines do not
//! let (z, ld) = MODEL.forward(&[0.5, -1e30]).unwrap();
//! assert_eq!(z[0], -1e30); // (swapped by `Reverse`)
//! assert!((z[1] - 0.5).abs() < 1e-6 && ld.abs() < 1e-6);
//! ```
//! A wrong `P` is a compile error:
//! ```compile_fail
//! use flowmote::{Activation, Mlp, SplineCoupling};
//! static BAD: SplineCoupling<1, 1, 4, 0, 8, 24> = SplineCoupling::new(3.0, Mlp::zeroed(Activation::Tanh));
//! ```
//! and so is an invalid tail bound in a `static`:
//! ```compile_fail
//! use flowmote::{Activation, Mlp, SplineCoupling};
//! static BAD: SplineCoupling<1, 1, 4, 0, 8, 23> = SplineCoupling::new(f32::INFINITY, Mlp::zeroed(Activation::Tanh));
//! ```
//!
//! ## Parameter layouts
//! Conditioner outputs are head-major as in [`crate::Mlp`]: raw parameter `p` of
//! transformed coordinate `j` is output `p·n + j` (`n = B` transformed
//! coordinates for the coupling, `n = D` for the autoregressive layer). The
//! scalar functions therefore read parameter `p` at `raw[p·stride]`.

use crate::block::{Conditioned, Elementwise, Lanes, BLOCK};
use crate::layer::{mlp_backward, net_scratch, vjp_scratch, SliceBijector};
pub use crate::maf::{is_made_masked, made_mask_heads};
use crate::mlp::{MlpGrad, MlpRef};
use crate::sigmoid::softplus;
use crate::weights::{MlpStore, Weight};
use crate::{Bijector, Error};

/// Default tail bound `B`: the spline acts on `[−3, 3]` (standardised data).
pub const DEFAULT_TAIL_BOUND: f32 = 3.0;
/// Minimum bin width, as a fraction of the interval `2B`.
pub const MIN_BIN_WIDTH: f32 = 1e-3;
/// Minimum bin height, as a fraction of the interval `2B`.
pub const MIN_BIN_HEIGHT: f32 = 1e-3;
/// Minimum interior knot derivative.
pub const MIN_DERIVATIVE: f32 = 1e-3;
/// `ln(e^{1 − MIN_DERIVATIVE} − 1)`: added to raw derivatives so that a raw 0
/// gives derivative exactly 1 (identity at zero parameters).
pub const DERIVATIVE_SHIFT: f32 = 0.539_742_4;
/// Raw spline parameters are clamped to `[−RAW_LIMIT, RAW_LIMIT]`.
pub const RAW_LIMIT: f32 = 50.0;
/// Largest supported number of bins (so that `K·MIN_BIN_WIDTH < 1`).
pub const MAX_BINS: usize = 256;
/// Smallest tail bound used.
pub const MIN_TAIL_BOUND: f32 = 1e-3;
/// Largest tail bound used.
pub const MAX_TAIL_BOUND: f32 = 1e30;

/// Raw parameters per transformed coordinate for `bins` bins: `3·bins − 1`.
pub const fn spline_params(bins: usize) -> usize {
    3 * bins - 1
}

/// The tail bound actually used for `b`: clamped to
/// `[MIN_TAIL_BOUND, MAX_TAIL_BOUND]`, NaN → `MIN_TAIL_BOUND`.
#[inline(always)]
pub fn effective_tail_bound(b: f32) -> f32 {
    if b.is_nan() {
        MIN_TAIL_BOUND
    } else {
        b.clamp(MIN_TAIL_BOUND, MAX_TAIL_BOUND)
    }
}

/// `(clamped value, ∂clamped/∂raw)` of a raw parameter.
#[inline(always)]
fn clamp_raw(r: f32) -> (f32, f32) {
    if r >= RAW_LIMIT {
        (RAW_LIMIT, 0.0)
    } else if r <= -RAW_LIMIT {
        (-RAW_LIMIT, 0.0)
    } else if !r.is_nan() {
        (r, 1.0)
    } else {
        (0.0, 0.0)
    }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + crate::activation::exp(-x))
}

/// One bin located by [`Spline::locate`].
#[derive(Clone, Copy)]
struct Bin {
    k: usize,
    xk: f32,
    w: f32,
    yk: f32,
    h: f32,
}

/// Where a spline's bin exponentials `exp(raw(p))` come from. A type, not
/// a run-time choice, so that the single-row passes (the device's) carry
/// no branch for the blocked passes' cache.
trait BinExps: Copy {
    /// `exp(raw(p))`; `raw` gives the clamped raw parameter `p`.
    fn exp_of(self, p: usize, raw: impl FnOnce() -> f32) -> f32;
}

/// Computed when asked: the single-row passes.
#[derive(Clone, Copy)]
struct Lazy;

impl BinExps for Lazy {
    #[inline(always)]
    fn exp_of(self, _: usize, raw: impl FnOnce() -> f32) -> f32 {
        crate::activation::exp(raw())
    }
}

/// Lane `r` of a block's [`LaneExps`] when the block has them, else
/// computed when asked: the blocked passes.
type InBlock<'a> = Option<(&'a [Lanes], usize)>;

impl BinExps for InBlock<'_> {
    #[inline(always)]
    fn exp_of(self, p: usize, raw: impl FnOnce() -> f32) -> f32 {
        match self {
            Some((e, r)) => e.get(p).map_or(0.0, |l| l[r]),
            None => crate::activation::exp(raw()),
        }
    }
}

/// The spline of one coordinate, computed lazily from its raw parameters
/// (no buffers, any `K`), its bin exponentials from `E`.
struct Spline<'a, E: BinExps = Lazy> {
    raw: &'a [f32],
    stride: usize,
    k: usize,
    b: f32,
    /// `Σ exp(w̃)`, `Σ exp(h̃)` (no max subtraction needed: `|w̃| ≤ RAW_LIMIT`).
    sw: f32,
    sh: f32,
    /// Where `exp(raw(p))` comes from.
    exps: E,
}

/// Bins up to which the row-blocked passes compute a coordinate's
/// exponentials once per block ([`LaneExps`]); more bins are computed as
/// the single-row pass computes them.
const LANE_CACHED_BINS: usize = 16;

/// The exponentials of one coordinate's `2K` width and height parameters
/// for every row of a block, and their sums: what [`Spline::new`] and
/// [`Spline::probs`] compute for one row, across [`BLOCK`] rows at once
/// (the same operations in the same order, so the same bits; the compiler
/// vectorises them across the lanes).
struct LaneExps {
    e: [Lanes; 2 * LANE_CACHED_BINS],
    sw: Lanes,
    sh: Lanes,
}

impl LaneExps {
    /// Coordinate `j`'s exponentials, its raw parameter `p` being lane
    /// block `out[p·b + j]`; `None` for more than [`LANE_CACHED_BINS`] bins.
    #[inline(always)]
    fn new(out: &[Lanes], b: usize, j: usize, bins: usize) -> Option<Self> {
        if bins > LANE_CACHED_BINS {
            return None;
        }
        let mut ex = LaneExps {
            e: [[0.0; BLOCK]; 2 * LANE_CACHED_BINS],
            sw: [0.0; BLOCK],
            sh: [0.0; BLOCK],
        };
        for (p, e) in ex.e.iter_mut().enumerate().take(2 * bins) {
            let src = out.get(p * b + j).copied().unwrap_or([0.0; BLOCK]);
            for (v, &r) in e.iter_mut().zip(&src) {
                *v = crate::activation::exp_inline(clamp_raw(r).0);
            }
        }
        for i in 0..bins {
            for r in 0..BLOCK {
                ex.sw[r] += ex.e[i][r];
                ex.sh[r] += ex.e[bins + i][r];
            }
        }
        Some(ex)
    }
}

impl<'a> Spline<'a> {
    #[inline(always)]
    fn new(raw: &'a [f32], stride: usize, bins: usize, b: f32) -> Self {
        Self::with_exps(raw, stride, bins, b, Lazy)
    }
}

impl<'a> Spline<'a, InBlock<'a>> {
    /// Row `r`'s spline of a block, from the block's exponentials `ex`
    /// when there are ([`LaneExps::new`]), else as [`Spline::new`].
    #[inline(always)]
    fn in_block(raw: &'a [f32], stride: usize, bins: usize, b: f32, ex: Option<&'a LaneExps>, r: usize) -> Self {
        match ex {
            Some(ex) => Spline {
                raw,
                stride,
                k: bins,
                b,
                sw: ex.sw[r],
                sh: ex.sh[r],
                exps: Some((&ex.e, r)),
            },
            None => Self::with_exps(raw, stride, bins, b, None),
        }
    }
}

impl<'a, E: BinExps> Spline<'a, E> {
    /// The spline with its sums of bin exponentials taken from `exps`.
    #[inline(always)]
    fn with_exps(raw: &'a [f32], stride: usize, bins: usize, b: f32, exps: E) -> Self {
        let mut sp = Spline {
            raw,
            stride,
            k: bins,
            b,
            sw: 0.0,
            sh: 0.0,
            exps,
        };
        let (mut sw, mut sh) = (0.0, 0.0);
        for i in 0..bins {
            sw += exps.exp_of(i, || sp.raw(i));
            sh += exps.exp_of(bins + i, || sp.raw(bins + i));
        }
        sp.sw = sw;
        sp.sh = sh;
        sp
    }

    /// Raw parameter `p`. The views check the conditioner's size, so the
    /// index is always in range; `get` (0 otherwise) keeps the scoring path
    /// free of a panic branch the compiler cannot rule out (the bin index
    /// depends on the data).
    #[inline(always)]
    fn raw_at(&self, p: usize) -> f32 {
        self.raw.get(p * self.stride).copied().unwrap_or(0.0)
    }

    #[inline(always)]
    fn raw(&self, p: usize) -> f32 {
        clamp_raw(self.raw_at(p)).0
    }

    /// Softmax probabilities of bin `i`'s width and height.
    #[inline(always)]
    fn probs(&self, i: usize) -> (f32, f32) {
        let k = self.k;
        (
            self.exps.exp_of(i, || self.raw(i)) / self.sw,
            self.exps.exp_of(k + i, || self.raw(k + i)) / self.sh,
        )
    }

    /// Derivative at knot `j` and `∂d/∂(raw d̃_{j−1})` (0 at the boundaries).
    #[inline(always)]
    fn deriv(&self, j: usize) -> (f32, f32) {
        if j == 0 || j == self.k {
            (1.0, 0.0)
        } else {
            let (r, m) = clamp_raw(self.raw_at(2 * self.k + j - 1));
            let t = r + DERIVATIVE_SHIFT;
            (MIN_DERIVATIVE + softplus(t), sigmoid(t) * m)
        }
    }

    /// The bin containing `v ∈ (−B, B)` on the x axis (`on_y = false`) or the
    /// y axis: the last bin whose left knot is ≤ `v`.
    #[inline(always)]
    fn locate(&self, v: f32, on_y: bool) -> Bin {
        let b = self.b;
        let kf = self.k as f32;
        let (aw, ah) = (1.0 - kf * MIN_BIN_WIDTH, 1.0 - kf * MIN_BIN_HEIGHT);
        let (mut cx, mut cy) = (0.0f32, 0.0f32);
        let (mut xl, mut yl) = (-b, -b);
        let mut k = 0;
        loop {
            let last = k + 1 >= self.k;
            let (xr, yr) = if last {
                (b, b)
            } else {
                let (pw, ph) = self.probs(k);
                cx += MIN_BIN_WIDTH + aw * pw;
                cy += MIN_BIN_HEIGHT + ah * ph;
                (2.0 * b * cx - b, 2.0 * b * cy - b)
            };
            let right = if on_y { yr } else { xr };
            if last || v < right {
                return Bin {
                    k,
                    xk: xl,
                    w: xr - xl,
                    yk: yl,
                    h: yr - yl,
                };
            }
            xl = xr;
            yl = yr;
            k += 1;
        }
    }

    /// `(y, log dy/dx)` inside `bin` at relative position `xi`.
    #[inline(always)]
    fn eval(&self, bin: &Bin, xi: f32) -> (f32, f32) {
        let (dk, _) = self.deriv(bin.k);
        let (dk1, _) = self.deriv(bin.k + 1);
        let s = bin.h / bin.w;
        let z = xi * (1.0 - xi);
        let den = s + (dk + dk1 - 2.0 * s) * z;
        let frac = ((s * xi * xi + dk * z) / den).clamp(0.0, 1.0);
        let m = dk1 * xi * xi + 2.0 * s * z + dk * (1.0 - xi) * (1.0 - xi);
        let r = s / den;
        (bin.yk + bin.h * frac, libm::logf(r * r * m))
    }

    /// The knots `(x_j, y_j, d_j)`, `j = 0..=K`, exactly as the evaluation
    /// uses them.
    fn knots(&self, xs: &mut [f32], ys: &mut [f32], ds: &mut [f32]) {
        let b = self.b;
        let kf = self.k as f32;
        let (aw, ah) = (1.0 - kf * MIN_BIN_WIDTH, 1.0 - kf * MIN_BIN_HEIGHT);
        let (mut cx, mut cy) = (0.0f32, 0.0f32);
        xs[0] = -b;
        ys[0] = -b;
        for j in 1..self.k {
            let (pw, ph) = self.probs(j - 1);
            cx += MIN_BIN_WIDTH + aw * pw;
            cy += MIN_BIN_HEIGHT + ah * ph;
            xs[j] = 2.0 * b * cx - b;
            ys[j] = 2.0 * b * cy - b;
        }
        xs[self.k] = b;
        ys[self.k] = b;
        for j in 0..=self.k {
            ds[j] = self.deriv(j).0;
        }
    }
}

/// Forward map of one coordinate: `(y, log dy/dx)`. Raw parameter `p`
/// (layout in the [module docs](self)) is `raw[p·stride]`; `bins ≥ 1`.
/// Identity with log-det 0 outside `(−B, B)`.
#[inline(always)]
pub fn rq_spline_forward(x: f32, raw: &[f32], stride: usize, bins: usize, tail_bound: f32) -> (f32, f32) {
    let b = effective_tail_bound(tail_bound);
    forward_in(x, b, bins, || Spline::new(raw, stride, bins, b))
}

/// [`rq_spline_forward`] with the effective tail bound `b` and the spline
/// made by `spline` (only inside the interval).
#[inline(always)]
fn forward_in<'a, E: BinExps>(x: f32, b: f32, bins: usize, spline: impl FnOnce() -> Spline<'a, E>) -> (f32, f32) {
    if !(x > -b && x < b) || bins == 0 {
        return (x, 0.0);
    }
    let sp = spline();
    let bin = sp.locate(x, false);
    let xi = ((x - bin.xk) / bin.w).clamp(0.0, 1.0);
    sp.eval(&bin, xi)
}

/// Inverse map of one coordinate: `(x, log dx/dy)`; same parameters as
/// [`rq_spline_forward`].
#[inline(always)]
pub fn rq_spline_inverse(y: f32, raw: &[f32], stride: usize, bins: usize, tail_bound: f32) -> (f32, f32) {
    let b = effective_tail_bound(tail_bound);
    if !(y > -b && y < b) || bins == 0 {
        return (y, 0.0);
    }
    let sp = Spline::new(raw, stride, bins, b);
    let bin = sp.locate(y, true);
    let (dk, _) = sp.deriv(bin.k);
    let (dk1, _) = sp.deriv(bin.k + 1);
    let s = bin.h / bin.w;
    let delta = dk + dk1 - 2.0 * s;
    // Quadratic a ξ² + b ξ + c = 0, divided by the bin height h.
    let t = ((y - bin.yk) / bin.h).clamp(0.0, 1.0);
    let qa = (s - dk) + t * delta;
    let qb = dk - t * delta;
    let qc = -s * t;
    let sq = libm::sqrtf((qb * qb - 4.0 * qa * qc).max(0.0));
    // The root in [0, 1] is (−b + √disc)/(2a) = 2c/(−b − √disc). Pick the
    // form without cancellation: for b ≥ 0 the second (its denominator is
    // ≤ −b < 0 and ≠ 0 since b = 0 ⇒ t > 0 ⇒ disc > 0); for b < 0 the first,
    // where a ≥ s > 0 (b < 0 ⇒ tδ > d_k ⇒ a = s − d_k + tδ > s).
    let xi = if qb >= 0.0 {
        2.0 * qc / (-qb - sq)
    } else {
        (-qb + sq) / (2.0 * qa)
    };
    let xi = xi.clamp(0.0, 1.0);
    let x = bin.xk + xi * bin.w;
    let (_, ld) = sp.eval(&bin, xi);
    (x, -ld)
}

/// Backward pass of [`rq_spline_forward`] at input `x`, with `g_y = ∂L/∂y`
/// and `g_ld = ∂L/∂(log dy/dx)`. Writes (not adds) `∂L/∂raw_p` to
/// `g_raw[p·stride]` for all `3·bins − 1` parameters and returns `∂L/∂x`.
pub fn rq_spline_backward(
    x: f32,
    raw: &[f32],
    stride: usize,
    bins: usize,
    tail_bound: f32,
    g_y: f32,
    g_ld: f32,
    g_raw: &mut [f32],
) -> f32 {
    let b = effective_tail_bound(tail_bound);
    backward_in(x, raw, stride, bins, b, g_y, g_ld, g_raw, || {
        Spline::new(raw, stride, bins, b)
    })
}

/// [`rq_spline_backward`] with the effective tail bound `b` and the spline
/// made by `spline` (only inside the interval).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_in<'a, E: BinExps>(
    x: f32,
    raw: &[f32],
    stride: usize,
    bins: usize,
    b: f32,
    g_y: f32,
    g_ld: f32,
    g_raw: &mut [f32],
    spline: impl FnOnce() -> Spline<'a, E>,
) -> f32 {
    let n_p = if bins == 0 { 0 } else { spline_params(bins) };
    for p in 0..n_p {
        set(g_raw, p * stride, 0.0);
    }
    if !(x > -b && x < b) || bins == 0 {
        return g_y;
    }
    let sp = spline();
    let bin = sp.locate(x, false);
    let k = bin.k;
    let (dk, ddk) = sp.deriv(k);
    let (dk1, ddk1) = sp.deriv(k + 1);
    let (w, h) = (bin.w, bin.h);
    let xi = ((x - bin.xk) / w).clamp(0.0, 1.0);
    let s = h / w;
    let z = xi * (1.0 - xi);
    let omx = 1.0 - xi;
    let delta = dk + dk1 - 2.0 * s;
    let den = s + delta * z;
    let num = s * xi * xi + dk * z;
    let m = dk1 * xi * xi + 2.0 * s * z + dk * omx * omx;
    let den2 = den * den;
    // ∂y and ∂(log-det) with respect to the local quantities.
    let y_s = h * (xi * xi * den - num * (1.0 - 2.0 * z)) / den2;
    let y_dk = h * z * (den - num) / den2;
    let y_dk1 = -h * num * z / den2;
    let n_xi = 2.0 * s * xi + dk * (1.0 - 2.0 * xi);
    let den_xi = delta * (1.0 - 2.0 * xi);
    let y_xi = h * (n_xi * den - num * den_xi) / den2;
    let l_s = 2.0 / s + 2.0 * z / m - 2.0 * (1.0 - 2.0 * z) / den;
    let l_dk = omx * omx / m - 2.0 * z / den;
    let l_dk1 = xi * xi / m - 2.0 * z / den;
    let l_xi = (2.0 * dk1 * xi + 2.0 * s * (1.0 - 2.0 * xi) - 2.0 * dk * omx) / m - 2.0 * den_xi / den;
    let g_xi = g_y * y_xi + g_ld * l_xi;
    let g_s = g_y * y_s + g_ld * l_s;
    let g_dk = g_y * y_dk + g_ld * l_dk;
    let g_dk1 = g_y * y_dk1 + g_ld * l_dk1;
    // ξ = (x − x_k)/w, s = h/w, y = y_k + h·frac.
    let g_x = g_xi / w;
    let g_xk = -g_xi / w;
    let g_w = -(g_xi * xi + g_s * s) / w;
    let g_h = g_y * (num / den) + g_s / w;
    let g_yk = g_y;
    // Knots: x_k = X_k, w = X_{k+1} − X_k (same for y); X_j = 2B·c_j − B for
    // interior j, the end knots are constants.
    let interior = |j: usize| j >= 1 && j < bins;
    let two_b = 2.0 * b;
    let gcx_k = if interior(k) { two_b * (g_xk - g_w) } else { 0.0 };
    let gcx_k1 = if interior(k + 1) { two_b * g_w } else { 0.0 };
    let gcy_k = if interior(k) { two_b * (g_yk - g_h) } else { 0.0 };
    let gcy_k1 = if interior(k + 1) { two_b * g_h } else { 0.0 };
    // c_j = Σ_{i<j} (min + a·p_i): ∂L/∂p_i = a·([i<k]·g_k + [i≤k]·g_{k+1}).
    let kf = bins as f32;
    let (aw, ah) = (1.0 - kf * MIN_BIN_WIDTH, 1.0 - kf * MIN_BIN_HEIGHT);
    let gp = |i: usize, ga: f32, gb: f32| -> f32 {
        let mut v = 0.0;
        if i < k {
            v += ga;
        }
        if i <= k {
            v += gb;
        }
        v
    };
    let (mut dot_w, mut dot_h) = (0.0f32, 0.0f32);
    for i in 0..=k.min(bins - 1) {
        let (pw, ph) = sp.probs(i);
        dot_w += pw * aw * gp(i, gcx_k, gcx_k1);
        dot_h += ph * ah * gp(i, gcy_k, gcy_k1);
    }
    let raw_at = |i: usize| raw.get(i).copied().unwrap_or(0.0);
    for i in 0..bins {
        let (pw, ph) = sp.probs(i);
        let mw = clamp_raw(raw_at(i * stride)).1;
        let mh = clamp_raw(raw_at((bins + i) * stride)).1;
        set(g_raw, i * stride, mw * pw * (aw * gp(i, gcx_k, gcx_k1) - dot_w));
        set(
            g_raw,
            (bins + i) * stride,
            mh * ph * (ah * gp(i, gcy_k, gcy_k1) - dot_h),
        );
    }
    if k >= 1 {
        set(g_raw, (2 * bins + k - 1) * stride, g_dk * ddk);
    }
    if k + 1 < bins {
        set(g_raw, (2 * bins + k) * stride, g_dk1 * ddk1);
    }
    g_x
}

/// `g[i] = v` if `i` is in bounds (the backward passes never panic).
#[inline(always)]
fn set(g: &mut [f32], i: usize, v: f32) {
    if let Some(e) = g.get_mut(i) {
        *e = v;
    }
}

/// The knots of one coordinate's spline: `xs`, `ys`, `ds` (each `bins + 1`
/// long) receive the knot positions and derivatives, bit-for-bit as the
/// evaluation uses them (for tests, plots and export checks).
pub fn rq_spline_knots(
    raw: &[f32],
    stride: usize,
    bins: usize,
    tail_bound: f32,
    xs: &mut [f32],
    ys: &mut [f32],
    ds: &mut [f32],
) {
    if bins == 0 {
        return;
    }
    Spline::new(raw, stride, bins, effective_tail_bound(tail_bound)).knots(xs, ys, ds);
}

/// The splines as the elementwise map of the row-blocked passes
/// ([`crate::block::Conditioned`]) of both spline layers: raw parameter `p`
/// of coordinate `j` is output lane `p·b + j`. The splines run row by row,
/// each coordinate as the single-row pass runs it.
#[derive(Clone, Copy)]
struct Splines {
    bins: usize,
    tail_bound: f32,
}

impl Elementwise for Splines {
    fn n_out(&self, b: usize) -> usize {
        b * spline_params(self.bins)
    }

    #[inline(always)]
    fn forward(&self, t: &mut [Lanes], out: &[Lanes], b: usize, n: usize) -> Lanes {
        let raw = out.as_flattened();
        let stride = b * BLOCK;
        let (bins, bound) = (self.bins, effective_tail_bound(self.tail_bound));
        // Coordinate by coordinate, each row's log-det summed in coordinate
        // order as the single-row pass sums it.
        let mut lds = [0.0; BLOCK];
        for (j, tj) in t.iter_mut().take(b).enumerate() {
            let ex = LaneExps::new(out, b, j, bins);
            for (r, l) in lds.iter_mut().enumerate().take(n) {
                let p = raw.get(j * BLOCK + r..).unwrap_or(&[]);
                let (y, lj) = forward_in(tj[r], bound, bins, || {
                    Spline::in_block(p, stride, bins, bound, ex.as_ref(), r)
                });
                tj[r] = y;
                *l += lj;
            }
        }
        lds
    }

    #[inline(always)]
    fn backward(
        &self,
        t: &[Lanes],
        out: &[Lanes],
        b: usize,
        n: usize,
        g: &mut [Lanes],
        g_ld: &[f32],
        g_out: &mut [Lanes],
    ) {
        // The padding lanes' parameter gradients are never added; zero
        // keeps them finite.
        g_out.fill([0.0; BLOCK]);
        let raw = out.as_flattened();
        let go = g_out.as_flattened_mut();
        let stride = b * BLOCK;
        let (bins, bound) = (self.bins, effective_tail_bound(self.tail_bound));
        for j in 0..b {
            let ex = LaneExps::new(out, b, j, bins);
            for r in 0..n {
                let p = raw.get(j * BLOCK + r..).unwrap_or(&[]);
                let gp = go.get_mut(j * BLOCK + r..).unwrap_or(&mut []);
                let (x, gy, gl) = (t[j][r], g[j][r], g_ld[r]);
                g[j][r] = backward_in(x, p, stride, bins, bound, gy, gl, gp, || {
                    Spline::in_block(p, stride, bins, bound, ex.as_ref(), r)
                });
            }
        }
    }
}

/// Borrowed spline coupling layer on run-time sizes: the one implementation.
/// The first `a` coordinates pass through and condition the splines of the
/// last `b`.
#[derive(Clone, Copy, Debug)]
pub struct SplineCouplingRef<'a, W: Weight = f32> {
    /// Number of conditioning (pass-through) coordinates, first in the vector.
    pub a: usize,
    /// Number of transformed coordinates, last in the vector.
    pub b: usize,
    /// Number of spline bins `K` (1 ..= [`MAX_BINS`]).
    pub bins: usize,
    /// Tail bound `B`: splines act on `[−B, B]`, identity outside.
    pub tail_bound: f32,
    /// Conditioner: `a` inputs → `b·(3K − 1)` outputs, head-major
    /// (raw parameter `p` of coordinate `j` is output `p·b + j`).
    pub net: MlpRef<'a, W>,
}

impl<'a, W: Weight> SplineCouplingRef<'a, W> {
    /// A checked view: fails with [`Error::ShapeMismatch`] unless
    /// `a, b ≥ 1`, `1 ≤ bins ≤ MAX_BINS` and the network has `a` inputs, no
    /// condition input and `b·(3·bins − 1)` outputs.
    pub fn new(a: usize, b: usize, bins: usize, tail_bound: f32, net: MlpRef<'a, W>) -> Result<Self, Error> {
        let s = net.shape;
        if a == 0
            || b == 0
            || bins == 0
            || bins > MAX_BINS
            || s.input != a
            || s.cond != 0
            || s.output != b * spline_params(bins)
        {
            return Err(Error::ShapeMismatch);
        }
        Ok(SplineCouplingRef {
            a,
            b,
            bins,
            tail_bound,
            net,
        })
    }

    /// Conditioner outputs (`b·(3K − 1)`): the length of `out` below.
    pub fn n_out(&self) -> usize {
        self.b * spline_params(self.bins)
    }

    /// The geometry of the row-blocked passes.
    fn block(&self) -> Conditioned<'_, 'a, W, Splines> {
        Conditioned {
            net: &self.net,
            cond: self.a,
            off: self.a,
            b: self.b,
            map: Splines {
                bins: self.bins,
                tail_bound: self.tail_bound,
            },
        }
    }

    /// Forward in place; `h0`, `h1` hold `hidden` floats, `out`
    /// [`SplineCouplingRef::n_out`]. Returns the log-det.
    #[inline(always)]
    pub fn forward(&self, x: &mut [f32], h0: &mut [f32], h1: &mut [f32], out: &mut [f32]) -> f32 {
        let (xa, xb) = x.split_at_mut(self.a);
        self.net.forward(xa, 0.0, h0, h1, out);
        let mut ld = 0.0;
        for (j, v) in xb.iter_mut().take(self.b).enumerate() {
            let (y, l) = rq_spline_forward(*v, out.get(j..).unwrap_or(&[]), self.b, self.bins, self.tail_bound);
            *v = y;
            ld += l;
        }
        ld
    }

    /// Inverse in place; same buffers as [`SplineCouplingRef::forward`].
    #[inline(always)]
    pub fn inverse(&self, y: &mut [f32], h0: &mut [f32], h1: &mut [f32], out: &mut [f32]) -> f32 {
        let (ya, yb) = y.split_at_mut(self.a);
        self.net.forward(ya, 0.0, h0, h1, out);
        let mut ld = 0.0;
        for (j, v) in yb.iter_mut().take(self.b).enumerate() {
            let (x, l) = rq_spline_inverse(*v, out.get(j..).unwrap_or(&[]), self.b, self.bins, self.tail_bound);
            *v = x;
            ld += l;
        }
        ld
    }
}

impl SplineCouplingRef<'_> {
    /// Scratch floats [`SplineCouplingRef::backward`] needs.
    pub fn train_scratch_len(&self) -> usize {
        self.net.shape.n_activations() + 2 * self.n_out() + 2 * self.net.shape.hidden
    }

    /// Backward pass of [`SplineCouplingRef::forward`] at input `x`: `g` holds
    /// `∂L/∂y` on entry and `∂L/∂x` on return, `g_ld = ∂L/∂(log-det)`; adds the
    /// conditioner's parameter gradient to `grad`. `scratch` has
    /// [`SplineCouplingRef::train_scratch_len`] floats.
    pub fn backward(&self, x: &[f32], g: &mut [f32], g_ld: f32, grad: &mut MlpGrad<'_>, scratch: &mut [f32]) {
        self.vjp(x, g, g_ld, Some(grad), scratch)
    }

    /// Never panics: short `x`, `g` or `scratch` stop it early (`g` is
    /// then unspecified).
    fn vjp(&self, x: &[f32], g: &mut [f32], g_ld: f32, grad: Option<&mut MlpGrad<'_>>, scratch: &mut [f32]) {
        let sh = self.net.shape;
        let n = self.n_out();
        let (Some((acts, out, g_out, t0, t1)), Some((xa, xb)), Some((ga, gb))) = (
            vjp_scratch(scratch, sh.n_activations(), n, sh.hidden),
            x.split_at_checked(self.a),
            g.split_at_mut_checked(self.a),
        ) else {
            return;
        };
        self.net.forward_cached(xa, 0.0, acts, out);
        for (j, (gj, &xj)) in gb.iter_mut().zip(xb).take(self.b).enumerate() {
            let (Some(o), Some(go)) = (out.get(j..), g_out.get_mut(j..)) else {
                return;
            };
            *gj = rq_spline_backward(xj, o, self.b, self.bins, self.tail_bound, *gj, g_ld, go);
        }
        self.net.vjp(xa, 0.0, acts, g_out, Some(ga), t0, t1, grad);
    }
}

/// Scratch: `h0`, `h1` (`hidden` each), `out` ([`SplineCouplingRef::n_out`]).
impl<W: Weight> SliceBijector for SplineCouplingRef<'_, W> {
    fn scratch_len(&self) -> usize {
        2 * self.net.shape.hidden + self.n_out()
    }
    fn forward_flat(&self, x: &mut [f32], s: &mut [f32]) -> f32 {
        let (h0, h1, out, _) = net_scratch(s, self.net.shape.hidden, self.n_out());
        self.forward(x, h0, h1, out)
    }
    fn inverse_flat(&self, z: &mut [f32], s: &mut [f32]) -> f32 {
        let (h0, h1, out, _) = net_scratch(s, self.net.shape.hidden, self.n_out());
        self.inverse(z, h0, h1, out)
    }
    fn block_scratch_len(&self) -> usize {
        self.block().scratch_len()
    }
    fn forward_block(&self, x: &mut [f32], ld: &mut [f32], scratch: &mut [Lanes]) {
        self.block().forward_rows(x, ld, scratch)
    }
}

mlp_backward!(SplineCouplingRef, blocked);

/// Const-generic spline coupling for `static` models: `A` conditioning and
/// `B` transformed coordinates (`A + B = D`), a conditioner with `H` hidden
/// units and `L + 1` hidden layers, `K` bins and `P = 3K − 1` raw parameters
/// per coordinate (checked at compile time); the conditioner's weights are
/// stored as `W` (`f32`, `F16` or `i8`; [`crate::weights`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SplineCoupling<
    const A: usize,
    const B: usize,
    const H: usize,
    const L: usize,
    const K: usize,
    const P: usize,
    W: Weight = f32,
> {
    /// Tail bound `B` (in `[MIN_TAIL_BOUND, MAX_TAIL_BOUND]`).
    pub tail_bound: f32,
    /// Conditioner; head `p` holds raw parameter `p` of every coordinate.
    pub net: W::Mlp<A, H, L, B, P>,
}

/// The const types' size check: `1 ≤ K ≤ MAX_BINS` and `P = 3K − 1`.
const fn check_bins(k: usize, p: usize) {
    assert!(
        k >= 1 && k <= MAX_BINS && p == 3 * k - 1,
        "spline layer needs 1 <= K <= MAX_BINS and P == 3K - 1"
    );
}

/// The const types' tail-bound check (at compile time in a `static`).
const fn check_tail_bound(tail_bound: f32) {
    assert!(
        tail_bound >= MIN_TAIL_BOUND && tail_bound <= MAX_TAIL_BOUND,
        "tail bound out of range"
    );
}

impl<const A: usize, const B: usize, const H: usize, const L: usize, const K: usize, const P: usize, W: Weight>
    SplineCoupling<A, B, H, L, K, P, W>
{
    const CHECK: () = check_bins(K, P);

    /// Construct, checking sizes and the tail bound (at compile time in a
    /// `static`).
    pub const fn new(tail_bound: f32, net: W::Mlp<A, H, L, B, P>) -> Self {
        const { Self::CHECK };
        check_tail_bound(tail_bound);
        SplineCoupling { tail_bound, net }
    }

    /// Borrow as the slice-level view.
    #[inline(always)]
    pub fn view(&self) -> SplineCouplingRef<'_, W> {
        const { Self::CHECK };
        SplineCouplingRef {
            a: A,
            b: B,
            bins: K,
            tail_bound: self.tail_bound,
            net: self.net.view(),
        }
    }
}

impl<
        const D: usize,
        const A: usize,
        const B: usize,
        const H: usize,
        const L: usize,
        const K: usize,
        const P: usize,
        W: Weight,
    > Bijector<D> for SplineCoupling<A, B, H, L, K, P, W>
{
    #[inline(always)]
    fn forward(&self, x: &mut [f32; D]) -> Result<f32, Error> {
        const { assert!(A + B == D, "coupling split A + B must equal D") };
        let (mut h0, mut h1, mut out) = ([0.0; H], [0.0; H], [[0.0; B]; P]);
        Ok(self.view().forward(x, &mut h0, &mut h1, out.as_flattened_mut()))
    }
    #[inline(always)]
    fn inverse(&self, z: &mut [f32; D]) -> Result<f32, Error> {
        const { assert!(A + B == D, "coupling split A + B must equal D") };
        let (mut h0, mut h1, mut out) = ([0.0; H], [0.0; H], [[0.0; B]; P]);
        Ok(self.view().inverse(z, &mut h0, &mut h1, out.as_flattened_mut()))
    }
}

/// Borrowed autoregressive spline layer (MADE conditioner) on run-time sizes:
/// `y_i = spline_i(x_i; θ_i(x_<i))`. Density in one network pass, inverse in
/// `d` passes. Masked weights are stored as zeros ([`made_mask_heads`]).
#[derive(Clone, Copy, Debug)]
pub struct SplineAutoregressiveRef<'a, W: Weight = f32> {
    /// Number of spline bins `K` (1 ..= [`MAX_BINS`]).
    pub bins: usize,
    /// Tail bound `B`: splines act on `[−B, B]`, identity outside.
    pub tail_bound: f32,
    /// Masked conditioner: `d` inputs → `d·(3K − 1)` outputs, head-major
    /// (raw parameter `p` of coordinate `i` is output `p·d + i`).
    pub net: MlpRef<'a, W>,
}

impl<'a, W: Weight> SplineAutoregressiveRef<'a, W> {
    /// A checked view: fails with [`Error::ShapeMismatch`] unless
    /// `1 ≤ bins ≤ MAX_BINS` and the network maps `d ≥ 1` inputs (no
    /// condition input) to `d·(3·bins − 1)` outputs.
    pub fn new(bins: usize, tail_bound: f32, net: MlpRef<'a, W>) -> Result<Self, Error> {
        let s = net.shape;
        if bins == 0 || bins > MAX_BINS || s.input == 0 || s.cond != 0 || s.output != s.input * spline_params(bins) {
            return Err(Error::ShapeMismatch);
        }
        Ok(SplineAutoregressiveRef { bins, tail_bound, net })
    }

    /// Dimension.
    #[inline(always)]
    pub fn dim(&self) -> usize {
        self.net.shape.input
    }

    /// Conditioner outputs (`d·(3K − 1)`): the length of `out` below.
    pub fn n_out(&self) -> usize {
        self.dim() * spline_params(self.bins)
    }

    /// The geometry of the row-blocked passes.
    fn block(&self) -> Conditioned<'_, 'a, W, Splines> {
        Conditioned {
            net: &self.net,
            cond: self.dim(),
            off: 0,
            b: self.dim(),
            map: Splines {
                bins: self.bins,
                tail_bound: self.tail_bound,
            },
        }
    }

    /// Density direction in place, one network pass; `out` holds
    /// [`SplineAutoregressiveRef::n_out`] floats.
    #[inline(always)]
    pub fn forward(&self, x: &mut [f32], h0: &mut [f32], h1: &mut [f32], out: &mut [f32]) -> f32 {
        let d = self.dim();
        self.net.forward(x, 0.0, h0, h1, out);
        let mut ld = 0.0;
        for (i, v) in x.iter_mut().take(d).enumerate() {
            let (y, l) = rq_spline_forward(*v, &out[i..], d, self.bins, self.tail_bound);
            *v = y;
            ld += l;
        }
        ld
    }

    /// Sampling direction in place, `d` network passes; `xbuf` holds `d` floats.
    #[inline(always)]
    pub fn inverse(&self, z: &mut [f32], xbuf: &mut [f32], h0: &mut [f32], h1: &mut [f32], out: &mut [f32]) -> f32 {
        let d = self.dim();
        xbuf[..d].fill(0.0);
        let mut ld = 0.0;
        for i in 0..d {
            self.net.forward(&xbuf[..d], 0.0, h0, h1, out);
            let (xi, l) = rq_spline_inverse(z[i], &out[i..], d, self.bins, self.tail_bound);
            xbuf[i] = xi;
            ld += l;
        }
        z[..d].copy_from_slice(&xbuf[..d]);
        ld
    }
}

impl SplineAutoregressiveRef<'_> {
    /// Scratch floats [`SplineAutoregressiveRef::backward`] needs.
    pub fn train_scratch_len(&self) -> usize {
        self.net.shape.n_activations() + 2 * self.n_out() + 2 * self.net.shape.hidden
    }

    /// Backward pass of [`SplineAutoregressiveRef::forward`] at input `x`;
    /// conventions as in [`SplineCouplingRef::backward`].
    pub fn backward(&self, x: &[f32], g: &mut [f32], g_ld: f32, grad: &mut MlpGrad<'_>, scratch: &mut [f32]) {
        self.vjp(x, g, g_ld, Some(grad), scratch)
    }

    /// The backward pass with an optional parameter gradient (`None`: only
    /// `∂L/∂x`, what `SliceBackward::backward_input` runs).
    fn vjp(&self, x: &[f32], g: &mut [f32], g_ld: f32, grad: Option<&mut MlpGrad<'_>>, scratch: &mut [f32]) {
        let d = self.dim();
        let sh = self.net.shape;
        let Some((acts, out, g_out, t0, t1)) = vjp_scratch(scratch, sh.n_activations(), self.n_out(), sh.hidden) else {
            return;
        };
        self.net.forward_cached(x, 0.0, acts, out);
        for (i, (gi, &xi)) in g.iter_mut().zip(x).take(d).enumerate() {
            let (Some(o), Some(go)) = (out.get(i..), g_out.get_mut(i..)) else {
                return;
            };
            *gi = rq_spline_backward(xi, o, d, self.bins, self.tail_bound, *gi, g_ld, go);
        }
        self.net.vjp(x, 0.0, acts, g_out, Some(g), t0, t1, grad);
    }
}

/// Scratch: `h0`, `h1` (`hidden` each), `out`
/// ([`SplineAutoregressiveRef::n_out`]), then `xbuf` (`d`, for the inverse).
impl<W: Weight> SliceBijector for SplineAutoregressiveRef<'_, W> {
    fn scratch_len(&self) -> usize {
        2 * self.net.shape.hidden + self.n_out() + self.dim()
    }
    fn forward_flat(&self, x: &mut [f32], s: &mut [f32]) -> f32 {
        let (h0, h1, out, _) = net_scratch(s, self.net.shape.hidden, self.n_out());
        self.forward(x, h0, h1, out)
    }
    fn inverse_flat(&self, z: &mut [f32], s: &mut [f32]) -> f32 {
        let (h0, h1, out, xbuf) = net_scratch(s, self.net.shape.hidden, self.n_out());
        self.inverse(z, xbuf, h0, h1, out)
    }
    fn block_scratch_len(&self) -> usize {
        self.block().scratch_len()
    }
    fn forward_block(&self, x: &mut [f32], ld: &mut [f32], scratch: &mut [Lanes]) {
        self.block().forward_rows(x, ld, scratch)
    }
}

mlp_backward!(SplineAutoregressiveRef, blocked);

/// Const-generic autoregressive spline layer for `static` models: dimension
/// `D`, `H` hidden units, `L + 1` hidden layers, `K` bins, `P = 3K − 1`
/// (checked at compile time). Masked weights must be zero;
/// [`SplineAutoregressive::is_masked`] checks it. The conditioner's weights
/// are stored as `W` (`f32`, `F16` or `i8`; [`crate::weights`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SplineAutoregressive<
    const D: usize,
    const H: usize,
    const L: usize,
    const K: usize,
    const P: usize,
    W: Weight = f32,
> {
    /// Tail bound `B` (in `[MIN_TAIL_BOUND, MAX_TAIL_BOUND]`).
    pub tail_bound: f32,
    /// Masked conditioner; head `p` holds raw parameter `p` of every coordinate.
    pub net: W::Mlp<D, H, L, D, P>,
}

impl<const D: usize, const H: usize, const L: usize, const K: usize, const P: usize, W: Weight>
    SplineAutoregressive<D, H, L, K, P, W>
{
    const CHECK: () = check_bins(K, P);

    /// Construct, checking sizes and the tail bound (at compile time in a
    /// `static`). Does not check the masks (see [`Self::is_masked`]).
    pub const fn new(tail_bound: f32, net: W::Mlp<D, H, L, D, P>) -> Self {
        const { Self::CHECK };
        check_tail_bound(tail_bound);
        SplineAutoregressive { tail_bound, net }
    }

    /// Borrow as the slice-level view.
    #[inline(always)]
    pub fn view(&self) -> SplineAutoregressiveRef<'_, W> {
        const { Self::CHECK };
        SplineAutoregressiveRef {
            bins: K,
            tail_bound: self.tail_bound,
            net: self.net.view(),
        }
    }

    /// `true` if every weight the MADE masks forbid is zero (the layer is
    /// really autoregressive, so its log-det is exact).
    pub fn is_masked(&self) -> bool {
        is_made_masked(&self.net.view(), P)
    }
}

impl<const D: usize, const H: usize, const L: usize, const K: usize, const P: usize, W: Weight> Bijector<D>
    for SplineAutoregressive<D, H, L, K, P, W>
{
    #[inline(always)]
    fn forward(&self, x: &mut [f32; D]) -> Result<f32, Error> {
        let (mut h0, mut h1, mut out) = ([0.0; H], [0.0; H], [[0.0; D]; P]);
        Ok(self.view().forward(x, &mut h0, &mut h1, out.as_flattened_mut()))
    }
    #[inline(always)]
    fn inverse(&self, z: &mut [f32; D]) -> Result<f32, Error> {
        let (mut xb, mut h0, mut h1, mut out) = ([0.0; D], [0.0; H], [0.0; H], [[0.0; D]; P]);
        Ok(self
            .view()
            .inverse(z, &mut xb, &mut h0, &mut h1, out.as_flattened_mut()))
    }
}
