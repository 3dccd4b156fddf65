//! The no-panic proof for a compressed export (`fixtures/src/quant_i8.rs`:
//! the extended model with `i8` conditioner weights and row scales).
#![no_std]
#![no_main]

use flowmote_fixtures::quant_i8::{MODEL, THRESHOLD};

#[cfg_attr(target_arch = "arm", cortex_m_rt::entry)]
#[cfg_attr(target_arch = "riscv32", riscv_rt::entry)]
fn main() -> ! {
    flowmote_nopanic::prove(&MODEL, THRESHOLD)
}
