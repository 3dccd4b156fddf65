//! Row-blocked passes for hosts: up to [`BLOCK`] rows at a time, each row's
//! numbers bit-identical to the single-row code.
//!
//! A device scores one row at a time ([`crate::mlp::dense`], four output
//! rows per pass over the input). A host scoring or training on many rows
//! gains from reading each weight once per block of rows and letting the
//! compiler vectorise *across rows*: the rows are independent lanes, and
//! every row's sums are still taken one term at a time in the single-row
//! order (`((0 + w₀x₀) + w₁x₁) + …`, then `b +`), so no sum is reassociated
//! and the results are those of the single-row code, bit for bit. Nothing
//! here is used by the single-row path; firmware does not link it.
//!
//! Layout: a block of activations is a slice of `[f32; BLOCK]`, one entry
//! per unit, lane `r` for row `r` (unit-major, "transposed"). Lanes past the
//! block's row count `n` are padding: they are computed (their values are
//! never read into a result) and never added into a gradient.
//!
//! The backward passes add each row's parameter gradient in row order: the
//! gradient of one parameter receives `row 0`'s term, then `row 1`'s, …,
//! exactly as calling the single-row backward on the rows in order does.
//!
//! Wider vectors (feature `std`, x86-64 hosts only): the MLP passes
//! ([`MlpRef::forward_block`], [`MlpRef::forward_block_cached`],
//! [`MlpRef::backward_block`]) are compiled twice, for the baseline target
//! and with AVX2 enabled, and the AVX2 copy is chosen at run time when the
//! CPU has it ([`wide_vectors`]). A block of 16 lanes is then two 256-bit
//! registers instead of four 128-bit ones. The AVX2 copy is the same source:
//! the same IEEE multiplies and adds in the same order (FMA is *not*
//! enabled: a fused multiply–add rounds once and would break host ==
//! device), so its results are bit-identical. Without the feature (the
//! device, `no_std`) none of this exists.

use crate::mlp::{row_sum, MlpGrad, MlpRef};
use crate::weights::Weight;

/// Rows per block of the blocked passes.
pub const BLOCK: usize = 16;

/// One lane per row of a block.
pub type Lanes = [f32; BLOCK];

/// Output rows per pass of the blocked MLP kernels without AVX2 (four with
/// AVX2): each keeps `BLOCK` running sums, so four fill x86-64's sixteen
/// 128-bit registers only at two; AArch64 has thirty-two.
const BASE_U: usize = if cfg!(target_arch = "x86_64") { 2 } else { 4 };

/// Transpose `n ≤ BLOCK` rows of length `d` (row-major in `rows`) into
/// `out[j][r] = rows[r·d + j]`, `j < d`; lanes `n..` are set to zero.
#[inline]
pub fn to_lanes(rows: &[f32], d: usize, out: &mut [Lanes]) {
    for (j, o) in out.iter_mut().enumerate().take(d) {
        *o = [0.0; BLOCK];
        for (r, l) in o.iter_mut().enumerate() {
            if let Some(v) = rows.get(r * d + j) {
                *l = *v;
            }
        }
    }
}

/// The inverse of [`to_lanes`]: `rows[r·d + j] = lanes[j][r]` for the rows
/// `rows` holds (`n = rows.len() / d`).
#[inline]
pub fn from_lanes(lanes: &[Lanes], d: usize, rows: &mut [f32]) {
    if d == 0 {
        return;
    }
    for (r, row) in rows.chunks_exact_mut(d).enumerate().take(BLOCK) {
        for (v, l) in row.iter_mut().zip(lanes) {
            *v = l[r];
        }
    }
}

/// Blocked [`crate::mlp::dense_w`]: `out[k][r] = row_sum(b[k], scale[k],
/// Σᵢ w[k·n + i]·x[i][r])` for every lane, each sum from `0.0` in input
/// order. `x` has at least `n` entries. Four output rows per pass, so each
/// input block is loaded once per four weights.
#[inline(always)]
pub fn dense_block<W: Weight>(w: &[W], scale: &[f32], n: usize, b: &[f32], x: &[Lanes], out: &mut [Lanes]) {
    dense_block_u::<W, 4>(w, scale, n, b, x, out);
}

