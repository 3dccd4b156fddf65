//! The no-panic proof for the extended export (`fixtures/src/extended.rs`:
//! LU linear, spline coupling, autoregressive spline, continuous flow).
#![no_std]
#![no_main]

use flowmote_fixtures::extended::{MODEL, THRESHOLD};

#[cfg_attr(target_arch = "arm", cortex_m_rt::entry)]
#[cfg_attr(target_arch = "riscv32", riscv_rt::entry)]
fn main() -> ! {
    flowmote_nopanic::prove(&MODEL, THRESHOLD)
}
