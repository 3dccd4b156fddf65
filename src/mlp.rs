//! The multilayer perceptron used as conditioner by couplings, MADE/MAF and the
//! vector field of continuous flows.
//!
//! [`MlpRef`] is the single implementation of the maths (forward, cached
//! forward for training, backward and a forward-mode JVP). It works on slices of
//! any length; [`Mlp`] is the const-generic owner of the weights that firmware
//! keeps in flash and that hands out an [`MlpRef`] over its arrays.
//!
//! Layout (row-major, `out × in`): a first layer `input (+ cond) → hidden`,
//! `depth − 1` layers `hidden → hidden`, then a linear output layer
//! `hidden → output`. The optional scalar `cond` input (time, for continuous
//! flows) has its own weight column `w_cond`.

use crate::weights::{f32_to_f16, quantize_row_i8, MlpStore, Unscaled, Weight, F16};
use crate::{Activation, Error};

/// Sizes of an MLP, known at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlpShape {
    /// Number of inputs.
    pub input: usize,
    /// 1 if the network takes an extra scalar input (time), else 0.
    pub cond: usize,
    /// Width of each hidden layer.
    pub hidden: usize,
    /// Number of hidden layers (≥ 1).
    pub depth: usize,
    /// Number of outputs.
    pub output: usize,
}

impl MlpShape {
    /// Total number of parameters, in the order of [`MlpRef::from_flat`].
    pub const fn n_params(&self) -> usize {
        let h = self.hidden;
        h * self.input + h * self.cond + h + (self.depth - 1) * (h * h + h) + self.output * h + self.output
    }

    /// Floats a cached forward pass keeps (`depth × hidden` activations).
    pub const fn n_activations(&self) -> usize {
        self.depth * self.hidden
    }

    /// Multiply–accumulate operations of one forward pass.
    pub const fn macs(&self) -> usize {
        let h = self.hidden;
        h * (self.input + self.cond) + (self.depth - 1) * h * h + self.output * h
    }
}

/// Borrowed weights of an MLP: the one implementation of its maths.
///
/// `W` is how the three weight matrices are stored ([`crate::weights`]):
/// `f32` (the default, and the only storage that trains), `F16` or `i8`
/// with the per-row scales `s_in`, `s_hid`, `s_out` (empty for the unscaled
/// storages). Biases and the condition column stay `f32`.
#[derive(Clone, Copy, Debug)]
pub struct MlpRef<'a, W: Weight = f32> {
    /// Sizes.
    pub shape: MlpShape,
    /// Hidden nonlinearity.
    pub act: Activation,
    /// `hidden × input` weights of the first layer.
    pub w_in: &'a [W],
    /// `hidden × cond` weights of the scalar condition (empty if `cond == 0`).
    pub w_cond: &'a [f32],
    /// First-layer biases (`hidden`).
    pub b_in: &'a [f32],
    /// `(depth − 1) × hidden × hidden` weights.
    pub w_hid: &'a [W],
    /// `(depth − 1) × hidden` biases.
    pub b_hid: &'a [f32],
    /// `output × hidden` weights.
    pub w_out: &'a [W],
    /// Output biases.
    pub b_out: &'a [f32],
    /// Row scales of `w_in` (`hidden`; empty unless `W::SCALED`).
    pub s_in: &'a [f32],
    /// Row scales of `w_hid` (`(depth − 1) × hidden`; empty unless `W::SCALED`).
    pub s_hid: &'a [f32],
    /// Row scales of `w_out` (`output`; empty unless `W::SCALED`).
    pub s_out: &'a [f32],
}

/// Mutable gradient buffers with the same layout as [`MlpRef`].
#[derive(Debug)]
pub struct MlpGrad<'a> {
    /// Gradient of `w_in`.
    pub w_in: &'a mut [f32],
    /// Gradient of `w_cond`.
    pub w_cond: &'a mut [f32],
    /// Gradient of `b_in`.
    pub b_in: &'a mut [f32],
    /// Gradient of `w_hid`.
    pub w_hid: &'a mut [f32],
    /// Gradient of `b_hid`.
    pub b_hid: &'a mut [f32],
    /// Gradient of `w_out`.
    pub w_out: &'a mut [f32],
    /// Gradient of `b_out`.
    pub b_out: &'a mut [f32],
}