/// [`dense_block`] with `U` output rows per pass (`U` independent chains of
/// additions per lane, `U × BLOCK` running sums: with 16 lanes, 4 fill
/// AVX2's sixteen 256-bit registers and 2 the baseline's sixteen 128-bit
/// ones on x86-64, see `BASE_U`). Every sum keeps its order.
#[inline(always)]
fn dense_block_u<W: Weight, const U: usize>(
    w: &[W],
    scale: &[f32],
    n: usize,
    b: &[f32],
    x: &[Lanes],
    out: &mut [Lanes],
) {
    let x = &x[..n];
    let sc = |k: usize| if W::SCALED { scale[k] } else { 1.0 };
    let rows = out.len().min(b.len());
    let mut k = 0;
    while k + U <= rows {
        let wk: [&[W]; U] = core::array::from_fn(|q| &w[(k + q) * n..(k + q + 1) * n]);
        let mut a = [[0.0f32; BLOCK]; U];
        for i in 0..n {
            let xi = &x[i];
            let c: [f32; U] = core::array::from_fn(|q| wk[q][i].to_f32());
            for r in 0..BLOCK {
                for q in 0..U {
                    a[q][r] += c[q] * xi[r];
                }
            }
        }
        for (q, aq) in a.iter().enumerate() {
            let (bk, sk) = (b[k + q], sc(k + q));
            for r in 0..BLOCK {
                out[k + q][r] = row_sum::<W>(bk, sk, aq[r]);
            }
        }
        k += U;
    }
    while k < rows {
        let wk = &w[k * n..(k + 1) * n];
        let mut a = [0.0f32; BLOCK];
        for (c, xi) in wk.iter().zip(x) {
            let c = c.to_f32();
            for r in 0..BLOCK {
                a[r] += c * xi[r];
            }
        }
        let (bk, sk) = (b[k], sc(k));
        for r in 0..BLOCK {
            out[k][r] = row_sum::<W>(bk, sk, a[r]);
        }
        k += 1;
    }
}

/// `g[r·m + i] += Σ_r c[r]·a[r][i]`, the terms added one row at a time in
/// row order (`n = c.len()` rows; `a` row-major with rows of length `m`):
/// the parameter-gradient update of `n` single-row backward passes.
#[inline(always)]
fn rank_update(g: &mut [f32], c: &[f32], a: &[f32], m: usize) {
    let n = c.len();
    let g = &mut g[..m];
    let a = &a[..n * m];
    let mut i = 0;
    // Tiles of `T` columns: `T / 8` independent chains of additions, so the
    // adds of consecutive rows (one chain per column) overlap.
    #[inline(always)]
    fn tile<const T: usize>(g: &mut [f32], c: &[f32], a: &[f32], m: usize, i: usize) {
        let mut acc = [0.0f32; T];
        acc.copy_from_slice(&g[i..i + T]);
        for (r, cr) in c.iter().enumerate() {
            let ar: &[f32; T] = a[r * m + i..r * m + i + T].try_into().expect("tile");
            for q in 0..T {
                acc[q] += cr * ar[q];
            }
        }
        g[i..i + T].copy_from_slice(&acc);
    }
    while i + 32 <= m {
        tile::<32>(g, c, a, m, i);
        i += 32;
    }
    while i + 8 <= m {
        tile::<8>(g, c, a, m, i);
        i += 8;
    }
    for j in i..m {
        let mut v = g[j];
        for r in 0..n {
            v += c[r] * a[r * m + j];
        }
        g[j] = v;
    }
}

/// `gx[i][·] += Σ_k gpre[k][·]·w[k·m + i]`, the terms added in `k` order
/// (per lane: the single-row `for k { gx[i] += gpre·w[k][i] }`).
#[inline(always)]
fn input_grad(w: &[f32], m: usize, gpre: &[Lanes], gx: &mut [Lanes]) {
    let gx = &mut gx[..m];
    let h = gpre.len();
    let mut k = 0;
    while k + 4 <= h {
        let (g0, g1, g2, g3) = (&gpre[k], &gpre[k + 1], &gpre[k + 2], &gpre[k + 3]);
        let (w0, w1, w2, w3) = (
            &w[k * m..(k + 1) * m],
            &w[(k + 1) * m..(k + 2) * m],
            &w[(k + 2) * m..(k + 3) * m],
            &w[(k + 3) * m..(k + 4) * m],
        );
        for (i, gi) in gx.iter_mut().enumerate() {
            let (c0, c1, c2, c3) = (w0[i], w1[i], w2[i], w3[i]);
            let mut a = *gi;
            for r in 0..BLOCK {
                a[r] += g0[r] * c0;
                a[r] += g1[r] * c1;
                a[r] += g2[r] * c2;
                a[r] += g3[r] * c3;
            }
            *gi = a;
        }
        k += 4;
    }
    while k < h {
        let wk = &w[k * m..(k + 1) * m];
        let gk = &gpre[k];
        for (gi, c) in gx.iter_mut().zip(wk) {
            for r in 0..BLOCK {
                gi[r] += gk[r] * c;
            }
        }
        k += 1;
    }
}

