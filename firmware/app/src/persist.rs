//! The calibrated threshold and the adaptation's correction in NOR flash,
//! safe against power cuts.
//!
//! [`Store`] keeps one record in a region of two erase pages (slots A
//! and B) of any [`NorFlash`] (the `embedded-storage` 0.3 traits; the
//! nRF52840's NVMC implements them): a [`Record`] (the threshold, the
//! default) or a [`Correction`] (on-device adaptation's `2·D` floats), or
//! any [`Persisted`] type. A threshold record is [`RECORD_LEN`] bytes at the
//! start of its slot:
//!
//! | bytes  | field                                        |
//! |--------|----------------------------------------------|
//! | 0..4   | magic `FMth` ([`MAGIC`], little-endian u32)  |
//! | 4..8   | format version ([`VERSION`])                 |
//! | 8..12  | sequence number (1 for the first record)     |
//! | 12..16 | threshold, nats (f32 bits)                   |
//! | 16..20 | windows it was calibrated on                 |
//! | 20..24 | target false-alarm rate (f32 bits)           |
//! | 24..28 | CRC-32 (IEEE) of bytes 0..24                 |
//! | 28..32 | zero padding                                 |
//!
//! **Power cuts.** A save erases the slot *not* holding the newest valid
//! record, then writes the new record there; the newest record is never
//! touched. Whenever the cut falls (mid-erase, mid-write), the old record is
//! still valid and the interrupted slot fails the magic or CRC check, so on
//! boot [`Store::load`] returns either the old or the new record — the valid
//! one with the highest sequence number — and never garbage.
//!
//! **Write bound.** NOR pages endure about 10 000 erase cycles. The lifetime
//! cap [`MAX_WRITES`] (4 000 records, so at most 2 000 erases per page) is
//! enforced from the persisted sequence number, so it survives resets; and a
//! [`Store`] makes at most [`MAX_ATTEMPTS_PER_BOOT`] save attempts (failed
//! ones included) between resets, so failing flash is not hammered. The
//! calibrator saves once per commissioning, i.e. at most once per
//! commissioning period of windows.
//!
//! A [`Correction`] record has the same frame — magic `FMad`, version,
//! sequence number, then its words (adaptation steps, `u`, `ℓ`), the
//! CRC-32 of everything before it, zero padding to a multiple of 8 bytes —
//! and at most [`MAX_RECORD_LEN`] bytes (`D ≤ 28`).
//!
//! Every failure is a [`PersistError`] value; nothing here panics.
//!
//! The CRC is the bitwise CRC-32 below (ten lines, no 1 KB table, no
//! dependency), checked against the standard check value in the host tests.

use embedded_storage::nor_flash::{NorFlash, NorFlashError, NorFlashErrorKind};

/// Bytes of a record in flash (a multiple of every usual write size).
pub const RECORD_LEN: usize = 32;
/// First word of a record: `b"FMth"` as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"FMth");
/// Record format version.
pub const VERSION: u32 = 1;
/// Lifetime cap on records written (sequence numbers `1..=MAX_WRITES`).
pub const MAX_WRITES: u32 = 4000;
/// Save attempts a [`Store`] makes between resets.
pub const MAX_ATTEMPTS_PER_BOOT: u8 = 4;

/// Largest record a [`Store`] takes, bytes (its buffer is on the stack).
pub const MAX_RECORD_LEN: usize = 256;

/// A value a [`Store`] keeps: a fixed-size, CRC-checked record with a
/// sequence number.
pub trait Persisted: Sized + Copy {
    /// Bytes of the record in flash (a multiple of 8, at most
    /// [`MAX_RECORD_LEN`]).
    const LEN: usize;
    /// The sequence number (1 for the first record ever written).
    fn seq(&self) -> u32;
    /// The same value with sequence number `seq`.
    fn with_seq(self, seq: u32) -> Self;
    /// Whether the value may be saved (e.g. finite).
    fn is_valid(&self) -> bool;
    /// Write the record's [`Persisted::LEN`] bytes to the start of `out`.
    fn encode_into(&self, out: &mut [u8]);
    /// Parse a record from the start of `bytes`; `None` for anything but a
    /// valid record (erased or partly written flash, bad magic, version or
    /// CRC, sequence number 0, an invalid value).
    fn decode_from(bytes: &[u8]) -> Option<Self>;
}

