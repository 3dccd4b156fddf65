//! Affine coupling (RealNVP): the first `A` coordinates pass through and
//! condition a shift and a soft-clamped log-scale for the last `B`.
//!
//! `y_A = x_A`, `y_B = x_B ⊙ e^{s(x_A)} + t(x_A)`, `s = c·tanh(raw/c)`,
//! so `|s| < c` and `exp` cannot overflow. Log-det `Σ s`.

use crate::block::{Conditioned, Elementwise, Lanes, BLOCK};
use crate::layer::{mlp_backward, net_scratch, vjp_scratch, SliceBijector};
use crate::mlp::{MlpGrad, MlpRef};
use crate::weights::{MlpStore, Weight};
use crate::{Bijector, Error};

/// Default soft-clamp bound `c` on log-scales: `|s| < 3`, scale in (e⁻³, e³).
pub const DEFAULT_CLAMP: f32 = 3.0;

/// `(s, ds/draw)` for `s = c·tanh(raw/c)`.
#[inline(always)]
pub fn soft_clamp(raw: f32, c: f32) -> (f32, f32) {
    let t = crate::activation::tanh(raw / c);
    (c * t, 1.0 - t * t)
}

/// [`soft_clamp`] with its `tanh` inlined (the blocked passes, which
/// vectorise it across rows): the same arithmetic, the same bits.
#[inline(always)]
pub(crate) fn soft_clamp_inline(raw: f32, c: f32) -> (f32, f32) {
    let t = crate::activation::tanh_inline(raw / c);
    (c * t, 1.0 - t * t)
}

/// [`affine_forward`] on a block of rows (lanes): `x[j][r] ← x[j][r]·e^s +
/// t[j][r]`, `ld[r] = Σ_j s` from `0.0` in `j` order, per lane as
/// [`affine_forward`] computes it.
/// Runs its AVX2 copy when [`crate::block::wide_vectors`] says so (same
/// bits: the same operations, eight lanes at a time).
#[inline]
pub(crate) fn affine_forward_block(x: &mut [Lanes], shift: &[Lanes], raw: &[Lanes], c: f32, ld: &mut Lanes) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if crate::block::wide_vectors() {
        // SAFETY: `wide_vectors` is true only on a CPU with AVX2.
        unsafe { affine_forward_block_avx2(x, shift, raw, c, ld) };
        return;
    }
    affine_forward_block_impl(x, shift, raw, c, ld)
}

/// [`affine_forward_block`] compiled with AVX2.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "avx2")]
unsafe fn affine_forward_block_avx2(x: &mut [Lanes], shift: &[Lanes], raw: &[Lanes], c: f32, ld: &mut Lanes) {
    affine_forward_block_impl(x, shift, raw, c, ld)
}

#[inline(always)]
fn affine_forward_block_impl(x: &mut [Lanes], shift: &[Lanes], raw: &[Lanes], c: f32, ld: &mut Lanes) {
    *ld = [0.0; BLOCK];
    for ((v, t), rw) in x.iter_mut().zip(shift).zip(raw) {
        for r in 0..BLOCK {
            let (s, _) = soft_clamp_inline(rw[r], c);
            v[r] = v[r] * crate::activation::exp_inline(s) + t[r];
            ld[r] += s;
        }
    }
}

/// [`affine_backward`] on a block of rows (lanes), `g_ld` per lane.
#[inline(always)]
pub(crate) fn affine_backward_block(
    x: &[Lanes],
    raw: &[Lanes],
    c: f32,
    g: &mut [Lanes],
    g_ld: &Lanes,
    g_shift: &mut [Lanes],
    g_raw: &mut [Lanes],
) {
    for ((((xj, rj), gj), gs), gr) in x.iter().zip(raw).zip(g.iter_mut()).zip(g_shift).zip(g_raw) {
        for r in 0..BLOCK {
            let (s, ds) = soft_clamp_inline(rj[r], c);
            let e = crate::activation::exp_inline(s);
            gs[r] = gj[r];
            gr[r] = (gj[r] * xj[r] * e + g_ld[r]) * ds;
            gj[r] *= e;
        }
    }
}

/// The affine map as the elementwise map of the row-blocked passes
/// ([`crate::block::Conditioned`]) of MAF and the affine coupling: the
/// conditioner's outputs are `b` shifts, then `b` raw log-scales.
#[derive(Clone, Copy)]
pub(crate) struct Affine {
    /// Soft-clamp bound on log-scales.
    pub(crate) clamp: f32,
}

impl Elementwise for Affine {
    fn n_out(&self, b: usize) -> usize {
        2 * b
    }

