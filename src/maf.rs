//! Masked autoregressive flow (MAF) with a MADE conditioner.
//!
//! `z_i = x_i·e^{s_i(x_<i)} + t_i(x_<i)`: the density direction is one pass of
//! the masked network, the inverse (sampling) takes `D` passes. Masked weights
//! are stored as zeros, so the network itself is a plain [`MlpRef`]; the
//! trainer keeps them zero with [`made_mask_params`].

use crate::block::Conditioned;
use crate::block::Lanes;
use crate::coupling::{affine_backward, affine_forward, affine_inverse_one, Affine};
use crate::layer::{mlp_backward, net_scratch, vjp_scratch, SliceBijector};
use crate::mlp::{MlpGrad, MlpRef, MlpShape};
use crate::weights::{MlpStore, Weight};
use crate::{Bijector, Error};

/// MADE degree of hidden unit `k` for `d` inputs: `1 + k mod (d − 1)`.
#[inline]
pub const fn hidden_degree(k: usize, d: usize) -> usize {
    if d > 1 {
        1 + k % (d - 1)
    } else {
        1
    }
}

/// Zero every entry of a flat MLP parameter (or gradient) vector that the
/// MADE masks forbid, for `shape.input = d` and `shape.output = heads·d`
/// (output `head·d + j` has degree `j + 1`, so it sees only inputs `< j`).
pub fn made_mask_heads(shape: MlpShape, heads: usize, p: &mut [f32]) -> Result<(), Error> {
    let d = shape.input;
    if heads == 0 || shape.output != heads * d || shape.cond != 0 {
        return Err(Error::ShapeMismatch);
    }
    let h = shape.hidden;
    let g = MlpGrad::from_flat(shape, p)?;
    for k in 0..h {
        for i in 0..d {
            if hidden_degree(k, d) < i + 1 {
                g.w_in[k * d + i] = 0.0;
            }
        }
    }
    for l in 0..shape.depth - 1 {
        for k in 0..h {
            for m in 0..h {
                if hidden_degree(k, d) < hidden_degree(m, d) {
                    g.w_hid[l * h * h + k * h + m] = 0.0;
                }
            }
        }
    }
    for o in 0..heads * d {
        for k in 0..h {
            if o % d < hidden_degree(k, d) {
                g.w_out[o * h + k] = 0.0;
            }
        }
    }
    Ok(())
}

/// `true` if every weight of `net` (input `d`, output `heads·d`) that the MADE
/// masks forbid is zero.
pub fn is_made_masked<W: Weight>(net: &MlpRef<'_, W>, heads: usize) -> bool {
    let s = net.shape;
    let (d, h) = (s.input, s.hidden);
    if s.output != heads * d || s.cond != 0 {
        return false;
    }
    let ok_in = (0..h).all(|k| (0..d).all(|i| hidden_degree(k, d) > i || net.w_in[k * d + i].to_f32() == 0.0));
    let ok_hid = (0..s.depth - 1).all(|l| {
        (0..h).all(|k| {
            (0..h)
                .all(|m| hidden_degree(k, d) >= hidden_degree(m, d) || net.w_hid[l * h * h + k * h + m].to_f32() == 0.0)
        })
    });
    let ok_out =
        (0..heads * d).all(|o| (0..h).all(|k| o % d >= hidden_degree(k, d) || net.w_out[o * h + k].to_f32() == 0.0));
    ok_in && ok_hid && ok_out
}

/// [`made_mask_heads`] with two heads (shifts and raw log-scales), the
/// MAF conditioner's shape (`shape.output = 2d`).
pub fn made_mask_params(shape: MlpShape, p: &mut [f32]) -> Result<(), Error> {
    made_mask_heads(shape, 2, p)
}

/// Borrowed MAF layer on run-time sizes: the one implementation.
#[derive(Clone, Copy, Debug)]
pub struct MafRef<'a, W: Weight = f32> {
    /// Soft-clamp bound on log-scales.
    pub clamp: f32,
    /// Masked conditioner: `d` inputs → `2d` outputs (shifts, raw log-scales).
    pub net: MlpRef<'a, W>,
}

impl<W: Weight> MafRef<'_, W> {
    /// The geometry of the row-blocked passes.
    fn block(&self) -> Conditioned<'_, '_, W, Affine> {
        Conditioned {
            net: &self.net,
            cond: self.dim(),
            off: 0,
            b: self.dim(),
            map: Affine { clamp: self.clamp },
        }
    }

    /// Dimension.
    #[inline(always)]
    pub fn dim(&self) -> usize {
        self.net.shape.input
    }

    /// Density direction in place, one network pass; `out` holds `2d` floats.
    #[inline(always)]
    pub fn forward(&self, x: &mut [f32], h0: &mut [f32], h1: &mut [f32], out: &mut [f32]) -> f32 {
        let d = self.dim();
        self.net.forward(x, 0.0, h0, h1, out);
        let (shift, raw) = out.split_at(d.min(out.len()));
        affine_forward(x, shift, raw, self.clamp)
    }

    /// Sampling direction in place, `d` network passes; `xbuf` holds `d` floats.
    #[inline(always)]
    pub fn inverse(&self, z: &mut [f32], xbuf: &mut [f32], h0: &mut [f32], h1: &mut [f32], out: &mut [f32]) -> f32 {
        let d = self.dim();
        xbuf[..d].fill(0.0);
        let mut ld = 0.0;
        for i in 0..d {
            self.net.forward(&xbuf[..d], 0.0, h0, h1, out);
            let (xi, l) = affine_inverse_one(z[i], out[i], out[d + i], self.clamp);
            xbuf[i] = xi;
            ld += l;
        }
        z[..d].copy_from_slice(&xbuf[..d]);
        ld
    }
}

