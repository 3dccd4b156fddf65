//! Link-time proof that the scoring path cannot panic.
//!
//! [`prove`] runs only the monitor's per-vector path — the model's feature
//! pipeline on the sensor's readings (`FeatureMap::push`, with
//! [`prove_with`]), `Detector::score` (the whole flow's `log_prob`), the
//! k-of-n debouncer and the alarm pin (`Alarm::assess`, `assess_features`) — the synthetic sampler `Synthetic::next_features`, and
//! threshold commissioning and persistence (`Calibrator::observe`,
//! `Store::{new, load, save}` over a RAM-backed NOR flash at a volatile
//! offset), on inputs read with volatile loads (so nothing is constant-folded away).
//! The panic handler calls a function that exists nowhere. If the optimised,
//! LTO'd image contains any reachable panic (a bounds check, an `unwrap`, an
//! overflow check, a division by zero…), the handler is referenced and the
//! link fails with
//! `undefined symbol: flowmote_scoring_path_can_panic_see_firmware_nopanic`.
//!
//! Images, one per exported model: `nopanic` (the bundled model,
//! `fixtures/src/model.rs`, with its exported `pipeline()`) and `nopanic-extended` (`fixtures/src/extended.rs`:
//! LU linear, spline coupling, autoregressive spline and RK4 continuous-flow
//! layers), so every layer kind the trainer makes is covered; `nopanic-i8`
//! (compressed weights); and `nopanic-adapt` ([`prove_adapt`]: on-device
//! adaptation of the bundled model — its input gradient through the
//! layers' backward passes, the adapter commissioning and tracking, scoring
//! through the correction, the correction's flash store) and
//! `nopanic-adapt-mixture` (the same with the committee fixture, a mixture
//! of 12 MAF flows, through its `MixtureGradient`) and
//! `nopanic-adapt-coupling` (affine couplings) and `nopanic-adapt-extended`
//! (LU linear, spline coupling, autoregressive spline). Built by
//! `scripts/firmware-ci.sh` for each instruction set the boards use (the code
//! generated for soft-float Cortex-M0+ differs from Cortex-M4F's):
//! `cargo build --release` (thumbv7em-none-eabihf: nRF52840, STM32F411),
//! `--target thumbv6m-none-eabi` (RP2040) and `--target
//! riscv32imc-unknown-none-elf` (ESP32-C3; riscv-rt instead of cortex-m-rt).
//! They are never run.
#![no_std]
#![deny(missing_docs)]

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

#[cfg(target_arch = "arm")]
use cortex_m as _;
use flowmote::{AdaptTarget, Density};
use flowmote_firmware::sim::{RamFlash, RecordingPin};
use flowmote_firmware::{
    AdaptConfig, Adaptation, Alarm, Calibrator, Corrected, Correction, Detector, FeatureMap, KOfN, Reading, Step,
    Store, Synthetic,
};

/// Largest model dimension [`prove`] takes (the size of its input buffers).
pub const MAX_DIM: usize = 64;

static mut INPUT: [f32; MAX_DIM] = [0.0; MAX_DIM];
static mut READING: Reading = [0; 3];
static mut SEED: u64 = 0;
static mut OUTPUT: [f32; MAX_DIM] = [0.0; MAX_DIM];
static mut ALARM: bool = false;
static mut STORE_BASE: u32 = 0;
static mut SAVED: u32 = 0;

/// A model without a feature pipeline (the export parity fixtures): no
/// reading ever completes a window.
pub struct NoPipeline;

impl<const D: usize> FeatureMap<D> for NoPipeline {
    fn push(&mut self, _: Reading) -> Option<Result<[f32; D], flowmote::Error>> {
        None
    }
    fn pending(&self) -> usize {
        0
    }
}

/// Score, debounce and sample with `model` forever, on volatile inputs.
pub fn prove<const D: usize, M: Density<D>>(model: &M, threshold: f32) -> ! {
    prove_with(model, threshold, NoPipeline)
}

