//! CI image for the emulated Cortex-M4F (QEMU `mps2-an386`, semihosting); CI
//! also builds it for the soft-float instruction sets, RV32IMC (the ESP32-C3's,
//! QEMU riscv32 `virt`) and ARMv6-M (the RP2040's, on `mps2-an386`).
//!
//! Runs the library's scoring and sampling code — the very code the board
//! runs — on the bundled model's golden vectors and exits non-zero on any
//! mismatch beyond [`flowmote_firmware::GOLDEN_RTOL`] (relative, absolute floor
//! [`flowmote_firmware::GOLDEN_ABS_FLOOR`]):
//!
//! 1. `-log p` of every `GOLDEN_INPUTS` row through `Detector::score`
//!    against `GOLDEN_LOG_PROBS`;
//!    then the model's feature pipeline: `GOLDEN_RAW` (raw readings) pushed
//!    one by one through the exported `pipeline()` give `GOLDEN_RAW_FEATURES`
//!    bit for bit (host features = device features), and those score
//!    `GOLDEN_RAW_LOG_PROBS`;
//! 2. NaN/Inf input gives `Verdict::Invalid` and leaves later scores intact;
//! 3. the first `GOLDEN_SAMPLES` drawn by `Synthetic` with `GOLDEN_SEED`;
//!    the same two checks for `fixtures/src/extended.rs`, a
//!    mixture of two flows (whitening LU, spline coupling, autoregressive
//!    spline and CNF layers; a small MAF), and for
//!    `fixtures/src/committee.rs`, a mixture of 12 flows, for
//!    `fixtures/src/gaussians.rs`, a small MAF with four Gaussians beside it,
//!    and for the
//!    compressed exports `fixtures/src/quant_i8.rs` (the extended model with
//!    `i8` conditioner weights and row scales) and `quant_f16.rs` (couplings
//!    with `f16` weights);
//! 4. the whole monitor (emulated LIS3DH → the model's `pipeline()` → score
//!    → k-of-n → pin) with a garbage frame and a bus error injected: both
//!    reported, the monitor keeps running;
//! 5. commissioning and persistence: a `Calibrator` on 500 windows drawn
//!    from the model, the threshold saved with `Store` to a RAM-backed NOR
//!    flash (`sim::RamFlash`), loaded back as after a reset, a second record
//!    to the other slot, and a corrupted newest record falling back to the
//!    older one; then (5b) on-device adaptation: the export's golden
//!    sequence of updates (`GOLDEN_ADAPT_*`: drifted windows commissioned,
//!    then tracked at the threshold) through `Adaptation` with the model's
//!    own gradient — every score, outcome and the final correction bit for
//!    bit the host's — and the correction saved and reloaded through `Store`;
//! 6. stack high-water marks (cortex-m-rt `paint-stack` + scan) of the whole
//!    run, of one `score` and of one `sample` (Cortex-M builds only).
//!
//! Exit 0 = all checks passed; a failed check, a panic or a fault exits 1.
//! Run it with `cargo run --release --bin qemu [--target riscv32imc-unknown-none-elf
//! | thumbv6m-none-eabi]` in `firmware/qemu` (the runner is `qemu-run.sh`);
//! `scripts/firmware-ci.sh` does so in CI.
#![no_std]
#![no_main]

#[cfg(target_arch = "arm")]
use core::hint::black_box;

#[path = "../platform.rs"]
mod platform;
use flowmote::Density;
use flowmote_firmware::lis3dh::ADDR_SA0_HIGH;
use flowmote_firmware::sim::{EmulatedLis3dh, Fault, RamFlash, RecordingPin};
use flowmote_firmware::{
    close, golden_mismatches, pipeline_mismatches, Adaptation, Alarm, Calibrator, Corrected, Correction, Detector,
    Event, KOfN, Lis3dh, Monitor, Step, Store, Synthetic, Verdict,
};
use platform::{entry, exit_failure, exit_success};

#[cfg(target_arch = "arm")]
#[path = "../stack.rs"]
mod stack;

// `extended`: a second exported model with spline coupling, autoregressive
// spline and continuous-flow layers, so the emulated core checks those layers
// against the host too; `committee`: a mixture of 12 small flows;
// `gaussians`: a student with Gaussians beside it. The host's export parity
// test generates them.
use flowmote_fixtures::{committee, extended, gaussians, quant_f16, quant_i8};