impl MafRef<'_> {
    /// Scratch floats [`MafRef::backward`] needs.
    pub fn train_scratch_len(&self) -> usize {
        self.net.shape.n_activations() + 4 * self.dim() + 2 * self.net.shape.hidden
    }

    /// Backward pass of [`MafRef::forward`] at input `x`; conventions as in
    /// [`crate::AffineCouplingRef::backward`].
    pub fn backward(&self, x: &[f32], g: &mut [f32], g_ld: f32, grad: &mut MlpGrad<'_>, scratch: &mut [f32]) {
        self.vjp(x, g, g_ld, Some(grad), scratch)
    }

    /// The backward pass with an optional parameter gradient (`None`: only
    /// `∂L/∂x`, what `SliceBackward::backward_input` runs).
    fn vjp(&self, x: &[f32], g: &mut [f32], g_ld: f32, grad: Option<&mut MlpGrad<'_>>, scratch: &mut [f32]) {
        let d = self.dim();
        let sh = self.net.shape;
        let Some((acts, out, g_out, t0, t1)) = vjp_scratch(scratch, sh.n_activations(), 2 * d, sh.hidden) else {
            return;
        };
        self.net.forward_cached(x, 0.0, acts, out);
        let (Some((_, raw)), Some((g_shift, g_raw))) = (out.split_at_checked(d), g_out.split_at_mut_checked(d)) else {
            return;
        };
        affine_backward(x, raw, self.clamp, g, g_ld, g_shift, g_raw);
        self.net.vjp(x, 0.0, acts, g_out, Some(g), t0, t1, grad);
    }
}

/// Scratch: `h0`, `h1` (`hidden` each), `out` (`2d`), then `xbuf` (`d`,
/// for the inverse).
impl<W: Weight> SliceBijector for MafRef<'_, W> {
    fn scratch_len(&self) -> usize {
        2 * self.net.shape.hidden + 3 * self.dim()
    }
    fn forward_flat(&self, x: &mut [f32], s: &mut [f32]) -> f32 {
        let (h0, h1, out, _) = net_scratch(s, self.net.shape.hidden, 2 * self.dim());
        self.forward(x, h0, h1, out)
    }
    fn inverse_flat(&self, z: &mut [f32], s: &mut [f32]) -> f32 {
        let (h0, h1, out, xbuf) = net_scratch(s, self.net.shape.hidden, 2 * self.dim());
        self.inverse(z, xbuf, h0, h1, out)
    }
    fn block_scratch_len(&self) -> usize {
        self.block().scratch_len()
    }
    fn forward_block(&self, x: &mut [f32], ld: &mut [f32], scratch: &mut [Lanes]) {
        self.block().forward_rows(x, ld, scratch)
    }
}

mlp_backward!(MafRef, blocked);

/// Const-generic MAF layer for `static` models: dimension `D`, `H` hidden
/// units, `L + 1` hidden layers, weights stored as `W` (`f32`, `F16` or
/// `i8`; [`crate::weights`]). Masked weights must be zero (exported models
/// are); [`Maf::is_masked`] checks it.
#[derive(Clone, Debug, PartialEq)]
pub struct Maf<const D: usize, const H: usize, const L: usize, W: Weight = f32> {
    /// Soft-clamp bound on log-scales (> 0).
    pub clamp: f32,
    /// Masked conditioner; head 0 = shifts, head 1 = raw log-scales.
    pub net: W::Mlp<D, H, L, D, 2>,
}

impl<const D: usize, const H: usize, const L: usize, W: Weight> Maf<D, H, L, W> {
    /// Borrow as the slice-level view.
    #[inline(always)]
    pub fn view(&self) -> MafRef<'_, W> {
        MafRef {
            clamp: self.clamp,
            net: self.net.view(),
        }
    }

    /// `true` if every weight the MADE masks forbid is zero (the layer is
    /// really autoregressive, so its log-det is exact).
    pub fn is_masked(&self) -> bool {
        is_made_masked(&self.net.view(), 2)
    }
}

impl<const D: usize, const H: usize, const L: usize, W: Weight> Bijector<D> for Maf<D, H, L, W> {
    #[inline(always)]
    fn forward(&self, x: &mut [f32; D]) -> Result<f32, Error> {
        let (mut h0, mut h1, mut out) = ([0.0; H], [0.0; H], [[0.0; D]; 2]);
        Ok(self.view().forward(x, &mut h0, &mut h1, out.as_flattened_mut()))
    }
    #[inline(always)]
    fn inverse(&self, z: &mut [f32; D]) -> Result<f32, Error> {
        let (mut xb, mut h0, mut h1, mut out) = ([0.0; D], [0.0; H], [0.0; H], [[0.0; D]; 2]);
        Ok(self
            .view()
            .inverse(z, &mut xb, &mut h0, &mut h1, out.as_flattened_mut()))
    }
}