/// Lengths of the seven parameter blocks, in flat order.
const fn block_lens(s: &MlpShape) -> [usize; 7] {
    let h = s.hidden;
    [
        h * s.input,
        h * s.cond,
        h,
        (s.depth - 1) * h * h,
        (s.depth - 1) * h,
        s.output * h,
        s.output,
    ]
}

impl<'a> MlpRef<'a, f32> {
    /// View a flat parameter vector (blocks `w_in, w_cond, b_in, w_hid, b_hid,
    /// w_out, b_out`) as an MLP. Fails if the length does not match.
    pub fn from_flat(shape: MlpShape, act: Activation, p: &'a [f32]) -> Result<Self, Error> {
        if shape.depth == 0 || shape.cond > 1 || p.len() != shape.n_params() {
            return Err(Error::ShapeMismatch);
        }
        let l = block_lens(&shape);
        let (w_in, p) = p.split_at(l[0]);
        let (w_cond, p) = p.split_at(l[1]);
        let (b_in, p) = p.split_at(l[2]);
        let (w_hid, p) = p.split_at(l[3]);
        let (b_hid, p) = p.split_at(l[4]);
        let (w_out, b_out) = p.split_at(l[5]);
        Ok(MlpRef {
            shape,
            act,
            w_in,
            w_cond,
            b_in,
            w_hid,
            b_hid,
            w_out,
            b_out,
            s_in: &[],
            s_hid: &[],
            s_out: &[],
        })
    }
}

impl<'a, W: Weight> MlpRef<'a, W> {
    /// `true` if every matrix and scale has the length its shape asks for
    /// (what [`MlpRef::from_flat`] guarantees for `f32`; a compressed view
    /// built field by field should be checked with this).
    pub fn is_consistent(&self) -> bool {
        let s = self.shape;
        let l = block_lens(&s);
        let rows = if W::SCALED {
            [s.hidden, (s.depth - 1) * s.hidden, s.output]
        } else {
            [0; 3]
        };
        s.depth >= 1
            && s.cond <= 1
            && self.w_in.len() == l[0]
            && self.w_cond.len() == l[1]
            && self.b_in.len() == l[2]
            && self.w_hid.len() == l[3]
            && self.b_hid.len() == l[4]
            && self.w_out.len() == l[5]
            && self.b_out.len() == l[6]
            && [self.s_in.len(), self.s_hid.len(), self.s_out.len()] == rows
    }

    /// Condition value used when `cond == 0` is ignored; `c` multiplies `w_cond`.
    #[inline(always)]
    fn first_layer(&self, x: &[f32], c: f32, h: &mut [f32]) {
        let n = self.shape.input;
        let act = self.act;
        if self.shape.cond == 1 {
            for (k, hk) in h.iter_mut().enumerate().take(self.shape.hidden) {
                let row = self.w_in.get(k * n..(k + 1) * n).unwrap_or_default();
                let scale = self.s_in.get(k).copied().unwrap_or(1.0);
                let b = self.b_in.get(k).copied().unwrap_or(0.0);
                let mut a = row_sum::<W>(b, scale, dot_w(row, x));
                a += self.w_cond.get(k).copied().unwrap_or(0.0) * c;
                *hk = act.apply(a);
            }
        } else {
            let h = h.get_mut(..self.shape.hidden).unwrap_or_default();
            dense_w(self.w_in, self.s_in, n, self.b_in, x, h);
            act.apply_slice(h);
        }
    }

    #[inline(always)]
    fn hidden_layer(&self, l: usize, x: &[f32], y: &mut [f32]) {
        let h = self.shape.hidden;
        let act = self.act;
        let w = self.w_hid.get(l * h * h..(l + 1) * h * h).unwrap_or_default();
        let b = self.b_hid.get(l * h..(l + 1) * h).unwrap_or_default();
        let s = if W::SCALED {
            self.s_hid.get(l * h..(l + 1) * h).unwrap_or_default()
        } else {
            &[]
        };
        let y = y.get_mut(..h).unwrap_or_default();
        dense_w(w, s, h, b, x, y);
        act.apply_slice(y);
    }

    #[inline(always)]
    fn output_layer(&self, x: &[f32], out: &mut [f32]) {
        let h = self.shape.hidden;
        let out = out.get_mut(..self.shape.output).unwrap_or_default();
        dense_w(self.w_out, self.s_out, h, self.b_out, x, out);
    }

