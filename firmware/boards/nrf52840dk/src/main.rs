//! The monitor on an nRF52840-DK: `cargo run --release` (probe-rs flashes it
//! and prints the defmt log over RTT).
//!
//! Wiring: a LIS3DH breakout on the Arduino header's I²C pins (SCL = P0.27,
//! SDA = P0.26, SA0 high → address 0x19). The alarm is LED 1 (P0.13, active
//! low). Holding button 1 (P0.11) during reset starts the synthetic demo
//! instead: feature vectors sampled from the model (seeded from the hardware
//! RNG), with bursts of injected anomalies so the alarm visibly goes on and off.
//!
//! **Threshold.** At boot the image loads the threshold commissioned on this
//! device from the last two flash pages (see `memory.x`) and, if there is
//! none, uses the exported `THRESHOLD` while it commissions one from the
//! first [`COMMISSION_WINDOWS`] windows (10 min) at the exported false-alarm
//! rate, then switches to it and saves it. Holding button 2 (P0.12) during
//! reset ignores the saved threshold and commissions again (the new record
//! supersedes the old one; at most 4 000 records per device).
//!
//! At boot the image checks the bundled model's golden vectors on the chip
//! and logs the result (the same check CI runs in QEMU).
//!
//! **Record mode.** Built with `--features record` (`cargo run --release
//! --features record`), the image records instead of monitoring: every
//! reading at 100 Hz as one `rec` line under the model's channel names, for
//! `flowmote record --log - --out readings.csv` to turn into a CSV (pipe
//! `probe-rs run`'s output into it; see `flowmote_firmware::record`).
#![no_std]
#![no_main]
// Record mode never returns: the monitor after it, and its pins, go unused.
#![cfg_attr(feature = "record", allow(unreachable_code, unused_variables, unused_mut))]

use cortex_m_rt::entry;
use defmt_rtt as _;
use embedded_hal::delay::DelayNs;
use embedded_hal::digital::InputPin;
use flowmote_firmware::lis3dh::ADDR_SA0_HIGH;
use flowmote_firmware::{
    golden_mismatches, pipeline_mismatches, Alarm, Calibrator, Detector, Event, Inverted, KOfN, Lis3dh, Monitor, Store,
    Synthetic,
};
use nrf52840_hal::gpio::{p0, Level};
use nrf52840_hal::nvmc::Nvmc;
use nrf52840_hal::twim::{self, Twim};
use nrf52840_hal::{pac, Delay, Rng};
use panic_probe as _;

use flowmote_fixtures::model::{
    pipeline, DIM, FEATURES, GOLDEN_INPUTS, GOLDEN_LOG_PROBS, GOLDEN_RAW, GOLDEN_RAW_FEATURES, GOLDEN_RAW_LOG_PROBS,
    HOP, MODEL, THRESHOLD, WINDOW,
};

/// Milliseconds between readings (100 Hz). The model's `pipeline()` scores a
/// window of its `WINDOW` readings every `HOP` readings (the bundled model: 25
/// and 5, a verdict every 50 ms).
const SAMPLE_MS: u32 = 10;
/// Windows per minute, for the periodic statistics log.
const WINDOWS_PER_MINUTE: u32 = 60_000 / (SAMPLE_MS * HOP as u32);
/// Alarm when 3 of the last 5 windows are anomalous.
const DEBOUNCE_N: usize = 5;
const DEBOUNCE_K: usize = 3;
/// Commissioning: windows calibrated on (10 min).
const COMMISSION_WINDOWS: u32 = 10 * WINDOWS_PER_MINUTE;
/// Target false-alarm rate of commissioning (the rate `THRESHOLD` was
/// exported at).
const FALSE_ALARM_RATE: f32 = 0.01;
/// The threshold's two flash pages (kept out of `FLASH` in `memory.x`).
const PERSIST_START: usize = 0x000F_E000;
/// Two 4 KiB erase pages: slots A and B.
const PERSIST_LEN: usize = 2 * 4096;

