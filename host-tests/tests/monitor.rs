//! Anomaly scoring (`flowmote::anomaly`) and the firmware's monitor logic
//! (`firmware/app`) on the host: scripted I²C transactions in
//! (`embedded-hal-mock`), alarm-pin writes and verdicts out — including a
//! sensor that returns garbage and one that returns bus errors — plus the
//! bundled model's golden values recomputed by the core.

use embedded_hal::i2c::ErrorKind;
use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as PinTx};
use embedded_hal_mock::eh1::i2c::{Mock as I2cMock, Transaction as I2cTx};
use embedded_hal_mock::eh1::MockError;
use flowmote::features::Stat;
use flowmote::{ActNorm, Detector, Error, Flow, KOfN, Mixture, Verdict};
use flowmote_firmware::lis3dh::{
    decode_frame, encode_frame, ADDR_SA0_HIGH, AUTO_INCREMENT, CTRL_REG1, CTRL_REG1_VALUE, CTRL_REG4, CTRL_REG4_VALUE,
    OUT_X_L, WHO_AM_I, WHO_AM_I_VALUE,
};
use flowmote_firmware::sim::RecordingPin;
use flowmote_firmware::{
    close, golden_mismatches, pipeline_mismatches, Alarm, Event, FeatureMap, Lis3dh, Monitor, Pipeline, SensorError,
    Synthetic,
};
use flowmote_host_tests::{rng, Rng, SeedableRng, Xoshiro128PlusPlus};

use flowmote_fixtures::model;

/// Standard normal on 3 axes after standardising with mean 0, std 100 mg
/// per axis: `−log p(0) = 3·(½ ln 2π + ln 100) ≈ 16.57`.
static FLOW3: Flow<3, (ActNorm<3>,)> = Flow::new((ActNorm::new([-4.605_170_2; 3], [0.0; 3]),));
/// Threshold for [`FLOW3`]: a window mean beyond ≈ 3.4σ in one axis is anomalous.
const T3: f32 = 22.5;

// ---------------------------------------------------------------------------
// Detector.

#[test]
fn detector_scores_minus_log_prob_and_compares_with_threshold() {
    let det = Detector::new(&FLOW3, T3);
    for x in [
        [0.0, 0.0, 0.0],
        [150.0, -80.0, 20.0],
        [500.0, 0.0, 0.0],
        [-1.0e4, 3.0, 7.0],
    ] {
        let lp = FLOW3.log_prob(&x).unwrap();
        let v = det.score(&x);
        assert_eq!(v.score(), Some(-lp), "{x:?}");
        assert_eq!(v.is_anomalous(), -lp > T3, "{x:?}");
        assert!(!v.is_invalid());
    }
    assert!(matches!(det.score(&[0.0; 3]), Verdict::Normal { .. }));
    assert!(matches!(det.score(&[500.0, 0.0, 0.0]), Verdict::Anomalous { .. }));
    assert_eq!(det.threshold(), T3);
}

#[test]
fn detector_bad_input_is_an_error_verdict_and_changes_nothing() {
    let det = Detector::new(&FLOW3, T3);
    let good = [10.0, 20.0, -30.0];
    let before = det.score(&good);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for i in 0..3 {
            let mut x = good;
            x[i] = bad;
            assert_eq!(det.score(&x), Verdict::Invalid(Error::NonFiniteInput), "{x:?}");
        }
    }
    // Finite but so large that the density underflows to −∞: overflow, not a panic.
    assert_eq!(det.score(&[3.0e38, 3.0e38, 3.0e38]), Verdict::Invalid(Error::Overflow));
    assert_eq!(det.score(&good), before, "state changed after bad input");
}

#[test]
fn detector_threshold_edge_cases() {
    let x = [250.0, 250.0, 250.0];
    let s = -FLOW3.log_prob(&x).unwrap();
    assert!(!Detector::new(&FLOW3, f32::INFINITY).score(&x).is_anomalous());
    assert!(
        Detector::new(&FLOW3, f32::NAN).score(&x).is_anomalous(),
        "NaN threshold must fail safe"
    );
    // Exactly at the threshold is normal; just above is anomalous.
    assert!(!Detector::new(&FLOW3, s).score(&x).is_anomalous());
    assert!(Detector::new(&FLOW3, s - s.abs() * 1e-6).score(&x).is_anomalous());
}

