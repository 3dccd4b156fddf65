//! Activation functions of the conditioner networks, and the core's own
//! branch-free [`tanh`] that every `tanh` in the crate calls (hidden units,
//! soft-clamped log-scales): one implementation, so the host scorer, the
//! trainer and the device compute the same bits.
//!
//! ## Accuracy of [`tanh`]
//! A rational minimax approximation `x·P(x²)/Q(x²)` (degree 13/6, the
//! single-precision coefficients published with Eigen and TensorFlow's fast
//! `tanh`) on the input clamped to `±7.9053111`, where it rounds to exactly
//! `±1`; `|x| < 4·10⁻⁴` returns `x`. Evaluated with separate f32 multiplies
//! and adds (no fused multiply–add, so every target rounds identically).
//! Measured against `f64` `tanh` over every f32 input (the exhaustive sweep
//! in this module's tests, `cargo test -p flowmote --release --lib -- --ignored`):
//! see [`TANH_MAX_ABS_ERROR`] and [`TANH_MAX_ULP_ERROR`]. The result is odd,
//! within `[−1, 1]`, non-decreasing up to one ulp of rounding, `±1` at `±∞`, and NaN for NaN.

/// A pointwise nonlinearity. Each one's derivative can be computed from its
/// *output*, so backward passes need to keep only post-activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Activation {
    /// `tanh(x)`: smooth, bounded; the default.
    #[default]
    Tanh,
    /// `max(x, 0)`.
    Relu,
    /// `x` for `x > 0`, else `0.01·x`.
    LeakyRelu,
    /// `x` for `x > 0`, else `eˣ − 1`.
    Elu,
}

/// Slope of [`Activation::LeakyRelu`] for negative inputs.
pub const LEAKY_SLOPE: f32 = 0.01;

impl Activation {
    /// Apply the function.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Tanh => tanh(x),
            Activation::Relu => x.max(0.0),
            Activation::LeakyRelu => {
                if x > 0.0 {
                    x
                } else {
                    LEAKY_SLOPE * x
                }
            }
            Activation::Elu => {
                if x > 0.0 {
                    x
                } else {
                    libm::expm1f(x)
                }
            }
        }
    }

    /// Derivative at the point whose *output* is `y`.
    #[inline(always)]
    pub fn derivative_from_output(self, y: f32) -> f32 {
        match self {
            Activation::Tanh => 1.0 - y * y,
            Activation::Relu => {
                if y > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::LeakyRelu => {
                if y > 0.0 {
                    1.0
                } else {
                    LEAKY_SLOPE
                }
            }
            Activation::Elu => {
                if y > 0.0 {
                    1.0
                } else {
                    y + 1.0
                }
            }
        }
    }

    /// Second derivative at the point whose output is `y` (used by the exact
    /// divergence's gradient of continuous flows).
    #[inline(always)]
    pub fn second_derivative_from_output(self, y: f32) -> f32 {
        match self {
            Activation::Tanh => -2.0 * y * (1.0 - y * y),
            Activation::Relu => 0.0,
            Activation::LeakyRelu => 0.0,
            Activation::Elu => {
                if y > 0.0 {
                    0.0
                } else {
                    y + 1.0
                }
            }
        }
    }
}

/// Bound on `|tanh(x) − tanh_f64(x)|` of [`tanh`] over all f32 `x`: the
/// exhaustive sweep in this module's tests measured 4.677·10⁻⁷ (at
/// `x ≈ 5.95`, where the result is within 2·10⁻⁵ of 1; below `|x| = 1`
/// the error is a few ulp of the result). Steps down between neighbouring
/// inputs (rounding) are at most 4.8·10⁻⁷.
pub const TANH_MAX_ABS_ERROR: f32 = 4.7e-7;

/// Bound on the error of [`tanh`] in units in the last place of the
/// correctly rounded result, over all f32 `x` (exhaustive sweep: 7.85 ulp,
/// at `x ≈ 5.95`).
pub const TANH_MAX_ULP_ERROR: u32 = 8;

/// Inputs beyond `±TANH_CLAMP` give exactly `±1`.
const TANH_CLAMP: f32 = 7.905_311;

