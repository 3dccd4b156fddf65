//! Glow-style invertible linear layer in LU form (Kingma & Dhariwal 2018):
//! `y = P·L·U·x + bias`.
//!
//! * `P` is a fixed permutation, `(P·v)[i] = v[perm[i]]` (as
//!   [`crate::Permutation`]);
//! * `L` is unit lower-triangular;
//! * `U` is upper-triangular with diagonal `sign_i·exp(log_s_i)`, `sign_i = ±1`
//!   fixed (any value `< 0` means −1, anything else +1).
//!
//! Log-det `Σ log_s`, independent of `x`. The inverse is two triangular
//! solves, no matrix inverse is ever formed.
//!
//! ## The cached diagonal
//! `U`'s diagonal `sign_i·exp(log_s_i)` and the log-det do not depend on the
//! input. The const-generic [`LuLinear`] computes them once, when it is
//! constructed (in const context for a `static`: the body of
//! [`crate::activation::exp`] is a `const fn`, and const evaluation rounds
//! every f32 operation as the device does, so the cached values are the bits
//! the device would compute),
//! and keeps them next to the weights; its setters recompute them, so they
//! cannot go stale. A view built from flat parameters
//! ([`LuLinearRef::from_flat`], the host's trainer, whose parameters change
//! every step) has no cache and computes them on each call with the same
//! function: both give the same bits.
//!
//! ## Storage and flat parameter layout
//! The trainable entries are packed in one `D × D` row-major matrix `lu`, as
//! LAPACK does: strictly below the diagonal the entries of `L`, on the
//! diagonal `log_s`, strictly above the diagonal the entries of `U`. The flat
//! parameter vector is `[lu (D·D, row-major), bias (D)]`; `perm` and `sign`
//! are fixed and kept apart. A zero `lu` and bias with identity `perm` and
//! `sign = +1` is the identity map; [`lu_decompose`] turns any invertible
//! matrix (e.g. a random rotation, Glow's initialisation) into this form.
//!
//! ## Robustness
//! * `log_s` is clamped to `[−LOG_SCALE_LIMIT, LOG_SCALE_LIMIT]` (gradient 0
//!   beyond), so the log-det is always finite and the diagonal of `U` is
//!   never 0 or ∞: the triangular solves never divide by zero.
//! * A linear map can still exceed the f32 range for finite inputs when the
//!   true result does (e.g. `x ≈ 3e38` and a scale `> 1`). The [`Bijector`]
//!   implementation checks the result and returns [`Error::Overflow`] instead
//!   of a non-finite vector. Overflow is impossible while
//!   `‖L‖∞·‖U‖∞·|x|∞ + |bias|∞ < 3.4e38` (forward), e.g. for `|x|∞ ≤ 1e30`
//!   whenever the row sums of `|L|` and `|U|` stay below `1.8e4`; NaN never
//!   arises from finite inputs except through such an overflow.

use crate::block::{from_lanes, to_lanes, Lanes, BLOCK};
use crate::layer::{SliceBackward, SliceBijector};
use crate::permutation::is_permutation;
use crate::{Bijector, Error};

/// A view's cached diagonal and log-det, if the diagonal has the view's
/// dimension `d` (only the const-generic layers set one, always of it).
#[inline(always)]
pub(crate) fn valid_cache(cache: Option<(&[f32], f32)>, d: usize) -> Option<(&[f32], f32)> {
    match cache {
        Some((diag, ld)) if diag.len() == d => Some((diag, ld)),
        _ => None,
    }
}

/// `log_s` is clamped to `[−LOG_SCALE_LIMIT, LOG_SCALE_LIMIT]`.
pub const LOG_SCALE_LIMIT: f32 = 20.0;

/// `(clamped log_s, ∂clamped/∂log_s)`; NaN → 0 with gradient 0.
#[inline(always)]
pub(crate) const fn clamp_log_scale(v: f32) -> (f32, f32) {
    if v >= LOG_SCALE_LIMIT {
        (LOG_SCALE_LIMIT, 0.0)
    } else if v <= -LOG_SCALE_LIMIT {
        (-LOG_SCALE_LIMIT, 0.0)
    } else if !v.is_nan() {
        (v, 1.0)
    } else {
        (0.0, 0.0)
    }
}

#[inline(always)]
const fn sign_of(s: f32) -> f32 {
    if s < 0.0 {
        -1.0
    } else {
        1.0
    }
}