/// Lanes of the scratch of [`MlpRef::backward_block`] for a network of
/// this shape: `2·hidden + max(hidden, input)`.
pub const fn backward_block_scratch(hidden: usize, input: usize) -> usize {
    let m = if hidden > input { hidden } else { input };
    2 * hidden + m
}

/// Lanes holding at least `floats` floats.
pub const fn lanes_for(floats: usize) -> usize {
    floats.div_ceil(BLOCK)
}

/// Whether the MLP passes of this module run their AVX2 copy: `true` on an
/// x86-64 CPU with AVX2 when the crate is built with feature `std`, unless
/// the environment variable `FLOWMOTE_NO_AVX2` was set (non-empty) when
/// this was first asked, or [`set_wide_vectors`] turned it off. Results are
/// the same either way.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
pub fn wide_vectors() -> bool {
    wide::on()
}

/// Whether the MLP passes of this module run their AVX2 copy: never
/// without feature `std` or off x86-64.
#[cfg(not(all(feature = "std", target_arch = "x86_64")))]
pub fn wide_vectors() -> bool {
    false
}

/// Use the AVX2 copy of the blocked passes when the CPU has it (`true`, the
/// default) or the baseline code (`false`); returns [`wide_vectors`] after
/// the change. For tests and timings: the results do not depend on it.
pub fn set_wide_vectors(on: bool) -> bool {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    wide::set(on);
    #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
    let _ = on;
    wide_vectors()
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod wide {
    use core::sync::atomic::{AtomicU8, Ordering};

    /// 0: not decided yet; 1: baseline; 2: AVX2.
    static MODE: AtomicU8 = AtomicU8::new(0);

    fn detected() -> bool {
        std::is_x86_feature_detected!("avx2")
    }

    #[inline]
    pub(super) fn on() -> bool {
        match MODE.load(Ordering::Relaxed) {
            1 => false,
            2 => true,
            _ => {
                let off = std::env::var_os("FLOWMOTE_NO_AVX2").is_some_and(|v| !v.is_empty());
                let on = !off && detected();
                MODE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
                on
            }
        }
    }

    pub(super) fn set(on: bool) {
        MODE.store(if on && detected() { 2 } else { 1 }, Ordering::Relaxed);
    }
}

/// [`crate::Activation::apply_slice`] inlined (so that it is compiled with
/// the caller's vector width): the same function on every element.
#[inline(always)]
fn activate(act: crate::Activation, v: &mut [f32]) {
    match act {
        crate::Activation::Tanh => v.iter_mut().for_each(|x| *x = crate::activation::tanh_inline(*x)),
        _ => v.iter_mut().for_each(|x| *x = act.apply(*x)),
    }
}

impl<W: Weight> MlpRef<'_, W> {
    /// The first layer on a block: `h = act(W_in x + b_in (+ w_cond·c))`.
    #[inline(always)]
    fn first_block<const U: usize>(&self, x: &[Lanes], c: f32, h: &mut [Lanes]) {
        let s = self.shape;
        let h = &mut h[..s.hidden];
        dense_block_u::<W, U>(self.w_in, self.s_in, s.input, self.b_in, x, h);
        if s.cond == 1 {
            // Single row: `a = row_sum(..); a += w_cond·c` — the same two roundings.
            for (hk, wc) in h.iter_mut().zip(self.w_cond) {
                for v in hk.iter_mut() {
                    *v += wc * c;
                }
            }
        }
        activate(self.act, h.as_flattened_mut());
    }

    /// Hidden layer `l` (0-based among the `depth − 1`) on a block.
    #[inline(always)]
    fn hidden_block<const U: usize>(&self, l: usize, x: &[Lanes], y: &mut [Lanes]) {
        let h = self.shape.hidden;
        let w = &self.w_hid[l * h * h..(l + 1) * h * h];
        let b = &self.b_hid[l * h..(l + 1) * h];
        let s = if W::SCALED {
            &self.s_hid[l * h..(l + 1) * h]
        } else {
            &[][..]
        };
        let y = &mut y[..h];
        dense_block_u::<W, U>(w, s, h, b, x, y);
        activate(self.act, y.as_flattened_mut());
    }

    /// Blocked [`MlpRef::forward`]: `x` holds `input` lanes, `h0`, `h1`
    /// `hidden` lanes each, `out` `output` lanes. Every lane's outputs are
    /// bit-identical to [`MlpRef::forward`] on that row.
    pub fn forward_block(&self, x: &[Lanes], c: f32, h0: &mut [Lanes], h1: &mut [Lanes], out: &mut [Lanes]) {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        if wide::on() {
            // SAFETY: `wide::on` is true only on a CPU with AVX2.
            unsafe { self.forward_block_avx2(x, c, h0, h1, out) };
            return;
        }
        self.forward_block_impl::<BASE_U>(x, c, h0, h1, out);
    }

    /// [`MlpRef::forward_block`] compiled with AVX2.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    #[target_feature(enable = "avx2")]
    unsafe fn forward_block_avx2(&self, x: &[Lanes], c: f32, h0: &mut [Lanes], h1: &mut [Lanes], out: &mut [Lanes]) {
        self.forward_block_impl::<4>(x, c, h0, h1, out);
    }

    #[inline(always)]
    fn forward_block_impl<const U: usize>(
        &self,
        x: &[Lanes],
        c: f32,
        h0: &mut [Lanes],
        h1: &mut [Lanes],
        out: &mut [Lanes],
    ) {
        self.first_block::<U>(x, c, h0);
        let (mut a, mut b) = (h0, h1);
        for l in 0..self.shape.depth - 1 {
            self.hidden_block::<U>(l, a, b);
            core::mem::swap(&mut a, &mut b);
        }
        let s = self.shape;
        dense_block_u::<W, U>(self.w_out, self.s_out, s.hidden, self.b_out, a, &mut out[..s.output]);
    }

    /// Blocked [`MlpRef::forward_cached`]: keeps every hidden activation in
    /// `acts` (`depth × hidden` lanes, layer-major).
    pub fn forward_block_cached(&self, x: &[Lanes], c: f32, acts: &mut [Lanes], out: &mut [Lanes]) {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        if wide::on() {
            // SAFETY: `wide::on` is true only on a CPU with AVX2.
            unsafe { self.forward_block_cached_avx2(x, c, acts, out) };
            return;
        }
        self.forward_block_cached_impl::<BASE_U>(x, c, acts, out);
    }

    /// [`MlpRef::forward_block_cached`] compiled with AVX2.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    #[target_feature(enable = "avx2")]
    unsafe fn forward_block_cached_avx2(&self, x: &[Lanes], c: f32, acts: &mut [Lanes], out: &mut [Lanes]) {
        self.forward_block_cached_impl::<4>(x, c, acts, out);
    }

    #[inline(always)]
    fn forward_block_cached_impl<const U: usize>(&self, x: &[Lanes], c: f32, acts: &mut [Lanes], out: &mut [Lanes]) {
        let s = self.shape;
        let h = s.hidden;
        self.first_block::<U>(x, c, &mut acts[..h]);
        for l in 0..s.depth - 1 {
            let (prev, next) = acts[l * h..(l + 2) * h].split_at_mut(h);
            self.hidden_block::<U>(l, prev, next);
        }
        dense_block_u::<W, U>(
            self.w_out,
            self.s_out,
            h,
            self.b_out,
            &acts[(s.depth - 1) * h..s.depth * h],
            &mut out[..s.output],
        );
    }
}

