//! The no-panic proof for the bundled model (`fixtures/src/model.rs`) and its
//! feature pipeline.
#![no_std]
#![no_main]

use flowmote_fixtures::model::{pipeline, MODEL, THRESHOLD};

#[cfg_attr(target_arch = "arm", cortex_m_rt::entry)]
#[cfg_attr(target_arch = "riscv32", riscv_rt::entry)]
fn main() -> ! {
    flowmote_nopanic::prove_with(&MODEL, THRESHOLD, pipeline())
}