    /// Inference forward pass: `out = mlp(x, c)`, using two `hidden`-sized
    /// buffers alternately.
    #[inline(always)]
    pub fn forward(&self, x: &[f32], c: f32, h0: &mut [f32], h1: &mut [f32], out: &mut [f32]) {
        self.first_layer(x, c, h0);
        let (mut a, mut b) = (h0, h1);
        for l in 0..self.shape.depth - 1 {
            self.hidden_layer(l, a, b);
            core::mem::swap(&mut a, &mut b);
        }
        self.output_layer(a, out);
    }

    /// Training forward pass: like [`MlpRef::forward`] but keeps every hidden
    /// activation in `acts` (length [`MlpShape::n_activations`]) for
    /// [`MlpRef::backward`].
    /// Never panics: `acts` shorter than that leaves it and `out` partly
    /// written.
    pub fn forward_cached(&self, x: &[f32], c: f32, acts: &mut [f32], out: &mut [f32]) {
        let h = self.shape.hidden;
        let Some(first) = acts.get_mut(..h) else {
            return;
        };
        self.first_layer(x, c, first);
        for l in 0..self.shape.depth.saturating_sub(1) {
            let Some((prev, next)) = acts.get_mut(l * h..(l + 2) * h).and_then(|a| a.split_at_mut_checked(h)) else {
                return;
            };
            self.hidden_layer(l, prev, next);
        }
        let last = acts.get(self.shape.depth.saturating_sub(1) * h..).unwrap_or_default();
        self.output_layer(last, out);
    }
}

impl MlpRef<'_, f32> {
    /// Vector–Jacobian product. Given the input `x, c`, the activations of
    /// [`MlpRef::forward_cached`] and `g_out = ∂L/∂out`, *adds* `∂L/∂θ` to
    /// `grad` and, if given, `∂L/∂x` to `g_x`. `tmp0`, `tmp1` are scratch of
    /// length `hidden`.
    pub fn backward(
        &self,
        x: &[f32],
        c: f32,
        acts: &[f32],
        g_out: &[f32],
        g_x: Option<&mut [f32]>,
        tmp0: &mut [f32],
        tmp1: &mut [f32],
        grad: &mut MlpGrad<'_>,
    ) {
        self.vjp(x, c, acts, g_out, g_x, tmp0, tmp1, Some(grad))
    }

    /// [`MlpRef::backward`] with an optional parameter gradient: without
    /// one only `∂L/∂x` is added to `g_x`, bit for bit as with one (the
    /// layers' `SliceBackward::backward_input`, on-device adaptation).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn vjp(
        &self,
        x: &[f32],
        c: f32,
        acts: &[f32],
        g_out: &[f32],
        g_x: Option<&mut [f32]>,
        tmp0: &mut [f32],
        tmp1: &mut [f32],
        mut grad: Option<&mut MlpGrad<'_>>,
    ) {
        // Slices are taken with `get` and zipped, so a view with
        // inconsistent lengths stops early instead of panicking (the device's
        // no-panic proof covers this path); consistent views visit exactly
        // the elements, in the order, of the plain indexed loops.
        let s = self.shape;
        let (h, n) = (s.hidden, s.input);
        if h == 0 || n == 0 || s.depth == 0 {
            return;
        }
        let Some(last) = acts.get((s.depth - 1) * h..s.depth * h) else {
            return;
        };
        // Output layer.
        let Some(gh) = tmp0.get_mut(..h) else {
            return;
        };
        gh.fill(0.0);
        for (j, (&g, row)) in g_out.iter().zip(self.w_out.chunks_exact(h)).take(s.output).enumerate() {
            if let Some(grad) = grad.as_deref_mut() {
                if let Some(b) = grad.b_out.get_mut(j) {
                    *b += g;
                }
                if let Some(grow) = grad.w_out.get_mut(j * h..(j + 1) * h) {
                    for (gw, &a) in grow.iter_mut().zip(last) {
                        *gw += g * a;
                    }
                }
            }
            for (ghk, &w) in gh.iter_mut().zip(row) {
                *ghk += g * w;
            }
        }
        // Hidden layers, from the last one down; `gcur` holds ∂L/∂(post-activation).
        let (mut gcur, mut gprev) = (tmp0, tmp1);
        for l in (1..s.depth).rev() {
            let (Some(out_act), Some(in_act), Some(w), Some(gp)) = (
                acts.get(l * h..(l + 1) * h),
                acts.get((l - 1) * h..l * h),
                self.w_hid.get((l - 1) * h * h..l * h * h),
                gprev.get_mut(..h),
            ) else {
                return;
            };
            gp.fill(0.0);
            for (k, ((&gc, &oa), row)) in gcur.iter().zip(out_act).zip(w.chunks_exact(h)).enumerate() {
                let gpre = gc * self.act.derivative_from_output(oa);
                if let Some(grad) = grad.as_deref_mut() {
                    if let Some(b) = grad.b_hid.get_mut((l - 1) * h + k) {
                        *b += gpre;
                    }
                    let at = (l - 1) * h * h + k * h;
                    if let Some(grow) = grad.w_hid.get_mut(at..at + h) {
                        for (gw, &a) in grow.iter_mut().zip(in_act) {
                            *gw += gpre * a;
                        }
                    }
                }
                for (g, &wv) in gp.iter_mut().zip(row) {
                    *g += gpre * wv;
                }
            }
            core::mem::swap(&mut gcur, &mut gprev);
        }
        // First layer.
        let Some(first) = acts.get(..h) else {
            return;
        };
        let mut g_x = g_x;
        for (k, ((&gc, &fa), row)) in gcur.iter().zip(first).zip(self.w_in.chunks_exact(n)).enumerate() {
            let gpre = gc * self.act.derivative_from_output(fa);
            if let Some(grad) = grad.as_deref_mut() {
                if let Some(b) = grad.b_in.get_mut(k) {
                    *b += gpre;
                }
                if s.cond == 1 {
                    if let Some(wc) = grad.w_cond.get_mut(k) {
                        *wc += gpre * c;
                    }
                }
                if let Some(grow) = grad.w_in.get_mut(k * n..(k + 1) * n) {
                    for (gw, &xi) in grow.iter_mut().zip(x) {
                        *gw += gpre * xi;
                    }
                }
            }
            if let Some(gx) = g_x.as_deref_mut() {
                for (g, &wv) in gx.iter_mut().zip(row) {
                    *g += gpre * wv;
                }
            }
        }
    }
}