/// [`prove`], and volatile sensor readings pushed through `features` (the
/// model's exported `pipeline()`), each completed window assessed.
pub fn prove_with<const D: usize, M: Density<D>, F: FeatureMap<D>>(model: &M, threshold: f32, mut features: F) -> ! {
    const { assert!(D <= MAX_DIM) };
    let detector = Detector::new(model, threshold);
    let mut alarm = Alarm::new(detector, const { KOfN::<5>::new(3) }, RecordingPin::default());
    // SAFETY: single-threaded, no interrupts use these statics; D ≤ MAX_DIM.
    let mut synth = Synthetic::new(model, unsafe { read_volatile(addr_of!(SEED)) });
    let mut calibrator = Calibrator::new(0.01, 100);
    let mut store = Store::new(RamFlash::<1024>::new(), unsafe { read_volatile(addr_of!(STORE_BASE)) }).ok();
    loop {
        let x = unsafe { read_volatile(addr_of!(INPUT).cast::<[f32; D]>()) };
        let report = alarm.assess(&x);
        if let Some(f) = features.push(unsafe { read_volatile(addr_of!(READING)) }) {
            let r = alarm.assess_features(f);
            unsafe { write_volatile(addr_of_mut!(ALARM), r.alarm) };
        }
        if let (Some(t), Some(s)) = (calibrator.observe(&report.verdict), store.as_mut()) {
            let seq = s.save(t, 100, 0.01).map_or(0, |r| r.seq);
            let loaded = s.load().ok().flatten().map_or(0, |r| r.seq);
            calibrator = Calibrator::new(0.01, 100);
            unsafe { write_volatile(addr_of_mut!(SAVED), seq ^ loaded) };
        }
        let sample = synth.next_features().unwrap_or([f32::NAN; D]);
        unsafe {
            write_volatile(addr_of_mut!(ALARM), report.alarm);
            write_volatile(addr_of_mut!(OUTPUT).cast::<[f32; D]>(), sample);
            write_volatile(addr_of_mut!(OUTPUT[0]), report.verdict.score().unwrap_or(f32::NAN));
        }
    }
}

/// On-device adaptation forever, on volatile windows: the model's
/// `gradient` (the export's `AdaptGradient::new(&MODEL)`: a flow's
/// `Gradient`, a mixture's `MixtureGradient`), an [`Adaptation`]
/// commissioning then tracking, the detector scoring through the
/// [`Corrected`] model, and the correction saved and loaded with a
/// [`Store`] of [`Correction`] records.
pub fn prove_adapt<const D: usize, M: Density<D>, T: AdaptTarget>(
    model: &M,
    gradient: Result<T, flowmote::Error>,
    mean: [f32; D],
    std: [f32; D],
    threshold: f32,
) -> ! {
    const { assert!(D <= MAX_DIM) };
    let scorer = Corrected::new(model, mean, std);
    let detector = Detector::new(&scorer, threshold);
    let mut alarm = Alarm::new(detector, const { KOfN::<5>::new(3) }, RecordingPin::default());
    let mut gradient = gradient.ok();
    let mut adaptation: Adaptation<D, 8> = Adaptation::commissioning(AdaptConfig::DEFAULT, mean, std, 100, true);
    // SAFETY: single-threaded, no interrupts use these statics; D ≤ MAX_DIM.
    let base = unsafe { read_volatile(addr_of!(STORE_BASE)) };
    let mut store = Store::<_, Correction<D>>::open(RamFlash::<1024>::new(), base).ok();
    loop {
        let x = unsafe { read_volatile(addr_of!(INPUT).cast::<[f32; D]>()) };
        let report = alarm.assess(&x);
        let step = match gradient.as_mut() {
            Some(g) => adaptation.observe(g, &scorer, &x, report.threshold),
            None => Step::Idle,
        };
        if let (Step::CommissioningDone(_), Some(s)) = (step, store.as_mut()) {
            let seq = s.put(adaptation.record()).map_or(0, |r| r.seq);
            let loaded = s.load().ok().flatten().map_or(0, |r| r.seq);
            unsafe { write_volatile(addr_of_mut!(SAVED), seq ^ loaded) };
        }
        unsafe {
            write_volatile(addr_of_mut!(ALARM), report.alarm);
            write_volatile(addr_of_mut!(OUTPUT[0]), report.verdict.score().unwrap_or(f32::NAN));
            write_volatile(addr_of_mut!(OUTPUT[1]), adaptation.stats().updates as f32);
        }
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    extern "Rust" {
        fn flowmote_scoring_path_can_panic_see_firmware_nopanic() -> !;
    }
    // SAFETY: the symbol does not exist: this only links if it is unreachable.
    unsafe { flowmote_scoring_path_can_panic_see_firmware_nopanic() }
}
