//! From readings to the model's feature vectors: the sensor's feature
//! pipeline as the monitor drives it.
//!
//! The pipeline is the one the model was trained with: `flowmote export`
//! writes it into the model file as `pipeline()` (a
//! [`flowmote::features::Pipeline`]) for a model trained with `flowmote
//! train --window N --hop M --features …`, and the monitor takes it as its
//! [`FeatureMap`]. [`FeatureMap`] is implemented for 3-channel pipelines
//! only (the LIS3DH's X, Y, Z) and the monitor requires its output size to
//! be the model's `D`, so a model trained on another channel count, or a
//! pipeline of another output size, is a compile error, not a silent build.
//!
//! A model exported without a pipeline (trained on rows that were already
//! feature vectors) has no `pipeline()`: the board images do not build with
//! it (`unresolved import flowmote_fixtures::model::pipeline`). Retrain it from
//! the raw readings with `--window`; `--window 1 --features mean` scores
//! single readings.

use flowmote::features::Pipeline;
use flowmote::Error;

/// One accelerometer reading, milli-g per axis (X, Y, Z).
pub type Reading = [i16; 3];

/// Turns a stream of readings into the `D` features a model scores: one
/// reading in, a feature vector out whenever a window completes.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a feature pipeline of the 3-axis accelerometer with the model's output size",
    note = "the monitor needs the model's exported `pipeline()` on 3 channels (`flowmote train --window …` on the X, Y, Z columns), whose output size is the model's `DIM`"
)]
pub trait FeatureMap<const D: usize> {
    /// Add one reading; `Some` when it completes a window: its features, or
    /// why they cannot be computed (the monitor reports that as an invalid
    /// verdict). Must not panic.
    fn push(&mut self, r: Reading) -> Option<Result<[f32; D], Error>>;

    /// Readings added since the last complete window.
    fn pending(&self) -> usize;
}

/// The exported pipeline on the accelerometer's 3 axes, in milli-g: each
/// reading is converted exactly (`i16` → `f32`), as the CSV values the model
/// was trained on, so the device computes the host's features bit for bit.
impl<const N: usize, const S: usize, const D: usize> FeatureMap<D> for Pipeline<3, N, S, D> {
    fn push(&mut self, r: Reading) -> Option<Result<[f32; D], Error>> {
        Pipeline::push(self, r.map(f32::from))
    }

    fn pending(&self) -> usize {
        Pipeline::pending(self)
    }
}