/// The detector takes any `Density`: a mixture of two Gaussians at ±300 mg
/// (weights ¼, ¾) scores −ln(¼ p₁ + ¾ p₂), between them it is anomalous, and
/// bad input is still an error verdict.
#[test]
fn detector_scores_a_mixture_of_flows() {
    type Gauss3 = Flow<3, (ActNorm<3>,)>;
    static MIX: Mixture<3, 2, (Gauss3, Gauss3)> = Mixture::new(
        [-1.386_294_4, -0.287_682_1],
        (
            Flow::new((ActNorm::new([-4.605_170_2; 3], [3.0; 3]),)),
            Flow::new((ActNorm::new([-4.605_170_2; 3], [-3.0; 3]),)),
        ),
    );
    let det = Detector::new(&MIX, T3);
    let g = |x: &[f32; 3], m: f64| {
        x.iter()
            .map(|v| -0.5 * ((*v as f64 - m) / 100.0).powi(2) - 0.5 * (2.0 * std::f64::consts::PI).ln() - 100f64.ln())
            .sum::<f64>()
    };
    for x in [
        [-300.0, -300.0, -300.0],
        [300.0, 300.0, 300.0],
        [0.0, 0.0, 0.0],
        [-290.0, -310.0, -250.0],
    ] {
        let want = -(0.25 * g(&x, -300.0).exp() + 0.75 * g(&x, 300.0).exp()).ln();
        let v = det.score(&x);
        let got = v.score().unwrap() as f64;
        assert!((got - want).abs() < 1e-4 * want.abs(), "{x:?}: {got} vs {want}");
        assert_eq!(v.is_anomalous(), got > T3 as f64);
    }
    assert!(!det.score(&[300.0; 3]).is_anomalous());
    assert!(det.score(&[0.0; 3]).is_anomalous(), "the gap between the modes");
    assert_eq!(
        det.score(&[f32::NAN, 0.0, 0.0]),
        Verdict::Invalid(Error::NonFiniteInput)
    );
}

// ---------------------------------------------------------------------------
// KOfN.

/// Reference: alarm iff at least `k` of the last `n` pushes were positive.
fn kofn_reference(history: &[bool], k: usize, n: usize) -> bool {
    history.iter().rev().take(n).filter(|&&b| b).count() >= k
}

fn check_kofn<const N: usize>(seed: u64) {
    let mut r = rng(seed);
    for k in 1..=N {
        let mut d = KOfN::<N>::new(k);
        let mut hist = Vec::new();
        for step in 0..300 {
            let b = r.next_u32().is_multiple_of(3);
            hist.push(b);
            let on = d.push(b);
            assert_eq!(on, kofn_reference(&hist, k, N), "N={N} k={k} step {step}");
            assert_eq!(on, d.is_alarm());
            assert_eq!(d.positives(), hist.iter().rev().take(N).filter(|&&b| b).count());
        }
        d.reset();
        assert!(!d.is_alarm());
        assert_eq!(d.positives(), 0);
    }
}

#[test]
fn kofn_matches_a_sliding_window_reference() {
    check_kofn::<1>(1);
    check_kofn::<2>(2);
    check_kofn::<3>(3);
    check_kofn::<5>(5);
    check_kofn::<8>(8);
}

#[test]
fn kofn_rejects_impossible_k() {
    assert!(KOfN::<3>::try_new(0).is_none());
    assert!(KOfN::<3>::try_new(4).is_none());
    assert_eq!(KOfN::<3>::try_new(3).map(|d| d.k()), Some(3));
    assert!(std::panic::catch_unwind(|| KOfN::<3>::new(0)).is_err());
    // Usable in statics (weights and debouncer in flash/RAM, no heap).
    static D: KOfN<4> = KOfN::new(2);
    assert_eq!(D.k(), 2);
}

// ---------------------------------------------------------------------------
// LIS3DH driver against scripted transactions.

