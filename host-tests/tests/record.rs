//! The firmware's record mode (`flowmote_firmware::record`) on the emulated
//! LIS3DH: every reading gets the next sequence number, sensor errors are
//! reported without one, and a bus error re-initialises the sensor.

use flowmote_firmware::lis3dh::ADDR_SA0_HIGH;
use flowmote_firmware::record::{Step, HEADER_EVERY, MARKER};
use flowmote_firmware::sim::{EmulatedLis3dh, Fault};
use flowmote_firmware::{Lis3dh, Recorder, SensorError};

static FAULTS: [(u32, Fault); 2] = [(1, Fault::Nack), (3, Fault::Garbage)];

#[test]
fn readings_are_numbered_and_sensor_errors_are_not() {
    let mut n = 0i16;
    let sensor = EmulatedLis3dh::new(
        ADDR_SA0_HIGH,
        move || {
            n += 1;
            [n, -n, 3000]
        },
        &FAULTS,
    );
    let mut rec = Recorder::new(Lis3dh::new(sensor, ADDR_SA0_HIGH), ["x", "y", "z"]);
    let steps: Vec<_> = (0..8).map(|_| rec.step()).collect();
    assert_eq!(steps[0], Step::Initialised);
    assert_eq!(
        steps[1],
        Step::Recorded {
            seq: 0,
            reading: [1, -1, 2047]
        },
        "clipped to the sensor's ±2 g"
    );
    assert!(matches!(steps[2], Step::Sensor(SensorError::Bus(_))));
    assert_eq!(steps[3], Step::Initialised, "a bus error re-initialises the sensor");
    assert_eq!(
        steps[4],
        Step::Recorded {
            seq: 1,
            reading: [2, -2, 2047]
        }
    );
    assert_eq!(steps[5], Step::Sensor(SensorError::Garbage));
    assert_eq!(
        steps[6],
        Step::Recorded {
            seq: 2,
            reading: [3, -3, 2047]
        },
        "a garbage frame is read again at once"
    );
    assert_eq!((rec.recorded(), rec.sensor_errors()), (4, 2));
    assert_eq!((MARKER, HEADER_EVERY), ("rec", 1000));
}
