//! The monitor on an nRF52840-DK: `cargo run --release` (probe-rs flashes it
//! and prints the defmt log over RTT).
//!
//! Wiring: a LIS3DH breakout on the Arduino header's I²C pins (SCL = P0.27,
//! SDA = P0.26, SA0 high → address 0x19). The alarm is LED 1 (P0.13, active
//! low). Holding button 1 (P0.11) during reset starts the synthetic demo
//! instead: feature vectors sampled from the model (seeded from the hardware
//! RNG), with bursts of injected anomalies so the alarm visibly goes on and off.
//!
//! At boot the image checks the bundled model's golden vectors on the chip
//! and logs the result (the same check CI runs in QEMU).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use defmt_rtt as _;
use embedded_hal::delay::DelayNs;
use embedded_hal::digital::InputPin;
use flowmote_firmware::lis3dh::ADDR_SA0_HIGH;
use flowmote_firmware::{golden_mismatches, Alarm, AxisMeans, Detector, Inverted, KOfN, Lis3dh, Monitor, Synthetic};
use nrf52840_hal::gpio::{p0, Level};
use nrf52840_hal::twim::{self, Twim};
use nrf52840_hal::{pac, Delay, Rng};
use panic_probe as _;

use flowmote_fixtures::model::{DIM, FEATURES, GOLDEN_INPUTS, GOLDEN_LOG_PROBS, MODEL, THRESHOLD};

/// Readings per window (100 Hz sensor → one verdict every 0.25 s).
const WINDOW: usize = 25;
/// Alarm when 3 of the last 5 windows are anomalous.
const DEBOUNCE_N: usize = 5;
const DEBOUNCE_K: usize = 3;

#[entry]
fn main() -> ! {
    // `take` fails only if called twice; this is the only call.
    let (Some(p), Some(core)) = (pac::Peripherals::take(), pac::CorePeripherals::take()) else {
        defmt::panic!("peripherals already taken");
    };
    let port0 = p0::Parts::new(p.P0);
    let led1 = port0.p0_13.into_push_pull_output(Level::High).degrade();
    let mut button1 = port0.p0_11.into_pullup_input();
    let scl = port0.p0_27.into_floating_input().degrade();
    let sda = port0.p0_26.into_floating_input().degrade();
    let mut delay = Delay::new(core.SYST);

    defmt::info!(
        "flowmote monitor: {=usize} features {=[?]}, threshold {=f32} nats",
        DIM,
        FEATURES,
        THRESHOLD
    );
    self_test();

    let detector = Detector::new(&MODEL, THRESHOLD);
    let alarm = Alarm::new(detector, const { KOfN::<DEBOUNCE_N>::new(DEBOUNCE_K) }, Inverted(led1));

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
            delay.delay_ms(250);
        }
    }

    let i2c = Twim::new(p.TWIM0, twim::Pins { scl, sda }, twim::Frequency::K400);
    let mut monitor: Monitor<_, _, _, DIM, _, WINDOW, DEBOUNCE_N> =
        Monitor::new(Lis3dh::new(i2c, ADDR_SA0_HIGH), AxisMeans, alarm);
    let mut windows = 0u32;
    loop {
        if let flowmote_firmware::Event::Scored(_) = monitor.step() {
            windows = windows.wrapping_add(1);
            if windows % 240 == 0 {
                defmt::info!("{}", monitor.stats());
            }
        }
        delay.delay_ms(10);
    }
}

/// Score the golden vectors on the chip and log whether they match the host.
fn self_test() {
    let bad = golden_mismatches(&Detector::new(&MODEL, THRESHOLD), &GOLDEN_INPUTS, &GOLDEN_LOG_PROBS);
    if bad == 0 {
        defmt::info!(
            "self-test: {=usize} golden log-densities match the host",
            GOLDEN_INPUTS.len()
        );
    } else {
        defmt::error!("self-test: {=usize} golden log-densities differ from the host", bad);
    }
}
