//! Link-time proof that the scoring path cannot panic.
//!
//! This image runs only the monitor's per-vector path — `Detector::score`
//! (the whole flow's `log_prob`), the k-of-n debouncer and the alarm pin
//! (`Alarm::assess`) — and the synthetic sampler `Synthetic::next_features`,
//! on inputs read with volatile loads (so nothing is constant-folded away).
//! Its panic handler calls a function that exists nowhere. If the optimised,
//! LTO'd image contains any reachable panic (a bounds check, an `unwrap`, an
//! overflow check, a division by zero…), the handler is referenced and the
//! link fails with
//! `undefined symbol: flowmote_scoring_path_can_panic_see_firmware_src_bin_nopanic_rs`.
//!
//! Built by `scripts/firmware-ci.sh` for the bundled model:
//! `cargo build --release --no-default-features --features nopanic --bin nopanic`,
//! and with `--features nopanic-extended` for the extended export
//! (`host-tests/tests/generated/extended.rs`: LU linear, spline coupling,
//! autoregressive spline and RK4 continuous-flow layers), so every layer kind
//! the trainer makes is covered.
//! It is never run.
#![no_std]
#![no_main]

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use cortex_m as _;
use cortex_m_rt::entry;
use flowmote_firmware::sim::RecordingPin;
use flowmote_firmware::{Alarm, Detector, KOfN, Synthetic};

#[allow(dead_code)]
#[cfg_attr(not(feature = "nopanic-extended"), path = "../model.rs")]
#[cfg_attr(
    feature = "nopanic-extended",
    path = "../../../host-tests/tests/generated/extended.rs"
)]
mod model;

use model::{DIM, MODEL, THRESHOLD};

static mut INPUT: [f32; DIM] = [0.0; DIM];
static mut SEED: u64 = 0;
static mut OUTPUT: [f32; DIM] = [0.0; DIM];
static mut ALARM: bool = false;

#[entry]
fn main() -> ! {
    let detector = Detector::new(&MODEL, THRESHOLD);
    let mut alarm = Alarm::new(detector, const { KOfN::<5>::new(3) }, RecordingPin::default());
    // SAFETY: single-threaded, no interrupts use these statics.
    let mut synth = Synthetic::new(&MODEL, unsafe { read_volatile(addr_of!(SEED)) });
    loop {
        let x = unsafe { read_volatile(addr_of!(INPUT)) };
        let report = alarm.assess(&x);
        let sample = synth.next_features().unwrap_or([f32::NAN; DIM]);
        unsafe {
            write_volatile(addr_of_mut!(ALARM), report.alarm);
            write_volatile(addr_of_mut!(OUTPUT), sample);
            write_volatile(addr_of_mut!(OUTPUT[0]), report.verdict.score().unwrap_or(f32::NAN));
        }
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    extern "Rust" {
        fn flowmote_scoring_path_can_panic_see_firmware_src_bin_nopanic_rs() -> !;
    }
    // SAFETY: the symbol does not exist: this only links if it is unreachable.
    unsafe { flowmote_scoring_path_can_panic_see_firmware_src_bin_nopanic_rs() }
}
