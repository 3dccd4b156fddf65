//! The monitor on an ESP32-C3 (RISC-V rv32imc without FPU: the flow's f32
//! arithmetic runs in software): `cargo run --release` (espflash flashes it
//! over the USB-serial-JTAG and prints the defmt log).
//!
//! Wiring: a LIS3DH breakout on I²C0 (SDA = GPIO4, SCL = GPIO5, 400 kHz; SA0
//! high → address 0x19). The alarm is an LED from GPIO7 to ground (through a
//! resistor, active high). Holding GPIO10 to ground (a button) during reset
//! starts the synthetic demo instead: feature vectors sampled from the model
//! (seeded from the hardware RNG), with bursts of injected anomalies so the
//! alarm visibly goes on and off.
//!
//! At boot the image checks the bundled model's golden vectors on the chip
//! and logs the result (the same check CI runs in QEMU, there on a
//! Cortex-M4F).
#![no_std]
#![no_main]

use embedded_hal::delay::DelayNs;
use esp_backtrace as _;
use esp_hal::delay::Delay;
use esp_hal::gpio::{Input, InputConfig, Level, Output, OutputConfig, Pull};
use esp_hal::i2c::master::{Config as I2cConfig, I2c};
use esp_hal::rng::Rng;
use esp_hal::time::Rate;
use esp_println as _;
use flowmote_firmware::lis3dh::ADDR_SA0_HIGH;
use flowmote_firmware::{Alarm, Detector, KOfN, Lis3dh, Monitor, Synthetic};
use flowmote_fixtures::model::{pipeline, DIM, FEATURES, HOP, MODEL, THRESHOLD};

// The application descriptor the ESP-IDF second-stage bootloader checks.
esp_bootloader_esp_idf::esp_app_desc!();

/// Milliseconds between readings (100 Hz). The model's `pipeline()` scores a
/// window of its `WINDOW` readings every `HOP` readings (the bundled model: 25
/// and 5, a verdict every 50 ms).
const SAMPLE_MS: u32 = 10;
/// Windows per minute, for the periodic statistics log.
const WINDOWS_PER_MINUTE: u32 = 60_000 / (SAMPLE_MS * HOP as u32);
/// Alarm when 3 of the last 5 windows are anomalous.
const DEBOUNCE_N: usize = 5;
const DEBOUNCE_K: usize = 3;

#[esp_hal::main]
fn main() -> ! {
    let p = esp_hal::init(esp_hal::Config::default());
    let led = Output::new(p.GPIO7, Level::Low, OutputConfig::default());
    let button = Input::new(p.GPIO10, InputConfig::default().with_pull(Pull::Up));
    let mut delay = Delay::new();

    defmt::info!(
        "flowmote monitor: {=usize} features {=[?]}, threshold {=f32} nats",
        DIM,
        FEATURES,
        THRESHOLD
    );
    self_test();

    let detector = Detector::new(&MODEL, THRESHOLD);
    let alarm = Alarm::new(detector, const { KOfN::<DEBOUNCE_N>::new(DEBOUNCE_K) }, led);

    if button.is_low() {
        let rng = Rng::new();
        let seed = (u64::from(rng.random()) << 32) | u64::from(rng.random());
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

    let Ok(i2c) = I2c::new(p.I2C0, I2cConfig::default().with_frequency(Rate::from_khz(400))) else {
        defmt::panic!("I2C0: invalid configuration");
    };
    let i2c = i2c.with_sda(p.GPIO4).with_scl(p.GPIO5);
    // The features the model was trained on: a model whose pipeline does not
    // read the 3 axes, or does not give `DIM` features, does not compile.
    let mut monitor: Monitor<_, _, _, DIM, _, DEBOUNCE_N> =
        Monitor::new(Lis3dh::new(i2c, ADDR_SA0_HIGH), pipeline(), alarm);
    let mut windows = 0u32;
    loop {
        if let flowmote_firmware::Event::Scored(_) = monitor.step() {
            windows = windows.wrapping_add(1);
            if windows.is_multiple_of(WINDOWS_PER_MINUTE) {
                defmt::info!("{}", monitor.stats());
            }
        }
        delay.delay_ms(SAMPLE_MS);
    }
}

/// Score the golden vectors on the chip, push the golden raw readings through
/// the model's feature pipeline, and log whether both match the host.
fn self_test() {
    let golden = flowmote_firmware::golden!(flowmote_fixtures::model);
    flowmote_firmware::self_test(&Detector::new(&MODEL, THRESHOLD), pipeline(), &golden);
}
