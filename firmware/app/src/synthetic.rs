//! Synthetic feature vectors drawn from the model itself: the self-test / demo
//! mode, and the source of the on-device `GOLDEN_SAMPLES` check.
//!
//! `Synthetic::new(&MODEL, GOLDEN_SEED)` draws exactly what the host drew with
//! `Xoshiro128PlusPlus::seed_from_u64(GOLDEN_SEED)` and `MODEL.sample(&mut rng)`.
//! Optionally every `period`-th vector is pushed `offset` away in every
//! coordinate, so the demo shows the alarm going on and off.

use flowmote::{Density, Error};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro128PlusPlus;

/// Draws feature vectors from a model (a flow or a mixture) with a seeded `Xoshiro128PlusPlus`.
pub struct Synthetic<'a, const D: usize, M> {
    model: &'a M,
    rng: Xoshiro128PlusPlus,
    period: u32,
    burst: u32,
    offset: f32,
    drawn: u32,
}

impl<'a, const D: usize, M: Density<D>> Synthetic<'a, D, M> {
    /// Samples of `model` with the generator seeded by `seed_from_u64(seed)`.
    pub fn new(model: &'a M, seed: u64) -> Self {
        Synthetic {
            model,
            rng: Xoshiro128PlusPlus::seed_from_u64(seed),
            period: 0,
            burst: 0,
            offset: 0.0,
            drawn: 0,
        }
    }

    /// Inject anomalies: of every `period` draws, the last `burst` are shifted
    /// by `offset` (data units) in every coordinate. `period = 0` turns it off.
    pub fn with_anomalies(mut self, period: u32, burst: u32, offset: f32) -> Self {
        self.period = period;
        self.burst = burst;
        self.offset = offset;
        self
    }

    /// Whether the next draw will be shifted.
    pub fn next_is_injected(&self) -> bool {
        self.period != 0 && self.drawn % self.period >= self.period.saturating_sub(self.burst)
    }

    /// The next feature vector. Errors (a model that overflows on a latent
    /// draw) are returned, never panicked on; the generator still advances.
    pub fn next_features(&mut self) -> Result<[f32; D], Error> {
        let injected = self.next_is_injected();
        self.drawn = self.drawn.wrapping_add(1);
        let mut x = self.model.sample(&mut self.rng)?;
        if injected {
            for v in &mut x {
                *v += self.offset;
            }
        }
        Ok(x)
    }
}