fn init_tx(who: u8) -> Vec<I2cTx> {
    let mut v = vec![I2cTx::write_read(ADDR_SA0_HIGH, vec![WHO_AM_I], vec![who])];
    if who == WHO_AM_I_VALUE {
        v.push(I2cTx::write(ADDR_SA0_HIGH, vec![CTRL_REG1, CTRL_REG1_VALUE]));
        v.push(I2cTx::write(ADDR_SA0_HIGH, vec![CTRL_REG4, CTRL_REG4_VALUE]));
    }
    v
}

fn read_tx(bytes: [u8; 6]) -> I2cTx {
    I2cTx::write_read(ADDR_SA0_HIGH, vec![OUT_X_L | AUTO_INCREMENT], bytes.to_vec())
}

fn read_err_tx(kind: ErrorKind) -> I2cTx {
    I2cTx::write_read(ADDR_SA0_HIGH, vec![OUT_X_L | AUTO_INCREMENT], vec![0; 6]).with_error(kind)
}

#[test]
fn frame_encoding_round_trips_and_garbage_is_rejected() {
    for mg in [[0, 0, 1000], [-2048, 2047, -1], [12, -35, 981]] {
        assert_eq!(decode_frame(&encode_frame(mg)), Some(mg));
    }
    // Datasheet example: 0x4000 left-justified is +1024 mg in ±2 g high-resolution mode.
    assert_eq!(decode_frame(&[0x00, 0x40, 0, 0, 0, 0]), Some([1024, 0, 0]));
    assert_eq!(decode_frame(&[0xFF; 6]), None, "SDA stuck high");
    assert_eq!(decode_frame(&[0x01, 0x00, 0, 0, 0, 0]), None, "low nibble set");
    assert_eq!(decode_frame(&[0, 0, 0, 0, 0x08, 0x10]), None, "low nibble set on Z");
}

#[test]
fn driver_init_and_read() {
    let mut tx = init_tx(WHO_AM_I_VALUE);
    tx.push(read_tx(encode_frame([12, -35, 981])));
    let mut i2c = I2cMock::new(&tx);
    let mut s = Lis3dh::new(i2c.clone(), ADDR_SA0_HIGH);
    s.init().unwrap();
    assert_eq!(s.read_mg().unwrap(), [12, -35, 981]);
    i2c.done();
}

#[test]
fn driver_reports_wrong_device_bus_errors_and_garbage() {
    let mut tx = init_tx(0x6A); // an LSM6DS3 answering at the address
    tx.push(I2cTx::write_read(ADDR_SA0_HIGH, vec![WHO_AM_I], vec![0]).with_error(ErrorKind::Bus));
    tx.push(read_tx([0xFF; 6]));
    tx.push(read_err_tx(ErrorKind::ArbitrationLoss));
    let mut i2c = I2cMock::new(&tx);
    let mut s = Lis3dh::new(i2c.clone(), ADDR_SA0_HIGH);
    assert_eq!(s.init(), Err(SensorError::WrongDevice(0x6A)));
    assert_eq!(s.init(), Err(SensorError::Bus(ErrorKind::Bus)));
    assert_eq!(s.read_mg(), Err(SensorError::Garbage));
    assert_eq!(s.read_mg(), Err(SensorError::Bus(ErrorKind::ArbitrationLoss)));
    assert_eq!(
        SensorError::<ErrorKind>::Garbage.as_str(),
        "sensor: implausible frame (garbage)"
    );
    i2c.done();
}

// ---------------------------------------------------------------------------
// Features.