impl<'a> MlpGrad<'a> {
    /// Split a flat gradient vector (same order as [`MlpRef::from_flat`]).
    pub fn from_flat(shape: MlpShape, g: &'a mut [f32]) -> Result<Self, Error> {
        if shape.depth == 0 || shape.cond > 1 || g.len() != shape.n_params() {
            return Err(Error::ShapeMismatch);
        }
        let l = block_lens(&shape);
        let (w_in, g) = g.split_at_mut(l[0]);
        let (w_cond, g) = g.split_at_mut(l[1]);
        let (b_in, g) = g.split_at_mut(l[2]);
        let (w_hid, g) = g.split_at_mut(l[3]);
        let (b_hid, g) = g.split_at_mut(l[4]);
        let (w_out, b_out) = g.split_at_mut(l[5]);
        Ok(MlpGrad {
            w_in,
            w_cond,
            b_in,
            w_hid,
            b_hid,
            w_out,
            b_out,
        })
    }
}

/// Dot product over the common length, summed in index order from `0.0`
/// (`((0 + a₀b₀) + a₁b₁) + …`): the summation order of every matrix–vector
/// product in the crate ([`dense`] reproduces it bit for bit).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut s = 0.0;
    for (x, y) in a.iter().zip(b) {
        s += x * y;
    }
    s
}

/// Dot product of stored weights with `x` over the common length, each
/// weight widened by [`Weight::to_f32`], summed in index order from `0.0`
/// exactly as [`dot`] sums (for `f32` it *is* [`dot`]).
#[inline(always)]
pub fn dot_w<W: Weight>(w: &[W], x: &[f32]) -> f32 {
    let mut s = 0.0;
    for (a, y) in w.iter().zip(x) {
        s += a.to_f32() * y;
    }
    s
}

/// A row's output from its bias, scale and weighted sum: `b + scale·s` for
/// scaled storages (`i8`), `b + s` otherwise (the scale is not used).
#[inline(always)]
pub fn row_sum<W: Weight>(b: f32, scale: f32, s: f32) -> f32 {
    if W::SCALED {
        b + scale * s
    } else {
        b + s
    }
}

