//! The no-panic proof for the bundled model (`fixtures/src/model.rs`).
#![no_std]
#![no_main]

use flowmote_fixtures::model::{MODEL, THRESHOLD};

#[cfg_attr(target_arch = "arm", cortex_m_rt::entry)]
#[cfg_attr(target_arch = "riscv32", riscv_rt::entry)]
fn main() -> ! {
    flowmote_nopanic::prove(&MODEL, THRESHOLD)
}
