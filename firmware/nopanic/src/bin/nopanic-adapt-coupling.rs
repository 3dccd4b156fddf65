//! The no-panic proof of on-device adaptation with affine couplings: the
//! `coupling` fixture (`fixtures/src/coupling.rs`: standardisation, affine
//! couplings, reversals) through its `Gradient`, with the adapter, corrected
//! scoring and correction store.
#![no_std]
#![no_main]

use flowmote_fixtures::coupling::{AdaptGradient, MEAN, MODEL, STD, THRESHOLD};

#[cfg_attr(target_arch = "arm", cortex_m_rt::entry)]
#[cfg_attr(target_arch = "riscv32", riscv_rt::entry)]
fn main() -> ! {
    flowmote_nopanic::prove_adapt(&MODEL, AdaptGradient::new(&MODEL), MEAN, STD, THRESHOLD)
}