/// Borrowed LU-parametrised linear layer on run-time sizes: the one
/// implementation of its maths.
#[derive(Clone, Copy, Debug)]
pub struct LuLinearRef<'a> {
    /// The permutation `P`: `(P·v)[i] = v[perm[i]]`. Must be a permutation of
    /// `0..d` ([`LuLinearRef::from_flat`] checks it).
    pub perm: &'a [usize],
    /// Signs of `U`'s diagonal (`< 0` → −1, else +1).
    pub sign: &'a [f32],
    /// Packed `d × d` row-major: `L` strictly below, `log_s` on, `U` strictly
    /// above the diagonal.
    pub lu: &'a [f32],
    /// Bias (`d`).
    pub bias: &'a [f32],
    /// `U`'s diagonal `sign_i·exp(clamped log_s_i)` (`d`) and the log-det
    /// `Σ clamped log_s_i`, as [`lu_cache`] computes them; `None`: computed
    /// on each call. Private, so that only [`LuLinear`], which keeps them in
    /// step with `lu` and `sign`, can provide them.
    cache: Option<(&'a [f32], f32)>,
}

impl<'a> LuLinearRef<'a> {
    /// View the flat trainable parameters `p = [lu (d·d), bias (d)]` with the
    /// fixed `perm` and `sign` (`d = perm.len()`). Fails with
    /// [`Error::ShapeMismatch`] on wrong lengths or if `perm` is not a
    /// permutation.
    pub fn from_flat(perm: &'a [usize], sign: &'a [f32], p: &'a [f32]) -> Result<Self, Error> {
        let d = perm.len();
        if sign.len() != d || p.len() != d * d + d || !is_permutation(perm) {
            return Err(Error::ShapeMismatch);
        }
        let (lu, bias) = p.split_at(d * d);
        Ok(LuLinearRef {
            perm,
            sign,
            lu,
            bias,
            cache: None,
        })
    }

    /// `true` if the view carries a cached diagonal and log-det (views of
    /// [`LuLinear`]); views from [`LuLinearRef::from_flat`] compute them on
    /// each call.
    pub fn is_cached(&self) -> bool {
        self.cache.is_some()
    }

    /// The cached diagonal, if it has the view's length (it always has: only
    /// [`LuLinear::view`] sets it).
    #[inline(always)]
    fn cached_diag(&self) -> Option<(&'a [f32], f32)> {
        valid_cache(self.cache, self.dim())
    }

    /// Number of trainable parameters for dimension `d`: `d² + d`.
    pub const fn n_params(d: usize) -> usize {
        d * d + d
    }

    /// Dimension.
    #[inline(always)]
    pub fn dim(&self) -> usize {
        self.perm.len()
    }

    /// Scratch floats [`LuLinearRef::backward`] needs (`2d`).
    pub fn train_scratch_len(&self) -> usize {
        2 * self.dim()
    }

    /// `(U_ii, ∂U_ii/∂(stored log_s_i))` and the clamped `log_s_i`.
    #[inline(always)]
    fn diag(&self, i: usize) -> (f32, f32, f32) {
        let d = self.dim();
        let (ls, m) = clamp_log_scale(self.lu.get(i * d + i).copied().unwrap_or(0.0));
        let u = self.sign_at(i) * crate::activation::exp(ls);
        (u, u * m, ls)
    }

    /// `sign_i` as ±1. The views check every length, so the `get`s below
    /// always succeed; they keep the device's scoring path free of panic
    /// branches whatever the compiler manages to inline (the no-panic link
    /// proof, `firmware/nopanic/src/lib.rs`).
    #[inline(always)]
    fn sign_at(&self, i: usize) -> f32 {
        sign_of(self.sign.get(i).copied().unwrap_or(1.0))
    }

    /// The log-det `Σ log_s` (clamped), the same for every input (the cached
    /// value when the view has one).
    #[inline(always)]
    pub fn log_det(&self) -> f32 {
        if let Some((_, ld)) = self.cached_diag() {
            return ld;
        }
        let d = self.dim();
        (0..d).fold(0.0, |ld, i| {
            ld + clamp_log_scale(self.lu.get(i * d + i).copied().unwrap_or(0.0)).0
        })
    }

