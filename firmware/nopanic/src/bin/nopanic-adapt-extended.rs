//! The no-panic proof of on-device adaptation with the layers no other
//! proof image adapts: the `extended` fixture's first member without its
//! continuous flow (which has no backward pass) — standardisation, LU
//! linear, spline coupling, autoregressive spline — through its `Gradient`,
//! with the adapter, corrected scoring and correction store.
#![no_std]
#![no_main]

use flowmote::gradient::Gradient;
use flowmote::Flow;
use flowmote_fixtures::extended::{MEAN, MODEL, STD, THRESHOLD};

#[cfg_attr(target_arch = "arm", cortex_m_rt::entry)]
#[cfg_attr(target_arch = "riscv32", riscv_rt::entry)]
fn main() -> ! {
    let l = &MODEL.components.0.layers;
    let flow = Flow::new((l.0.clone(), l.1.clone(), l.2.clone(), l.3, l.4.clone()));
    // Five saved layer inputs; scratch generously sized (`new` checks it).
    let gradient = Gradient::<'_, 3, _, 5, 256>::new(&flow);
    flowmote_nopanic::prove_adapt(&flow, gradient, MEAN, STD, THRESHOLD)
}