use flowmote::adapt::{AdaptConfig, AdaptTarget, Tracked};
use flowmote_fixtures::model::{
    pipeline, AdaptGradient, ADAPT_HELD, DIM, GOLDEN_ADAPT_COMMISSION, GOLDEN_ADAPT_LOG_SCALE, GOLDEN_ADAPT_OUTCOMES,
    GOLDEN_ADAPT_SCORES, GOLDEN_ADAPT_SHIFT, GOLDEN_ADAPT_WINDOWS, GOLDEN_INPUTS, GOLDEN_LOG_PROBS, GOLDEN_RAW,
    GOLDEN_RAW_FEATURES, GOLDEN_RAW_LOG_PROBS, GOLDEN_SAMPLES, GOLDEN_SEED, HOP, MEAN, MODEL, STD, THRESHOLD, WINDOW,
};

/// Windows the monitor demo scores (after the first `WINDOW` readings).
const MONITOR_WINDOWS: usize = 16;
/// Injected sensor faults: a garbage frame at data read 5, a NACK at read 9.
static FAULTS: [(u32, Fault); 2] = [(5, Fault::Garbage), (9, Fault::Nack)];

#[entry]
fn main() -> ! {
    // Whole-run stack high-water mark is taken last, before any re-painting.
    let mut failures = 0u32;
    defmt::info!(
        "flowmote QEMU golden run: DIM = {=usize}, {=usize} golden inputs, {=usize} golden samples, threshold {=f32}",
        DIM,
        GOLDEN_INPUTS.len(),
        GOLDEN_SAMPLES.len(),
        THRESHOLD
    );

    // 1. Golden log-densities through the detector.
    let det = Detector::new(&MODEL, THRESHOLD);
    let mut worst = 0.0f32;
    for (i, (x, &expected)) in GOLDEN_INPUTS.iter().zip(GOLDEN_LOG_PROBS.iter()).enumerate() {
        match det.score(x).score() {
            Some(s) if close(-s, expected) => worst = worst.max(rel_err(-s, expected)),
            got => {
                failures += 1;
                defmt::error!(
                    "golden log_prob {=usize}: got {}, host {=f32}",
                    i,
                    got.map(|s| -s),
                    expected
                );
            }
        }
    }
    defmt::info!(
        "log_prob: {=usize} golden inputs checked, worst relative error {=f32}",
        GOLDEN_INPUTS.len(),
        worst
    );

    // 1b. The feature pipeline: host features = device features, bit for bit.
    let bad_features = pipeline_mismatches(pipeline(), &GOLDEN_RAW, &GOLDEN_RAW_FEATURES);
    let bad_scores = golden_mismatches(&det, &GOLDEN_RAW_FEATURES, &GOLDEN_RAW_LOG_PROBS);
    if bad_features == 0 && bad_scores == 0 && !GOLDEN_RAW_FEATURES.is_empty() {
        defmt::info!(
            "pipeline: {=usize} raw readings → {=usize} windows of {=usize} every {=usize}: features equal the host's bit for bit, log_probs match",
            GOLDEN_RAW.len(),
            GOLDEN_RAW_FEATURES.len(),
            WINDOW,
            HOP
        );
    } else {
        failures += 1;
        defmt::error!(
            "pipeline: {=usize} windows' features differ from the host's, {=usize} log_probs differ (of {=usize})",
            bad_features,
            bad_scores,
            GOLDEN_RAW_FEATURES.len()
        );
    }

    // 2. Bad input: an error verdict, and nothing changes afterwards.
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let v = det.score(&[bad; DIM]);
        if !v.is_invalid() {
            failures += 1;
            defmt::error!("non-finite input scored as {}", v);
        }
    }
    if let Some((x, &expected)) = GOLDEN_INPUTS.iter().zip(GOLDEN_LOG_PROBS.iter()).next() {
        if !det.score(x).score().is_some_and(|s| close(-s, expected)) {
            failures += 1;
            defmt::error!("score changed after non-finite input");
        }
    }

    // 3. Golden samples through the synthetic source.
    let mut worst = 0.0f32;
    failures += check_samples(&MODEL, GOLDEN_SEED, &GOLDEN_SAMPLES, "golden sample", &mut worst);
    defmt::info!(
        "sample: {=usize} golden samples checked, worst relative error {=f32}",
        GOLDEN_SAMPLES.len(),
        worst
    );

    // 3b. Spline and continuous-flow layers: the extended export's golden
    //     vectors; 3c. a mixture of 12 flows (as `flowmote train --folds` makes).
    failures += check_export(
        "extended export (mixture; spline, LU, CNF, MAF members)",
        &extended::MODEL,
        &extended::GOLDEN_INPUTS,
        &extended::GOLDEN_LOG_PROBS,
        extended::GOLDEN_SEED,
        &extended::GOLDEN_SAMPLES,
    );
    failures += check_export(
        "committee export (mixture of 12 MAF flows)",
        &committee::MODEL,
        &committee::GOLDEN_INPUTS,
        &committee::GOLDEN_LOG_PROBS,
        committee::GOLDEN_SEED,
        &committee::GOLDEN_SAMPLES,
    );
    // 3c'. A student with Gaussians beside it (as `flowmote train` keeps on
    //      a device budget when they help).
    failures += check_export(
        "gaussians export (a MAF student and four Gaussians: triangular and diagonal)",
        &gaussians::MODEL,
        &gaussians::GOLDEN_INPUTS,
        &gaussians::GOLDEN_LOG_PROBS,
        gaussians::GOLDEN_SEED,
        &gaussians::GOLDEN_SAMPLES,
    );
    // 3d. Compressed weights (`flowmote export --weights i8|f16`).
    failures += check_export(
        "i8 export (the extended mixture, i8 conditioner weights + row scales)",
        &quant_i8::MODEL,
        &quant_i8::GOLDEN_INPUTS,
        &quant_i8::GOLDEN_LOG_PROBS,
        quant_i8::GOLDEN_SEED,
        &quant_i8::GOLDEN_SAMPLES,
    );
    failures += check_export(
        "f16 export (couplings, LU; f16 conditioner weights)",
        &quant_f16::MODEL,
        &quant_f16::GOLDEN_INPUTS,
        &quant_f16::GOLDEN_LOG_PROBS,
        quant_f16::GOLDEN_SEED,
        &quant_f16::GOLDEN_SAMPLES,
    );

    // 4. The monitor on an emulated sensor replaying the golden raw readings
    //    (mg) through the model's `pipeline()`; the readings of every 4th
    //    stretch of 4 windows are pushed 2000 mg down on every axis (far
    //    outside the training data, clipped at the sensor's −2048 mg); a
    //    garbage frame and a bus error are injected.
    let mut reads = 0usize;
    let sensor = EmulatedLis3dh::new(
        ADDR_SA0_HIGH,
        move || {
            let r = GOLDEN_RAW
                .get(reads % GOLDEN_RAW.len().max(1))
                .copied()
                .unwrap_or([0.0; 3]);
            let shift = if (reads / (4 * HOP)) % 4 == 3 { -2000.0 } else { 0.0 };
            reads += 1;
            r.map(|v| (v + shift).clamp(-2048.0, 2047.0) as i16)
        },
        &FAULTS,
    );
    let alarm = Alarm::new(det, const { KOfN::<3>::new(2) }, RecordingPin::default());
    let mut mon: Monitor<_, _, _, DIM, _, 3> = Monitor::new(Lis3dh::new(sensor, ADDR_SA0_HIGH), pipeline(), alarm);
    let (mut scored, mut sensor_events, mut alarm_seen) = (0u32, 0u32, false);
    // Initialisation twice (at start and after the bus error), two faults.
    for _ in 0..WINDOW + MONITOR_WINDOWS * HOP + 4 {
        match mon.step() {
            Event::Scored(r) => {
                scored += 1;
                alarm_seen |= r.alarm;
                if matches!(r.verdict, Verdict::Invalid(_)) {
                    failures += 1;
                }
            }
            Event::Sensor(_) => sensor_events += 1,
            Event::Initialised | Event::Sampled(_) => {}
        }
    }
    let st = mon.stats();
    defmt::info!("monitor: {}", st);
    if st.garbage != 1 || st.sensor_errors != 1 || sensor_events != 2 || scored < 10 || !alarm_seen {
        failures += 1;
        defmt::error!(
            "monitor: expected 1 garbage frame, 1 bus error, >= 10 windows and an alarm; got {=u32} windows, alarm seen {=bool}",
            scored,
            alarm_seen
        );
    }
    let (_, alarm) = mon.release();
    let pin = alarm.release();
    defmt::info!("alarm pin: high = {=bool}, {=u32} level changes", pin.high, pin.writes);

    // 5. Commissioning and persistence.
    failures += commission(&det);

    // 5b. On-device adaptation: the host's golden sequence of updates.
    failures += adaptation();

    // 6. Stack: the whole run so far, then one score and one sample alone
    // (cortex-m-rt paints the stack; the RISC-V image does not measure it).
    #[cfg(target_arch = "arm")]
    {
        let whole = stack::high_water();
        let x = GOLDEN_INPUTS[0];
        let score_stack = stack::measure(|| {
            black_box(black_box(&det).score(black_box(&x)));
        });
        let mut synth = Synthetic::new(&MODEL, GOLDEN_SEED);
        let sample_stack = stack::measure(|| {
            let _ = black_box(black_box(&mut synth).next_features());
        });
        defmt::info!(
            "stack: whole run {=usize} B; Detector::score {=usize} B; Synthetic::next_features {=usize} B (below the caller)",
            whole,
            score_stack,
            sample_stack
        );
    }
    if failures == 0 {
        defmt::info!("qemu golden run: all checks passed");
        exit_success()
    } else {
        defmt::error!("qemu golden run: {=u32} check(s) FAILED", failures);
        exit_failure()
    }
}

