//! The standard-normal base distribution: log-density and sampling.

use rand_core::Rng;

/// `ln(2π)`.
pub const LN_2PI: f32 = 1.837_877_1;

/// `log N(z; 0, I)` for a `z` of any length.
#[inline]
pub fn log_pdf(z: &[f32]) -> f32 {
    let mut sq = 0.0;
    for v in z {
        sq += v * v;
    }
    -0.5 * (sq + z.len() as f32 * LN_2PI)
}

/// A uniform draw in `(0, 1]` with 24 random bits.
#[inline]
fn uniform_open0<R: Rng + ?Sized>(rng: &mut R) -> f32 {
    ((rng.next_u32() >> 8) + 1) as f32 * (1.0 / 16_777_216.0)
}

/// Fill `out` with independent standard-normal draws (Box–Muller, two draws
/// per pair of 32-bit words). Deterministic for a seeded generator.
pub fn fill_standard_normal<R: Rng + ?Sized>(rng: &mut R, out: &mut [f32]) {
    for pair in out.chunks_mut(2) {
        let u1 = uniform_open0(rng);
        let u2 = (rng.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0);
        let r = libm::sqrtf(-2.0 * libm::logf(u1));
        let (s, c) = libm::sincosf(2.0 * core::f32::consts::PI * u2);
        pair[0] = r * c;
        if let Some(v) = pair.get_mut(1) {
            *v = r * s;
        }
    }
}