#[test]
fn pipeline_on_the_sensor_gives_window_features_of_the_readings_in_mg() {
    let w: [[i16; 3]; 3] = [[10, -20, 1000], [20, -40, 1002], [30, 0, 998]];
    let mut p: Pipeline<3, 3, 2, 6> = Pipeline::new([Stat::Mean, Stat::Ptp], 3);
    assert!(FeatureMap::push(&mut p, w[0]).is_none());
    assert!(FeatureMap::push(&mut p, w[1]).is_none());
    assert_eq!(FeatureMap::pending(&p), 2);
    let f = FeatureMap::push(&mut p, w[2]).unwrap().unwrap();
    assert_eq!(f, [20.0, 20.0, -20.0, 40.0, 1000.0, 4.0]);
    assert_eq!(FeatureMap::pending(&p), 0);
    // Exactly what the core computes from the readings as f32 (the CSV's values).
    let flat: Vec<f32> = w.iter().flatten().map(|&v| f32::from(v)).collect();
    let mut host = [0.0f32; 6];
    flowmote::features::window_features(&flat, 3, &[Stat::Mean, Stat::Ptp], &mut host).unwrap();
    assert_eq!(f, host);
}

/// The bundled model's golden raw windows: the exported `pipeline()` gives
/// the host's features bit for bit, and the model scores them as the host
/// did; a moved feature or a missing window is counted.
#[test]
fn bundled_pipeline_reproduces_the_hosts_features() {
    use model::*;
    assert_eq!(pipeline_mismatches(pipeline(), &GOLDEN_RAW, &GOLDEN_RAW_FEATURES), 0);
    assert_eq!(GOLDEN_RAW_FEATURES.len(), 4);
    assert_eq!(GOLDEN_RAW.len(), WINDOW + 3 * HOP);
    let det = Detector::new(&MODEL, THRESHOLD);
    assert_eq!(golden_mismatches(&det, &GOLDEN_RAW_FEATURES, &GOLDEN_RAW_LOG_PROBS), 0);
    let mut moved = GOLDEN_RAW_FEATURES;
    moved[2][1] = f32::from_bits(moved[2][1].to_bits() + 1);
    assert_eq!(pipeline_mismatches(pipeline(), &GOLDEN_RAW, &moved), 1);
    assert_eq!(
        pipeline_mismatches(pipeline(), &GOLDEN_RAW[..GOLDEN_RAW.len() - 1], &GOLDEN_RAW_FEATURES),
        1
    );
    assert_eq!(
        pipeline_mismatches(pipeline(), &GOLDEN_RAW, &GOLDEN_RAW_FEATURES[..3]),
        1
    );
    // The pipeline as the monitor drives it (readings in mg as i16): the same windows.
    let mut p = pipeline();
    let got: Vec<[f32; DIM]> = GOLDEN_RAW
        .iter()
        .filter_map(|r| FeatureMap::push(&mut p, r.map(|v| v as i16)))
        .map(Result::unwrap)
        .collect();
    assert!(
        GOLDEN_RAW.iter().flatten().all(|v| v.fract() == 0.0),
        "golden mg readings are integers"
    );
    assert_eq!(got, GOLDEN_RAW_FEATURES);
}

// ---------------------------------------------------------------------------
// Alarm: detector + debouncer + pin.

#[test]
fn alarm_drives_the_pin_on_changes_only_and_ignores_invalid_vectors() {
    let normal = [0.0, 0.0, 0.0];
    let odd = [600.0, 0.0, 0.0];
    // Pin: low on the first verdict, high once 2 of the last 3 are anomalous, low again.
    let mut pin = PinMock::new(&[PinTx::set(State::Low), PinTx::set(State::High), PinTx::set(State::Low)]);
    let mut a = Alarm::new(Detector::new(&FLOW3, T3), KOfN::<3>::new(2), pin.clone());
    let seq: [(&[f32; 3], bool, bool); 8] = [
        (&normal, false, false),
        (&odd, true, false),
        (&[f32::NAN, 0.0, 0.0], false, false), // invalid: counted, alarm unchanged
        (&odd, true, true),
        (&[0.0, f32::INFINITY, 0.0], false, true), // invalid while on: stays on, no write
        (&normal, false, true),
        (&normal, false, false),
        (&normal, false, false),
    ];
    for (i, (x, anomalous, alarm)) in seq.iter().enumerate() {
        let r = a.assess(x);
        assert_eq!(r.verdict.is_anomalous(), *anomalous, "step {i}");
        assert_eq!(r.alarm, *alarm, "step {i}");
        assert_eq!(r.threshold, T3);
        assert!(!r.pin_error);
    }
    let st = a.stats();
    assert_eq!((st.scored, st.anomalous, st.invalid), (6, 2, 2));
    pin.done();
}