/// Dense layer kernel: `out[k] = b[k] + Σᵢ w[k·n + i]·x[i]` for each
/// output `k` (row-major `w`, rows of length `n`; the sum runs over
/// `min(n, x.len())` inputs). Stops at the shortest of `out`, `b` and the
/// rows of `w`. [`dense_w`] with `f32` weights.
///
/// Each row's sum is taken exactly as [`dot`] takes it (from `0.0`, in input
/// order, then `b[k] +`), so the result does not depend on how the kernel
/// walks the matrix; the walk is shaped for in-order cores without caches
/// (Cortex-M4F): four output rows per pass over the input, so each input
/// value is loaded once per four multiply–adds, the four running sums stay in
/// registers, and the pass is unrolled by four inputs. Iterators and slice
/// patterns only, no indexing: nothing here can panic.
///
/// The activation is applied afterwards by [`Activation::apply_slice`]
/// (one out-of-line copy of it per image, whatever the number of layers).
#[inline(always)]
pub fn dense(w: &[f32], n: usize, b: &[f32], x: &[f32], out: &mut [f32]) {
    dense_w(w, &[], n, b, x, out)
}

/// [`dense`] for any weight storage: `out[k] =` [`row_sum`]`(b[k],
/// scale[k], `[`dot_w`]`(row k, x))`. `scale` holds one `f32` per row for
/// scaled storages (`i8`; the kernel also stops at its end) and is ignored
/// otherwise. The same walk as [`dense`], each weight widened to `f32` as it
/// is loaded; for `f32` the code is [`dense`]'s.
#[inline(always)]
pub fn dense_w<W: Weight>(w: &[W], scale: &[f32], n: usize, b: &[f32], x: &[f32], out: &mut [f32]) {
    if n == 0 {
        if W::SCALED {
            for ((o, bk), sk) in out.iter_mut().zip(b).zip(scale) {
                *o = bk + sk * 0.0;
            }
        } else {
            for (o, bk) in out.iter_mut().zip(b) {
                *o = bk + 0.0;
            }
        }
        return;
    }
    // `4·n` (≥ 4 here) as the compiler can see it is not 0 even for a
    // run-time `n` (layer views): `chunks_exact` would panic on 0.
    let mut blocks = w.chunks_exact(n.wrapping_mul(4).max(1));
    let mut outs = out.chunks_exact_mut(4);
    let mut bs = b.chunks_exact(4);
    if W::SCALED {
        let mut ss = scale.chunks_exact(4);
        for (((o4, b4), s4), w4) in (&mut outs).zip(&mut bs).zip(&mut ss).zip(&mut blocks) {
            let ([o0, o1, o2, o3], [b0, b1, b2, b3], [c0, c1, c2, c3]) = (o4, b4, s4) else {
                return;
            };
            let s = dot4(x, w4, n);
            *o0 = b0 + c0 * s[0];
            *o1 = b1 + c1 * s[1];
            *o2 = b2 + c2 * s[2];
            *o3 = b3 + c3 * s[3];
        }
        let rows = blocks.remainder().chunks_exact(n);
        let rest = outs.into_remainder().iter_mut().zip(bs.remainder()).zip(ss.remainder());
        for (((o, bk), sk), row) in rest.zip(rows) {
            *o = bk + sk * dot_w(row, x);
        }
    } else {
        for ((o4, b4), w4) in (&mut outs).zip(&mut bs).zip(&mut blocks) {
            let ([o0, o1, o2, o3], [b0, b1, b2, b3]) = (o4, b4) else {
                return;
            };
            let s = dot4(x, w4, n);
            *o0 = b0 + s[0];
            *o1 = b1 + s[1];
            *o2 = b2 + s[2];
            *o3 = b3 + s[3];
        }
        let rows = blocks.remainder().chunks_exact(n);
        for ((o, bk), row) in outs.into_remainder().iter_mut().zip(bs.remainder()).zip(rows) {
            *o = bk + dot_w(row, x);
        }
    }
}