/// Commission a threshold on 500 synthetic windows at a 5 % false-alarm
/// rate, persist it in a RAM-backed flash and read it back; returns the
/// number of failed checks.
fn commission<M: Density<DIM>>(det: &Detector<'_, DIM, M>) -> u32 {
    const WINDOWS: u32 = 500;
    const RATE: f32 = 0.05;
    let mut failures = 0;
    let seed = GOLDEN_SEED ^ 0xca1;
    let score = |synth: &mut Synthetic<'_, DIM, _>| match synth.next_features() {
        Ok(x) => det.score(&x),
        Err(e) => Verdict::Invalid(e),
    };
    let mut cal = Calibrator::new(RATE, WINDOWS);
    let mut threshold = None;
    let mut synth = Synthetic::new(&MODEL, seed);
    for _ in 0..WINDOWS {
        threshold = threshold.or(cal.observe(&score(&mut synth)));
    }
    let Some(t) = threshold else {
        defmt::error!("commissioning: no threshold after {=u32} windows", WINDOWS);
        return 1;
    };
    // The same windows again (same seed): how many score above the threshold.
    let mut synth = Synthetic::new(&MODEL, seed);
    let above = (0..WINDOWS)
        .filter(|_| score(&mut synth).score().is_some_and(|s| s > t))
        .count() as u32;
    // 5 % of 500 is 25; the P² estimate is within a few ranks of it.
    if !(10..=40).contains(&above) {
        failures += 1;
        defmt::error!(
            "commissioning: {=u32} of {=u32} windows above {=f32}",
            above,
            WINDOWS,
            t
        );
    }
    let Ok(mut store) = Store::new(RamFlash::<1024>::new(), 512) else {
        defmt::error!("persist: store layout refused");
        return failures + 1;
    };
    let first = store.save(t, WINDOWS, RATE);
    let second = store.save(t + 1.0, WINDOWS, RATE);
    let mut flash = store.release();
    let loaded = Store::new(flash.clone(), 512)
        .ok()
        .and_then(|mut s| s.load().ok().flatten());
    // Corrupt the newest record (slot B, at 768): the first one is loaded.
    if let Some(b) = flash.bytes.get_mut(768 + 12) {
        *b ^= 1;
    }
    let fallback = Store::new(flash, 512).ok().and_then(|mut s| s.load().ok().flatten());
    match (first, second, loaded, fallback) {
        (Ok(a), Ok(b), Some(l), Some(f)) if l == b && f == a && a.seq == 1 && b.seq == 2 && a.threshold == t => {
            defmt::info!(
                "commissioning: threshold {=f32} nats at rate {=f32} from {=u32} windows ({=u32} above it); saved, reloaded, corrupt record skipped",
                t,
                RATE,
                WINDOWS,
                above
            );
        }
        _ => {
            failures += 1;
            defmt::error!("persist: records not saved and reloaded as written");
        }
    }
    failures
}

