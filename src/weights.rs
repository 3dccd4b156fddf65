//! How an MLP's weight matrices are stored in flash: `f32`, `f16` or `i8`
//! with one `f32` scale per output row.
//!
//! Activations and sums are always `f32`. A weight is widened to `f32`
//! ([`Weight::to_f32`], exact for every storage) right before it multiplies
//! its input, and each output row is summed exactly as [`crate::mlp::dot`]
//! sums (from `0.0`, in input order, unfused multiply then add), so
//!
//! * `f32`: `out[k] = b[k] + Σᵢ w[k][i]·x[i]` (the uncompressed kernel,
//!   unchanged);
//! * `f16` ([`F16`], the IEEE 754 binary16 bit pattern in a `u16`):
//!   `out[k] = b[k] + Σᵢ f32(w[k][i])·x[i]`;
//! * `i8`: `out[k] = b[k] + scale[k]·(Σᵢ f32(q[k][i])·x[i])` — the row's
//!   scale multiplies its sum once, at the end.
//!
//! That is one defined order of operations per storage, which the host tool
//! evaluates with this very code, so exported models and their golden
//! vectors stay bit-exact. Only the matrices of the MLP conditioners are
//! compressed (that is where the bytes are); biases, scales, the time
//! column of a continuous flow's field, ActNorm, LU and mixture weights stay
//! `f32`.
//!
//! The const-generic layers name their storage by their last type
//! parameter, `f32` by default (`Maf<D, H, L>`, `Maf<D, H, L, F16>`,
//! `Maf<D, H, L, i8>`); [`Weight::Mlp`] is the matching owner of the
//! weights ([`Mlp`] for `f32` and `f16`, [`MlpI8`] for `i8`).

use crate::mlp::{Mlp, MlpI8, MlpRef};
use core::fmt::Debug;

/// IEEE 754 binary16 ("half") weights, stored as their bit patterns.
pub type F16 = u16;

/// A weight element type: how one stored weight becomes an `f32`.
pub trait Weight: Copy + Debug + PartialEq + 'static {
    /// `true` if each output row carries an `f32` scale applied to its sum
    /// (`i8`).
    const SCALED: bool;
    /// Bytes of flash one weight takes.
    const BYTES: usize;
    /// Name of the storage, as `flowmote export --weights` spells it.
    const NAME: &'static str;
    /// The const-generic owner of an MLP's weights in this storage
    /// (`IN` inputs, `H` hidden units, `L + 1` hidden layers, `HEADS × OUT`
    /// outputs; see [`Mlp`]).
    type Mlp<const IN: usize, const H: usize, const L: usize, const OUT: usize, const HEADS: usize>: MlpStore<Weight = Self>
        + Clone
        + Debug
        + PartialEq;
    /// The weight as an `f32` (exact: every `f16` and `i8` is an `f32`).
    fn to_f32(self) -> f32;
}

impl Weight for f32 {
    const SCALED: bool = false;
    const BYTES: usize = 4;
    const NAME: &'static str = "f32";
    type Mlp<const IN: usize, const H: usize, const L: usize, const OUT: usize, const HEADS: usize> =
        Mlp<IN, H, L, OUT, HEADS, f32>;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl Weight for F16 {
    const SCALED: bool = false;
    const BYTES: usize = 2;
    const NAME: &'static str = "f16";
    type Mlp<const IN: usize, const H: usize, const L: usize, const OUT: usize, const HEADS: usize> =
        Mlp<IN, H, L, OUT, HEADS, F16>;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16_to_f32(self)
    }
}

impl Weight for i8 {
    const SCALED: bool = true;
    const BYTES: usize = 1;
    const NAME: &'static str = "i8";
    type Mlp<const IN: usize, const H: usize, const L: usize, const OUT: usize, const HEADS: usize> =
        MlpI8<IN, H, L, OUT, HEADS>;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
}

/// Weight storages without row scales (`f32`, `f16`): the ones the plain
/// [`Mlp`] holds.
pub trait Unscaled: Weight {}
impl Unscaled for f32 {}
impl Unscaled for F16 {}

/// A const-generic owner of an MLP's weights: lends the slice-level view.
pub trait MlpStore {
    /// The weight storage.
    type Weight: Weight;
    /// Borrow as the slice-level view that implements the maths.
    fn view(&self) -> MlpRef<'_, Self::Weight>;
}

/// `2¹¹²`: re-biases an `f16` exponent (bias 15) as an `f32` one (bias 127).
const REBIAS: f32 = f32::from_bits((127 + 112) << 23);

