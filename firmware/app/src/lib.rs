//! # flowmote-firmware — the monitor's application logic
//!
//! Read an accelerometer over I²C → the model's feature pipeline (windows of
//! readings → the statistics it was trained on) → score `−log p(x)` with the exported flow →
//! debounce → drive an alarm pin, logging score, threshold and verdict.
//!
//! Everything here is generic over [`embedded_hal`] 1.0 traits, over the
//! model's dimension `D` and over its layer type, and free of target-specific
//! crates: the board crates (`firmware/boards/*`) and the emulated Cortex-M4F
//! (`firmware/qemu`) wire it to real or emulated peripherals, and the host tests
//! (`host-tests/tests/monitor.rs`) drive it with `embedded-hal-mock`.
//!
//! * [`lis3dh`]: a small driver for the LIS3DH register map (WHO_AM_I,
//!   CTRL_REG1/4, burst read of OUT_X_L…OUT_Z_H), with a plausibility check
//!   that rejects garbage frames.
//! * [`window`]: [`FeatureMap`], the model's exported feature pipeline
//!   (`flowmote::features::Pipeline`) on the accelerometer's 3 axes.
//! * [`monitor`]: [`Alarm`] (detector + k-of-n debouncer + pin) and
//!   [`Monitor`] (sensor + pipeline + alarm), which never panic on sensor
//!   garbage or bus errors: they report them and keep running.
//! * [`threshold`]: [`Calibrator`], commissioning — the threshold at a
//!   target false-alarm rate from the scores of the first windows after
//!   installation (the core's streaming P² quantile).
//! * [`persist`]: [`Store`], that threshold (or the adaptation's
//!   [`Correction`]) in two pages of NOR flash (`embedded-storage` traits),
//!   CRC-checked, A/B slots so a power cut mid-write loses nothing, with a
//!   lifetime write cap.
//! * [`adapt`]: [`Adaptation`], on-device adaptation — the core's adapter
//!   commissioned on the first windows after installation, then tracking,
//!   the detector scoring through a [`Corrected`] model.
//! * [`synthetic`]: feature vectors sampled from the flow with a seeded
//!   `Xoshiro128PlusPlus`, for the self-test / demo mode and the golden
//!   sample check.
//! * [`record`]: [`Recorder`], record mode — every raw reading logged as
//!   one compact line, for `flowmote record` to turn into a training CSV.
//! * [`sim`]: an emulated LIS3DH (an [`embedded_hal::i2c::I2c`] device in
//!   software), a recording pin and a RAM-backed NOR flash, so the emulated Cortex-M4F runs the whole
//!   pipeline without hardware.
//!
//! With the `defmt` feature the library logs through `defmt`; without it the
//! log statements compile to nothing (host tests).
#![no_std]
#![deny(missing_docs)]
#![warn(clippy::all)]

#[macro_use]
mod log;

pub mod adapt;
pub mod lis3dh;
pub mod monitor;
pub mod persist;
pub mod record;
pub mod sim;
pub mod synthetic;
pub mod threshold;
pub mod window;

pub use adapt::{AdaptStats, Adaptation, Phase, Step};
pub use flowmote::adapt::{AdaptConfig, Tracked};
pub use flowmote::anomaly::{Detector, KOfN, Verdict};
pub use flowmote::features::Pipeline;
pub use flowmote::gradient::Gradient;
pub use flowmote::Corrected;
pub use lis3dh::{Lis3dh, SensorError};
pub use monitor::{Alarm, Event, Inverted, Monitor, Report, Stats};
pub use persist::{Correction, PersistError, Persisted, Record, Store};
pub use record::Recorder;
pub use synthetic::Synthetic;
pub use threshold::Calibrator;
pub use window::{FeatureMap, Reading};

/// Relative tolerance of the on-device golden checks (`GOLDEN_LOG_PROBS`,
/// `GOLDEN_SAMPLES`).
pub const GOLDEN_RTOL: f32 = 1e-6;
/// Absolute floor of that tolerance: values are compared to
/// `GOLDEN_RTOL · max(|expected|, GOLDEN_ABS_FLOOR)`, so a value near zero is
/// held to an absolute `1e-6 · GOLDEN_ABS_FLOOR` rather than a vanishing
/// relative bound.
pub const GOLDEN_ABS_FLOOR: f32 = 1.0;

/// How many of `inputs` score differently on this core than on the host:
/// `−log p` through `detector` against the host's `log_probs` (the exported
/// `GOLDEN_INPUTS` / `GOLDEN_LOG_PROBS`, or `GOLDEN_RAW_FEATURES` /
/// `GOLDEN_RAW_LOG_PROBS`), compared with [`close`]; an expected NaN (the
/// host could not score that input) matches only an invalid verdict. The
/// boards run it at boot; 0 means the chip computes what the host computed.
pub fn golden_mismatches<const D: usize, M: flowmote::Density<D>>(
    detector: &Detector<'_, D, M>,
    inputs: &[[f32; D]],
    log_probs: &[f32],
) -> usize {
    inputs
        .iter()
        .zip(log_probs)
        .filter(|(x, &e)| {
            let got = detector.score(x).score();
            if e.is_nan() {
                got.is_some()
            } else {
                !got.is_some_and(|s| close(-s, e))
            }
        })
        .count()
}