/// The export's golden adaptation sequence through `Adaptation` (the
/// board's code: commissioning, then tracking at `THRESHOLD`) with the
/// model's own gradient: every window's score and outcome, and the final
/// correction, bit for bit the host's; the corrected detector scores as the
/// adapter; the correction saved and reloaded through `Store`. The same
/// sequence for the committee fixture (a mixture of 12 flows, through its
/// `MixtureGradient`). Returns the number of failed checks.
fn adaptation() -> u32 {
    let mut failures = 0;
    let Ok(mut gradient) = AdaptGradient::new(&MODEL) else {
        defmt::error!("adaptation: the export's ADAPT_LAYERS/ADAPT_SCRATCH are too small");
        return 1;
    };
    let scorer = Corrected::new(&MODEL, MEAN, STD);
    let golden = AdaptSequence {
        threshold: THRESHOLD,
        commission: GOLDEN_ADAPT_COMMISSION,
        windows: &GOLDEN_ADAPT_WINDOWS,
        scores: &GOLDEN_ADAPT_SCORES,
        outcomes: &GOLDEN_ADAPT_OUTCOMES,
    };
    let a: Adaptation<DIM, ADAPT_HELD> = golden.run(&mut gradient, &scorer, MEAN, STD, &mut failures);
    let same = |a: f32, b: f32| a.to_bits() == b.to_bits();
    let (u, l) = a.adapter().correction();
    let exact = u.iter().zip(&GOLDEN_ADAPT_SHIFT).all(|(a, b)| same(*a, *b))
        && l.iter().zip(&GOLDEN_ADAPT_LOG_SCALE).all(|(a, b)| same(*a, *b));
    // The corrected detector's score is the adapter's own.
    let x = GOLDEN_ADAPT_WINDOWS[0];
    let mut adapter = a.adapter().clone();
    let scored = match (scorer.log_prob(&x), adapter.nll(&mut gradient, &x)) {
        (Ok(lp), Ok(nll)) => same(-lp, nll),
        _ => false,
    };
    // Persist the correction, reload it as after a reset.
    let mut store = Store::<_, Correction<DIM>>::open(RamFlash::<1024>::new(), 512).ok();
    let saved = store.as_mut().map(|s| s.put(a.record()));
    let loaded = store
        .map(|s| s.release())
        .and_then(|f| Store::<_, Correction<DIM>>::open(f, 512).ok())
        .and_then(|mut s| s.load().ok().flatten());
    let persisted = matches!((saved, loaded), (Some(Ok(s)), Some(r)) if s == r && r.shift == u && r.log_scale == l);
    if exact && scored && persisted {
        defmt::info!(
            "adaptation: {=usize} golden windows ({=usize} commissioning, the rest tracking) give the host's scores, outcomes and correction bit for bit; {}; correction saved and reloaded",
            GOLDEN_ADAPT_WINDOWS.len(),
            GOLDEN_ADAPT_COMMISSION,
            a.stats()
        );
    } else {
        failures += 1;
        defmt::error!(
            "adaptation: correction equal {=bool}, corrected score equal {=bool}, persisted {=bool}",
            exact,
            scored,
            persisted
        );
    }
    // The committee: a mixture adapts through its members' gradients.
    let Ok(mut gradient) = committee::AdaptGradient::new(&committee::MODEL) else {
        defmt::error!("committee adaptation: the export's ADAPT_LAYERS/ADAPT_SCRATCH are too small");
        return failures + 1;
    };
    let scorer = Corrected::new(&committee::MODEL, committee::MEAN, committee::STD);
    let golden = AdaptSequence {
        threshold: committee::THRESHOLD,
        commission: committee::GOLDEN_ADAPT_COMMISSION,
        windows: &committee::GOLDEN_ADAPT_WINDOWS,
        scores: &committee::GOLDEN_ADAPT_SCORES,
        outcomes: &committee::GOLDEN_ADAPT_OUTCOMES,
    };
    let before = failures;
    let a: Adaptation<{ committee::DIM }, { committee::ADAPT_HELD }> =
        golden.run(&mut gradient, &scorer, committee::MEAN, committee::STD, &mut failures);
    let (u, l) = a.adapter().correction();
    let exact = u.iter().zip(&committee::GOLDEN_ADAPT_SHIFT).all(|(a, b)| same(*a, *b))
        && l.iter()
            .zip(&committee::GOLDEN_ADAPT_LOG_SCALE)
            .all(|(a, b)| same(*a, *b));
    if exact && failures == before {
        defmt::info!(
            "committee adaptation (a mixture of 12 flows): {=usize} golden windows give the host's scores, outcomes and correction bit for bit; {}",
            committee::GOLDEN_ADAPT_WINDOWS.len(),
            a.stats()
        );
    } else {
        failures += 1;
        defmt::error!("committee adaptation: correction equal {=bool}", exact);
    }
    failures
}