/// `tanh(x)` in f32, branch-free (compares compile to conditional selects)
/// and vectorisable; the crate's only `tanh`. Accuracy: see the
/// [module docs](self).
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    // NaN fails both comparisons and propagates.
    let c = if x > TANH_CLAMP {
        TANH_CLAMP
    } else if x < -TANH_CLAMP {
        -TANH_CLAMP
    } else {
        x
    };
    let z = c * c;
    let mut p = -2.760_768_5e-16f32;
    p = p * z + 2.000_187_9e-13;
    p = p * z + -8.604_672e-11;
    p = p * z + 5.122_297e-8;
    p = p * z + 1.485_722_4e-5;
    p = p * z + 6.372_619_3e-4;
    p = p * z + 4.893_524_6e-3;
    let mut q = 1.198_258_4e-6f32;
    q = q * z + 1.185_347_1e-4;
    q = q * z + 2.268_434_6e-3;
    q = q * z + 4.893_525e-3;
    let r = c * p / q;
    if x < 4e-4 && x > -4e-4 {
        x
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Correctly rounded f32 of the f64 reference, and the ulp there.
    fn reference(x: f32) -> (f64, f64) {
        let t = libm::tanh(x as f64);
        let r = t as f32;
        let ulp = if r.abs() == 0.0 {
            f32::from_bits(1) as f64
        } else {
            (f32::from_bits(r.abs().to_bits() + 1) - r.abs()) as f64
        };
        (t, ulp)
    }

    /// `(max abs error, max ulp error, arg of the max ulp)` over the positive
    /// f32 bit patterns `0, step, 2·step, …` up to `+∞`, checking oddness,
    /// `|tanh| ≤ 1` and monotonicity up to rounding on the way.
    fn sweep(step: u32) -> (f64, f64, f32) {
        let (mut max_abs, mut max_ulp, mut at) = (0.0f64, 0.0f64, 0.0f32);
        let (mut prev, mut max_drop) = (0.0f32, 0.0f32);
        let mut bits = 0u32;
        while bits <= f32::INFINITY.to_bits() {
            let x = f32::from_bits(bits);
            let y = tanh(x);
            assert_eq!(tanh(-x).to_bits(), (-y).to_bits(), "odd at {x}");
            assert!((0.0..=1.0).contains(&y), "tanh({x}) = {y}");
            // Monotone up to rounding: the largest step down.
            max_drop = max_drop.max(prev - y);
            prev = y;
            let (t, ulp) = reference(x);
            let e = (y as f64 - t).abs();
            max_abs = max_abs.max(e);
            if e / ulp > max_ulp {
                max_ulp = e / ulp;
                at = x;
            }
            bits = match bits.checked_add(step) {
                Some(b) => b,
                None => break,
            };
        }
        std::println!("largest step down {max_drop:e}");
        assert!(max_drop <= 4.0 * f32::EPSILON, "not monotone: drop {max_drop:e}");
        (max_abs, max_ulp, at)
    }

    #[test]
    fn tanh_sweep_within_stated_error() {
        // Every 61st positive f32 (~17 M inputs, all binades), plus the edges.
        let (abs, ulp, at) = sweep(61);
        std::println!("tanh (every 61st f32): max abs error {abs:.3e}, max {ulp:.3} ulp (at x = {at:e})");
        assert!(abs <= TANH_MAX_ABS_ERROR as f64, "abs {abs:e}");
        assert!(ulp <= TANH_MAX_ULP_ERROR as f64, "ulp {ulp} at {at}");
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
        assert_eq!(tanh(TANH_CLAMP), 1.0);
        assert_eq!(tanh(f32::MAX), 1.0);
        assert!(tanh(f32::NAN).is_nan());
        assert_eq!(tanh(0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(tanh(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(tanh(f32::MIN_POSITIVE), f32::MIN_POSITIVE);
    }

    /// Every f32 (2³¹ inputs by oddness); prints the figures quoted in the
    /// docs. `cargo test -p flowmote --release --lib -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn tanh_exhaustive_sweep() {
        let (abs, ulp, at) = sweep(1);
        std::println!("tanh: max abs error {abs:.3e}, max {ulp:.3} ulp (at x = {at:e})");
        assert!(abs <= TANH_MAX_ABS_ERROR as f64, "abs {abs:e}");
        assert!(ulp <= TANH_MAX_ULP_ERROR as f64, "ulp {ulp} at {at}");
    }
}