    /// `x ← P·L·U·x + bias` in place; `tmp` holds `d` floats. Returns the
    /// log-det `Σ log_s`.
    ///
    /// Each row's sum runs in column order from the diagonal term (`U`) or
    /// from `u_i` (`L`), as [`LuLinearRef::backward`] recomputes it; the
    /// loops walk the rows with iterators (no indexing, nothing can panic).
    /// With a cached diagonal (views of [`LuLinear`]) no `exp` is evaluated;
    /// without, each row's diagonal and the log-det are computed here, the
    /// same bits.
    #[inline(always)]
    pub fn forward(&self, x: &mut [f32], tmp: &mut [f32]) -> f32 {
        let d = self.dim();
        if x.len() < d || tmp.len() < d || self.lu.len() < d * d {
            return f32::NAN;
        }
        if d == 0 {
            // Nothing to transform; also tells the compiler that
            // `chunks_exact(d)` below cannot panic when `d` is only known at
            // run time.
            return 0.0;
        }
        if let Some((diag, ld)) = self.cached_diag() {
            self.forward_with(x, tmp, |i| diag.get(i).copied().unwrap_or(0.0));
            return ld;
        }
        // The log-det summed on the way, in the order of `log_det`.
        let mut ld = 0.0;
        self.forward_with(x, tmp, |i| {
            let (ls, _) = clamp_log_scale(self.lu.get(i * d + i).copied().unwrap_or(0.0));
            ld += ls;
            self.sign_at(i) * crate::activation::exp(ls)
        });
        ld
    }

    /// The body of [`LuLinearRef::forward`]: `diag(i)` gives `U_ii`, called
    /// once per row in row order. Small layers sum with plain loops, which
    /// the compiler unrolls completely once `d` is a constant (the
    /// const-generic layer); larger ones four terms per step. The same sums
    /// in the same order either way.
    #[inline(always)]
    fn forward_with(&self, x: &mut [f32], tmp: &mut [f32], diag: impl FnMut(usize) -> f32) {
        if self.dim() <= SMALL_DIM {
            self.forward_rows(x, tmp, diag, dot_plain, true)
        } else {
            self.forward_rows(x, tmp, diag, dot_from, false)
        }
    }

    /// [`LuLinearRef::forward_with`] with the row sums taken by `dot`.
    #[inline(always)]
    fn forward_rows(
        &self,
        x: &mut [f32],
        tmp: &mut [f32],
        mut diag: impl FnMut(usize) -> f32,
        dot: impl Fn(f32, &[f32], &[f32]) -> f32,
        in_place: bool,
    ) {
        let d = self.dim();
        let (Some(x), Some(v), Some(lu)) = (x.get_mut(..d), tmp.get_mut(..d), self.lu.get(..d * d)) else {
            return;
        };
        if d == 0 {
            return; // (`forward` returned before; `chunks_exact(0)` would panic)
        }
        // u = U·x in place (row i uses x_j, j ≥ i, not yet overwritten).
        for (i, row) in lu.chunks_exact(d).enumerate() {
            let Some((xi, rest)) = x.get_mut(i..).and_then(|v| v.split_first_mut()) else {
                break;
            };
            *xi = dot(diag(i) * *xi, row.get(i + 1..).unwrap_or_default(), rest);
        }
        if in_place {
            // v = L·u in place (row i uses u_j, j < i, not yet overwritten),
            // then copied to `tmp` for the permutation: for small layers,
            // whose loops the compiler unrolls, the copy is a few moves and
            // the zeroing of the caller's `tmp` is seen to be dead.
            for (i, row) in lu.chunks_exact(d).enumerate().rev() {
                let Some((xi, head)) = x.get_mut(..=i).and_then(|v| v.split_last_mut()) else {
                    continue;
                };
                *xi = dot(*xi, row, head);
            }
            v.copy_from_slice(x);
        } else {
            // v = L·u straight into `tmp` (no copy: a `memcpy` call).
            for (i, (row, vi)) in lu.chunks_exact(d).zip(v.iter_mut()).enumerate() {
                let (Some(&ui), Some(head)) = (x.get(i), x.get(..i)) else {
                    break;
                };
                *vi = dot(ui, row, head);
            }
        }
        // y = P·v + bias, `(P·v)[k] = v[perm[k]]` (`get`: no panic branch;
        // `perm` is a permutation, [`LuLinearRef::from_flat`] checks it).
        for ((y, &p), b) in x.iter_mut().zip(self.perm).zip(self.bias) {
            *y = v.get(p).copied().unwrap_or(0.0) + b;
        }
    }