/// A persisted threshold.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Record {
    /// Sequence number: 1 for the first record ever written, +1 per save.
    pub seq: u32,
    /// The threshold on `−log p(x)`, nats (finite).
    pub threshold: f32,
    /// Windows the threshold was calibrated on.
    pub windows: u32,
    /// Target false-alarm rate of the calibration.
    pub false_alarm_rate: f32,
}

impl Record {
    /// The record's bytes in flash.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        let words = [
            MAGIC,
            VERSION,
            self.seq,
            self.threshold.to_bits(),
            self.windows,
            self.false_alarm_rate.to_bits(),
        ];
        for (chunk, w) in b.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        let crc = crc32(&b[..24]);
        if let Some(c) = b.get_mut(24..28) {
            c.copy_from_slice(&crc.to_le_bytes());
        }
        b
    }

    /// Parse a record; `None` for anything else (erased or partly written
    /// flash, wrong magic or version, bad CRC, non-finite threshold,
    /// sequence number 0).
    pub fn decode(b: &[u8; RECORD_LEN]) -> Option<Record> {
        let mut w = [0u32; 7];
        for (w, chunk) in w.iter_mut().zip(b.chunks_exact(4)) {
            let mut a = [0u8; 4];
            a.copy_from_slice(chunk);
            *w = u32::from_le_bytes(a);
        }
        let [magic, version, seq, threshold, windows, rate, crc] = w;
        let threshold = f32::from_bits(threshold);
        let ok =
            magic == MAGIC && version == VERSION && crc == crc32(b.get(..24)?) && seq != 0 && threshold.is_finite();
        ok.then_some(Record {
            seq,
            threshold,
            windows,
            false_alarm_rate: f32::from_bits(rate),
        })
    }
}

impl Persisted for Record {
    const LEN: usize = RECORD_LEN;
    fn seq(&self) -> u32 {
        self.seq
    }
    fn with_seq(self, seq: u32) -> Self {
        Record { seq, ..self }
    }
    fn is_valid(&self) -> bool {
        self.threshold.is_finite()
    }
    fn encode_into(&self, out: &mut [u8]) {
        if let Some(o) = out.get_mut(..RECORD_LEN) {
            o.copy_from_slice(&self.encode());
        }
    }
    fn decode_from(bytes: &[u8]) -> Option<Self> {
        let b: &[u8; RECORD_LEN] = bytes.get(..RECORD_LEN)?.try_into().ok()?;
        Record::decode(b)
    }
}

/// First word of a [`Correction`] record: `b"FMad"` as a little-endian u32.
pub const CORRECTION_MAGIC: u32 = u32::from_le_bytes(*b"FMad");

/// On-device adaptation's correction (`flowmote::Adapter::correction`) for
/// a model of `D` features: what a device restores after a reset.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Correction<const D: usize> {
    /// Sequence number: 1 for the first record ever written, +1 per save.
    pub seq: u32,
    /// Adaptation steps taken when it was saved.
    pub steps: u32,
    /// Shift `u` per feature (model standard deviations).
    pub shift: [f32; D],
    /// Log-scale `ℓ` per feature.
    pub log_scale: [f32; D],
}

impl<const D: usize> Correction<D> {
    /// Words before the CRC: magic, version, seq, steps, `u`, `ℓ`.
    const WORDS: usize = 4 + 2 * D;
}

