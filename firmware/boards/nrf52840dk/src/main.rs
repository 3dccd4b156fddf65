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
//! **Adaptation.** The model learns this installation's normal: at boot the
//! image loads the correction adapted on this device (flash pages
//! `CORRECTION_START`) and tracks slow drift from there; if there is none, it
//! first *commissions* one from the first [`ADAPT_WINDOWS`] windows (5 min,
//! declared normal: the machine must run normally then), saves it, and only
//! then commissions the threshold on the adapted scores. After
//! commissioning, windows scored normal with a margin keep adapting (bounded
//! steps, rolled back if they hurt recent normal windows); the correction is
//! saved once a day. Button 2 held at reset commissions both again.
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
    AdaptConfig, Adaptation, Alarm, Calibrator, Corrected, Correction, Detector, Event, Inverted, KOfN, Lis3dh,
    Monitor, Phase, Step, Store, Synthetic,
};
use nrf52840_hal::gpio::{p0, Level};
use nrf52840_hal::nvmc::Nvmc;
use nrf52840_hal::twim::{self, Twim};
use nrf52840_hal::{pac, Delay, Rng};
use panic_probe as _;

use flowmote_fixtures::model::{pipeline, AdaptGradient, DIM, FEATURES, HOP, MEAN, MODEL, STD, THRESHOLD};

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
/// The adaptation's correction: the two pages below the threshold's.
const CORRECTION_START: usize = 0x000F_C000;
/// Adaptation commissioning: windows declared normal after installation (5 min).
const ADAPT_WINDOWS: u32 = 5 * WINDOWS_PER_MINUTE;
/// Held-back windows of tracking's rollback check.
const ADAPT_HELD: usize = 8;
/// Save the tracked correction once a day (≤ 4 000 records: 10 years).
const ADAPT_SAVE_WINDOWS: u32 = 24 * 60 * WINDOWS_PER_MINUTE;

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

    // The detector scores through the adaptation's correction (none yet:
    // exactly the exported model).
    let scorer = Corrected::new(&MODEL, MEAN, STD);
    let detector = Detector::new(&scorer, THRESHOLD);
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
    // SAFETY: as above, for the two pages below them (memory.x).
    let pages = unsafe { core::slice::from_raw_parts_mut(CORRECTION_START as *mut u8, PERSIST_LEN) };
    // SAFETY: the NVMC peripheral is shared by the two stores, which never
    // write at the same time (one call at a time in this loop).
    let nvmc = unsafe { pac::Peripherals::steal() }.NVMC;
    let mut corrections = Store::<_, Correction<DIM>>::open(Nvmc::new(nvmc, pages), 0)
        .map_err(|e| defmt::error!("correction store: {=str}", e.as_str()))
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
    let saved_correction = match corrections.as_mut().map(|s| s.load()) {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            defmt::error!("correction store: {=str}", e.as_str());
            None
        }
        None => None,
    };
    let config = AdaptConfig::DEFAULT;
    let mut adaptation: Adaptation<DIM, ADAPT_HELD> = match saved_correction {
        Some(c) if !recommission => {
            defmt::info!(
                "adaptation: correction adapted on this device ({=u32} steps, record {=u32}); tracking",
                c.steps,
                c.seq
            );
            scorer.set((c.shift, c.log_scale));
            Adaptation::restored(config, MEAN, STD, &c, true)
        }
        _ => {
            defmt::info!(
                "adaptation: commissioning from the first {=u32} windows (declared normal)",
                ADAPT_WINDOWS
            );
            Adaptation::commissioning(config, MEAN, STD, ADAPT_WINDOWS, true)
        }
    };
    // The model's input gradient, sized by the export (a model the device
    // cannot differentiate, e.g. a mixture, exports one whose `new` fails:
    // the image still builds, adaptation stays off).
    let mut gradient = AdaptGradient::new(&MODEL)
        .map_err(|e| defmt::error!("adaptation off: {}", e))
        .ok();
    // A threshold saved before the correction was (re)commissioned belongs to
    // other scores: commission a new one once adaptation has.
    let adapting = matches!(adaptation.phase(), Phase::Commissioning { .. });
    let mut calibrator = match saved {
        Some(r) if !recommission && !adapting => {
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
    if adapting {
        defmt::info!("threshold: commissioned after adaptation");
    }

    let i2c = Twim::new(p.TWIM0, twim::Pins { scl, sda }, twim::Frequency::K400);
    // The features the model was trained on: a model whose pipeline does not
    // read the 3 axes, or does not give `DIM` features, does not compile.
    let mut monitor: Monitor<_, _, _, DIM, _, DEBOUNCE_N> =
        Monitor::new(Lis3dh::new(i2c, ADDR_SA0_HIGH), pipeline(), alarm);
    let mut windows = 0u32;
    loop {
        if let Event::Scored(report) = monitor.step() {
            windows = windows.wrapping_add(1);
            let threshold = report.threshold;
            let step = match (gradient.as_mut(), monitor.last_features()) {
                (Some(g), Some(x)) => adaptation.observe(g, &scorer, x, threshold),
                _ => Step::Idle,
            };
            let save = match step {
                Step::CommissioningDone(_) => {
                    defmt::info!("adaptation: commissioned, {}", adaptation.stats());
                    true
                }
                Step::Skipped(e) => {
                    defmt::warn!("adaptation: window skipped ({})", e);
                    false
                }
                _ => windows % ADAPT_SAVE_WINDOWS == 0 && adaptation.phase() == Phase::Tracking,
            };
            if save {
                match corrections.as_mut().map(|s| s.put(adaptation.record())) {
                    Some(Ok(r)) => defmt::info!("adaptation: correction saved (record {=u32})", r.seq),
                    Some(Err(e)) => defmt::error!("adaptation: correction not saved: {=str}", e.as_str()),
                    None => defmt::warn!("adaptation: correction not saved (no store)"),
                }
            }
            if matches!(adaptation.phase(), Phase::Commissioning { .. }) {
                // The threshold is calibrated on adapted scores only.
            } else if let Some(t) = calibrator.as_mut().and_then(|c| c.observe(&report.verdict)) {
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
    let golden = flowmote_firmware::golden!(flowmote_fixtures::model);
    flowmote_firmware::self_test(&Detector::new(&MODEL, THRESHOLD), pipeline(), &golden);
}