    /// `y ← U⁻¹·L⁻¹·P⁻¹·(y − bias)` in place by triangular solves; `tmp` holds
    /// `d` floats. Returns `−Σ log_s`.
    #[inline(always)]
    pub fn inverse(&self, y: &mut [f32], tmp: &mut [f32]) -> f32 {
        let d = self.dim();
        let (Some(y), Some(tmp), Some(lu)) = (y.get_mut(..d), tmp.get_mut(..d), self.lu.get(..d * d)) else {
            return f32::NAN;
        };
        for ((&p, &yi), &b) in self.perm.iter().zip(y.iter()).zip(self.bias) {
            if let Some(t) = tmp.get_mut(p) {
                *t = yi - b;
            }
        }
        // L·u = w, forward substitution.
        for (i, row) in lu.chunks_exact(d).enumerate() {
            let mut u = tmp[i];
            for j in 0..i {
                u -= row[j] * y[j];
            }
            y[i] = u;
        }
        // U·x = u, back substitution.
        for (i, row) in lu.chunks_exact(d).enumerate().rev() {
            let mut v = y[i];
            for j in i + 1..d {
                v -= row[j] * y[j];
            }
            let (_, _, ls) = self.diag(i);
            y[i] = v * self.sign_at(i) * crate::activation::exp(-ls);
        }
        -self.log_det()
    }

    /// Backward pass of [`LuLinearRef::forward`] at input `x`: `g` holds
    /// `∂L/∂y` on entry and `∂L/∂x` on return, `g_ld = ∂L/∂(log-det)`. Adds
    /// the parameter gradient to `grad` (flat order `[lu (d·d), bias (d)]`; the
    /// diagonal of the `lu` block receives `∂L/∂log_s`). `scratch` has
    /// [`LuLinearRef::train_scratch_len`] floats.
    pub fn backward(&self, x: &[f32], g: &mut [f32], g_ld: f32, grad: &mut [f32], scratch: &mut [f32]) {
        self.vjp(x, g, g_ld, Some(grad), scratch)
    }

    /// [`LuLinearRef::backward`] without the parameter gradient: `g`
    /// becomes `∂L/∂x`, bit for bit as there (on-device adaptation).
    pub fn backward_input(&self, x: &[f32], g: &mut [f32], scratch: &mut [f32]) {
        self.vjp(x, g, 0.0, None, scratch)
    }

    /// Every access is checked (`get`): never panics; wrong lengths give
    /// an unspecified `g`.
    fn vjp(&self, x: &[f32], g: &mut [f32], g_ld: f32, mut grad: Option<&mut [f32]>, scratch: &mut [f32]) {
        let d = self.dim();
        let lu = self.lu;
        let at = |v: &[f32], i: usize| v.get(i).copied().unwrap_or(0.0);
        let add = |v: &mut [f32], i: usize, a: f32| {
            if let Some(e) = v.get_mut(i) {
                *e += a;
            }
        };
        let Some((u, gv)) = scratch.get_mut(..2 * d).and_then(|s| s.split_at_mut_checked(d)) else {
            return;
        };
        for (i, ui) in u.iter_mut().enumerate() {
            let mut s = self.diag(i).0 * at(x, i);
            for j in i + 1..d {
                s += at(lu, i * d + j) * at(x, j);
            }
            *ui = s;
        }
        // y = P·v + b.
        for (i, &p) in self.perm.iter().enumerate() {
            if let Some(grad) = grad.as_deref_mut() {
                add(grad, d * d + i, at(g, i));
            }
            if let Some(e) = gv.get_mut(p) {
                *e = at(g, i);
            }
        }
        // v = L·u: ∂u = Lᵀ·∂v, ∂L_ij = ∂v_i·u_j (i > j).
        for j in 0..d {
            let mut s = at(gv, j);
            for i in j + 1..d {
                s += at(lu, i * d + j) * at(gv, i);
                if let Some(grad) = grad.as_deref_mut() {
                    add(grad, i * d + j, at(gv, i) * at(u, j));
                }
            }
            if let Some(e) = g.get_mut(j) {
                *e = s;
            }
        }
        let gu = gv;
        for (k, e) in gu.iter_mut().enumerate() {
            *e = at(g, k);
        }
        // u = U·x: ∂x = Uᵀ·∂u, ∂U_ij = ∂u_i·x_j (i < j), ∂log_s_i via U_ii.
        for j in 0..d {
            let (ujj, dujj, _) = self.diag(j);
            let mut s = ujj * at(gu, j);
            for i in 0..j {
                s += at(lu, i * d + j) * at(gu, i);
                if let Some(grad) = grad.as_deref_mut() {
                    add(grad, i * d + j, at(gu, i) * at(x, j));
                }
            }
            if let Some(e) = g.get_mut(j) {
                *e = s;
            }
            if let Some(grad) = grad.as_deref_mut() {
                let m = if dujj == 0.0 { 0.0 } else { 1.0 };
                add(grad, j * d + j, at(gu, j) * at(x, j) * dujj + g_ld * m);
            }
        }
    }
}