#[test]
fn alarm_reports_a_failed_pin_write_and_retries_it() {
    let odd = [600.0, 0.0, 0.0];
    let mut pin = PinMock::new(&[
        PinTx::set(State::High).with_error(MockError::Io(std::io::ErrorKind::Other)),
        PinTx::set(State::High),
    ]);
    let mut a = Alarm::new(Detector::new(&FLOW3, T3), KOfN::<1>::new(1), pin.clone());
    let r = a.assess(&odd);
    assert!(r.alarm && r.pin_error);
    let r = a.assess(&odd);
    assert!(r.alarm && !r.pin_error, "the level is rewritten after a failure");
    assert_eq!(a.stats().pin_errors, 1);
    pin.done();
}

// ---------------------------------------------------------------------------
// Monitor: scripted sensor in, verdicts and pin writes out.

const W: usize = 4;

/// Per-axis means of tumbling windows of `W` readings.
type Means = Pipeline<3, W, 1, 3>;

fn means() -> Means {
    Pipeline::new([Stat::Mean], W)
}

type Mon = Monitor<'static, I2cMock, PinMock, Means, 3, Flow<3, (ActNorm<3>,)>, 3>;

fn monitor(i2c: &I2cMock, pin: &PinMock) -> Mon {
    let alarm = Alarm::new(Detector::new(&FLOW3, T3), KOfN::<3>::new(2), pin.clone());
    Monitor::new(Lis3dh::new(i2c.clone(), ADDR_SA0_HIGH), means(), alarm)
}

/// `W` identical good frames (window mean = `mg`).
fn window_tx(mg: [i16; 3]) -> Vec<I2cTx> {
    (0..W).map(|_| read_tx(encode_frame(mg))).collect()
}

/// Run `steps` steps and collect the scored reports' `(anomalous, alarm)`.
fn run(m: &mut Mon, steps: usize) -> (Vec<(bool, bool)>, Vec<Event<ErrorKind>>) {
    let mut scored = Vec::new();
    let mut events = Vec::new();
    for _ in 0..steps {
        let e = m.step();
        if let Event::Scored(r) = e {
            assert!(!r.verdict.is_invalid());
            scored.push((r.verdict.is_anomalous(), r.alarm));
        }
        events.push(e);
    }
    (scored, events)
}

#[test]
fn monitor_scores_windows_and_debounces_the_alarm() {
    let mut tx = init_tx(WHO_AM_I_VALUE);
    for mg in [[0, 0, 0], [700, 0, 0], [0, 0, 0], [0, -800, 0], [10, 10, 10], [0, 0, 0]] {
        tx.extend(window_tx(mg));
    }
    let (mut i2c, mut pin) = (
        I2cMock::new(&tx),
        PinMock::new(&[PinTx::set(State::Low), PinTx::set(State::High), PinTx::set(State::Low)]),
    );
    let mut m = monitor(&i2c, &pin);
    let (scored, events) = run(&mut m, 1 + 6 * W);
    assert_eq!(events[0], Event::Initialised);
    assert!(matches!(events[1], Event::Sampled([0, 0, 0])));
    assert_eq!(
        scored,
        // 2 of the last 3: on at the second anomaly, off when it is only 1 of 3 again.
        [
            (false, false),
            (true, false),
            (false, false),
            (true, true),
            (false, false),
            (false, false)
        ]
    );
    assert_eq!(m.stats().scored, 6);
    assert_eq!(m.stats().anomalous, 2);
    assert_eq!(m.pending(), 0);
    i2c.done();
    pin.done();
}

