//! Threshold commissioning and its persistence in NOR flash
//! (`flowmote_firmware::{threshold, persist}`), with a mock flash that
//! loses power at any chosen byte of an erase or a write.

use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash};
use flowmote::Detector;
use flowmote_firmware::persist::{crc32, MAX_ATTEMPTS_PER_BOOT, MAX_WRITES, RECORD_LEN};
use flowmote_firmware::sim::RamFlash;
use flowmote_firmware::{Calibrator, PersistError, Record, Store, Synthetic, Verdict};
use flowmote_fixtures::model::{MODEL, THRESHOLD};

/// Why the mock failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MockError {
    /// The power was cut (this and every later operation until `power_on`).
    PowerCut,
    /// Misaligned or out-of-bounds operation.
    Kind(NorFlashErrorKind),
    /// A write to bytes that were not erased (the store must never do that).
    NotErased,
}

impl NorFlashError for MockError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            MockError::Kind(k) => *k,
            _ => NorFlashErrorKind::Other,
        }
    }
}

/// NOR flash of `PAGES` pages of `PAGE` bytes: erase sets 0xFF, writes are
/// whole 4-byte words into erased bytes only. Every erased or programmed
/// byte costs one unit of `budget`; when it runs out the power is cut: the
/// byte being processed is left half-done (some bits changed, some not) and
/// the operation and all later ones fail until `power_on`.
#[derive(Clone, Debug)]
struct MockFlash<const PAGE: usize> {
    bytes: Vec<u8>,
    budget: Option<usize>,
    dead: bool,
    erases: Vec<u32>,
    writes: u32,
}

impl<const PAGE: usize> MockFlash<PAGE> {
    fn new(pages: usize) -> Self {
        MockFlash {
            bytes: vec![0xFF; pages * PAGE],
            budget: None,
            dead: false,
            erases: vec![0; pages],
            writes: 0,
        }
    }

    fn cut_after(&mut self, bytes: usize) {
        self.budget = Some(bytes);
    }

    fn power_on(&mut self) {
        self.budget = None;
        self.dead = false;
    }

    /// Spend one unit; `false` = the power is cut now.
    fn spend(&mut self) -> bool {
        match &mut self.budget {
            Some(0) => {
                self.dead = true;
                false
            }
            Some(n) => {
                *n -= 1;
                true
            }
            None => true,
        }
    }
}

impl<const PAGE: usize> ErrorType for MockFlash<PAGE> {
    type Error = MockError;
}

impl<const PAGE: usize> ReadNorFlash for MockFlash<PAGE> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), MockError> {
        if self.dead {
            return Err(MockError::PowerCut);
        }
        let o = offset as usize;
        let src = self
            .bytes
            .get(o..o + bytes.len())
            .ok_or(MockError::Kind(NorFlashErrorKind::OutOfBounds))?;
        bytes.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.bytes.len()
    }
}

impl<const PAGE: usize> NorFlash for MockFlash<PAGE> {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = PAGE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), MockError> {
        if self.dead {
            return Err(MockError::PowerCut);
        }
        let (from, to) = (from as usize, to as usize);
        if !from.is_multiple_of(PAGE) || !to.is_multiple_of(PAGE) || from > to {
            return Err(MockError::Kind(NorFlashErrorKind::NotAligned));
        }
        if to > self.bytes.len() {
            return Err(MockError::Kind(NorFlashErrorKind::OutOfBounds));
        }
        for page in from / PAGE..to / PAGE {
            self.erases[page] += 1;
            for i in page * PAGE..(page + 1) * PAGE {
                if !self.spend() {
                    self.bytes[i] |= 0x0F; // half-erased
                    return Err(MockError::PowerCut);
                }
                self.bytes[i] = 0xFF;
            }
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), MockError> {
        if self.dead {
            return Err(MockError::PowerCut);
        }
        let o = offset as usize;
        if !o.is_multiple_of(4) || !bytes.len().is_multiple_of(4) {
            return Err(MockError::Kind(NorFlashErrorKind::NotAligned));
        }
        if o + bytes.len() > self.bytes.len() {
            return Err(MockError::Kind(NorFlashErrorKind::OutOfBounds));
        }
        if self.bytes[o..o + bytes.len()].iter().any(|&b| b != 0xFF) {
            return Err(MockError::NotErased);
        }
        self.writes += 1;
        for (i, &b) in bytes.iter().enumerate() {
            if !self.spend() {
                self.bytes[o + i] &= b | 0xF0; // half-programmed
                return Err(MockError::PowerCut);
            }
            self.bytes[o + i] &= b;
        }
        Ok(())
    }
}