/// Up to this dimension [`LuLinearRef::forward`] sums with [`dot_plain`],
/// beyond with [`dot_from`] (measured on the emulated Cortex-M4F,
/// `benches/firmware-bench.sh`: the compiler unrolls the plain loops of a
/// `D = 9` layer completely, 410 instructions against 774, while at
/// `D = 30` the four-per-step walk takes 6 522 against 8 858).
pub(crate) const SMALL_DIM: usize = 9;

/// `acc + Σ w_j·x_j` over the common length, added in index order.
#[inline(always)]
pub(crate) fn dot_plain(mut acc: f32, w: &[f32], x: &[f32]) -> f32 {
    for (a, b) in w.iter().zip(x) {
        acc += a * b;
    }
    acc
}

/// [`dot_plain`], the same sum in the same order, four terms per step: slice patterns, so that the
/// compiler sees post-incremented pointers (no index arithmetic per load on
/// a Cortex-M4F) and no bounds checks.
#[inline(always)]
pub(crate) fn dot_from(mut acc: f32, w: &[f32], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    let (Some(w), Some(x)) = (w.get(..n), x.get(..n)) else {
        return acc;
    };
    let (mut w4, mut x4) = (w.chunks_exact(4), x.chunks_exact(4));
    for (a, b) in (&mut w4).zip(&mut x4) {
        if let ([a0, a1, a2, a3], [b0, b1, b2, b3]) = (a, b) {
            acc += a0 * b0;
            acc += a1 * b1;
            acc += a2 * b2;
            acc += a3 * b3;
        }
    }
    for (a, b) in w4.remainder().iter().zip(x4.remainder()) {
        acc += a * b;
    }
    acc
}

/// LU decomposition with partial pivoting of a row-major `d × d` matrix `w`
/// (`d = perm.len()`), in place, into this layer's packed form: afterwards
/// `w` holds `L` below, `log|U_ii|` on and `U` above the diagonal, `sign`
/// the signs of `U_ii` and `perm` the permutation, so that with a zero bias
/// the layer computes `y = W·x` (Glow initialises `W` as a random rotation).
/// Fails with [`Error::ShapeMismatch`] on wrong lengths and
/// [`Error::OutOfDomain`] if `w` is singular or not finite.
pub fn lu_decompose(w: &mut [f32], perm: &mut [usize], sign: &mut [f32]) -> Result<(), Error> {
    let d = perm.len();
    if w.len() != d * d || sign.len() != d {
        return Err(Error::ShapeMismatch);
    }
    if !w.iter().all(|v| v.is_finite()) {
        return Err(Error::OutOfDomain);
    }
    // piv[i] = original row now at row i, so (Pm·W)[i] = W[piv[i]] = (L·U)[i].
    // Use `perm` to hold piv, then invert it at the end.
    for (i, p) in perm.iter_mut().enumerate() {
        *p = i;
    }
    for c in 0..d {
        let mut p = c;
        for r in c + 1..d {
            if libm::fabsf(w[r * d + c]) > libm::fabsf(w[p * d + c]) {
                p = r;
            }
        }
        if p != c {
            for k in 0..d {
                w.swap(c * d + k, p * d + k);
            }
            perm.swap(c, p);
        }
        let piv = w[c * d + c];
        if piv == 0.0 || !piv.is_finite() {
            return Err(Error::OutOfDomain);
        }
        for r in c + 1..d {
            let f = w[r * d + c] / piv;
            w[r * d + c] = f;
            for k in c + 1..d {
                w[r * d + k] -= f * w[c * d + k];
            }
        }
    }
    for i in 0..d {
        let u = w[i * d + i];
        sign[i] = sign_of(u);
        w[i * d + i] = libm::logf(libm::fabsf(u));
    }
    // W = Pm⁻¹·L·U and (Pm⁻¹·v)[i] = v[perm[i]] with perm = piv⁻¹: invert
    // the permutation in place by following cycles (entries marked by
    // adding d while placed).
    for start in 0..d {
        if perm[start] >= d {
            continue;
        }
        // piv maps position → row; we need row → position.
        let mut pos = start;
        let mut row = perm[start];
        while row != start {
            let next = perm[row];
            perm[row] = pos + d;
            pos = row;
            row = next;
        }
        perm[start] = pos + d;
    }
    for p in perm.iter_mut() {
        *p -= d;
    }
    if !w.iter().all(|v| v.is_finite()) {
        return Err(Error::OutOfDomain);
    }
    Ok(())
}

