//! Puts `memory.x` on the linker's search path (cortex-m-rt's `link.x`
//! includes it) and relinks when it changes. For `thumbv6m-none-eabi` (the
//! Cortex-M0 instruction-count bench under QEMU's `microbit` machine,
//! `scripts/firmware-bench.sh --m0`) it is `memory-microbit.x` instead.

use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let src = match env::var("TARGET").as_deref() {
        Ok("thumbv6m-none-eabi") => "memory-microbit.x",
        _ => "memory.x",
    };
    fs::copy(src, out.join("memory.x")).expect("copy memory.x to OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=memory-microbit.x");
    println!("cargo:rerun-if-changed=build.rs");
}
