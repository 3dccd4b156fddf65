//! Record mode: raw readings off the device, for training a model on the
//! data of the very sensor that will run it.
//!
//! A [`Recorder`] reads the LIS3DH and logs every reading as one compact
//! defmt line (over RTT on a board, semihosting in QEMU); `flowmote record`
//! on the host turns the decoded log (`probe-rs run` or `defmt-print`
//! output, live or saved) into a CSV. The lines, as the host decodes them:
//!
//! ```text
//! rec header ankle_horiz_fwd,ankle_vert,ankle_horiz_lateral   the CSV header: the channel names
//! rec 0 303 1166 316                                          sequence number, then X Y Z in mg
//! rec 1 301 1170 318
//! rec error i2c: no acknowledge                               a reading the sensor could not give
//! ```
//!
//! Every line starts with [`MARKER`] (`rec`), so the host keeps only these
//! whatever else the image logs. The header is logged before the first
//! reading and again every [`HEADER_EVERY`] readings, so a host that attaches
//! to a running device learns the channel names too. The sequence number
//! counts logged readings from 0 and is not advanced by sensor errors: a
//! jump in it is a line lost between the device and the file (an RTT buffer
//! overrun), which `flowmote record` reports; a reset starts it at 0 again.
//! A reading costs one defmt frame of about 11 bytes (format index, `u32`
//! sequence number, three `i16`, framing): `qemu-record` writes 15 752 bytes
//! for its 1 408 readings, headers and errors included — 1.1 KB/s at 100 Hz.
//!
//! Without the `defmt` feature the log statements compile to nothing and the
//! recorder only counts (host tests).

use embedded_hal::i2c::I2c;

use crate::lis3dh::{Lis3dh, SensorError};
use crate::window::Reading;

/// The first word of every record-mode line: `flowmote record` keeps the
/// lines that hold it and ignores the rest of the log.
pub const MARKER: &str = "rec";

/// The header line is repeated every this many readings (10 s at 100 Hz).
pub const HEADER_EVERY: u32 = 1000;

/// What one [`Recorder::step`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step<E> {
    /// The sensor was (re)initialised; no reading yet.
    Initialised,
    /// A reading was logged with this sequence number.
    Recorded {
        /// Its sequence number (0 for the first reading since reset).
        seq: u32,
        /// The reading, mg per axis.
        reading: Reading,
    },
    /// The sensor failed (logged as `rec error …`); the recorder
    /// re-initialises it on the next step (bus errors, wrong device) or
    /// simply reads again (garbage).
    Sensor(SensorError<E>),
}

/// Reads a LIS3DH and logs every reading: one [`Recorder::step`] per sample
/// period.
pub struct Recorder<I2C> {
    sensor: Lis3dh<I2C>,
    channels: [&'static str; 3],
    ready: bool,
    seq: u32,
    sensor_errors: u32,
}

impl<I2C: I2c> Recorder<I2C> {
    /// A recorder whose CSV columns are `channels` (X, Y, Z; the model's
    /// `CHANNEL_NAMES`, so the file trains a model with the same pipeline).
    /// A name must not contain a comma or white space. The sensor is
    /// initialised by the first [`Recorder::step`].
    pub fn new(sensor: Lis3dh<I2C>, channels: [&'static str; 3]) -> Self {
        Recorder {
            sensor,
            channels,
            ready: false,
            seq: 0,
            sensor_errors: 0,
        }
    }

    /// Do one thing: initialise the sensor if needed, else read it and log
    /// the reading (after the header line, when one is due). Never panics;
    /// a sensor error is logged, counted and returned.
    pub fn step(&mut self) -> Step<I2C::Error> {
        if !self.ready {
            return match self.sensor.init() {
                Ok(()) => {
                    self.ready = true;
                    Step::Initialised
                }
                Err(e) => self.sensor_error(e),
            };
        }
        match self.sensor.read_mg() {
            Ok(reading) => {
                let seq = self.seq;
                if seq % HEADER_EVERY == 0 {
                    self.header();
                }
                info!(
                    "rec {=u32} {=i16} {=i16} {=i16}",
                    seq, reading[0], reading[1], reading[2]
                );
                self.seq = self.seq.wrapping_add(1);
                Step::Recorded { seq, reading }
            }
            Err(e) => self.sensor_error(e),
        }
    }

    /// Log the header line, `rec header X,Y,Z` with the channel names.
    pub fn header(&self) {
        let [x, y, z] = self.channels;
        info!("rec header {=str},{=str},{=str}", x, y, z);
    }

    fn sensor_error(&mut self, e: SensorError<I2C::Error>) -> Step<I2C::Error> {
        if !matches!(e, SensorError::Garbage) {
            self.ready = false;
        }
        self.sensor_errors = self.sensor_errors.wrapping_add(1);
        warn!("rec error {=str}", e.as_str());
        Step::Sensor(e)
    }

    /// Readings logged so far (the next sequence number).
    pub fn recorded(&self) -> u32 {
        self.seq
    }

    /// Sensor errors so far (bus errors, wrong device, garbage frames).
    pub fn sensor_errors(&self) -> u32 {
        self.sensor_errors
    }

    /// Give the sensor (and its bus) back.
    pub fn release(self) -> Lis3dh<I2C> {
        self.sensor
    }
}