/// An export's golden adaptation sequence (`GOLDEN_ADAPT_*`, `THRESHOLD`).
struct AdaptSequence<'g, const D: usize> {
    threshold: f32,
    commission: usize,
    windows: &'g [[f32; D]],
    scores: &'g [f32],
    outcomes: &'g [u8],
}

impl<const D: usize> AdaptSequence<'_, D> {
    /// Run the sequence through `Adaptation` (commissioning, then tracking
    /// at the threshold) with `gradient`; every window's score and outcome
    /// that is not the host's bit for bit adds a failure. Returns the
    /// adaptation after the sequence.
    fn run<const H: usize, T: AdaptTarget, M: Density<D>>(
        &self,
        gradient: &mut T,
        scorer: &Corrected<'_, D, M>,
        mean: [f32; D],
        std: [f32; D],
        failures: &mut u32,
    ) -> Adaptation<D, H> {
        let mut a: Adaptation<D, H> =
            Adaptation::commissioning(AdaptConfig::DEFAULT, mean, std, self.commission as u32, true);
        for (i, ((x, &score), &outcome)) in self.windows.iter().zip(self.scores).zip(self.outcomes).enumerate() {
            let (got, code) = match a.observe(gradient, scorer, x, self.threshold) {
                Step::Commissioned(s) | Step::CommissioningDone(s) => (s, 0),
                Step::Tracked(Tracked::NotNormal(s)) => (s, 1),
                Step::Tracked(Tracked::Held(s)) => (s, 2),
                Step::Tracked(Tracked::Updated(s)) => (s, 3),
                Step::Tracked(Tracked::RolledBack(s)) => (s, 4),
                Step::Skipped(_) | Step::Idle => (0.0, 5),
            };
            if got.to_bits() != score.to_bits() || code != outcome {
                *failures += 1;
                defmt::error!(
                    "adaptation window {=usize}: score {=f32} outcome {=u8}, host {=f32} outcome {=u8}",
                    i,
                    got,
                    code,
                    score,
                    outcome
                );
            }
        }
        a
    }
}

