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

use crate::layer::{SliceBackward, SliceBijector};
use crate::permutation::{is_permutation, permute_forward};
use crate::{Bijector, Error};

/// `log_s` is clamped to `[−LOG_SCALE_LIMIT, LOG_SCALE_LIMIT]`.
pub const LOG_SCALE_LIMIT: f32 = 20.0;

/// `(clamped log_s, ∂clamped/∂log_s)`; NaN → 0 with gradient 0.
#[inline(always)]
fn clamp_log_scale(v: f32) -> (f32, f32) {
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
fn sign_of(s: f32) -> f32 {
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
        Ok(LuLinearRef { perm, sign, lu, bias })
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

    /// The log-det `Σ log_s` (clamped), the same for every input.
    #[inline(always)]
    pub fn log_det(&self) -> f32 {
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
    #[inline(always)]
    pub fn forward(&self, x: &mut [f32], tmp: &mut [f32]) -> f32 {
        let d = self.dim();
        let (Some(x), Some(lu)) = (x.get_mut(..d), self.lu.get(..d * d)) else {
            return f32::NAN;
        };
        if d == 0 {
            // Nothing to transform; also tells the compiler `chunks_exact(d)`
            // below cannot panic when `d` is only known at run time.
            return 0.0;
        }
        // u = U·x (row i uses x_j, j ≥ i, not yet overwritten); the log-det
        // summed on the way, in the order of `log_det`.
        let mut ld = 0.0;
        for (i, row) in lu.chunks_exact(d).enumerate() {
            let Some((xi, rest)) = x.get_mut(i..).and_then(|v| v.split_first_mut()) else {
                break;
            };
            let (ls, _) = clamp_log_scale(row.get(i).copied().unwrap_or(0.0));
            ld += ls;
            let mut u = self.sign_at(i) * crate::activation::exp(ls) * *xi;
            for (w, v) in row.get(i + 1..).unwrap_or_default().iter().zip(rest.iter()) {
                u += w * v;
            }
            *xi = u;
        }
        // v = L·u (row i uses u_j, j < i, not yet overwritten).
        for (i, row) in lu.chunks_exact(d).enumerate().rev() {
            let Some((xi, head)) = x.get_mut(..=i).and_then(|v| v.split_last_mut()) else {
                continue;
            };
            let mut v = *xi;
            for (w, u) in row.iter().zip(head.iter()) {
                v += w * u;
            }
            *xi = v;
        }
        permute_forward(self.perm, x, tmp);
        for (v, b) in x.iter_mut().zip(self.bias) {
            *v += b;
        }
        ld
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

/// Const-generic LU linear layer for `static` models. `lu` stores the packed
/// full square matrix (see the [module docs](self)); the permutation is
/// private so that it is always valid.
#[derive(Clone, Debug, PartialEq)]
pub struct LuLinear<const D: usize> {
    perm: [usize; D],
    /// Signs of `U`'s diagonal (`< 0` → −1, else +1).
    pub sign: [f32; D],
    /// Packed `[row][col]`: `L` strictly below, `log_s` on, `U` strictly above
    /// the diagonal.
    pub lu: [[f32; D]; D],
    /// Bias.
    pub bias: [f32; D],
}

impl<const D: usize> LuLinear<D> {
    /// Construct; panics (a compile error in a `static`) if `perm` is not a
    /// permutation of `0..D`.
    pub const fn new(perm: [usize; D], sign: [f32; D], lu: [[f32; D]; D], bias: [f32; D]) -> Self {
        assert!(is_permutation(&perm), "perm is not a permutation");
        LuLinear { perm, sign, lu, bias }
    }

    /// The identity map.
    pub const fn identity() -> Self {
        let mut perm = [0; D];
        let mut i = 0;
        while i < D {
            perm[i] = i;
            i += 1;
        }
        LuLinear {
            perm,
            sign: [1.0; D],
            lu: [[0.0; D]; D],
            bias: [0.0; D],
        }
    }

    /// The permutation `P`.
    pub const fn perm(&self) -> &[usize; D] {
        &self.perm
    }

    /// Borrow as the slice-level view.
    #[inline(always)]
    pub fn view(&self) -> LuLinearRef<'_> {
        LuLinearRef {
            perm: &self.perm,
            sign: &self.sign,
            lu: self.lu.as_flattened(),
            bias: &self.bias,
        }
    }
}

impl<const D: usize> Bijector<D> for LuLinear<D> {
    /// Errors: [`Error::Overflow`] if the result exceeds the f32 range.
    #[inline(always)]
    fn forward(&self, x: &mut [f32; D]) -> Result<f32, Error> {
        let mut tmp = [0.0; D];
        let ld = self.view().forward(x, &mut tmp);
        if x.iter().all(|v| v.is_finite()) {
            Ok(ld)
        } else {
            Err(Error::Overflow)
        }
    }
    /// Errors: [`Error::Overflow`] if the result exceeds the f32 range.
    #[inline(always)]
    fn inverse(&self, z: &mut [f32; D]) -> Result<f32, Error> {
        let mut tmp = [0.0; D];
        let ld = self.view().inverse(z, &mut tmp);
        if z.iter().all(|v| v.is_finite()) {
            Ok(ld)
        } else {
            Err(Error::Overflow)
        }
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
    fn as_bijector(&self) -> &dyn SliceBijector {
        self
    }
}
