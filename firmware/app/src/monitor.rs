//! The monitor loop: sensor → window → features → score → debounce → pin.
//!
//! [`Alarm`] is the part shared by every input source (sensor windows, the
//! synthetic demo, golden vectors): score one feature vector, update the
//! k-of-n debouncer, drive the pin, log. [`Monitor`] adds the sensor and the
//! feature pipeline (the model's exported `pipeline()`, see [`crate::window`]). Neither panics on bad data: sensor errors, garbage frames, feature
//! vectors the model cannot score and pin errors are returned (and logged),
//! and the next call carries on.

use embedded_hal::digital::{ErrorType, OutputPin};
use embedded_hal::i2c::I2c;
use flowmote::{Density, Error};

use crate::lis3dh::{Lis3dh, SensorError};
use crate::window::{FeatureMap, Reading};
use crate::{Detector, KOfN, Verdict};

/// What [`Alarm::assess`] decided about one feature vector.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Report {
    /// The detector's verdict (carries the score, or why there is none).
    pub verdict: Verdict,
    /// The threshold the score was compared with (nats).
    pub threshold: f32,
    /// Whether the debounced alarm is on after this vector.
    pub alarm: bool,
    /// Whether writing the alarm pin failed (it is retried on the next vector).
    pub pin_error: bool,
}

/// Counters kept by [`Alarm`] and [`Monitor`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stats {
    /// Feature vectors scored (normal or anomalous).
    pub scored: u32,
    /// Of those, anomalous.
    pub anomalous: u32,
    /// Feature vectors the model could not score.
    pub invalid: u32,
    /// Bus errors and wrong `WHO_AM_I` reads.
    pub sensor_errors: u32,
    /// Frames rejected by the plausibility check.
    pub garbage: u32,
    /// Failed pin writes.
    pub pin_errors: u32,
}

/// Detector + k-of-n debouncer + alarm pin (high = alarm).
pub struct Alarm<'a, const D: usize, M, P, const N: usize> {
    detector: Detector<'a, D, M>,
    debounce: KOfN<N>,
    pin: P,
    /// Pin level last written successfully; `None` before the first write and
    /// after a failed one, so the level is (re)written.
    pin_level: Option<bool>,
    stats: Stats,
}

impl<'a, const D: usize, M: Density<D>, P: OutputPin, const N: usize> Alarm<'a, D, M, P, N> {
    /// Wire a detector, a debouncer and the alarm pin. The pin is first
    /// written by the first [`Alarm::assess`] that has a verdict.
    pub fn new(detector: Detector<'a, D, M>, debounce: KOfN<N>, pin: P) -> Self {
        Alarm {
            detector,
            debounce,
            pin,
            pin_level: None,
            stats: Stats::default(),
        }
    }

    /// Score `x`, update the debouncer and the pin, log, and report.
    ///
    /// A vector that cannot be scored ([`Verdict::Invalid`]) is counted and
    /// logged but leaves the debouncer and the pin as they were.
    pub fn assess(&mut self, x: &[f32; D]) -> Report {
        let verdict = self.detector.score(x);
        self.decide(verdict)
    }

    /// [`Alarm::assess`] the features of a window, or count features that
    /// could not be computed as a [`Verdict::Invalid`] (which leaves the
    /// debouncer and the pin as they were).
    pub fn assess_features(&mut self, x: Result<[f32; D], Error>) -> Report {
        match x {
            Ok(x) => self.assess(&x),
            Err(e) => self.decide(Verdict::Invalid(e)),
        }
    }

    fn decide(&mut self, verdict: Verdict) -> Report {
        let threshold = self.detector.threshold();
        let alarm = match verdict {
            Verdict::Invalid(_) => {
                self.stats.invalid = self.stats.invalid.wrapping_add(1);
                self.debounce.is_alarm()
            }
            v => {
                self.stats.scored = self.stats.scored.wrapping_add(1);
                if v.is_anomalous() {
                    self.stats.anomalous = self.stats.anomalous.wrapping_add(1);
                }
                self.debounce.push(v.is_anomalous())
            }
        };
        let pin_error = if verdict.is_invalid() && self.pin_level.is_some() {
            false
        } else {
            self.drive(alarm).is_err()
        };
        match verdict {
            Verdict::Normal { score } => info!(
                "score {=f32} threshold {=f32} normal alarm {=bool}",
                score, threshold, alarm
            ),
            Verdict::Anomalous { score } => {
                warn!(
                    "score {=f32} threshold {=f32} ANOMALOUS alarm {=bool}",
                    score, threshold, alarm
                )
            }
            Verdict::Invalid(e) => warn!("invalid features ({}) alarm {=bool}", e, alarm),
        }
        if pin_error {
            warn!("alarm pin write failed");
        }
        Report {
            verdict,
            threshold,
            alarm,
            pin_error,
        }
    }

    fn drive(&mut self, on: bool) -> Result<(), P::Error> {
        if self.pin_level == Some(on) {
            return Ok(());
        }
        let r = if on { self.pin.set_high() } else { self.pin.set_low() };
        match r {
            Ok(()) => self.pin_level = Some(on),
            Err(_) => {
                self.pin_level = None;
                self.stats.pin_errors = self.stats.pin_errors.wrapping_add(1);
            }
        }
        r
    }