#[test]
fn monitor_survives_a_sensor_returning_garbage() {
    // A window with garbage in the middle: the garbage frames are dropped and
    // reported, the window completes with good frames, the verdict is normal.
    let mut tx = init_tx(WHO_AM_I_VALUE);
    tx.push(read_tx(encode_frame([5, 5, 5])));
    tx.push(read_tx([0xFF; 6])); // SDA stuck high
    tx.push(read_tx([0x0F, 0x00, 0x12, 0x34, 0x56, 0x78])); // noise
    tx.extend((0..W - 1).map(|_| read_tx(encode_frame([5, 5, 5]))));
    let (mut i2c, mut pin) = (I2cMock::new(&tx), PinMock::new(&[PinTx::set(State::Low)]));
    let mut m = monitor(&i2c, &pin);
    let (scored, events) = run(&mut m, 1 + 2 + W);
    assert_eq!(events[2], Event::Sensor(SensorError::Garbage));
    assert_eq!(events[3], Event::Sensor(SensorError::Garbage));
    assert_eq!(scored, [(false, false)]);
    let st = m.stats();
    assert_eq!((st.garbage, st.sensor_errors, st.scored), (2, 0, 1));
    i2c.done();
    pin.done();
}

#[test]
fn monitor_survives_bus_errors_and_reinitialises() {
    let mut tx = vec![
        // Nobody answers at first; then a wrong chip; then the right one.
        I2cTx::write_read(ADDR_SA0_HIGH, vec![WHO_AM_I], vec![0]).with_error(ErrorKind::Other),
    ];
    tx.extend(init_tx(0x00));
    tx.extend(init_tx(WHO_AM_I_VALUE));
    tx.extend((0..2).map(|_| read_tx(encode_frame([700, 0, 0]))));
    tx.push(read_err_tx(ErrorKind::Bus)); // the window keeps its 2 good frames
    tx.extend(init_tx(WHO_AM_I_VALUE)); // re-initialised after the bus error
    tx.extend((0..2).map(|_| read_tx(encode_frame([700, 0, 0]))));
    let (mut i2c, mut pin) = (I2cMock::new(&tx), PinMock::new(&[PinTx::set(State::High)]));
    let alarm = Alarm::new(Detector::new(&FLOW3, T3), KOfN::<1>::new(1), pin.clone());
    let mut m: Monitor<'static, _, _, _, 3, _, 1> =
        Monitor::new(Lis3dh::new(i2c.clone(), ADDR_SA0_HIGH), means(), alarm);
    let events: Vec<_> = (0..9).map(|_| m.step()).collect();
    assert_eq!(events[0], Event::Sensor(SensorError::Bus(ErrorKind::Other)));
    assert_eq!(events[1], Event::Sensor(SensorError::WrongDevice(0x00)));
    assert_eq!(events[2], Event::Initialised);
    assert_eq!(events[5], Event::Sensor(SensorError::Bus(ErrorKind::Bus)));
    assert_eq!(events[6], Event::Initialised);
    match events[8] {
        Event::Scored(r) => assert!(r.verdict.is_anomalous() && r.alarm),
        e => panic!("expected a scored window, got {e:?}"),
    }
    let st = m.stats();
    assert_eq!((st.sensor_errors, st.garbage, st.scored), (3, 0, 1));
    i2c.done();
    pin.done();
}

#[test]
fn monitor_never_panics_on_random_bytes_and_errors() {
    // Fuzz: every frame random bytes or an error; all outcomes are values.
    let mut r = rng(4);
    let mut tx = init_tx(WHO_AM_I_VALUE);
    let mut expected_inits = 0;
    for _ in 0..400 {
        match r.next_u32() % 4 {
            0 => {
                tx.push(read_err_tx(ErrorKind::Overrun));
                tx.extend(init_tx(WHO_AM_I_VALUE));
                expected_inits += 1;
            }
            1 => {
                let mut b = [0u8; 6];
                b.iter_mut().for_each(|v| *v = r.next_u32() as u8);
                tx.push(read_tx(b));
            }
            _ => {
                let mg = [0, 1, 2].map(|_| (r.next_u32() % 4096) as i16 - 2048);
                tx.push(read_tx(encode_frame(mg)));
            }
        }
    }
    let i2c = I2cMock::new(&tx);
    let pin = RecordingPin::default();
    let alarm = Alarm::new(Detector::new(&FLOW3, T3), KOfN::<3>::new(2), pin);
    let mut m: Monitor<'static, _, _, _, 3, _, 3> =
        Monitor::new(Lis3dh::new(i2c.clone(), ADDR_SA0_HIGH), means(), alarm);
    for _ in 0..tx.len() - 2 * expected_inits - 2 {
        let _ = m.step();
    }
    let st = m.stats();
    assert_eq!(st.sensor_errors as usize, expected_inits);
    assert!(st.garbage > 0 && st.scored > 0 && st.invalid == 0, "{st:?}");
    let (sensor, _) = m.release();
    sensor.release().done();
}