impl<const D: usize> Persisted for Correction<D> {
    const LEN: usize = (4 * (Self::WORDS + 1)).div_ceil(8) * 8;
    fn seq(&self) -> u32 {
        self.seq
    }
    fn with_seq(self, seq: u32) -> Self {
        Correction { seq, ..self }
    }
    fn is_valid(&self) -> bool {
        self.shift.iter().chain(&self.log_scale).all(|v| v.is_finite())
    }
    fn encode_into(&self, out: &mut [u8]) {
        let Some(out) = out.get_mut(..Self::LEN) else {
            return;
        };
        out.fill(0);
        let head = [CORRECTION_MAGIC, VERSION, self.seq, self.steps];
        let floats = self.shift.iter().chain(&self.log_scale).map(|v| v.to_bits());
        for (chunk, w) in out.chunks_exact_mut(4).zip(head.into_iter().chain(floats)) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        let body = 4 * Self::WORDS;
        let crc = crc32(out.get(..body).unwrap_or(&[]));
        if let Some(c) = out.get_mut(body..body + 4) {
            c.copy_from_slice(&crc.to_le_bytes());
        }
    }
    fn decode_from(bytes: &[u8]) -> Option<Self> {
        let body = 4 * Self::WORDS;
        let word = |k: usize| -> Option<u32> {
            let b: [u8; 4] = bytes.get(4 * k..4 * k + 4)?.try_into().ok()?;
            Some(u32::from_le_bytes(b))
        };
        if word(0)? != CORRECTION_MAGIC || word(1)? != VERSION || word(Self::WORDS)? != crc32(bytes.get(..body)?) {
            return None;
        }
        let mut c = Correction {
            seq: word(2)?,
            steps: word(3)?,
            shift: [0.0; D],
            log_scale: [0.0; D],
        };
        for (k, v) in c.shift.iter_mut().chain(c.log_scale.iter_mut()).enumerate() {
            *v = f32::from_bits(word(4 + k)?);
        }
        (c.seq != 0 && c.is_valid()).then_some(c)
    }
}

/// CRC-32 (IEEE 802.3: reflected polynomial `0xEDB88320`, initial value and
/// final XOR `0xFFFFFFFF`), bit by bit.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// Why a [`Store`] operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PersistError<E> {
    /// The flash driver failed (the operation may have been cut short; the
    /// previous record is intact).
    Flash(E),
    /// The region is not two erase pages inside the flash, erase-aligned, or
    /// the flash's read/write sizes do not divide [`RECORD_LEN`].
    Layout,
    /// [`MAX_WRITES`] records have been written: the lifetime cap is reached.
    WornOut,
    /// [`MAX_ATTEMPTS_PER_BOOT`] saves were attempted since reset.
    TooManyAttempts,
    /// The value to save is not finite.
    NotFinite,
}

impl<E: NorFlashError> PersistError<E> {
    /// A short, allocation-free description (for logs).
    pub fn as_str(&self) -> &'static str {
        match self {
            PersistError::Flash(e) => match e.kind() {
                NorFlashErrorKind::NotAligned => "flash: not aligned",
                NorFlashErrorKind::OutOfBounds => "flash: out of bounds",
                _ => "flash: driver error",
            },
            PersistError::Layout => "persist: bad region layout",
            PersistError::WornOut => "persist: lifetime write cap reached",
            PersistError::TooManyAttempts => "persist: too many save attempts since reset",
            PersistError::NotFinite => "persist: value not finite",
        }
    }
}

/// The newest valid record's slot and sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Newest {
    slot: usize,
    seq: u32,
}

/// A record (by default a threshold [`Record`]) in two erase pages (A/B)
/// of a NOR flash.
#[derive(Debug)]
pub struct Store<F, R = Record> {
    flash: F,
    slots: [u32; 2],
    /// `None` until the slots have been scanned; then the newest valid record.
    newest: Option<Option<Newest>>,
    attempts: u8,
    record: core::marker::PhantomData<R>,
}

impl<F: NorFlash> Store<F, Record> {
    /// A threshold store in the two erase pages starting at offset `base`
    /// of `flash` ([`Store::open`] for [`Record`]s).
    pub fn new(flash: F, base: u32) -> Result<Self, PersistError<F::Error>> {
        Self::open(flash, base)
    }

    /// Save a threshold record ([`Store::put`]).
    pub fn save(
        &mut self,
        threshold: f32,
        windows: u32,
        false_alarm_rate: f32,
    ) -> Result<Record, PersistError<F::Error>> {
        self.put(Record {
            seq: 0,
            threshold,
            windows,
            false_alarm_rate,
        })
    }
}

