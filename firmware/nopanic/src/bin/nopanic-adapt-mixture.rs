//! The no-panic proof of on-device adaptation with a mixture: the committee
//! fixture (`fixtures/src/committee.rs`, 12 MAF flows) through its
//! `MixtureGradient` — the members' gradients weighted by their
//! responsibilities — with the adapter, corrected scoring and correction store.
#![no_std]
#![no_main]

use flowmote_fixtures::committee::{AdaptGradient, MEAN, MODEL, STD, THRESHOLD};

#[cfg_attr(target_arch = "arm", cortex_m_rt::entry)]
#[cfg_attr(target_arch = "riscv32", riscv_rt::entry)]
fn main() -> ! {
    flowmote_nopanic::prove_adapt(&MODEL, AdaptGradient::new(&MODEL), MEAN, STD, THRESHOLD)
}