// ---------------------------------------------------------------------------
// Synthetic source and the bundled model.

#[test]
fn synthetic_draws_what_flow_sample_draws_and_injects_bursts() {
    let mut a = Synthetic::new(&FLOW3, 42);
    let mut r = Xoshiro128PlusPlus::seed_from_u64(42);
    for _ in 0..20 {
        assert_eq!(a.next_features().unwrap(), FLOW3.sample(&mut r).unwrap());
    }
    let mut b = Synthetic::new(&FLOW3, 1).with_anomalies(5, 2, 1000.0);
    let det = Detector::new(&FLOW3, T3);
    let flags: Vec<bool> = (0..10)
        .map(|_| det.score(&b.next_features().unwrap()).is_anomalous())
        .collect();
    assert_eq!(
        flags,
        [false, false, false, true, true, false, false, false, true, true]
    );
}

#[test]
fn bundled_model_golden_values_are_the_hosts() {
    use model::*;
    assert_eq!(FEATURES.len(), DIM);
    assert_eq!(MEAN.len(), DIM);
    assert_eq!(STD.len(), DIM);
    assert_eq!(GOLDEN_INPUTS.len(), GOLDEN_LOG_PROBS.len());
    for (x, &e) in GOLDEN_INPUTS.iter().zip(&GOLDEN_LOG_PROBS) {
        let lp = MODEL.log_prob(x).unwrap();
        assert!(close(lp, e), "log p({x:?}) = {lp}, file says {e}");
    }
    let mut s = Synthetic::new(&MODEL, GOLDEN_SEED);
    let mut r = Xoshiro128PlusPlus::seed_from_u64(GOLDEN_SEED);
    for g in &GOLDEN_SAMPLES {
        let x = s.next_features().unwrap();
        assert_eq!(x, MODEL.sample(&mut r).unwrap());
        assert!(x.iter().zip(g).all(|(a, b)| close(*a, *b)), "{x:?} vs {g:?}");
    }
    // Calibration sanity: the model's own samples are rarely anomalous (the
    // threshold is a high quantile of normal data's scores; loose bound so a
    // trained export, calibrated on data rather than on samples, passes too).
    let det = Detector::new(&MODEL, THRESHOLD);
    let mut s = Synthetic::new(&MODEL, 12345);
    let n = 4000;
    let flagged = (0..n)
        .filter(|_| det.score(&s.next_features().unwrap()).is_anomalous())
        .count();
    assert!(flagged < n / 5, "{flagged} of {n} model samples flagged");
}

/// The boards' boot self-test (`golden_mismatches`) passes on the host's own
/// numbers and counts every golden value that moved.
#[test]
fn boards_self_test_counts_golden_mismatches() {
    use model::*;
    let det = Detector::new(&MODEL, THRESHOLD);
    assert_eq!(golden_mismatches(&det, &GOLDEN_INPUTS, &GOLDEN_LOG_PROBS), 0);
    let mut moved = GOLDEN_LOG_PROBS;
    moved[1] += 1e-3 * moved[1].abs().max(1.0);
    moved[3] = f32::NAN;
    assert_eq!(golden_mismatches(&det, &GOLDEN_INPUTS, &moved), 2);
}

#[test]
fn golden_tolerance_is_relative_with_an_absolute_floor() {
    assert!(close(-16.5, -16.5));
    assert!(close(-16.5, -16.5 * (1.0 + 5e-7)));
    assert!(!close(-16.5, -16.5 * (1.0 + 3e-6)));
    assert!(close(0.0, 5e-7));
    assert!(!close(0.0, 5e-6));
    assert!(!close(f32::NAN, 0.0));
}