const RATE: f32 = 0.01;

/// The store's region starts at page 1 (page 0 stands for the program).
fn store<const PAGE: usize>(flash: MockFlash<PAGE>) -> Store<MockFlash<PAGE>> {
    Store::new(flash, PAGE as u32).unwrap()
}

/// A flash after `n` saves of thresholds 10, 11, …
fn history<const PAGE: usize>(n: u32) -> MockFlash<PAGE> {
    let mut s = store(MockFlash::<PAGE>::new(3));
    for i in 0..n {
        s.save(10.0 + i as f32, 100 + i, RATE).unwrap();
    }
    s.release()
}

#[test]
fn crc32_is_the_ieee_crc() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
}

#[test]
fn records_round_trip_and_garbage_is_rejected() {
    let r = Record {
        seq: 7,
        threshold: 32.5,
        windows: 2400,
        false_alarm_rate: 0.01,
    };
    assert_eq!(Record::decode(&r.encode()), Some(r));
    assert_eq!(Record::decode(&[0xFF; RECORD_LEN]), None);
    assert_eq!(Record::decode(&[0; RECORD_LEN]), None);
    // Every single-bit flip of the first 28 bytes is caught (CRC-32 detects all of them).
    let good = r.encode();
    for bit in 0..28 * 8 {
        let mut b = good;
        b[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(Record::decode(&b), None, "bit {bit}");
    }
    // A valid CRC over a non-finite threshold or sequence number 0 is refused too.
    for bad in [
        Record {
            threshold: f32::NAN,
            ..r
        },
        Record { seq: 0, ..r },
    ] {
        assert_eq!(Record::decode(&bad.encode()), None);
    }
}

#[test]
fn the_newest_valid_record_wins_and_slots_alternate() {
    let mut s = store(MockFlash::<256>::new(3));
    assert_eq!(s.load().unwrap(), None);
    assert_eq!(s.writes(), Some(0));
    for i in 1..=5u32 {
        let r = s.save(i as f32, i, RATE).unwrap();
        assert_eq!(r.seq, i);
        // After a reset, the record just written is the one loaded.
        let mut again = store(s.release());
        assert_eq!(again.load().unwrap(), Some(r));
        s = again;
    }
    let f = s.release();
    // Slots A and B (pages 1 and 2) were erased alternately; page 0 never.
    assert_eq!(f.erases, vec![0, 3, 2]);
}

#[test]
fn a_corrupt_record_is_ignored() {
    let mut f = history::<256>(3); // seq 1 → A, 2 → B, 3 → A
                                   // Corrupt the newest (slot A, seq 3): the older one (slot B, seq 2) is loaded.
    f.bytes[256 + 13] ^= 0x40;
    let mut s = store(f);
    assert_eq!(s.load().unwrap().map(|r| (r.seq, r.threshold)), Some((2, 11.0)));
    // The next save goes to the slot of the corrupt record, with seq 3 again.
    let r = s.save(20.0, 1, RATE).unwrap();
    assert_eq!(r.seq, 3);
    assert_eq!(store(s.release()).load().unwrap(), Some(r));
    // Both corrupt: nothing.
    let mut f = history::<256>(2);
    f.bytes[256 + 25] ^= 1;
    f.bytes[512 + 2] ^= 0x80;
    assert_eq!(store(f).load().unwrap(), None);
}

/// Cut the power at every byte of one save (erase, then write) after each
/// history; after power-on the store loads the old record or the new one,
/// never garbage, never nothing when there was a record; and the next save works.
fn power_cut_at<const PAGE: usize>(cuts: impl Iterator<Item = usize> + Clone) {
    let total = PAGE + RECORD_LEN;
    for n in 0..4u32 {
        let before = history::<PAGE>(n);
        let old = store(before.clone()).load().unwrap();
        assert_eq!(old.map(|r| r.seq), (n > 0).then_some(n));
        let mut outcomes = [0usize; 2];
        for cut in cuts.clone() {
            let mut f = before.clone();
            f.cut_after(cut);
            let mut s = store(f);
            let saved = s.save(99.0, 7, RATE);
            assert_eq!(saved.is_ok(), cut >= total, "n={n} cut={cut}: {saved:?}");
            let mut f = s.release();
            f.power_on();
            let mut s = store(f);
            let got = s.load().unwrap();
            match got {
                Some(r) if r.threshold == 99.0 => {
                    assert_eq!(r.seq, n + 1);
                    outcomes[1] += 1;
                }
                _ => {
                    assert_eq!(got, old, "n={n} cut={cut}: neither old nor new");
                    outcomes[0] += 1;
                }
            }
            // The device carries on: the next save lands and wins.
            let next = s.save(42.0, 8, RATE).unwrap();
            assert_eq!(next.seq, got.map_or(1, |r| r.seq + 1));
            assert_eq!(store(s.release()).load().unwrap(), Some(next));
        }
        assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
    }
}

#[test]
fn a_power_cut_at_any_byte_of_a_save_loses_nothing() {
    power_cut_at::<256>(0..256 + RECORD_LEN + 2);
}

#[test]
fn a_power_cut_in_a_4k_page_loses_nothing() {
    // The nRF52840's page size: every 97th byte of the erase, every byte of the write.
    power_cut_at::<4096>((0..4096).step_by(97).chain(4090..4096 + RECORD_LEN + 2));
}

#[test]
fn writes_are_bounded_per_boot_and_per_life() {
    // Per boot: MAX_ATTEMPTS_PER_BOOT attempts, failed ones included; then
    // TooManyAttempts without touching the flash, until a reset.
    let mut f = MockFlash::<256>::new(3);
    f.cut_after(2 * (256 + RECORD_LEN) + 10); // two saves, then the power fails
    let mut s = store(f);
    assert_eq!(s.save(1.0, 1, RATE).map(|r| r.seq), Ok(1));
    assert_eq!(s.save(2.0, 1, RATE).map(|r| r.seq), Ok(2));
    for _ in 2..MAX_ATTEMPTS_PER_BOOT {
        assert_eq!(s.save(3.0, 1, RATE), Err(PersistError::Flash(MockError::PowerCut)));
    }
    assert_eq!(s.save(4.0, 1, RATE), Err(PersistError::TooManyAttempts));
    assert_eq!(s.attempts(), MAX_ATTEMPTS_PER_BOOT);
    let mut f = s.release();
    assert_eq!(f.erases, vec![0, 2, 1]); // 2 saves + the cut one; later attempts erased nothing
    f.power_on();
    let mut s = store(f);
    assert_eq!(s.load().unwrap().map(|r| r.threshold), Some(2.0));
    assert_eq!(s.save(5.0, 1, RATE).map(|r| r.seq), Ok(3));

    // Per life: MAX_WRITES records across any number of boots, then WornOut without touching the flash.
    let mut f = MockFlash::<256>::new(3);
    let mut written = 0u32;
    loop {
        let mut s = store(f);
        let mut worn = false;
        for _ in 0..MAX_ATTEMPTS_PER_BOOT {
            match s.save(written as f32, 1, RATE) {
                Ok(r) => {
                    written += 1;
                    assert_eq!(r.seq, written);
                }
                Err(e) => {
                    assert_eq!(e, PersistError::WornOut);
                    worn = true;
                    break;
                }
            }
        }
        f = s.release();
        if worn {
            break;
        }
    }
    assert_eq!(written, MAX_WRITES);
    assert_eq!(f.erases, vec![0, MAX_WRITES / 2, MAX_WRITES / 2]);
    assert_eq!(f.writes, MAX_WRITES);
    let mut s = store(f);
    assert_eq!(s.load().unwrap().map(|r| r.seq), Some(MAX_WRITES));
    assert_eq!(s.save(1.0, 1, RATE), Err(PersistError::WornOut));
    assert_eq!(s.release().erases, vec![0, MAX_WRITES / 2, MAX_WRITES / 2]);
}

#[test]
fn bad_layouts_and_values_are_errors() {
    // Not erase-aligned, or not two pages inside the flash.
    assert!(matches!(
        Store::new(MockFlash::<256>::new(3), 100),
        Err(PersistError::Layout)
    ));
    assert!(matches!(
        Store::new(MockFlash::<256>::new(3), 512),
        Err(PersistError::Layout)
    ));
    assert!(matches!(
        Store::new(MockFlash::<256>::new(1), 0),
        Err(PersistError::Layout)
    ));
    assert!(matches!(
        Store::new(MockFlash::<256>::new(2), u32::MAX - 255),
        Err(PersistError::Layout)
    ));
    let mut s = store(MockFlash::<256>::new(3));
    assert_eq!(s.save(f32::INFINITY, 1, RATE), Err(PersistError::NotFinite));
    assert_eq!(s.save(f32::NAN, 1, RATE), Err(PersistError::NotFinite));
    assert_eq!(s.attempts(), 0);
    assert_eq!(
        PersistError::<MockError>::WornOut.as_str(),
        "persist: lifetime write cap reached"
    );
}

#[test]
fn the_ram_flash_of_the_emulator_image_works_with_the_store() {
    let mut s = Store::new(RamFlash::<1024>::new(), 512).unwrap();
    assert_eq!(s.load().unwrap(), None);
    let r = s.save(31.5, 2400, RATE).unwrap();
    let r2 = s.save(32.5, 2400, RATE).unwrap();
    let f = s.release();
    assert_eq!(f.erases, 2);
    assert_eq!(Store::new(f, 512).unwrap().load().unwrap(), Some(r2));
    assert_eq!(r.seq + 1, r2.seq);
}

#[test]
fn the_calibrated_threshold_has_the_target_false_alarm_rate() {
    // Windows from the bundled model's own distribution (seeded): commissioning on
    // the first 3000 scores, then the false-alarm rate on 20 000 fresh windows.
    let detector = Detector::new(&MODEL, THRESHOLD);
    let mut synth = Synthetic::new(&MODEL, 2026);
    let mut cal = Calibrator::new(RATE, 3000);
    let mut threshold = None;
    let mut windows = 0;
    while threshold.is_none() {
        let v = detector.score(&synth.next_features().unwrap());
        // Invalid verdicts are ignored.
        assert_eq!(cal.observe(&Verdict::Invalid(flowmote::Error::NonFiniteInput)), None);
        threshold = cal.observe(&v);
        windows += 1;
    }
    let t = threshold.unwrap();
    assert_eq!((windows, cal.seen(), cal.needed()), (3000, 3000, 3000));
    assert_eq!(cal.threshold(), Some(t));
    assert!((cal.false_alarm_rate() - RATE).abs() < 1e-6);
    // One-shot: later verdicts change nothing.
    assert_eq!(cal.observe(&Verdict::Anomalous { score: 1e6 }), None);
    assert_eq!(cal.threshold(), Some(t));
    let n = 20_000;
    let alarms = (0..n)
        .filter(|_| detector.score(&synth.next_features().unwrap()).score().unwrap() > t)
        .count();
    let rate = alarms as f64 / n as f64;
    eprintln!("calibrated threshold {t} (exported {THRESHOLD}), false-alarm rate {rate:.4}");
    // Rank error of a 3000-window quantile (3 σ ≈ 0.0055) plus that of the test sample (≈ 0.002).
    assert!((rate - RATE as f64).abs() < 0.0075, "{rate}");
}

/// The adaptation's correction (3 features: 44 bytes of words, 48 in flash):
/// round trip, every single-bit corruption refused, non-finite values
/// refused, and a power cut at any byte of a save leaves the old
/// correction or the new one.
#[test]
fn correction_records_survive_power_cuts() {
    use flowmote_firmware::{Correction, Persisted};
    const D: usize = 3;
    let c = |k: f32| Correction::<D> {
        seq: 0,
        steps: 7,
        shift: [0.1 * k, -0.2, 0.3],
        log_scale: [0.05, k, -0.01],
    };
    assert_eq!(Correction::<D>::LEN, 48);
    let mut b = [0u8; 48];
    c(1.0).with_seq(5).encode_into(&mut b);
    assert_eq!(Correction::<D>::decode_from(&b), Some(c(1.0).with_seq(5)));
    for bit in 0..44 * 8 {
        let mut bad = b;
        bad[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(Correction::<D>::decode_from(&bad), None, "bit {bit}");
    }
    let open = |f: MockFlash<256>| Store::<_, Correction<D>>::open(f, 256).unwrap();
    let mut s = open(MockFlash::<256>::new(3));
    assert_eq!(s.put(c(f32::NAN)), Err(PersistError::NotFinite));
    let old = s.put(c(1.0)).unwrap();
    let before = s.release();
    let (mut kept, mut replaced) = (0, 0);
    for cut in 0..256 + 48 + 2 {
        let mut f = before.clone();
        f.cut_after(cut);
        let mut s = open(f);
        let saved = s.put(c(2.0));
        assert_eq!(saved.is_ok(), cut >= 256 + 48, "cut={cut}: {saved:?}");
        let mut f = s.release();
        f.power_on();
        match open(f).load().unwrap() {
            Some(r) if r == c(2.0).with_seq(2) => replaced += 1,
            got => {
                assert_eq!(got, Some(old), "cut={cut}: neither old nor new");
                kept += 1;
            }
        }
    }
    assert!(kept > 0 && replaced > 0);
}
