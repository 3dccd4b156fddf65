//! A minimal LIS3DH accelerometer driver over `embedded_hal::i2c::I2c`.
//!
//! Configuration: 100 Hz, X/Y/Z enabled, high-resolution (12-bit), ±2 g, block
//! data update — so one digit is 1 mg and a reading is the 16-bit register
//! value shifted right by 4. In this mode the four low bits of every axis are
//! zero; a frame with any of them set is not a reading (bus noise, a wrong or
//! resetting device, SDA stuck high reading `0xFF…`) and is rejected as
//! [`SensorError::Garbage`] rather than scored.

use embedded_hal::i2c::{ErrorKind, I2c};

/// I²C address with SA0 low.
pub const ADDR_SA0_LOW: u8 = 0x18;
/// I²C address with SA0 high (the usual breakout default).
pub const ADDR_SA0_HIGH: u8 = 0x19;
/// `WHO_AM_I` register.
pub const WHO_AM_I: u8 = 0x0F;
/// Value of `WHO_AM_I` on a LIS3DH.
pub const WHO_AM_I_VALUE: u8 = 0x33;
/// `CTRL_REG1`: data rate, low-power mode, axis enables.
pub const CTRL_REG1: u8 = 0x20;
/// `CTRL_REG4`: block data update, full scale, high resolution.
pub const CTRL_REG4: u8 = 0x23;
/// `OUT_X_L`, first of the six output registers.
pub const OUT_X_L: u8 = 0x28;
/// Register-address bit that makes a multi-byte access auto-increment.
pub const AUTO_INCREMENT: u8 = 0x80;
/// `CTRL_REG1` value written by [`Lis3dh::init`]: ODR 100 Hz, normal/HR, XYZ on.
pub const CTRL_REG1_VALUE: u8 = 0x57;
/// `CTRL_REG4` value written by [`Lis3dh::init`]: BDU, ±2 g, high resolution.
pub const CTRL_REG4_VALUE: u8 = 0x88;

/// Why a reading could not be had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SensorError<E> {
    /// The bus transaction failed.
    Bus(E),
    /// `WHO_AM_I` did not read [`WHO_AM_I_VALUE`]; carries what it read.
    WrongDevice(u8),
    /// The frame failed the plausibility check (see the module docs).
    Garbage,
}

impl<E: embedded_hal::i2c::Error> SensorError<E> {
    /// A short, allocation-free description (for logs).
    pub fn as_str(&self) -> &'static str {
        match self {
            SensorError::Bus(e) => match e.kind() {
                ErrorKind::Bus => "i2c: bus error",
                ErrorKind::ArbitrationLoss => "i2c: arbitration lost",
                ErrorKind::NoAcknowledge(_) => "i2c: no acknowledge",
                ErrorKind::Overrun => "i2c: overrun",
                _ => "i2c: other error",
            },
            SensorError::WrongDevice(_) => "sensor: unexpected WHO_AM_I",
            SensorError::Garbage => "sensor: implausible frame (garbage)",
        }
    }
}

/// A LIS3DH on an I²C bus.
#[derive(Debug)]
pub struct Lis3dh<I2C> {
    i2c: I2C,
    addr: u8,
}

impl<I2C: I2c> Lis3dh<I2C> {
    /// A driver for the device at `addr` ([`ADDR_SA0_LOW`] or [`ADDR_SA0_HIGH`]).
    /// Does not touch the bus; call [`Lis3dh::init`].
    pub fn new(i2c: I2C, addr: u8) -> Self {
        Lis3dh { i2c, addr }
    }

    /// Check `WHO_AM_I` and write the configuration (see the module docs).
    pub fn init(&mut self) -> Result<(), SensorError<I2C::Error>> {
        let mut id = [0u8];
        self.i2c
            .write_read(self.addr, &[WHO_AM_I], &mut id)
            .map_err(SensorError::Bus)?;
        if id[0] != WHO_AM_I_VALUE {
            return Err(SensorError::WrongDevice(id[0]));
        }
        self.i2c
            .write(self.addr, &[CTRL_REG1, CTRL_REG1_VALUE])
            .map_err(SensorError::Bus)?;
        self.i2c
            .write(self.addr, &[CTRL_REG4, CTRL_REG4_VALUE])
            .map_err(SensorError::Bus)?;
        Ok(())
    }

    /// Read one acceleration sample, milli-g per axis.
    pub fn read_mg(&mut self) -> Result<[i16; 3], SensorError<I2C::Error>> {
        let mut buf = [0u8; 6];
        self.i2c
            .write_read(self.addr, &[OUT_X_L | AUTO_INCREMENT], &mut buf)
            .map_err(SensorError::Bus)?;
        decode_frame(&buf).ok_or(SensorError::Garbage)
    }

    /// Give the bus back.
    pub fn release(self) -> I2C {
        self.i2c
    }
}

/// Decode the six output bytes (X, Y, Z; little-endian, left-justified
/// 12-bit) into milli-g, or `None` if any axis has a low nibble set.
#[inline]
pub fn decode_frame(buf: &[u8; 6]) -> Option<[i16; 3]> {
    let mut out = [0i16; 3];
    for (o, pair) in out.iter_mut().zip(buf.chunks_exact(2)) {
        let raw = i16::from_le_bytes([pair[0], pair[1]]);
        if raw & 0x000F != 0 {
            return None;
        }
        *o = raw >> 4;
    }
    Some(out)
}

/// The six output bytes a LIS3DH in this configuration would send for a
/// reading in milli-g (clamped to the 12-bit range): the inverse of
/// [`decode_frame`], used by the emulated sensor and by tests.
#[inline]
pub fn encode_frame(mg: [i16; 3]) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (pair, v) in out.chunks_exact_mut(2).zip(mg) {
        let raw = (v.clamp(-2048, 2047) << 4).to_le_bytes();
        pair.copy_from_slice(&raw);
    }
    out
}
