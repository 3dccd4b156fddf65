//! The no-panic proof for the bundled model (`fixtures/src/model.rs`).
#![no_std]
#![no_main]

use flowmote_fixtures::model::{MODEL, THRESHOLD};

#[cortex_m_rt::entry]
fn main() -> ! {
    flowmote_nopanic::prove(&MODEL, THRESHOLD)
}