/// `U`'s diagonal `sign_i·exp(clamped log_s_i)` and the log-det
/// `Σ clamped log_s_i` (summed from `0.0` in row order) of a packed `lu`
/// with signs `sign`: what [`LuLinearRef::forward`] computes on each call
/// without a cache, bit for bit, evaluable in const context.
pub const fn lu_cache<const D: usize>(sign: &[f32; D], lu: &[[f32; D]; D]) -> ([f32; D], f32) {
    let mut diag = [0.0; D];
    let mut ld = 0.0;
    let mut i = 0;
    while i < D {
        let (ls, _) = clamp_log_scale(lu[i][i]);
        ld += ls;
        diag[i] = sign_of(sign[i]) * crate::activation::exp_inline(ls);
        i += 1;
    }
    (diag, ld)
}

/// Const-generic LU linear layer for `static` models. `lu` stores the packed
/// full square matrix (see the [module docs](self)); the permutation is
/// private so that it is always valid, `lu` and `sign` so that the cached
/// diagonal and log-det ([`lu_cache`]) always match them (read them with
/// [`LuLinear::lu`] and [`LuLinear::sign`], change them with
/// [`LuLinear::set_lu`] and [`LuLinear::set_sign`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LuLinear<const D: usize> {
    perm: [usize; D],
    sign: [f32; D],
    lu: [[f32; D]; D],
    /// Bias.
    pub bias: [f32; D],
    /// `U`'s diagonal, from `sign` and `lu` ([`lu_cache`]).
    diag: [f32; D],
    /// `Σ clamped log_s`, from `lu` ([`lu_cache`]).
    log_det: f32,
}

impl<const D: usize> LuLinear<D> {
    /// Construct; panics (a compile error in a `static`) if `perm` is not a
    /// permutation of `0..D`. Computes the cached diagonal and log-det
    /// ([`lu_cache`]; in a `static`, at compile time).
    pub const fn new(perm: [usize; D], sign: [f32; D], lu: [[f32; D]; D], bias: [f32; D]) -> Self {
        assert!(is_permutation(&perm), "perm is not a permutation");
        let (diag, log_det) = lu_cache(&sign, &lu);
        LuLinear {
            perm,
            sign,
            lu,
            bias,
            diag,
            log_det,
        }
    }

    /// The identity map.
    pub const fn identity() -> Self {
        let mut perm = [0; D];
        let mut i = 0;
        while i < D {
            perm[i] = i;
            i += 1;
        }
        Self::new(perm, [1.0; D], [[0.0; D]; D], [0.0; D])
    }

    /// The permutation `P`.
    pub const fn perm(&self) -> &[usize; D] {
        &self.perm
    }

    /// Signs of `U`'s diagonal (`< 0` → −1, else +1).
    pub const fn sign(&self) -> &[f32; D] {
        &self.sign
    }

    /// Packed `[row][col]`: `L` strictly below, `log_s` on, `U` strictly above
    /// the diagonal.
    pub const fn lu(&self) -> &[[f32; D]; D] {
        &self.lu
    }

    /// The cached diagonal of `U`, `sign_i·exp(clamped log_s_i)`
    /// ([`lu_cache`]).
    pub const fn diagonal(&self) -> &[f32; D] {
        &self.diag
    }

    /// The cached log-det `Σ clamped log_s_i` ([`lu_cache`]), the same for
    /// every input.
    pub const fn log_det(&self) -> f32 {
        self.log_det
    }

    /// Replace the packed `L`/`log_s`/`U` matrix and recompute the cached
    /// diagonal and log-det.
    pub fn set_lu(&mut self, lu: [[f32; D]; D]) {
        self.lu = lu;
        (self.diag, self.log_det) = lu_cache(&self.sign, &self.lu);
    }

    /// Replace the signs of `U`'s diagonal and recompute the cached diagonal.
    pub fn set_sign(&mut self, sign: [f32; D]) {
        self.sign = sign;
        (self.diag, self.log_det) = lu_cache(&self.sign, &self.lu);
    }

    /// Borrow as the slice-level view, with the cached diagonal and log-det.
    #[inline(always)]
    pub fn view(&self) -> LuLinearRef<'_> {
        LuLinearRef {
            perm: &self.perm,
            sign: &self.sign,
            lu: self.lu.as_flattened(),
            bias: &self.bias,
            cache: Some((&self.diag, self.log_det)),
        }
    }
}

impl<const D: usize> Bijector<D> for LuLinear<D> {
    /// Errors: [`Error::Overflow`] if the result exceeds the f32 range.
    #[inline(always)]
    fn forward(&self, x: &mut [f32; D]) -> Result<f32, Error> {
        let mut tmp = [0.0; D];
        let ld = self.view().forward(x, &mut tmp);
        crate::error::finite_or_overflow(x, ld)
    }
    /// Errors: [`Error::Overflow`] if the result exceeds the f32 range.
    #[inline(always)]
    fn inverse(&self, z: &mut [f32; D]) -> Result<f32, Error> {
        let mut tmp = [0.0; D];
        let ld = self.view().inverse(z, &mut tmp);
        crate::error::finite_or_overflow(z, ld)
    }
}

