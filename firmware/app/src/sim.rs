//! Software stand-ins for peripherals, so the emulated Cortex-M4F (which has
//! no accelerometer) runs the same monitor code as a board: an emulated
//! LIS3DH answering the driver's transactions, a pin that records its
//! level, and a NOR flash in RAM.

use core::convert::Infallible;

use embedded_hal::digital::{ErrorType as PinErrorType, OutputPin};
use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation, SevenBitAddress};

use embedded_storage::nor_flash::{
    check_erase, check_read, check_write, ErrorType as FlashErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash,
};

use crate::lis3dh::{encode_frame, OUT_X_L, WHO_AM_I, WHO_AM_I_VALUE};
use crate::window::Reading;

/// Bus error of [`EmulatedLis3dh`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimBusError;

impl embedded_hal::i2c::Error for SimBusError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address)
    }
}

/// What the emulated sensor does on its next data read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally.
    None,
    /// Fail the transaction (NACK).
    Nack,
    /// Send `0xFF` bytes, as a bus with SDA stuck high does.
    Garbage,
}

/// An emulated LIS3DH at one address: `WHO_AM_I` answers `0x33`, register
/// writes are accepted, data reads return the frames a source closure
/// produces (or a scripted [`Fault`]).
pub struct EmulatedLis3dh<S> {
    addr: u8,
    source: S,
    faults: &'static [(u32, Fault)],
    reads: u32,
}

impl<S: FnMut() -> Reading> EmulatedLis3dh<S> {
    /// A sensor at `addr` whose readings come from `source`; `faults` lists
    /// `(data read index, fault)` pairs to inject.
    pub fn new(addr: u8, source: S, faults: &'static [(u32, Fault)]) -> Self {
        EmulatedLis3dh {
            addr,
            source,
            faults,
            reads: 0,
        }
    }
}

impl<S> ErrorType for EmulatedLis3dh<S> {
    type Error = SimBusError;
}

impl<S: FnMut() -> Reading> I2c<SevenBitAddress> for EmulatedLis3dh<S> {
    fn transaction(&mut self, address: u8, operations: &mut [Operation<'_>]) -> Result<(), Self::Error> {
        if address != self.addr {
            return Err(SimBusError);
        }
        let mut reg = 0u8;
        for op in operations {
            match op {
                Operation::Write(bytes) => {
                    if let Some(r) = bytes.first() {
                        reg = *r & 0x7F;
                    }
                }
                Operation::Read(buf) => {
                    if reg == WHO_AM_I {
                        buf.fill(WHO_AM_I_VALUE);
                    } else if reg == OUT_X_L {
                        let n = self.reads;
                        self.reads = self.reads.wrapping_add(1);
                        let fault = self.faults.iter().find(|(i, _)| *i == n).map_or(Fault::None, |f| f.1);
                        match fault {
                            Fault::Nack => return Err(SimBusError),
                            Fault::Garbage => buf.fill(0xFF),
                            Fault::None => {
                                let frame = encode_frame((self.source)());
                                for (b, f) in buf.iter_mut().zip(frame) {
                                    *b = f;
                                }
                            }
                        }
                    } else {
                        buf.fill(0);
                    }
                }
            }
        }
        Ok(())
    }
}

/// An output pin that remembers its level and counts writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordingPin {
    /// Current level (`true` = high).
    pub high: bool,
    /// Number of level changes written.
    pub writes: u32,
}

impl PinErrorType for RecordingPin {
    type Error = Infallible;
}

impl OutputPin for RecordingPin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.high = false;
        self.writes = self.writes.wrapping_add(1);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.high = true;
        self.writes = self.writes.wrapping_add(1);
        Ok(())
    }
}

/// A NOR flash of `N` bytes in RAM: erase pages of [`RamFlash::PAGE`] bytes
/// set every bit (`0xFF`), writes of whole 4-byte words can only clear bits
/// (the new content is the old AND the written), out-of-bounds and
/// misaligned operations are errors. For the emulated Cortex-M4F, which has
/// no flash controller to program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RamFlash<const N: usize> {
    /// The contents.
    pub bytes: [u8; N],
    /// Pages erased so far.
    pub erases: u32,
}

impl<const N: usize> RamFlash<N> {
    /// Erase-page size, bytes.
    pub const PAGE: usize = 256;

    /// An erased flash.
    pub const fn new() -> Self {
        RamFlash {
            bytes: [0xFF; N],
            erases: 0,
        }
    }
}

impl<const N: usize> Default for RamFlash<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FlashErrorType for RamFlash<N> {
    type Error = NorFlashErrorKind;
}

impl<const N: usize> ReadNorFlash for RamFlash<N> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        check_read(self, offset, bytes.len())?;
        let src = self
            .bytes
            .get(offset as usize..)
            .and_then(|s| s.get(..bytes.len()))
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        bytes.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        N
    }
}

impl<const N: usize> NorFlash for RamFlash<N> {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = Self::PAGE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        check_erase(self, from, to)?;
        let dst = self
            .bytes
            .get_mut(from as usize..to as usize)
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        dst.fill(0xFF);
        self.erases = self.erases.wrapping_add(((to - from) as usize / Self::PAGE) as u32);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        check_write(self, offset, bytes.len())?;
        let dst = self
            .bytes
            .get_mut(offset as usize..)
            .and_then(|s| s.get_mut(..bytes.len()))
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        for (d, s) in dst.iter_mut().zip(bytes) {
            *d &= *s;
        }
        Ok(())
    }
}