    #[inline(always)]
    fn forward(&self, t: &mut [Lanes], out: &[Lanes], b: usize, _n: usize) -> Lanes {
        let (shift, raw) = out.split_at(b);
        let mut lds = [0.0; BLOCK];
        affine_forward_block(t, shift, raw, self.clamp, &mut lds);
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
        let mut gl = [0.0; BLOCK];
        gl[..n].copy_from_slice(&g_ld[..n]);
        let (g_shift, g_raw) = g_out.split_at_mut(b);
        affine_backward_block(t, &out[b..2 * b], self.clamp, g, &gl, g_shift, g_raw);
    }
}

/// `x ← x ⊙ e^s + t` with `s = soft_clamp(raw)`; returns `Σ s`.
#[inline(always)]
pub fn affine_forward(x: &mut [f32], shift: &[f32], raw: &[f32], c: f32) -> f32 {
    let mut ld = 0.0;
    for ((v, t), r) in x.iter_mut().zip(shift).zip(raw) {
        let (s, _) = soft_clamp(*r, c);
        *v = *v * crate::activation::exp(s) + t;
        ld += s;
    }
    ld
}

/// Inverse of [`affine_forward`] for one coordinate: `(y − t)·e^{−s}`, and `−s`.
#[inline(always)]
pub fn affine_inverse_one(y: f32, shift: f32, raw: f32, c: f32) -> (f32, f32) {
    let (s, _) = soft_clamp(raw, c);
    ((y - shift) * crate::activation::exp(-s), -s)
}

/// Backward of [`affine_forward`] at input `x`: `g` holds `∂L/∂y` on entry and
/// the direct part of `∂L/∂x` on return; writes `∂L/∂shift` and `∂L/∂raw`.
#[inline(always)]
pub fn affine_backward(
    x: &[f32],
    raw: &[f32],
    c: f32,
    g: &mut [f32],
    g_ld: f32,
    g_shift: &mut [f32],
    g_raw: &mut [f32],
) {
    // Zipped, not indexed: inconsistent lengths stop early instead of
    // panicking (the device's adaptation proof covers this path).
    for ((((&xj, &rj), gj), gs), gr) in x.iter().zip(raw).zip(g.iter_mut()).zip(g_shift).zip(g_raw) {
        let (s, ds) = soft_clamp(rj, c);
        let e = crate::activation::exp(s);
        *gs = *gj;
        *gr = (*gj * xj * e + g_ld) * ds;
        *gj *= e;
    }
}

/// Borrowed affine coupling layer on run-time sizes: the one implementation.
#[derive(Clone, Copy, Debug)]
pub struct AffineCouplingRef<'a, W: Weight = f32> {
    /// Number of conditioning (pass-through) coordinates, first in the vector.
    pub a: usize,
    /// Number of transformed coordinates, last in the vector.
    pub b: usize,
    /// Soft-clamp bound on log-scales.
    pub clamp: f32,
    /// Conditioner: `a` inputs → `2b` outputs (shifts, then raw log-scales).
    pub net: MlpRef<'a, W>,
}

impl<W: Weight> AffineCouplingRef<'_, W> {
    /// The geometry of the row-blocked passes.
    fn block(&self) -> Conditioned<'_, '_, W, Affine> {
        Conditioned {
            net: &self.net,
            cond: self.a,
            off: self.a,
            b: self.b,
            map: Affine { clamp: self.clamp },
        }
    }

    /// Forward in place; `h0`, `h1` hold `hidden` floats, `out` `2b`.
    #[inline(always)]
    pub fn forward(&self, x: &mut [f32], h0: &mut [f32], h1: &mut [f32], out: &mut [f32]) -> f32 {
        let (xa, xb) = x.split_at_mut(self.a.min(x.len()));
        self.net.forward(xa, 0.0, h0, h1, out);
        let (shift, raw) = out.split_at(self.b.min(out.len()));
        affine_forward(xb, shift, raw, self.clamp)
    }

    /// Inverse in place; same buffers as [`AffineCouplingRef::forward`].
    #[inline(always)]
    pub fn inverse(&self, y: &mut [f32], h0: &mut [f32], h1: &mut [f32], out: &mut [f32]) -> f32 {
        let (ya, yb) = y.split_at_mut(self.a);
        self.net.forward(ya, 0.0, h0, h1, out);
        let (shift, raw) = out.split_at(self.b);
        let mut ld = 0.0;
        for ((v, t), r) in yb.iter_mut().zip(shift).zip(raw) {
            let (xv, l) = affine_inverse_one(*v, *t, *r, self.clamp);
            *v = xv;
            ld += l;
        }
        ld
    }
}