/// The row-blocked passes (hosts): [`BLOCK`] rows at a time, one lane per
/// row, each row's sums over the same terms in the same order as
/// [`LuLinearRef::forward`] and [`LuLinearRef::backward`] take them, so the
/// same bits; the multiply-adds vectorise across the rows.
impl LuLinearRef<'_> {
    /// `U`'s diagonal as [`LuLinearRef::forward`] uses it, and the log-det.
    fn diagonal(&self, diag: &mut [f32]) -> f32 {
        if let Some((c, ld)) = self.cached_diag() {
            diag.copy_from_slice(c);
            return ld;
        }
        let mut ld = 0.0;
        for (i, v) in diag.iter_mut().enumerate() {
            let (u, _, ls) = self.diag(i);
            ld += ls;
            *v = u;
        }
        ld
    }

    /// `ut = U·xt` in lanes (`d` each), every row's sum from the diagonal
    /// term in column order, as [`LuLinearRef::forward`] and `vjp` take it.
    fn upper_lanes(&self, diag: &[f32], xt: &[Lanes], ut: &mut [Lanes]) {
        let d = self.dim();
        for (i, ui) in ut.iter_mut().enumerate().take(d) {
            let mut acc = [0.0; BLOCK];
            for (a, x) in acc.iter_mut().zip(&xt[i]) {
                *a = diag[i] * x;
            }
            for j in i + 1..d {
                let w = self.lu[i * d + j];
                for (a, x) in acc.iter_mut().zip(&xt[j]) {
                    *a += w * x;
                }
            }
            *ui = acc;
        }
    }

    /// Forward of `n ≤ BLOCK` rows in lanes: `xt` (`d` lanes) becomes the
    /// output; `ut`, `vt` are `d` lanes of scratch each.
    fn forward_lanes(&self, diag: &[f32], xt: &mut [Lanes], ut: &mut [Lanes], vt: &mut [Lanes]) {
        let d = self.dim();
        self.upper_lanes(diag, xt, ut);
        for i in 0..d {
            let mut acc = ut[i];
            for j in 0..i {
                let w = self.lu[i * d + j];
                for (a, u) in acc.iter_mut().zip(&ut[j]) {
                    *a += w * u;
                }
            }
            vt[i] = acc;
        }
        for (k, (x, &p)) in xt.iter_mut().zip(self.perm).enumerate().take(d) {
            let b = self.bias[k];
            for (y, v) in x.iter_mut().zip(&vt[p]) {
                *y = v + b;
            }
        }
    }

    /// The lengths the blocked passes index without checks.
    fn block_ready(&self, x: &[f32], n: usize) -> bool {
        let d = self.dim();
        d > 0 && self.lu.len() >= d * d && self.bias.len() >= d && self.sign.len() >= d && x.len() >= n * d
    }
}

/// Scratch: `tmp` (`d`).
impl SliceBijector for LuLinearRef<'_> {
    fn scratch_len(&self) -> usize {
        self.dim()
    }
    fn forward_flat(&self, x: &mut [f32], scratch: &mut [f32]) -> f32 {
        self.forward(x, scratch)
    }
    fn inverse_flat(&self, z: &mut [f32], scratch: &mut [f32]) -> f32 {
        self.inverse(z, scratch)
    }
    fn block_scratch_len(&self) -> usize {
        3 * self.dim() + crate::block::lanes_for(self.dim())
    }
    fn forward_block(&self, x: &mut [f32], ld: &mut [f32], scratch: &mut [Lanes]) {
        let (n, d) = (ld.len(), self.dim());
        if !self.block_ready(x, n) || scratch.len() < self.block_scratch_len() {
            let scratch = scratch.as_flattened_mut();
            for (row, l) in x.chunks_exact_mut(d.max(1)).zip(ld) {
                *l = self.forward(row, scratch);
            }
            return;
        }
        let (xt, rest) = scratch.split_at_mut(d);
        let (ut, rest) = rest.split_at_mut(d);
        let (vt, rest) = rest.split_at_mut(d);
        let diag = &mut rest.as_flattened_mut()[..d];
        let log_det = self.diagonal(diag);
        for (rows, lds) in x[..n * d].chunks_mut(BLOCK * d).zip(ld.chunks_mut(BLOCK)) {
            to_lanes(rows, d, xt);
            self.forward_lanes(diag, xt, ut, vt);
            from_lanes(xt, d, rows);
            lds.fill(log_det);
        }
    }
}

