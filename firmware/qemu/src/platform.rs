//! What differs between the emulated Cortex-M and RISC-V images (used by
//! the QEMU binaries via `#[path]`): the entry point, exiting QEMU with a
//! status, the fault and panic handlers (log, then exit with status 1, so a
//! fault or a panic fails the run that hit it) and the defmt transport
//! (semihosting on both).

/// The Cortex-M images (QEMU `mps2-an386`, `microbit`).
#[cfg(target_arch = "arm")]
mod imp {
    pub use cortex_m_rt::entry;
    use cortex_m_rt::{exception, ExceptionFrame};
    use cortex_m_semihosting::debug;
    use defmt_semihosting as _;

    /// End the emulation: every check passed.
    pub fn exit_success() -> ! {
        debug::exit(debug::EXIT_SUCCESS);
        loop {
            cortex_m::asm::bkpt();
        }
    }

    /// End the emulation: a check failed.
    pub fn exit_failure() -> ! {
        debug::exit(debug::EXIT_FAILURE);
        loop {
            cortex_m::asm::bkpt();
        }
    }

    #[exception]
    unsafe fn HardFault(_frame: &ExceptionFrame) -> ! {
        defmt::error!("HardFault");
        exit_failure()
    }
}

/// The RV32IMC images (QEMU riscv32 `virt`, `-bios none`: machine mode,
/// one hart, no interrupts; the ESP32-C3's instruction set).
#[cfg(target_arch = "riscv32")]
mod imp {
    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicBool, Ordering};
    pub use riscv_rt::entry;
    use semihosting::io::Write as _;

    /// End the emulation: every check passed.
    pub fn exit_success() -> ! {
        semihosting::process::exit(0)
    }

    /// End the emulation: a check failed.
    pub fn exit_failure() -> ! {
        semihosting::process::exit(1)
    }

    /// A trap (illegal instruction, access fault): riscv-rt's default
    /// (`abort`) would stop the hart and leave QEMU to the timeout; fail the
    /// run at once instead. riscv-rt calls it with the C ABI.
    #[export_name = "ExceptionHandler"]
    extern "C" fn exception_handler(_frame: &riscv_rt::TrapFrame) -> ! {
        defmt::error!("exception");
        exit_failure()
    }

    /// defmt frames over semihosting's standard output, as defmt-semihosting
    /// writes them on the Cortex-M (one hart, no interrupts: a flag guards
    /// against a nested frame).
    #[defmt::global_logger]
    struct Logger;

    static TAKEN: AtomicBool = AtomicBool::new(false);

    struct Encoder(UnsafeCell<defmt::Encoder>);
    // SAFETY: one hart and no interrupt handlers; `TAKEN` refuses re-entry.
    unsafe impl Sync for Encoder {}
    static ENCODER: Encoder = Encoder(UnsafeCell::new(defmt::Encoder::new()));

    fn out(bytes: &[u8]) {
        if let Ok(mut o) = semihosting::io::stdout() {
            let _ = o.write_all(bytes);
        }
    }

    // SAFETY: `acquire`/`release` bracket every frame and `TAKEN` refuses a
    // nested one, so the encoder serves one frame at a time.
    unsafe impl defmt::Logger for Logger {
        fn acquire() {
            if TAKEN.load(Ordering::Relaxed) {
                exit_failure();
            }
            TAKEN.store(true, Ordering::Relaxed);
            unsafe { (*ENCODER.0.get()).start_frame(out) }
        }

        unsafe fn flush() {}

        unsafe fn release() {
            unsafe { (*ENCODER.0.get()).end_frame(out) };
            TAKEN.store(false, Ordering::Relaxed);
        }

        unsafe fn write(bytes: &[u8]) {
            unsafe { (*ENCODER.0.get()).write(bytes, out) }
        }
    }
}

pub use imp::{entry, exit_failure, exit_success};

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    defmt::error!("panic");
    exit_failure()
}
