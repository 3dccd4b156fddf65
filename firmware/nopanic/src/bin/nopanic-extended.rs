//! The no-panic proof for the extended export (`fixtures/src/extended.rs`:
//! LU linear, spline coupling, autoregressive spline, continuous flow).
#![no_std]
#![no_main]

use flowmote_fixtures::extended::{MODEL, THRESHOLD};

#[cortex_m_rt::entry]
fn main() -> ! {
    flowmote_nopanic::prove(&MODEL, THRESHOLD)
}