impl MlpRef<'_, f32> {
    /// Blocked [`MlpRef::backward`] for the first `n ≤ BLOCK` lanes: given
    /// the inputs `x` (`input` lanes), the activations of
    /// [`MlpRef::forward_block_cached`] and `g_out` (`output` lanes), *adds*
    /// every row's `∂L/∂θ` to `grad`, row after row, and, if given, its
    /// `∂L/∂x` to `g_x` (`input` lanes). `scratch` holds
    /// [`backward_block_scratch`] lanes.
    ///
    /// Bit-identical to `n` calls of [`MlpRef::backward`] on the rows in
    /// order (gradients and `g_x`).
    #[allow(clippy::too_many_arguments)]
    pub fn backward_block(
        &self,
        n: usize,
        x: &[Lanes],
        c: f32,
        acts: &[Lanes],
        g_out: &[Lanes],
        g_x: Option<&mut [Lanes]>,
        scratch: &mut [Lanes],
        grad: &mut MlpGrad<'_>,
    ) {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        if wide::on() {
            // SAFETY: `wide::on` is true only on a CPU with AVX2.
            unsafe { self.backward_block_avx2(n, x, c, acts, g_out, g_x, scratch, grad) };
            return;
        }
        self.backward_block_impl(n, x, c, acts, g_out, g_x, scratch, grad);
    }

    /// [`MlpRef::backward_block`] compiled with AVX2.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    #[target_feature(enable = "avx2")]
    unsafe fn backward_block_avx2(
        &self,
        n: usize,
        x: &[Lanes],
        c: f32,
        acts: &[Lanes],
        g_out: &[Lanes],
        g_x: Option<&mut [Lanes]>,
        scratch: &mut [Lanes],
        grad: &mut MlpGrad<'_>,
    ) {
        self.backward_block_impl(n, x, c, acts, g_out, g_x, scratch, grad);
    }

    #[inline(always)]
    fn backward_block_impl(
        &self,
        n: usize,
        x: &[Lanes],
        c: f32,
        acts: &[Lanes],
        g_out: &[Lanes],
        g_x: Option<&mut [Lanes]>,
        scratch: &mut [Lanes],
        grad: &mut MlpGrad<'_>,
    ) {
        let s = self.shape;
        let h = s.hidden;
        let n = n.min(BLOCK);
        let (t0, rest) = scratch.split_at_mut(h);
        let (t1, rest) = rest.split_at_mut(h);
        let trans = rest.as_flattened_mut();
        // `trans` holds a layer's input row-major ([r][m]) for the rank-n
        // parameter updates.
        let row_major = |src: &[Lanes], m: usize, dst: &mut [f32]| {
            for r in 0..n {
                for (j, v) in src.iter().take(m).enumerate() {
                    dst[r * m + j] = v[r];
                }
            }
        };
        let mut coef = [0.0f32; BLOCK];

        // Output layer.
        let last = &acts[(s.depth - 1) * h..s.depth * h];
        row_major(last, h, trans);
        let gh = &mut t0[..h];
        for v in gh.iter_mut() {
            *v = [0.0; BLOCK];
        }
        for j in 0..s.output {
            let g = g_out[j];
            for gr in &g[..n] {
                grad.b_out[j] += gr;
            }
            rank_update(&mut grad.w_out[j * h..(j + 1) * h], &g[..n], trans, h);
        }
        // gh[k] = Σ_j g_out[j]·w_out[j][k], j in order from 0.
        input_grad(self.w_out, h, &g_out[..s.output], gh);

        // Hidden layers, last first; `gcur` holds ∂L/∂(post-activation).
        let (mut gcur, mut gprev) = (t0, t1);
        for l in (1..s.depth).rev() {
            let out_act = &acts[l * h..(l + 1) * h];
            let in_act = &acts[(l - 1) * h..l * h];
            let w = &self.w_hid[(l - 1) * h * h..l * h * h];
            // gcur ← ∂L/∂(pre-activation), per lane as the single row does.
            for (gk, ok) in gcur[..h].iter_mut().zip(out_act) {
                for r in 0..BLOCK {
                    gk[r] *= self.act.derivative_from_output(ok[r]);
                }
            }
            row_major(in_act, h, trans);
            let gw = &mut grad.w_hid[(l - 1) * h * h..l * h * h];
            let gb = &mut grad.b_hid[(l - 1) * h..l * h];
            for k in 0..h {
                coef[..n].copy_from_slice(&gcur[k][..n]);
                for cr in &coef[..n] {
                    gb[k] += cr;
                }
                rank_update(&mut gw[k * h..(k + 1) * h], &coef[..n], trans, h);
            }
            let gp = &mut gprev[..h];
            for v in gp.iter_mut() {
                *v = [0.0; BLOCK];
            }
            input_grad(w, h, &gcur[..h], gp);
            core::mem::swap(&mut gcur, &mut gprev);
        }

        // First layer.
        let first = &acts[..h];
        let m = s.input;
        for (gk, ok) in gcur[..h].iter_mut().zip(first) {
            for r in 0..BLOCK {
                gk[r] *= self.act.derivative_from_output(ok[r]);
            }
        }
        row_major(x, m, trans);
        for k in 0..h {
            coef[..n].copy_from_slice(&gcur[k][..n]);
            for cr in &coef[..n] {
                grad.b_in[k] += cr;
            }
            if s.cond == 1 {
                for cr in &coef[..n] {
                    grad.w_cond[k] += cr * c;
                }
            }
            rank_update(&mut grad.w_in[k * m..(k + 1) * m], &coef[..n], trans, m);
        }
        if let Some(gx) = g_x {
            input_grad(self.w_in, m, &gcur[..h], gx);
        }
    }
}