impl<F: NorFlash, R: Persisted> Store<F, R> {
    /// A store of `R` records in the two erase pages starting at offset
    /// `base` of `flash` (`base` erase-aligned, `base + 2·ERASE_SIZE ≤
    /// capacity`, the flash's read and write sizes dividing `R::LEN`).
    /// Reads and writes nothing.
    pub fn open(flash: F, base: u32) -> Result<Self, PersistError<F::Error>> {
        let page = F::ERASE_SIZE;
        let sizes_ok = F::WRITE_SIZE > 0
            && F::READ_SIZE > 0
            && R::LEN <= MAX_RECORD_LEN
            && R::LEN % F::WRITE_SIZE == 0
            && R::LEN % F::READ_SIZE == 0
            && page >= R::LEN
            && (base as usize) % page == 0;
        let end = (base as usize).checked_add(page).and_then(|b| b.checked_add(page));
        let b = u32::try_from(page).ok().and_then(|p| base.checked_add(p));
        match (sizes_ok, end, b) {
            (true, Some(end), Some(b)) if end <= flash.capacity() && u32::try_from(end).is_ok() => Ok(Store {
                flash,
                slots: [base, b],
                newest: None,
                attempts: 0,
                record: core::marker::PhantomData,
            }),
            _ => Err(PersistError::Layout),
        }
    }

    fn read_slot(&mut self, slot: usize) -> Result<Option<R>, PersistError<F::Error>> {
        let mut b = [0u8; MAX_RECORD_LEN];
        let b = b.get_mut(..R::LEN).ok_or(PersistError::Layout)?;
        let off = *self.slots.get(slot).ok_or(PersistError::Layout)?;
        self.flash.read(off, b).map_err(PersistError::Flash)?;
        Ok(R::decode_from(b))
    }

    /// The newest valid record, if any (scans both slots; the higher
    /// sequence number wins). A flash read error is returned as such.
    pub fn load(&mut self) -> Result<Option<R>, PersistError<F::Error>> {
        let a = self.read_slot(0)?;
        let b = self.read_slot(1)?;
        let (slot, best) = match (a, b) {
            (Some(a), Some(b)) if b.seq() > a.seq() => (1, Some(b)),
            (Some(a), _) => (0, Some(a)),
            (None, b) => (1, b),
        };
        self.newest = Some(best.map(|r| Newest { slot, seq: r.seq() }));
        Ok(best)
    }

    /// Write a new record (sequence number one above the newest) into the
    /// slot not holding the newest record: erase it, then write. On success
    /// the new record is the newest; on any error the previous one still is.
    /// Returns `value` with its new sequence number.
    pub fn put(&mut self, value: R) -> Result<R, PersistError<F::Error>> {
        if !value.is_valid() {
            return Err(PersistError::NotFinite);
        }
        let newest = match self.newest {
            Some(n) => n,
            None => {
                self.load()?;
                self.newest.flatten()
            }
        };
        let (slot, seq) = match newest {
            Some(n) => (1 - (n.slot & 1), n.seq.saturating_add(1)),
            None => (0, 1),
        };
        if seq > MAX_WRITES {
            return Err(PersistError::WornOut);
        }
        if self.attempts >= MAX_ATTEMPTS_PER_BOOT {
            return Err(PersistError::TooManyAttempts);
        }
        self.attempts += 1;
        let record = value.with_seq(seq);
        let mut bytes = [0u8; MAX_RECORD_LEN];
        let bytes = bytes.get_mut(..R::LEN).ok_or(PersistError::Layout)?;
        record.encode_into(bytes);
        let off = *self.slots.get(slot).ok_or(PersistError::Layout)?;
        let end = u32::try_from(F::ERASE_SIZE)
            .ok()
            .and_then(|p| off.checked_add(p))
            .ok_or(PersistError::Layout)?;
        self.flash.erase(off, end).map_err(PersistError::Flash)?;
        self.flash.write(off, bytes).map_err(PersistError::Flash)?;
        self.newest = Some(Some(Newest { slot, seq }));
        Ok(record)
    }

    /// Records written over the device's life so far (the newest sequence
    /// number), once the slots have been scanned.
    pub fn writes(&self) -> Option<u32> {
        self.newest.map(|n| n.map_or(0, |n| n.seq))
    }

    /// Save attempts since this store was made (since reset).
    pub fn attempts(&self) -> u8 {
        self.attempts
    }

    /// Give the flash back.
    pub fn release(self) -> F {
        self.flash
    }
}