/// The four dot products of `x` with the rows `w4[k·n..(k + 1)·n]`,
/// `k < 4`, each summed as [`dot_w`] sums (over `min(n, x.len())` inputs).
/// The five slices advance by four elements per step (slice patterns, so
/// LLVM sees post-incremented pointers and no bounds checks); each input is
/// loaded once per four multiply–adds.
#[inline(always)]
fn dot4<W: Weight>(x: &[f32], w4: &[W], n: usize) -> [f32; 4] {
    let (mut s0, mut s1, mut s2, mut s3) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
    let mut rows = w4.chunks_exact(n);
    let (Some(mut a), Some(mut b), Some(mut c), Some(mut d)) = (rows.next(), rows.next(), rows.next(), rows.next())
    else {
        return [s0, s1, s2, s3];
    };
    let mut x = x;
    while let (
        [x0, x1, x2, x3, xr @ ..],
        [a0, a1, a2, a3, ar @ ..],
        [b0, b1, b2, b3, br @ ..],
        [c0, c1, c2, c3, cr @ ..],
        [d0, d1, d2, d3, dr @ ..],
    ) = (x, a, b, c, d)
    {
        s0 += a0.to_f32() * x0;
        s1 += b0.to_f32() * x0;
        s2 += c0.to_f32() * x0;
        s3 += d0.to_f32() * x0;
        s0 += a1.to_f32() * x1;
        s1 += b1.to_f32() * x1;
        s2 += c1.to_f32() * x1;
        s3 += d1.to_f32() * x1;
        s0 += a2.to_f32() * x2;
        s1 += b2.to_f32() * x2;
        s2 += c2.to_f32() * x2;
        s3 += d2.to_f32() * x2;
        s0 += a3.to_f32() * x3;
        s1 += b3.to_f32() * x3;
        s2 += c3.to_f32() * x3;
        s3 += d3.to_f32() * x3;
        (x, a, b, c, d) = (xr, ar, br, cr, dr);
    }
    for ((((xv, a), b), c), d) in x.iter().zip(a).zip(b).zip(c).zip(d) {
        s0 += a.to_f32() * xv;
        s1 += b.to_f32() * xv;
        s2 += c.to_f32() * xv;
        s3 += d.to_f32() * xv;
    }
    [s0, s1, s2, s3]
}

/// Const-generic owner of an MLP's weights, for `static` models.
///
/// `IN` inputs, `H` hidden units, `L = depth − 1` extra hidden layers, and
/// `HEADS × OUT` outputs laid out head-major (output `head·OUT + j`): a coupling
/// with `B` transformed coordinates uses `OUT = B, HEADS = 2` (shift, log-scale).
/// `W` is the weights' storage: `f32` (default) or [`crate::weights::F16`];
/// `i8` weights need row scales and live in [`MlpI8`].
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp<const IN: usize, const H: usize, const L: usize, const OUT: usize, const HEADS: usize, W = f32> {
    /// Hidden nonlinearity.
    pub act: Activation,
    /// First layer weights, `[hidden][input]`.
    pub w_in: [[W; IN]; H],
    /// First layer biases.
    pub b_in: [f32; H],
    /// Hidden-to-hidden weights, `[layer][out][in]`.
    pub w_hid: [[[W; H]; H]; L],
    /// Hidden-to-hidden biases.
    pub b_hid: [[f32; H]; L],
    /// Output weights, `[head][output][hidden]`.
    pub w_out: [[[W; H]; OUT]; HEADS],
    /// Output biases, `[head][output]`.
    pub b_out: [[f32; OUT]; HEADS],
}

impl<const IN: usize, const H: usize, const L: usize, const OUT: usize, const HEADS: usize> Mlp<IN, H, L, OUT, HEADS> {
    /// An MLP with all weights zero (outputs are zero): a valid identity
    /// conditioner, and a starting point for filling in weights.
    pub const fn zeroed(act: Activation) -> Self {
        Mlp {
            act,
            w_in: [[0.0; IN]; H],
            b_in: [0.0; H],
            w_hid: [[[0.0; H]; H]; L],
            b_hid: [[0.0; H]; L],
            w_out: [[[0.0; H]; OUT]; HEADS],
            b_out: [[0.0; OUT]; HEADS],
        }
    }
}

impl<const IN: usize, const H: usize, const L: usize, const OUT: usize, const HEADS: usize> Mlp<IN, H, L, OUT, HEADS> {
    /// The same network with `f16` weights, each the nearest to its `f32`
    /// ([`crate::weights::f32_to_f16`]); biases stay `f32`.
    pub fn to_f16(&self) -> Mlp<IN, H, L, OUT, HEADS, F16> {
        let h = |v: &[f32; H]| v.map(f32_to_f16);
        Mlp {
            act: self.act,
            w_in: self.w_in.map(|r| r.map(f32_to_f16)),
            b_in: self.b_in,
            w_hid: self.w_hid.map(|m| m.map(|r| h(&r))),
            b_hid: self.b_hid,
            w_out: self.w_out.map(|m| m.map(|r| h(&r))),
            b_out: self.b_out,
        }
    }

