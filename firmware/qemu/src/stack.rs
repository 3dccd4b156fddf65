//! Stack high-water marks on the emulated Cortex-M4F (used by the QEMU
//! binaries via `#[path]`). cortex-m-rt's `paint-stack` feature fills the
//! stack with `0xCCCC_CCCC` before `main`; the lowest word that no longer
//! holds the paint is the deepest the stack has been.

use core::ptr::{addr_of, read_volatile, write_volatile};

use cortex_m_rt::STACK_PAINT_VALUE;

extern "C" {
    /// Lowest stack address (top of statically allocated RAM), from `link.x`.
    static _stack_end: u32;
    /// Initial stack pointer (end of RAM), from `link.x`.
    static _stack_start: u32;
}

/// Margin left unpainted below the painter's own stack pointer.
const MARGIN: usize = 64;

fn lowest_scrubbed() -> usize {
    let lo = addr_of!(_stack_end) as usize;
    let hi = addr_of!(_stack_start) as usize;
    let mut a = lo;
    while a < hi && unsafe { read_volatile(a as *const u32) } == STACK_PAINT_VALUE {
        a += 4;
    }
    a
}

/// Bytes of stack used since reset (deepest point of the whole run so far).
pub fn high_water() -> usize {
    (addr_of!(_stack_start) as usize) - lowest_scrubbed()
}

#[inline(never)]
fn repaint_below_sp() {
    let sp = cortex_m::register::msp::read() as usize;
    let lo = addr_of!(_stack_end) as usize;
    let mut a = lo;
    while a + MARGIN < sp {
        unsafe { write_volatile(a as *mut u32, STACK_PAINT_VALUE) };
        a += 4;
    }
}

/// Bytes of stack `f` uses below the caller's stack pointer (an upper bound:
/// it includes the small frames of the measuring helpers themselves).
#[inline(never)]
pub fn measure(f: impl FnOnce()) -> usize {
    let sp = cortex_m::register::msp::read() as usize;
    repaint_below_sp();
    f();
    sp.saturating_sub(lowest_scrubbed())
}