/// The elementwise map of a conditioned layer's blocked passes: what turns
/// the conditioner's outputs into the transform of `b` coordinates (the
/// affine map of MAF and the affine coupling, the splines of both spline
/// layers).
pub(crate) trait Elementwise: Copy {
    /// Conditioner outputs for `b` transformed coordinates.
    fn n_out(&self, b: usize) -> usize;
    /// Transform lanes `t` (`b` of them) in place from the conditioner's
    /// outputs `out`; each of the first `n` rows' log-det, as the
    /// single-row pass computes it.
    fn forward(&self, t: &mut [Lanes], out: &[Lanes], b: usize, n: usize) -> Lanes;
    /// The backward pass of [`Elementwise::forward`] at the input lanes
    /// `t`: `g` holds `∂L/∂y` on entry and the direct part of `∂L/∂x` on
    /// return, `g_ld[r]` is row `r`'s `∂L/∂(log-det)`; writes `∂L/∂out`
    /// into `g_out`. Rows from `n` on are padding, never added anywhere.
    fn backward(
        &self,
        t: &[Lanes],
        out: &[Lanes],
        b: usize,
        n: usize,
        g: &mut [Lanes],
        g_ld: &[f32],
        g_out: &mut [Lanes],
    );
}

/// The row-blocked passes of a layer whose MLP conditioner reads lanes
/// `..cond` of a block and whose elementwise map `map` transforms lanes
/// `off..off + b` (a coupling: `cond = off = a`; an autoregressive layer:
/// `cond = d`, `off = 0`, `b = d`). The conditioner runs vectorised across
/// the rows; every row's numbers are bit-identical to the single-row pass.
/// The layers reach these through [`crate::layer::SliceBijector`] and
/// [`crate::layer::SliceBackward`].
#[derive(Clone, Copy)]
pub(crate) struct Conditioned<'v, 'a, W: Weight, E> {
    pub(crate) net: &'v MlpRef<'a, W>,
    pub(crate) cond: usize,
    pub(crate) off: usize,
    pub(crate) b: usize,
    pub(crate) map: E,
}