#[entry]
fn main() -> ! {
    // `take` fails only if called twice; this is the only call.
    let (Some(p), Some(core)) = (pac::Peripherals::take(), pac::CorePeripherals::take()) else {
        defmt::panic!("peripherals already taken");
    };
    let port0 = p0::Parts::new(p.P0);
    let led1 = port0.p0_13.into_push_pull_output(Level::High).degrade();
    let mut button1 = port0.p0_11.into_pullup_input();
    let mut button2 = port0.p0_12.into_pullup_input();
    let scl = port0.p0_27.into_floating_input().degrade();
    let sda = port0.p0_26.into_floating_input().degrade();
    let mut delay = Delay::new(core.SYST);

    #[cfg(feature = "record")]
    {
        let i2c = Twim::new(p.TWIM0, twim::Pins { scl, sda }, twim::Frequency::K400);
        record(Lis3dh::new(i2c, ADDR_SA0_HIGH), &mut delay);
    }

    defmt::info!(
        "flowmote monitor: {=usize} features {=[?]}, threshold {=f32} nats",
        DIM,
        FEATURES,
        THRESHOLD
    );
    self_test();

    let detector = Detector::new(&MODEL, THRESHOLD);
    let mut alarm = Alarm::new(detector, const { KOfN::<DEBOUNCE_N>::new(DEBOUNCE_K) }, Inverted(led1));

    if button1.is_low().unwrap_or(false) {
        let seed = Rng::new(p.RNG).random_u64();
        defmt::info!("synthetic demo mode (seed {=u64})", seed);
        let mut alarm = alarm;
        let mut synth = Synthetic::new(&MODEL, seed).with_anomalies(20, 6, 600.0);
        loop {
            match synth.next_features() {
                Ok(x) => {
                    alarm.assess(&x);
                }
                Err(e) => defmt::warn!("sampling failed: {}", e),
            }
            delay.delay_ms(SAMPLE_MS * HOP as u32);
        }
    }

    // SAFETY: the two pages are outside every linker region (memory.x), so
    // nothing else aliases them; this is the only reference made to them.
    let pages = unsafe { core::slice::from_raw_parts_mut(PERSIST_START as *mut u8, PERSIST_LEN) };
    let mut store = Store::new(Nvmc::new(p.NVMC, pages), 0)
        .map_err(|e| defmt::error!("threshold store: {=str}", e.as_str()))
        .ok();
    let recommission = button2.is_low().unwrap_or(false);
    let saved = match store.as_mut().map(|s| s.load()) {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            defmt::error!("threshold store: {=str}", e.as_str());
            None
        }
        None => None,
    };
    let mut calibrator = match saved {
        Some(r) if !recommission => {
            defmt::info!(
                "threshold {=f32} nats: commissioned on this device ({=u32} windows, rate {=f32}, record {=u32})",
                r.threshold,
                r.windows,
                r.false_alarm_rate,
                r.seq
            );
            alarm.set_threshold(r.threshold);
            None
        }
        _ => {
            defmt::info!(
                "threshold {=f32} nats: exported; commissioning from the first {=u32} windows{=str}",
                THRESHOLD,
                COMMISSION_WINDOWS,
                if recommission {
                    " (button 2 held)"
                } else {
                    " (none saved)"
                }
            );
            Some(Calibrator::new(FALSE_ALARM_RATE, COMMISSION_WINDOWS))
        }
    };

    let i2c = Twim::new(p.TWIM0, twim::Pins { scl, sda }, twim::Frequency::K400);
    // The features the model was trained on: a model whose pipeline does not
    // read the 3 axes, or does not give `DIM` features, does not compile.
    let mut monitor: Monitor<_, _, _, DIM, _, DEBOUNCE_N> =
        Monitor::new(Lis3dh::new(i2c, ADDR_SA0_HIGH), pipeline(), alarm);
    let mut windows = 0u32;
    loop {
        if let Event::Scored(report) = monitor.step() {
            windows = windows.wrapping_add(1);
            if let Some(t) = calibrator.as_mut().and_then(|c| c.observe(&report.verdict)) {
                monitor.set_threshold(t);
                match store.as_mut().map(|s| s.save(t, COMMISSION_WINDOWS, FALSE_ALARM_RATE)) {
                    Some(Ok(r)) => defmt::info!("commissioned: threshold {=f32} nats saved (record {=u32})", t, r.seq),
                    Some(Err(e)) => {
                        defmt::error!("commissioned: threshold {=f32} nats, not saved: {=str}", t, e.as_str())
                    }
                    None => defmt::warn!("commissioned: threshold {=f32} nats, not saved (no store)", t),
                }
                calibrator = None;
            }
            if windows % WINDOWS_PER_MINUTE == 0 {
                defmt::info!("{}", monitor.stats());
            }
        }
        delay.delay_ms(SAMPLE_MS);
    }
}

/// Record mode: log every reading, one per sample period, forever.
#[cfg(feature = "record")]
fn record<I: embedded_hal::i2c::I2c>(sensor: Lis3dh<I>, delay: &mut Delay) -> ! {
    defmt::info!(
        "flowmote record mode: a reading every {=u32} ms (channels {=[?]})",
        SAMPLE_MS,
        flowmote_fixtures::model::CHANNEL_NAMES
    );
    let mut recorder = flowmote_firmware::Recorder::new(sensor, flowmote_fixtures::model::CHANNEL_NAMES);
    loop {
        recorder.step();
        delay.delay_ms(SAMPLE_MS);
    }
}

/// Score the golden vectors on the chip, push the golden raw readings through
/// the model's feature pipeline, and log whether both match the host.
fn self_test() {
    let det = Detector::new(&MODEL, THRESHOLD);
    let bad = golden_mismatches(&det, &GOLDEN_INPUTS, &GOLDEN_LOG_PROBS);
    if bad == 0 {
        defmt::info!(
            "self-test: {=usize} golden log-densities match the host",
            GOLDEN_INPUTS.len()
        );
    } else {
        defmt::error!("self-test: {=usize} golden log-densities differ from the host", bad);
    }
    let bad = pipeline_mismatches(pipeline(), &GOLDEN_RAW, &GOLDEN_RAW_FEATURES)
        + golden_mismatches(&det, &GOLDEN_RAW_FEATURES, &GOLDEN_RAW_LOG_PROBS);
    if bad == 0 {
        defmt::info!(
            "self-test: windows of {=usize} readings every {=usize}: {=usize} golden windows match the host",
            WINDOW,
            HOP,
            GOLDEN_RAW_FEATURES.len()
        );
    } else {
        defmt::error!("self-test: {=usize} golden windows differ from the host", bad);
    }
}
