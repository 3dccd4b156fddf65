//! The no-panic proof of on-device adaptation with the bundled model
//! (`fixtures/src/model.rs`: standardisation, LU, spline couplings,
//! permutations): gradient, adapter, corrected scoring, correction store.
#![no_std]
#![no_main]

use flowmote_fixtures::model::{AdaptGradient, MEAN, MODEL, STD, THRESHOLD};

#[cfg_attr(target_arch = "arm", cortex_m_rt::entry)]
#[cfg_attr(target_arch = "riscv32", riscv_rt::entry)]
fn main() -> ! {
    flowmote_nopanic::prove_adapt(&MODEL, AdaptGradient::new(&MODEL), MEAN, STD, THRESHOLD)
}