/// The `f32` of an IEEE 754 binary16 bit pattern, exactly, without
/// branches: the exponent and mantissa bits are moved into `f32` position
/// and re-biased by one exact multiplication by `2¹¹²` (which also turns
/// `f16` subnormals into normal `f32`s), an all-ones exponent is made an
/// `f32` infinity or NaN by a mask, and the sign is put back. NaN payloads
/// keep their bits (a signalling NaN stays signalling).
#[inline(always)]
pub fn f16_to_f32(h: F16) -> f32 {
    let h = h as u32;
    let magnitude = f32::from_bits((h & 0x7fff) << 13) * REBIAS;
    let inf_nan = (((h & 0x7c00) == 0x7c00) as u32).wrapping_neg() & 0x7f80_0000;
    f32::from_bits(magnitude.to_bits() | inf_nan | ((h & 0x8000) << 16))
}

/// The IEEE 754 binary16 nearest to `x` (round to nearest, ties to even;
/// overflow to ±∞; NaN stays NaN, quiet). Used where a model is compressed
/// (not on a device's scoring path).
pub fn f32_to_f16(x: f32) -> F16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let a = b & 0x7fff_ffff;
    let bits = if a >= 0x7f80_0000 {
        // ∞ or NaN (quiet, top payload bits kept).
        if a > 0x7f80_0000 {
            0x7e00 | ((a >> 13) & 0x3ff) as u16
        } else {
            0x7c00
        }
    } else if a >= 0x4780_0000 {
        // ≥ 65536: beyond the largest f16 (65504) even after rounding.
        0x7c00
    } else if a < 0x3880_0000 {
        // Below 2⁻¹⁴: an f16 subnormal (or zero). Adding 0.5 (2⁻¹) aligns the
        // f16 subnormal step 2⁻²⁴ with the f32 ulp of [0.5, 1), so the f32
        // addition rounds to nearest even exactly as wanted.
        let r = f32::from_bits(a) + 0.5;
        (r.to_bits() - 0.5f32.to_bits()) as u16
    } else {
        // Normal: re-bias, round the 13 dropped mantissa bits to nearest even
        // (a carry into the exponent is right, up to ∞).
        let odd = (a >> 13) & 1;
        let r = a.wrapping_sub((127 - 15) << 23) + 0x0fff + odd;
        (r >> 13) as u16
    };
    sign | bits
}

/// Round to the nearest integer, ties away from zero (no `std` needed);
/// `|v|` below `2²³`.
fn round_half_away(v: f32) -> f32 {
    let t = v as i32 as f32; // truncates toward zero
    let frac = v - t; // exact
    if frac >= 0.5 {
        t + 1.0
    } else if frac <= -0.5 {
        t - 1.0
    } else {
        t
    }
}

/// Compress one row of `f32` weights to `i8` with one scale: `scale =
/// max|wᵢ| / 127` (0 for a row of zeros), `q[i] = round(w[i] / scale)`
/// (ties away from zero, within ±127). Returns the scale; `|w[i] −
/// q[i]·scale|` is at most about `scale / 2`. Writes `min(len)` entries.
/// Used where a model is compressed (not on a device's scoring path).
pub fn quantize_row_i8(row: &[f32], q: &mut [i8]) -> f32 {
    let max = row.iter().fold(0.0f32, |m, w| if w.abs() > m { w.abs() } else { m });
    if max == 0.0 || !max.is_finite() {
        q.iter_mut().for_each(|v| *v = 0);
        return if max == 0.0 { 0.0 } else { f32::NAN };
    }
    let scale = max / 127.0;
    for (v, w) in q.iter_mut().zip(row) {
        let r = round_half_away(w / scale);
        *v = if r > 127.0 {
            127
        } else if r < -127.0 {
            -127
        } else {
            r as i8
        };
    }
    scale
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every f16 widens to a value that converts back to itself, and the
    /// conversion is monotone on the positive finite patterns.
    #[test]
    fn f16_round_trips() {
        let mut prev = -1.0f32;
        for h in 0..=u16::MAX {
            let x = f16_to_f32(h);
            if x.is_nan() {
                assert!(f32_to_f16(x) & 0x7fff > 0x7c00);
                continue;
            }
            assert_eq!(f32_to_f16(x), h, "{h:#06x} → {x:e}");
            if h < 0x7c00 {
                assert!(x > prev);
                prev = x;
            }
        }
    }
}