    /// The same network with `i8` weights and per-row scales
    /// ([`crate::weights::quantize_row_i8`] on every row); biases stay `f32`.
    pub fn to_i8(&self) -> MlpI8<IN, H, L, OUT, HEADS> {
        fn rows<const N: usize, const R: usize>(m: &[[f32; N]; R]) -> ([[i8; N]; R], [f32; R]) {
            let (mut q, mut s) = ([[0i8; N]; R], [0.0f32; R]);
            for ((qr, sr), w) in q.iter_mut().zip(&mut s).zip(m) {
                *sr = quantize_row_i8(w, qr);
            }
            (q, s)
        }
        let (w_in, s_in) = rows(&self.w_in);
        let (w_hid, s_hid) = {
            let (mut q, mut s) = ([[[0i8; H]; H]; L], [[0.0f32; H]; L]);
            for ((ql, sl), wl) in q.iter_mut().zip(&mut s).zip(&self.w_hid) {
                (*ql, *sl) = rows(wl);
            }
            (q, s)
        };
        let (w_out, s_out) = {
            let (mut q, mut s) = ([[[0i8; H]; OUT]; HEADS], [[0.0f32; OUT]; HEADS]);
            for ((ql, sl), wl) in q.iter_mut().zip(&mut s).zip(&self.w_out) {
                (*ql, *sl) = rows(wl);
            }
            (q, s)
        };
        MlpI8 {
            act: self.act,
            w_in,
            s_in,
            b_in: self.b_in,
            w_hid,
            s_hid,
            b_hid: self.b_hid,
            w_out,
            s_out,
            b_out: self.b_out,
        }
    }
}

impl<const IN: usize, const H: usize, const L: usize, const OUT: usize, const HEADS: usize, W>
    Mlp<IN, H, L, OUT, HEADS, W>
{
    /// The shape of this network.
    pub const fn shape() -> MlpShape {
        MlpShape {
            input: IN,
            cond: 0,
            hidden: H,
            depth: L + 1,
            output: OUT * HEADS,
        }
    }
}

impl<const IN: usize, const H: usize, const L: usize, const OUT: usize, const HEADS: usize, W: Unscaled>
    Mlp<IN, H, L, OUT, HEADS, W>
{
    /// Borrow as the slice-level view that implements the maths.
    #[inline(always)]
    pub fn view(&self) -> MlpRef<'_, W> {
        MlpRef {
            shape: Self::shape(),
            act: self.act,
            w_in: self.w_in.as_flattened(),
            w_cond: &[],
            b_in: &self.b_in,
            w_hid: self.w_hid.as_flattened().as_flattened(),
            b_hid: self.b_hid.as_flattened(),
            w_out: self.w_out.as_flattened().as_flattened(),
            b_out: self.b_out.as_flattened(),
            s_in: &[],
            s_hid: &[],
            s_out: &[],
        }
    }
}

impl<const IN: usize, const H: usize, const L: usize, const OUT: usize, const HEADS: usize, W: Unscaled> MlpStore
    for Mlp<IN, H, L, OUT, HEADS, W>
{
    type Weight = W;
    #[inline(always)]
    fn view(&self) -> MlpRef<'_, W> {
        Mlp::view(self)
    }
}

/// [`Mlp`] with `i8` weights and one `f32` scale per output row of each
/// matrix: row `k` of a layer computes `b[k] + s[k]·Σᵢ q[k][i]·x[i]`
/// ([`crate::weights`]). Same sizes and layout as [`Mlp`].
#[derive(Clone, Debug, PartialEq)]
pub struct MlpI8<const IN: usize, const H: usize, const L: usize, const OUT: usize, const HEADS: usize> {
    /// Hidden nonlinearity.
    pub act: Activation,
    /// First layer weights, `[hidden][input]`.
    pub w_in: [[i8; IN]; H],
    /// Row scales of `w_in`.
    pub s_in: [f32; H],
    /// First layer biases.
    pub b_in: [f32; H],
    /// Hidden-to-hidden weights, `[layer][out][in]`.
    pub w_hid: [[[i8; H]; H]; L],
    /// Row scales of `w_hid`, `[layer][out]`.
    pub s_hid: [[f32; H]; L],
    /// Hidden-to-hidden biases.
    pub b_hid: [[f32; H]; L],
    /// Output weights, `[head][output][hidden]`.
    pub w_out: [[[i8; H]; OUT]; HEADS],
    /// Row scales of `w_out`, `[head][output]`.
    pub s_out: [[f32; OUT]; HEADS],
    /// Output biases, `[head][output]`.
    pub b_out: [[f32; OUT]; HEADS],
}

