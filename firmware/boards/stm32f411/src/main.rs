//! The monitor on a WeAct Black Pill (STM32F411CE): `cargo run --release`
//! (probe-rs flashes it over SWD and prints the defmt log over RTT).
//!
//! Wiring: a LIS3DH breakout on I²C1 (SCL = PB6, SDA = PB7, 400 kHz; SA0 high
//! → address 0x19). The alarm is the on-board LED (PC13, active low). Holding
//! the KEY button (PA0, to ground) during reset starts the synthetic demo
//! instead: feature vectors sampled from the model, with bursts of injected
//! anomalies so the alarm visibly goes on and off. The STM32F411 has no
//! hardware RNG: the demo is seeded from the chip's unique ID.
//!
//! At boot the image checks the bundled model's golden vectors on the chip
//! and logs the result (the same check CI runs in QEMU).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use defmt_rtt as _;
use embedded_hal::delay::DelayNs;
use flowmote_firmware::lis3dh::ADDR_SA0_HIGH;
use flowmote_firmware::{Alarm, Detector, Inverted, KOfN, Lis3dh, Monitor, Synthetic};
use flowmote_fixtures::model::{pipeline, DIM, FEATURES, HOP, MODEL, THRESHOLD};
use panic_probe as _;
use stm32f4xx_hal::gpio::PinState;
use stm32f4xx_hal::i2c::{DutyCycle, I2c, Mode};
use stm32f4xx_hal::pac;
use stm32f4xx_hal::prelude::*;
use stm32f4xx_hal::rcc::Config;
use stm32f4xx_hal::signature::Uid;

/// Milliseconds between readings (100 Hz). The model's `pipeline()` scores a
/// window of its `WINDOW` readings every `HOP` readings (the bundled model: 25
/// and 5, a verdict every 50 ms).
const SAMPLE_MS: u32 = 10;
/// Windows per minute, for the periodic statistics log.
const WINDOWS_PER_MINUTE: u32 = 60_000 / (SAMPLE_MS * HOP as u32);
/// Alarm when 3 of the last 5 windows are anomalous.
const DEBOUNCE_N: usize = 5;
const DEBOUNCE_K: usize = 3;

#[entry]
fn main() -> ! {
    // `take` fails only if called twice; this is the only call.
    let (Some(dp), Some(cp)) = (pac::Peripherals::take(), cortex_m::Peripherals::take()) else {
        defmt::panic!("peripherals already taken");
    };
    // 25 MHz crystal → 96 MHz system clock.
    let mut rcc = dp.RCC.freeze(Config::hse(25.MHz()).sysclk(96.MHz()));
    let gpioa = dp.GPIOA.split(&mut rcc);
    let gpiob = dp.GPIOB.split(&mut rcc);
    let gpioc = dp.GPIOC.split(&mut rcc);
    let led = gpioc.pc13.into_push_pull_output_in_state(PinState::High);
    let key = gpioa.pa0.into_pull_up_input();
    let mut delay = cp.SYST.delay(&rcc.clocks);

    defmt::info!(
        "flowmote monitor: {=usize} features {=[?]}, threshold {=f32} nats",
        DIM,
        FEATURES,
        THRESHOLD
    );
    self_test();

    let detector = Detector::new(&MODEL, THRESHOLD);
    let alarm = Alarm::new(detector, const { KOfN::<DEBOUNCE_N>::new(DEBOUNCE_K) }, Inverted(led));

    if key.is_low() {
        let uid = Uid::get();
        let seed = (u64::from(uid.x()) << 32) | (u64::from(uid.y()) << 16) | u64::from(uid.waf_num());
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

    let i2c = I2c::new(
        dp.I2C1,
        (gpiob.pb6, gpiob.pb7),
        Mode::fast(400.kHz(), DutyCycle::Ratio2to1),
        &mut rcc,
    );
    // The features the model was trained on: a model whose pipeline does not
    // read the 3 axes, or does not give `DIM` features, does not compile.
    let mut monitor: Monitor<_, _, _, DIM, _, DEBOUNCE_N> =
        Monitor::new(Lis3dh::new(i2c, ADDR_SA0_HIGH), pipeline(), alarm);
    let mut windows = 0u32;
    loop {
        if let flowmote_firmware::Event::Scored(_) = monitor.step() {
            windows = windows.wrapping_add(1);
            if windows % WINDOWS_PER_MINUTE == 0 {
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