impl AffineCouplingRef<'_> {
    /// Scratch floats [`AffineCouplingRef::backward`] needs.
    pub fn train_scratch_len(&self) -> usize {
        self.net.shape.n_activations() + 4 * self.b + 2 * self.net.shape.hidden
    }

    /// Backward pass of [`AffineCouplingRef::forward`] at input `x`: `g` holds
    /// `∂L/∂y` on entry and `∂L/∂x` on return, `g_ld = ∂L/∂(log-det)`; adds the
    /// conditioner's parameter gradient to `grad`. `scratch` has
    /// [`AffineCouplingRef::train_scratch_len`] floats.
    pub fn backward(&self, x: &[f32], g: &mut [f32], g_ld: f32, grad: &mut MlpGrad<'_>, scratch: &mut [f32]) {
        self.vjp(x, g, g_ld, Some(grad), scratch)
    }

    /// The backward pass with an optional parameter gradient (`None`: only
    /// `∂L/∂x`, what `SliceBackward::backward_input` runs).
    fn vjp(&self, x: &[f32], g: &mut [f32], g_ld: f32, grad: Option<&mut MlpGrad<'_>>, scratch: &mut [f32]) {
        let sh = self.net.shape;
        let (Some((acts, out, g_out, t0, t1)), Some((xa, xb)), Some((ga, gb))) = (
            vjp_scratch(scratch, sh.n_activations(), 2 * self.b, sh.hidden),
            x.split_at_checked(self.a),
            g.split_at_mut_checked(self.a),
        ) else {
            return;
        };
        self.net.forward_cached(xa, 0.0, acts, out);
        let (Some((_, raw)), Some((g_shift, g_raw))) =
            (out.split_at_checked(self.b), g_out.split_at_mut_checked(self.b))
        else {
            return;
        };
        affine_backward(xb, raw, self.clamp, gb, g_ld, g_shift, g_raw);
        self.net.vjp(xa, 0.0, acts, g_out, Some(ga), t0, t1, grad);
    }
}

/// Scratch: `h0`, `h1` (`hidden` each), `out` (`2b`).
impl<W: Weight> SliceBijector for AffineCouplingRef<'_, W> {
    fn scratch_len(&self) -> usize {
        2 * self.net.shape.hidden + 2 * self.b
    }
    fn forward_flat(&self, x: &mut [f32], s: &mut [f32]) -> f32 {
        let (h0, h1, out, _) = net_scratch(s, self.net.shape.hidden, 2 * self.b);
        self.forward(x, h0, h1, out)
    }
    fn inverse_flat(&self, z: &mut [f32], s: &mut [f32]) -> f32 {
        let (h0, h1, out, _) = net_scratch(s, self.net.shape.hidden, 2 * self.b);
        self.inverse(z, h0, h1, out)
    }
    fn block_scratch_len(&self) -> usize {
        self.block().scratch_len()
    }
    fn forward_block(&self, x: &mut [f32], ld: &mut [f32], scratch: &mut [Lanes]) {
        self.block().forward_rows(x, ld, scratch)
    }
}

mlp_backward!(AffineCouplingRef, blocked);

/// Const-generic affine coupling for `static` models: `A` conditioning and
/// `B` transformed coordinates (`A + B = D`, checked at compile time), a
/// conditioner with `H` hidden units and `L + 1` hidden layers whose
/// weights are stored as `W` (`f32`, `F16` or `i8`; [`crate::weights`]).
#[derive(Clone, Debug, PartialEq)]
pub struct AffineCoupling<const A: usize, const B: usize, const H: usize, const L: usize, W: Weight = f32> {
    /// Soft-clamp bound on log-scales (> 0).
    pub clamp: f32,
    /// Conditioner; head 0 = shifts, head 1 = raw log-scales.
    pub net: W::Mlp<A, H, L, B, 2>,
}

impl<const A: usize, const B: usize, const H: usize, const L: usize, W: Weight> AffineCoupling<A, B, H, L, W> {
    /// Borrow as the slice-level view.
    #[inline(always)]
    pub fn view(&self) -> AffineCouplingRef<'_, W> {
        AffineCouplingRef {
            a: A,
            b: B,
            clamp: self.clamp,
            net: self.net.view(),
        }
    }
}

impl<const D: usize, const A: usize, const B: usize, const H: usize, const L: usize, W: Weight> Bijector<D>
    for AffineCoupling<A, B, H, L, W>
{
    #[inline(always)]
    fn forward(&self, x: &mut [f32; D]) -> Result<f32, Error> {
        const { assert!(A + B == D, "coupling split A + B must equal D") };
        let (mut h0, mut h1, mut out) = ([0.0; H], [0.0; H], [[0.0; B]; 2]);
        Ok(self.view().forward(x, &mut h0, &mut h1, out.as_flattened_mut()))
    }
    #[inline(always)]
    fn inverse(&self, z: &mut [f32; D]) -> Result<f32, Error> {
        const { assert!(A + B == D, "coupling split A + B must equal D") };
        let (mut h0, mut h1, mut out) = ([0.0; H], [0.0; H], [[0.0; B]; 2]);
        Ok(self.view().inverse(z, &mut h0, &mut h1, out.as_flattened_mut()))
    }
}