impl SliceBackward for LuLinearRef<'_> {
    fn param_len(&self) -> usize {
        Self::n_params(self.dim())
    }
    fn train_scratch_len(&self) -> usize {
        LuLinearRef::train_scratch_len(self)
    }
    fn backward_flat(&self, x: &[f32], g: &mut [f32], g_ld: f32, grad: &mut [f32], scratch: &mut [f32]) {
        self.backward(x, g, g_ld, grad, scratch)
    }
    fn backward_input(&self, x: &[f32], g: &mut [f32], _: f32, scratch: &mut [f32]) {
        LuLinearRef::backward_input(self, x, g, scratch)
    }
    fn block_train_scratch_len(&self) -> usize {
        4 * self.dim() + crate::block::lanes_for(2 * self.dim())
    }
    fn backward_block(&self, x: &[f32], g: &mut [f32], g_ld: &[f32], grad: &mut [f32], scratch: &mut [Lanes]) {
        let (n, d) = (g_ld.len(), self.dim());
        if !self.block_ready(x, n)
            || g.len() < n * d
            || grad.len() < Self::n_params(d)
            || scratch.len() < self.block_train_scratch_len()
        {
            let scratch = scratch.as_flattened_mut();
            for ((xr, gr), l) in x.chunks_exact(d.max(1)).zip(g.chunks_exact_mut(d.max(1))).zip(g_ld) {
                self.backward(xr, gr, *l, grad, scratch);
            }
            return;
        }
        let (xt, rest) = scratch.split_at_mut(d);
        let (ut, rest) = rest.split_at_mut(d);
        let (gt, rest) = rest.split_at_mut(d);
        let (vt, rest) = rest.split_at_mut(d);
        let (diag, dmul) = rest.as_flattened_mut()[..2 * d].split_at_mut(d);
        for (j, (u, m)) in diag.iter_mut().zip(dmul.iter_mut()).enumerate() {
            (*u, *m, _) = self.diag(j);
        }
        let lu = self.lu;
        for ((xs, gs), gl) in x[..n * d]
            .chunks(BLOCK * d)
            .zip(g[..n * d].chunks_mut(BLOCK * d))
            .zip(g_ld.chunks(BLOCK))
        {
            let rows = gl.len();
            to_lanes(xs, d, xt);
            to_lanes(gs, d, gt);
            self.upper_lanes(diag, xt, ut);
            // y = P·v + b: the bias gradient, ∂v.
            for (i, &p) in self.perm.iter().enumerate() {
                for r in 0..rows {
                    grad[d * d + i] += gt[i][r];
                }
                vt[p] = gt[i];
            }
            // v = L·u: ∂u = Lᵀ·∂v, ∂L_ij = ∂v_i·u_j (i > j).
            for j in 0..d {
                let mut acc = vt[j];
                for i in j + 1..d {
                    let w = lu[i * d + j];
                    for (a, v) in acc.iter_mut().zip(&vt[i]) {
                        *a += w * v;
                    }
                    let e = &mut grad[i * d + j];
                    for r in 0..rows {
                        *e += vt[i][r] * ut[j][r];
                    }
                }
                gt[j] = acc;
            }
            // u = U·x: ∂x = Uᵀ·∂u, ∂U_ij = ∂u_i·x_j (i < j), ∂log_s_j via U_jj.
            // `vt` takes ∂u (a copy, as `vjp` copies it), `gt` becomes ∂x.
            vt.copy_from_slice(gt);
            for j in 0..d {
                let mut acc = [0.0; BLOCK];
                for (a, v) in acc.iter_mut().zip(&vt[j]) {
                    *a = diag[j] * v;
                }
                for i in 0..j {
                    let w = lu[i * d + j];
                    for (a, v) in acc.iter_mut().zip(&vt[i]) {
                        *a += w * v;
                    }
                    let e = &mut grad[i * d + j];
                    for r in 0..rows {
                        *e += vt[i][r] * xt[j][r];
                    }
                }
                gt[j] = acc;
                let m = if dmul[j] == 0.0 { 0.0 } else { 1.0 };
                let e = &mut grad[j * d + j];
                for r in 0..rows {
                    *e += vt[j][r] * xt[j][r] * dmul[j] + gl[r] * m;
                }
            }
            from_lanes(gt, d, gs);
        }
    }
    fn as_bijector(&self) -> &dyn SliceBijector {
        self
    }
}