    /// Compare later scores with `threshold` (nats), e.g. once commissioning
    /// has calibrated one; the debouncer keeps its history.
    pub fn set_threshold(&mut self, threshold: f32) {
        self.detector = Detector::new(self.detector.model(), threshold);
    }

    /// Whether the debounced alarm is on.
    pub fn is_on(&self) -> bool {
        self.debounce.is_alarm()
    }

    /// The detector.
    pub fn detector(&self) -> &Detector<'a, D, M> {
        &self.detector
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Give the pin back.
    pub fn release(self) -> P {
        self.pin
    }
}

/// What one [`Monitor::step`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Event<E> {
    /// The sensor was (re)initialised; no reading yet.
    Initialised,
    /// A reading went into the pipeline; no window completed.
    Sampled(Reading),
    /// The reading completed a window, which was scored.
    Scored(Report),
    /// The sensor failed; the monitor re-initialises it on the next step
    /// (bus errors, wrong device) or simply reads again (garbage).
    Sensor(SensorError<E>),
}

/// Sensor + feature pipeline + [`Alarm`]: one [`Monitor::step`] per sample
/// period.
///
/// `F` is the model's exported pipeline (`model::pipeline()`); its output
/// size must be the model's `D`, and it must read 3 channels (see
/// [`crate::window`]): anything else does not compile.
pub struct Monitor<'a, I2C, P, F, const D: usize, M, const N: usize> {
    sensor: Lis3dh<I2C>,
    ready: bool,
    features: F,
    last: Option<[f32; D]>,
    alarm: Alarm<'a, D, M, P, N>,
    stats: Stats,
}

impl<'a, I2C, P, F, const D: usize, M, const N: usize> Monitor<'a, I2C, P, F, D, M, N>
where
    I2C: I2c,
    P: OutputPin,
    F: FeatureMap<D>,
    M: Density<D>,
{
    /// A monitor; the sensor is initialised by the first [`Monitor::step`].
    pub fn new(sensor: Lis3dh<I2C>, features: F, alarm: Alarm<'a, D, M, P, N>) -> Self {
        Monitor {
            sensor,
            ready: false,
            features,
            last: None,
            alarm,
            stats: Stats::default(),
        }
    }

    /// Do one thing: initialise the sensor if needed, else read a sample into
    /// the pipeline and, when it completes a window, score the window's
    /// features.
    ///
    /// A bus error or a wrong `WHO_AM_I` marks the sensor for
    /// re-initialisation; a garbage frame is dropped (the pipeline keeps its
    /// good readings). Either way the error is logged, counted and returned, and
    /// the alarm state is untouched.
    pub fn step(&mut self) -> Event<I2C::Error> {
        if !self.ready {
            return match self.sensor.init() {
                Ok(()) => {
                    self.ready = true;
                    info!("sensor initialised");
                    Event::Initialised
                }
                Err(e) => self.sensor_error(e),
            };
        }
        match self.sensor.read_mg() {
            Ok(r) => match self.features.push(r) {
                Some(x) => {
                    self.last = x.ok();
                    Event::Scored(self.alarm.assess_features(x))
                }
                None => Event::Sampled(r),
            },
            Err(e) => self.sensor_error(e),
        }
    }

    fn sensor_error(&mut self, e: SensorError<I2C::Error>) -> Event<I2C::Error> {
        match e {
            SensorError::Garbage => self.stats.garbage = self.stats.garbage.wrapping_add(1),
            _ => {
                self.ready = false;
                self.stats.sensor_errors = self.stats.sensor_errors.wrapping_add(1);
            }
        }
        warn!("{=str}", e.as_str());
        Event::Sensor(e)
    }

    /// Counters so far (sensor counters from the monitor, scoring and pin
    /// counters from its [`Alarm`]).
    pub fn stats(&self) -> Stats {
        let a = self.alarm.stats();
        Stats {
            sensor_errors: self.stats.sensor_errors,
            garbage: self.stats.garbage,
            ..a
        }
    }

    /// The alarm stage.
    pub fn alarm(&self) -> &Alarm<'a, D, M, P, N> {
        &self.alarm
    }

    /// Compare later scores with `threshold` ([`Alarm::set_threshold`]).
    pub fn set_threshold(&mut self, threshold: f32) {
        self.alarm.set_threshold(threshold);
    }

    /// The features of the window the last [`Event::Scored`] scored
    /// (`None` before the first, or if its features could not be computed):
    /// what on-device adaptation ([`crate::Adaptation`]) learns from.
    pub fn last_features(&self) -> Option<&[f32; D]> {
        self.last.as_ref()
    }

    /// Readings since the last scored window.
    pub fn pending(&self) -> usize {
        self.features.pending()
    }

    /// Take the monitor apart: the sensor (and its bus) and the alarm.
    pub fn release(self) -> (Lis3dh<I2C>, Alarm<'a, D, M, P, N>) {
        (self.sensor, self.alarm)
    }
}

/// An [`OutputPin`] with inverted logic: `set_high` drives the wrapped pin
/// low. For active-low LEDs such as the nRF52840-DK's.
#[derive(Debug)]
pub struct Inverted<P>(pub P);

impl<P: ErrorType> ErrorType for Inverted<P> {
    type Error = P::Error;
}

impl<P: OutputPin> OutputPin for Inverted<P> {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.0.set_high()
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.0.set_low()
    }
}