impl<const IN: usize, const H: usize, const L: usize, const OUT: usize, const HEADS: usize>
    MlpI8<IN, H, L, OUT, HEADS>
{
    /// The shape of this network.
    pub const fn shape() -> MlpShape {
        Mlp::<IN, H, L, OUT, HEADS>::shape()
    }

    /// Borrow as the slice-level view that implements the maths.
    #[inline(always)]
    pub fn view(&self) -> MlpRef<'_, i8> {
        MlpRef {
            shape: Self::shape(),
            act: self.act,
            w_in: self.w_in.as_flattened(),
            w_cond: &[],
            b_in: &self.b_in,
            w_hid: self.w_hid.as_flattened().as_flattened(),
            b_hid: self.b_hid.as_flattened(),
            w_out: self.w_out.as_flattened().as_flattened(),
            b_out: self.b_out.as_flattened(),
            s_in: &self.s_in,
            s_hid: self.s_hid.as_flattened(),
            s_out: self.s_out.as_flattened(),
        }
    }
}

impl<const IN: usize, const H: usize, const L: usize, const OUT: usize, const HEADS: usize> MlpStore
    for MlpI8<IN, H, L, OUT, HEADS>
{
    type Weight = i8;
    #[inline(always)]
    fn view(&self) -> MlpRef<'_, i8> {
        MlpI8::view(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dense` gives exactly `b + dot(row, x)` for every shape: rows and
    /// inputs not multiples of four, `x` longer or shorter than a row.
    #[test]
    fn dense_is_dot_bit_for_bit() {
        let mut st = 1u32;
        let mut next = || {
            st = st.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (st >> 8) as f32 / 8_388_608.0 - 1.0
        };
        for n in 0..11 {
            for rows in 0..11 {
                for extra in [0usize, 3] {
                    let w: std::vec::Vec<f32> = (0..rows * n).map(|_| next()).collect();
                    let b: std::vec::Vec<f32> = (0..rows).map(|_| next()).collect();
                    let x: std::vec::Vec<f32> = (0..n + extra).map(|_| next() * 3.0).collect();
                    for xs in [&x[..], &x[..n.saturating_sub(1)]] {
                        let mut out = std::vec![f32::NAN; rows];
                        dense(&w, n, &b, xs, &mut out);
                        for (k, o) in out.iter().enumerate() {
                            let row = &w[k * n..(k + 1) * n];
                            assert_eq!(o.to_bits(), (b[k] + dot(row, xs)).to_bits(), "n {n} rows {rows} k {k}");
                        }
                        // i8 with row scales and f16: the same walk, the
                        // defined per-row arithmetic.
                        let q: std::vec::Vec<i8> = w.iter().map(|v| (v * 127.0) as i8).collect();
                        let s: std::vec::Vec<f32> = (0..rows).map(|_| next() * 0.01).collect();
                        dense_w(&q, &s, n, &b, xs, &mut out);
                        for (k, o) in out.iter().enumerate() {
                            let want = b[k] + s[k] * dot_w(&q[k * n..(k + 1) * n], xs);
                            assert_eq!(o.to_bits(), want.to_bits(), "i8: n {n} rows {rows} k {k}");
                        }
                        let h: std::vec::Vec<u16> = w.iter().map(|v| crate::weights::f32_to_f16(*v)).collect();
                        dense_w(&h, &[], n, &b, xs, &mut out);
                        for (k, o) in out.iter().enumerate() {
                            let want = b[k] + dot_w(&h[k * n..(k + 1) * n], xs);
                            assert_eq!(o.to_bits(), want.to_bits(), "f16: n {n} rows {rows} k {k}");
                        }
                    }
                }
            }
        }
    }
}