/// How many windows of the host's features `expected` this core does not
/// reproduce bit for bit when the raw `readings` are pushed one by one
/// through `pipeline` (a fresh exported `pipeline()`, with the exported
/// `GOLDEN_RAW` / `GOLDEN_RAW_FEATURES`). A window the pipeline fails on,
/// one it does not produce and one it produces beyond `expected` each count
/// as a mismatch; 0 means the device computes the features the model was
/// trained on.
pub fn pipeline_mismatches<const C: usize, const N: usize, const S: usize, const D: usize>(
    mut pipeline: Pipeline<C, N, S, D>,
    readings: &[[f32; C]],
    expected: &[[f32; D]],
) -> usize {
    let mut expected = expected.iter();
    let mut bad = 0;
    for r in readings {
        if let Some(got) = pipeline.push(*r) {
            let same = match (got, expected.next()) {
                (Ok(g), Some(e)) => g.iter().zip(e).all(|(a, b)| a.to_bits() == b.to_bits()),
                _ => false,
            };
            bad += usize::from(!same);
        }
    }
    bad + expected.count()
}

/// An export's golden vectors: what the host computed, for a board to check
/// at boot ([`self_test`]).
#[derive(Clone, Copy, Debug)]
pub struct Golden<'g, const C: usize, const D: usize> {
    /// `GOLDEN_INPUTS`.
    pub inputs: &'g [[f32; D]],
    /// `GOLDEN_LOG_PROBS`.
    pub log_probs: &'g [f32],
    /// `GOLDEN_RAW`: raw readings.
    pub raw: &'g [[f32; C]],
    /// `GOLDEN_RAW_FEATURES`: the windows' features.
    pub raw_features: &'g [[f32; D]],
    /// `GOLDEN_RAW_LOG_PROBS`.
    pub raw_log_probs: &'g [f32],
}

/// The [`Golden`] vectors of an export module: `golden!(flowmote_fixtures::model)`
/// takes its `GOLDEN_INPUTS`, `GOLDEN_LOG_PROBS`, `GOLDEN_RAW`,
/// `GOLDEN_RAW_FEATURES` and `GOLDEN_RAW_LOG_PROBS` (the export contract's
/// names), so a board names the module once.
#[macro_export]
macro_rules! golden {
    ($export:path) => {{
        use $export as export;
        $crate::Golden {
            inputs: &export::GOLDEN_INPUTS,
            log_probs: &export::GOLDEN_LOG_PROBS,
            raw: &export::GOLDEN_RAW,
            raw_features: &export::GOLDEN_RAW_FEATURES,
            raw_log_probs: &export::GOLDEN_RAW_LOG_PROBS,
        }
    }};
}

/// The boards' boot-time self-test: the golden log-densities through
/// `detector` ([`golden_mismatches`]) and the golden raw readings through a
/// fresh `pipeline` ([`pipeline_mismatches`]) and the detector; logs the
/// outcome of each and returns the number of mismatches (0: the chip
/// computes what the host computed).
pub fn self_test<const C: usize, const N: usize, const S: usize, const D: usize, M: flowmote::Density<D>>(
    detector: &Detector<'_, D, M>,
    pipeline: Pipeline<C, N, S, D>,
    golden: &Golden<'_, C, D>,
) -> usize {
    let hop = pipeline.hop();
    let bad = golden_mismatches(detector, golden.inputs, golden.log_probs);
    if bad == 0 {
        info!(
            "self-test: {=usize} golden log-densities match the host",
            golden.inputs.len()
        );
    } else {
        error!("self-test: {=usize} golden log-densities differ from the host", bad);
    }
    let windows = pipeline_mismatches(pipeline, golden.raw, golden.raw_features)
        + golden_mismatches(detector, golden.raw_features, golden.raw_log_probs);
    if windows == 0 {
        info!(
            "self-test: windows of {=usize} readings every {=usize}: {=usize} golden windows match the host",
            N,
            hop,
            golden.raw_features.len()
        );
    } else {
        error!("self-test: {=usize} golden windows differ from the host", windows);
    }
    bad + windows
}

/// `true` if `got` matches `expected` within [`GOLDEN_RTOL`] (relative, with
/// the [`GOLDEN_ABS_FLOOR`] floor). NaN never matches.
#[inline]
pub fn close(got: f32, expected: f32) -> bool {
    let scale = if expected.abs() > GOLDEN_ABS_FLOOR {
        expected.abs()
    } else {
        GOLDEN_ABS_FLOOR
    };
    (got - expected).abs() <= GOLDEN_RTOL * scale
}
