//! Activation functions of the conditioner networks, and the core's own
//! [`tanh`] that every `tanh` in the crate calls (hidden units,
//! soft-clamped log-scales): one implementation, so the host scorer, the
//! trainer and the device compute the same bits.
//!
//! [`exp`] is the crate's only `exp` (affine scales, ActNorm, LU diagonals,
//! spline bin widths, mixture weights), written the same way.
//!
//! Each has two spellings of its input clamp with the same result for every
//! input: conditional selects (branch-free, for loops that vectorise on the
//! host, and a `const fn` for `exp`) and a rarely taken branch around an
//! out-of-line clamp (scalar code on the device, where it saves half the
//! clamp's instructions). The exhaustive sweeps in this module's tests
//! check that both give the same bits for every f32.
//!
//! ## Accuracy of [`tanh`]
//! A rational minimax approximation `x·(1 + x²·P(x²))/Q(x²)` of type [9/8]
//! (the single-precision coefficients Eigen publishes for its `ptanh_float`,
//! generated with rminimax on `[−8.67, 8.67]`) on the input clamped to
//! `±7.9073896`, where it rounds to exactly `±1`. `P(0)`-free numerator and
//! `Q(0) = 1`, so tiny inputs (subnormals included) come back exactly.
//! Evaluated with separate f32 multiplies and adds in a fixed order (no fused
//! multiply–add), so every target rounds identically. Measured against `f64`
//! `tanh` over every f32 input (the exhaustive sweep in this module's tests,
//! `cargo test -p flowmote --release --lib activation -- --ignored --nocapture`):
//! see [`TANH_MAX_ABS_ERROR`] and [`TANH_MAX_ULP_ERROR`]. The result is odd,
//! within `[−1, 1]`, non-decreasing up to rounding steps of at most
//! 4.8·10⁻⁷, `±1` at `±∞`, and NaN for NaN.

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
            Activation::Tanh => tanh_inline(x),
            // Not `x.max(0.0)`: without a float max instruction (Cortex-M4F)
            // that is a call to `fmaxf`. Same value, NaN → 0 as well.
            Activation::Relu => {
                if x > 0.0 {
                    x
                } else {
                    0.0
                }
            }
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

    /// Apply the function to every element in place. Out of line: one copy
    /// per image serves every layer (the device's flash), and the loop
    /// vectorises on the host.
    ///
    /// On microcontrollers (`target_os = "none"`) `tanh` takes its input
    /// clamp as a branch (the scalar code that suits an in-order core: see
    /// [`tanh`]), four elements per iteration with a hardware FPU (`eabihf`:
    /// the loop's own instructions are then a fair share), one with soft
    /// float (where each float operation is a call, and four copies of the
    /// body would only cost flash); elsewhere as selects, so that the loop
    /// vectorises. The same bits every way.
    #[inline(never)]
    pub fn apply_slice(self, v: &mut [f32]) {
        match self {
            Activation::Tanh if cfg!(all(target_os = "none", target_abi = "eabihf")) => {
                let mut quads = v.chunks_exact_mut(4);
                for q in &mut quads {
                    for x in q {
                        *x = tanh_branch(*x);
                    }
                }
                for x in quads.into_remainder() {
                    *x = tanh_branch(*x);
                }
            }
            Activation::Tanh if cfg!(target_os = "none") => v.iter_mut().for_each(|x| *x = tanh_branch(*x)),
            Activation::Tanh => v.iter_mut().for_each(|x| *x = tanh_inline(*x)),
            _ => v.iter_mut().for_each(|x| *x = self.apply(*x)),
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
/// exhaustive sweep in this module's tests measured 3.660·10⁻⁷ (near
/// `|x| ≈ 6.5`, where the result is within 5·10⁻⁶ of 1).
pub const TANH_MAX_ABS_ERROR: f32 = 3.7e-7;

/// Bound on the error of [`tanh`] in units in the last place of the
/// correctly rounded result, over all f32 `x` (exhaustive sweep: 6.14 ulp,
/// at `x ≈ 6.53`, i.e. 3.7·10⁻⁷ absolute).
pub const TANH_MAX_ULP_ERROR: u32 = 7;

/// Inputs beyond `±TANH_CLAMP` give exactly `±1`.
const TANH_CLAMP: f32 = 7.907_389_6;

/// `tanh(x)` in f32; the crate's only `tanh`. Accuracy: see the
/// [module docs](self). Out of line (flash); [`Activation::apply_slice`]
/// inlines the same code into its loop.
///
/// The input clamp is a branch taken only for `|x| > TANH_CLAMP` (and NaN):
/// on a core with a branch but no float min/max (Cortex-M4F) that is 4
/// instructions where the conditional selects of its branch-free body take 8,
/// with the same result for every input (the branch leads to the same
/// clamp).
#[inline(never)]
pub fn tanh(x: f32) -> f32 {
    tanh_branch(x)
}

/// The clamp of [`tanh`]'s input: `±TANH_CLAMP` beyond it, `x` otherwise,
/// NaN through.
#[inline(always)]
#[allow(clippy::manual_clamp)] // spelled out: NaN passes through, no assert
const fn tanh_clamp(x: f32) -> f32 {
    // NaN fails both comparisons and propagates.
    if x > TANH_CLAMP {
        TANH_CLAMP
    } else if x < -TANH_CLAMP {
        -TANH_CLAMP
    } else {
        x
    }
}

/// The rational `x·(1 + x²·P(x²))/Q(x²)` of [`tanh`], on the clamped input.
#[inline(always)]
const fn tanh_rational(c: f32) -> f32 {
    let z = c * c;
    let mut p = 1.394_553_6e-8f32;
    p = p * z + 2.102_733_6e-5;
    p = p * z + 3.520_756_7e-3;
    p = p * z + 1.340_216_1e-1;
    // x·(1 + x²·p): tiny inputs come back exactly.
    let p = (z * c) * p + c;
    let mut q = 8.015_777e-7f32;
    q = q * z + 3.326_951_4e-4;
    q = q * z + 2.597_254_5e-2;
    q = q * z + 4.673_548_3e-1;
    q = q * z + 1.0;
    p / q
}

/// The body of [`tanh`] with its clamp as conditional selects: branch-free
/// and vectorisable, for the loops that want it inlined (the host's
/// row-blocked passes and [`Activation::apply_slice`] on the host). The same
/// bits as [`tanh`] for every input.
#[inline(always)]
pub(crate) fn tanh_inline(x: f32) -> f32 {
    tanh_rational(tanh_clamp(x))
}

/// The body of [`tanh`]: within `±TANH_CLAMP` (the usual case) the clamp is
/// the identity and is skipped; otherwise, and for NaN, the same clamp as
/// [`tanh_inline`] runs, out of line (a call, so the compiler keeps the
/// branch instead of turning it back into selects, and one copy of it
/// whatever the number of inlined bodies).
#[inline(always)]
fn tanh_branch(x: f32) -> f32 {
    let c = if abs(x) <= TANH_CLAMP { x } else { tanh_clamp_cold(x) };
    tanh_rational(c)
}

/// [`tanh_clamp`], out of line for [`tanh_branch`].
#[cold]
#[inline(never)]
fn tanh_clamp_cold(x: f32) -> f32 {
    tanh_clamp(x)
}

/// `|x|` (clears the sign bit: one instruction with an FPU).
#[inline(always)]
const fn abs(x: f32) -> f32 {
    f32::from_bits(x.to_bits() & 0x7fff_ffff)
}

/// Bound on the relative error of [`exp`] for results in the normal f32
/// range, in ulp of the correctly rounded result (exhaustive sweep in this
/// module's tests: 0.990 ulp; subnormal results within one subnormal step).
pub const EXP_MAX_ULP_ERROR: u32 = 1;

/// `eˣ` in f32; the crate's only `exp`. `x = n·ln 2 + r` with `n` rounded to
/// nearest by the `1.5·2²³` trick and `ln 2` split in two (Cody–Waite), `eʳ`
/// by the degree-7 polynomial of Cephes' `expf` (`|r| ≤ ln 2 / 2`), and `2ⁿ`
/// applied as two exact power-of-two factors so that results down to the
/// subnormals and up to `f32::MAX` come out without a special case.
/// `exp(x) = +∞` for `x > 88.72284`, `0` for `x < −103.98`, NaN for NaN.
///
/// Out of line: one copy per image (flash: inlined at every use, the
/// nRF52840 image grew 4.7 %); its callers are per-coordinate code, where the
/// call costs a few instructions next to the ~40 of the function. Its input
/// clamp (to `[−104, 89]`) is a branch taken only for `|x| > 89` and NaN, as
/// in [`tanh`].
///
/// Its branch-free body (the crate-private `exp_inline`) is the same
/// function with its clamp as selects, and a `const fn`: the LU layer's
/// cached diagonal ([`crate::LuLinear`]) is computed with it in const
/// context. Const evaluation rounds every f32
/// operation as IEEE 754 prescribes, as the device's FPU, the soft-float
/// routines and the host do at run time, and neither has a fused
/// operation, so a value computed at compile time has the bits this
/// function gives on the device (checked by this module's tests and the
/// emulated device's golden vectors).
#[inline(never)]
pub fn exp(x: f32) -> f32 {
    let c = if abs(x) <= 89.0 { x } else { exp_clamp_cold(x) };
    exp_unclamped(c)
}

/// [`exp_clamp`], out of line for [`exp`] (see [`tanh_branch`]).
#[cold]
#[inline(never)]
fn exp_clamp_cold(x: f32) -> f32 {
    exp_clamp(x)
}

/// The clamp of [`exp`]'s input to `[−104, 89]`, NaN through.
#[inline(always)]
#[allow(clippy::manual_clamp)] // spelled out: NaN passes through, no assert
const fn exp_clamp(x: f32) -> f32 {
    // NaN fails both comparisons and propagates.
    if x > 89.0 {
        89.0
    } else if x < -104.0 {
        -104.0
    } else {
        x
    }
}

/// The body of [`exp`], branch-free, for loops that want it inlined (the
/// host's row-blocked passes, which vectorise it across rows) and for const
/// evaluation. The same bits as [`exp`] for every input.
#[inline(always)]
pub(crate) const fn exp_inline(x: f32) -> f32 {
    exp_unclamped(exp_clamp(x))
}

/// [`exp`] on an input already in `[−104, 89]` (or NaN).
#[inline(always)]
const fn exp_unclamped(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³
    const LN2_HI: f32 = 0.693_359_4; // 0.693359375, exact in 9 bits
    const LN2_LO: f32 = -2.121_944_4e-4;
    let t = x * core::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_2e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes' 5.0000001201e-1, which rounds to 0.5 in f32
    let e = p * (r * r) + r + 1.0;
    // n as an integer, in [−150, 129]: t lies in [2²³, 2²⁴), where the bit
    // pattern counts in units of 1.
    let k = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let k1 = k >> 1;
    let k2 = k.wrapping_sub(k1);
    let s1 = f32::from_bits((k1.wrapping_add(127) as u32) << 23);
    let s2 = f32::from_bits((k2.wrapping_add(127) as u32) << 23);
    e * s1 * s2
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
            // The branch-free body (clamp by selects) gives the same bits.
            assert_eq!(tanh_inline(x).to_bits(), y.to_bits(), "tanh_inline({x})");
            assert_eq!(tanh_inline(-x).to_bits(), (-y).to_bits(), "tanh_inline({})", -x);
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

    /// `exp`'s body evaluated in const context (a `static`'s initialiser, as
    /// the LU layer's cached diagonal is) has the bits of [`exp`] at run
    /// time: every clamped log-scale the LU layer can feed it, spread over
    /// `[−20, 20]`, the edges of `exp`'s own clamp and special values.
    #[test]
    fn const_exp_has_the_bits_of_run_time_exp() {
        const N: usize = 4096;
        const fn inputs() -> [f32; N] {
            let mut x = [0.0f32; N];
            let mut state = 0x1234_5678u32;
            let mut i = 0;
            while i < N {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                // Uniform in [−20, 20) plus every 16th input an arbitrary bit pattern.
                x[i] = if i % 16 == 0 {
                    f32::from_bits(state)
                } else {
                    ((state >> 8) as f32 * (1.0 / 8_388_608.0) - 1.0) * 20.0
                };
                i += 1;
            }
            let edge = [
                0.0, -0.0, 1e-45, -1e-45, 20.0, -20.0, 88.72284, 88.72285, 89.0, 90.0, -87.3, -103.97, -104.0, -105.0,
            ];
            let mut k = 0;
            while k < edge.len() {
                x[k + 1] = edge[k];
                k += 1;
            }
            x
        }
        const fn table() -> [f32; N] {
            let x = inputs();
            let mut e = [0.0f32; N];
            let mut i = 0;
            while i < N {
                e[i] = exp_inline(x[i]);
                i += 1;
            }
            e
        }
        static AT_COMPILE_TIME: [f32; N] = table();
        let x = core::hint::black_box(inputs());
        for (xi, c) in x.iter().zip(AT_COMPILE_TIME.iter()) {
            let r = exp(core::hint::black_box(*xi));
            assert!(
                r.to_bits() == c.to_bits() || (r.is_nan() && c.is_nan()),
                "exp({xi:e}): {r:e} at run time, {c:e} in const"
            );
        }
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

    /// `(max ulp error for normal results, max abs error for subnormal or
    /// zero results)` of [`exp`] over the f32 bit patterns `0, step, …`
    /// (both signs), checking the edges.
    fn exp_sweep(step: u32) -> (f64, f64) {
        let (mut max_ulp, mut max_sub) = (0.0f64, 0.0f64);
        let mut bits = 0u32;
        while bits <= f32::INFINITY.to_bits() {
            for x in [f32::from_bits(bits), -f32::from_bits(bits)] {
                let y = exp(x);
                // The branch-free, const body gives the same bits.
                let yi = exp_inline(x);
                assert!(
                    yi.to_bits() == y.to_bits() || (y.is_nan() && yi.is_nan()),
                    "exp_inline({x})"
                );
                let t = libm::exp(x as f64);
                let r = t as f32;
                if r.is_infinite() {
                    assert!(y.is_infinite() || y == f32::MAX, "exp({x}) = {y}");
                } else if r >= f32::MIN_POSITIVE {
                    let ulp = (f32::from_bits(r.to_bits() + 1) - r) as f64;
                    max_ulp = max_ulp.max((y as f64 - t).abs() / ulp);
                } else {
                    max_sub = max_sub.max((y as f64 - t).abs());
                }
            }
            bits = match bits.checked_add(step) {
                Some(b) => b,
                None => break,
            };
        }
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
        (max_ulp, max_sub)
    }

    #[test]
    fn exp_sweep_within_stated_error() {
        let (ulp, sub) = exp_sweep(61);
        std::println!("exp (every 61st f32): max {ulp:.3} ulp (normal results), max abs {sub:e} (subnormal)");
        assert!(ulp <= EXP_MAX_ULP_ERROR as f64, "ulp {ulp}");
        assert!(sub <= f32::from_bits(1) as f64, "subnormal abs {sub:e}");
    }

    /// Every f32. `cargo test -p flowmote --release --lib -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn exp_exhaustive_sweep() {
        let (ulp, sub) = exp_sweep(1);
        std::println!("exp: max {ulp:.3} ulp (normal results), max abs {sub:e} (subnormal)");
        assert!(ulp <= EXP_MAX_ULP_ERROR as f64, "ulp {ulp}");
        assert!(sub <= f32::from_bits(1) as f64, "subnormal abs {sub:e}");
    }
}
