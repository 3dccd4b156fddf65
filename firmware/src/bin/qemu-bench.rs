#![no_std]
#![no_main]
use cortex_m_rt::entry;
use defmt_semihosting as _;
#[entry]
fn main() -> ! {
    loop {}
}
#[panic_handler]
fn p(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