fn rel_err(got: f32, expected: f32) -> f32 {
    (got - expected).abs() / expected.abs().max(flowmote_firmware::GOLDEN_ABS_FLOOR)
}

/// Draw `expected.len()` samples of `model` (a flow or a mixture) through the
/// synthetic source seeded with `seed` and compare them with the host's;
/// returns the number of mismatches and raises `worst` to the worst relative
/// error seen.
fn check_samples<const D: usize, M: Density<D>>(
    model: &M,
    seed: u64,
    expected: &[[f32; D]],
    label: &str,
    worst: &mut f32,
) -> u32 {
    let mut failures = 0;
    let mut synth = Synthetic::new(model, seed);
    for (i, expected) in expected.iter().enumerate() {
        match synth.next_features() {
            Ok(x) => {
                for (g, e) in x.iter().zip(expected) {
                    if close(*g, *e) {
                        *worst = worst.max(rel_err(*g, *e));
                    } else {
                        failures += 1;
                        defmt::error!("{=str} {=usize}: got {=f32}, host {=f32}", label, i, *g, *e);
                    }
                }
            }
            Err(e) => {
                failures += 1;
                defmt::error!("{=str} {=usize}: {}", label, i, e);
            }
        }
    }
    failures
}

/// Golden log-densities and samples of a second exported model (`what`
/// names it in the log); returns the number of mismatches.
fn check_export<const D: usize, M: Density<D>>(
    what: &str,
    model: &M,
    inputs: &[[f32; D]],
    log_probs: &[f32],
    seed: u64,
    samples: &[[f32; D]],
) -> u32 {
    let mut failures = 0;
    let mut worst = 0.0f32;
    for (i, (x, &expected)) in inputs.iter().zip(log_probs).enumerate() {
        match model.log_prob(x) {
            Ok(lp) if close(lp, expected) => worst = worst.max(rel_err(lp, expected)),
            got => {
                failures += 1;
                defmt::error!(
                    "{=str} golden log_prob {=usize}: got {}, host {=f32}",
                    what,
                    i,
                    got.ok(),
                    expected
                );
            }
        }
    }
    failures += check_samples(model, seed, samples, what, &mut worst);
    defmt::info!(
        "{=str}: {=usize} golden inputs and {=usize} golden samples checked, worst relative error {=f32}",
        what,
        inputs.len(),
        samples.len(),
        worst
    );
    failures
}
