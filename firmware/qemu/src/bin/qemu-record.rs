//! Record mode on the emulated Cortex-M4F (QEMU `mps2-an386`, semihosting):
//! the firmware's [`Recorder`] reads an emulated LIS3DH that replays the
//! bundled test recording (the ankle axes of
//! `examples/data/daphnet_gait.test.csv`, 1 408 readings, clipped to the
//! sensor's ±2 g as a real LIS3DH would), with a bus error and a garbage
//! frame injected, and logs every reading as a `rec` line under the bundled
//! model's channel names.
//!
//! `cargo run --release --bin qemu-record | flowmote record --log - --out rec.csv`
//! in `firmware/qemu` gives the recording back as a CSV; `scripts/firmware-ci.sh`
//! checks that it equals the test file's clipped columns, row for row.
//!
//! Exit 0 once every reading is logged and both faults were reported; 1
//! otherwise, on a panic or a HardFault.
#![no_std]
#![no_main]

#[path = "../platform.rs"]
mod platform;
use flowmote_firmware::lis3dh::ADDR_SA0_HIGH;
use flowmote_firmware::record::Step;
use flowmote_firmware::sim::{EmulatedLis3dh, Fault};
use flowmote_firmware::{Lis3dh, Recorder};
use flowmote_fixtures::model::CHANNEL_NAMES;
use platform::{entry, exit_failure, exit_success};

include!(concat!(env!("OUT_DIR"), "/recording.rs"));

/// Injected sensor faults: a NACK at data read 100, a garbage frame at 700.
static FAULTS: [(u32, Fault); 2] = [(100, Fault::Nack), (700, Fault::Garbage)];

#[entry]
fn main() -> ! {
    let mut ok = true;
    if CHANNEL_NAMES != RECORDING_COLUMNS {
        defmt::error!(
            "the model's channels {=[?]} are not the recording's {=[?]}",
            CHANNEL_NAMES,
            RECORDING_COLUMNS
        );
        ok = false;
    }
    let mut next = 0usize;
    let sensor = EmulatedLis3dh::new(
        ADDR_SA0_HIGH,
        move || {
            let r = RECORDING.get(next).copied().unwrap_or([0; 3]);
            next += 1;
            r
        },
        &FAULTS,
    );
    let mut rec = Recorder::new(Lis3dh::new(sensor, ADDR_SA0_HIGH), CHANNEL_NAMES);
    let target = RECORDING.len() as u32;
    // Each fault costs a step, a bus error one more (re-initialisation).
    let mut steps = 0usize;
    while rec.recorded() < target && steps < RECORDING.len() + 16 {
        steps += 1;
        if let Step::Recorded { seq, reading } = rec.step() {
            let sent = RECORDING[seq as usize].map(|v| v.clamp(-2048, 2047));
            if reading != sent {
                defmt::error!("reading {=u32}: decoded {=[?]}, sensor sent {=[?]}", seq, reading, sent);
                ok = false;
            }
        }
    }
    ok &= rec.recorded() == target && rec.sensor_errors() == 2;
    if ok {
        defmt::info!(
            "qemu record: {=u32} readings recorded, {=u32} sensor errors reported",
            rec.recorded(),
            rec.sensor_errors()
        );
        exit_success()
    } else {
        defmt::error!(
            "qemu record FAILED: {=u32} of {=u32} readings, {=u32} sensor errors (expected 2)",
            rec.recorded(),
            target,
            rec.sensor_errors()
        );
        exit_failure()
    }
}
