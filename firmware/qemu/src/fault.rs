//! The emulated images' HardFault and panic handlers (used by the QEMU
//! binaries via `#[path]`): log, then exit QEMU with status 1, so a fault or
//! a panic fails the run that hit it.

use cortex_m_rt::{exception, ExceptionFrame};
use cortex_m_semihosting::debug;

#[exception]
unsafe fn HardFault(_frame: &ExceptionFrame) -> ! {
    defmt::error!("HardFault");
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::bkpt();
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    defmt::error!("panic");
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::bkpt();
    }
}