impl<W: Weight, E: Elementwise> Conditioned<'_, '_, W, E> {
    fn dim(&self) -> usize {
        self.off + self.b
    }

    fn n_out(&self) -> usize {
        self.map.n_out(self.b)
    }

    /// Lanes of the scratch of the forward pass.
    pub(crate) fn scratch_len(&self) -> usize {
        self.dim() + 2 * self.net.shape.hidden + self.n_out()
    }

    /// Forward of `n = ld.len() ≤ BLOCK` rows (`x`: `n × d`, row after row).
    fn forward(&self, x: &mut [f32], ld: &mut [f32], scratch: &mut [Lanes]) {
        let d = self.dim();
        let h = self.net.shape.hidden;
        let n = ld.len().min(BLOCK);
        let (xt, rest) = scratch.split_at_mut(d);
        let (h0, rest) = rest.split_at_mut(h);
        let (h1, rest) = rest.split_at_mut(h);
        let out = &mut rest[..self.n_out()];
        to_lanes(&x[..n * d], d, xt);
        self.net.forward_block(&xt[..self.cond], 0.0, h0, h1, out);
        let lds = self.map.forward(&mut xt[self.off..], out, self.b, n);
        from_lanes(xt, d, &mut x[..n * d]);
        ld[..n].copy_from_slice(&lds[..n]);
    }

