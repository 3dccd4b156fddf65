//! The monitor on a Raspberry Pi Pico (RP2040, Cortex-M0+ without FPU: the
//! flow's f32 arithmetic runs in software): `cargo run --release` (probe-rs
//! flashes it over SWD and prints the defmt log over RTT).
//!
//! Wiring: a LIS3DH breakout on I²C0 (SDA = GP4, SCL = GP5, 400 kHz; SA0 high
//! → address 0x19). The alarm is the on-board LED (GP25, active high). Holding
//! GP14 to ground (a button) during reset starts the synthetic demo instead:
//! feature vectors sampled from the model (seeded from the ring oscillator's
//! random bits), with bursts of injected anomalies so the alarm visibly goes
//! on and off.
//!
//! At boot the image checks the bundled model's golden vectors on the chip
//! and logs the result (the same check CI runs in QEMU, there on a
//! Cortex-M4F).
#![no_std]
#![no_main]

use defmt_rtt as _;
use embedded_hal::delay::DelayNs;
use embedded_hal::digital::InputPin;
use flowmote_firmware::lis3dh::ADDR_SA0_HIGH;
use flowmote_firmware::{Alarm, Detector, KOfN, Lis3dh, Monitor, Synthetic};
use flowmote_fixtures::model::{pipeline, DIM, FEATURES, HOP, MODEL, THRESHOLD};
use panic_probe as _;
use rp2040_hal::fugit::RateExtU32;
use rp2040_hal::gpio::{FunctionI2C, Pin, PullUp};
use rp2040_hal::rosc::RingOscillator;
use rp2040_hal::{clocks, pac, Clock, Sio, Timer, Watchdog, I2C};

/// The second-stage bootloader for the Pico's W25Q080 flash; memory.x puts it
/// in the first 256 bytes of flash, where the boot ROM looks for it.
#[link_section = ".boot2"]
#[used]
static BOOT2: [u8; 256] = rp2040_boot2::BOOT_LOADER_W25Q080;

/// The Pico's crystal.
const XTAL_FREQ_HZ: u32 = 12_000_000;
/// Milliseconds between readings (100 Hz). The model's `pipeline()` scores a
/// window of its `WINDOW` readings every `HOP` readings (the bundled model: 25
/// and 5, a verdict every 50 ms).
const SAMPLE_MS: u32 = 10;
/// Windows per minute, for the periodic statistics log.
const WINDOWS_PER_MINUTE: u32 = 60_000 / (SAMPLE_MS * HOP as u32);
/// Alarm when 3 of the last 5 windows are anomalous.
const DEBOUNCE_N: usize = 5;
const DEBOUNCE_K: usize = 3;

#[rp2040_hal::entry]
fn main() -> ! {
    // `take` fails only if called twice; this is the only call.
    let Some(mut p) = pac::Peripherals::take() else {
        defmt::panic!("peripherals already taken");
    };
    let mut watchdog = Watchdog::new(p.WATCHDOG);
    let Ok(clocks) = clocks::init_clocks_and_plls(
        XTAL_FREQ_HZ,
        p.XOSC,
        p.CLOCKS,
        p.PLL_SYS,
        p.PLL_USB,
        &mut p.RESETS,
        &mut watchdog,
    ) else {
        defmt::panic!("clock setup failed");
    };
    let sio = Sio::new(p.SIO);
    let pins = rp2040_hal::gpio::Pins::new(p.IO_BANK0, p.PADS_BANK0, sio.gpio_bank0, &mut p.RESETS);
    let led = pins.gpio25.into_push_pull_output();
    let mut button = pins.gpio14.into_pull_up_input();
    let mut delay = Timer::new(p.TIMER, &mut p.RESETS, &clocks);

    defmt::info!(
        "flowmote monitor: {=usize} features {=[?]}, threshold {=f32} nats",
        DIM,
        FEATURES,
        THRESHOLD
    );
    self_test();

    let detector = Detector::new(&MODEL, THRESHOLD);
    let alarm = Alarm::new(detector, const { KOfN::<DEBOUNCE_N>::new(DEBOUNCE_K) }, led);

    if button.is_low().unwrap_or(false) {
        let rosc = RingOscillator::new(p.ROSC).initialize();
        let seed = (0..64).fold(0u64, |s, _| (s << 1) | u64::from(rosc.get_random_bit()));
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

    let sda: Pin<_, FunctionI2C, PullUp> = pins.gpio4.reconfigure();
    let scl: Pin<_, FunctionI2C, PullUp> = pins.gpio5.reconfigure();
    let i2c = I2C::i2c0(p.I2C0, sda, scl, 400.kHz(), &mut p.RESETS, clocks.system_clock.freq());
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