    /// [`Conditioned::forward`] of any number of rows, block by block.
    pub(crate) fn forward_rows(&self, x: &mut [f32], ld: &mut [f32], scratch: &mut [Lanes]) {
        let d = self.dim();
        for (xs, ls) in x.chunks_mut(d * BLOCK).zip(ld.chunks_mut(BLOCK)) {
            self.forward(xs, ls, scratch);
        }
    }
}

impl<E: Elementwise> Conditioned<'_, '_, f32, E> {
    /// Lanes of the scratch of the backward passes.
    pub(crate) fn train_scratch_len(&self) -> usize {
        let sh = self.net.shape;
        2 * self.dim() + sh.n_activations() + 2 * self.n_out() + backward_block_scratch(sh.hidden, sh.input)
    }

    /// Lanes of the `saved` slice: the conditioner's activations and outputs.
    pub(crate) fn saved_len(&self) -> usize {
        self.net.shape.n_activations() + self.n_out()
    }

    /// Backward of `n = g_ld.len() ≤ BLOCK` rows (`x`, `g`: `n × d`); the
    /// parameter gradient is added row after row, bit-identical to `n`
    /// single-row calls in order.
    pub(crate) fn backward(
        &self,
        x: &[f32],
        g: &mut [f32],
        g_ld: &[f32],
        grad: &mut MlpGrad<'_>,
        scratch: &mut [Lanes],
    ) {
        let (head, rest) = scratch.split_at_mut(self.saved_len());
        let (acts, out) = head.split_at_mut(self.net.shape.n_activations());
        let d = self.dim();
        let n = g_ld.len().min(BLOCK);
        let xt = &mut rest[..d];
        to_lanes(&x[..n * d], d, xt);
        self.net.forward_block_cached(&xt[..self.cond], 0.0, acts, out);
        self.backward_saved(x, g, g_ld, grad, rest, head);
    }

    /// Forward of one block (`n = ld.len() ≤ BLOCK` rows) keeping the
    /// conditioner's activations and outputs in `saved`
    /// ([`Conditioned::saved_len`] lanes); bit-identical results.
    pub(crate) fn forward_saved(&self, x: &mut [f32], ld: &mut [f32], scratch: &mut [Lanes], saved: &mut [Lanes]) {
        let d = self.dim();
        let n = ld.len().min(BLOCK);
        let xt = &mut scratch[..d];
        let (acts, out) = saved.split_at_mut(self.net.shape.n_activations());
        let out = &mut out[..self.n_out()];
        to_lanes(&x[..n * d], d, xt);
        self.net.forward_block_cached(&xt[..self.cond], 0.0, acts, out);
        let lds = self.map.forward(&mut xt[self.off..], out, self.b, n);
        from_lanes(xt, d, &mut x[..n * d]);
        ld[..n].copy_from_slice(&lds[..n]);
    }

    /// Backward of the rows [`Conditioned::forward_saved`] took forward
    /// with this `saved`: the conditioner is not run again.
    pub(crate) fn backward_saved(
        &self,
        x: &[f32],
        g: &mut [f32],
        g_ld: &[f32],
        grad: &mut MlpGrad<'_>,
        scratch: &mut [Lanes],
        saved: &[Lanes],
    ) {
        let d = self.dim();
        let n = g_ld.len().min(BLOCK);
        let (acts, out) = saved.split_at(self.net.shape.n_activations());
        let (xt, rest) = scratch.split_at_mut(d);
        let (gt, rest) = rest.split_at_mut(d);
        let (g_out, tail) = rest.split_at_mut(self.n_out());
        to_lanes(&x[..n * d], d, xt);
        to_lanes(&g[..n * d], d, gt);
        self.map
            .backward(&xt[self.off..], out, self.b, n, &mut gt[self.off..], g_ld, g_out);
        self.net.backward_block(
            n,
            &xt[..self.cond],
            0.0,
            acts,
            g_out,
            Some(&mut gt[..self.cond]),
            tail,
            grad,
        );
        from_lanes(gt, d, &mut g[..n * d]);
    }
}
