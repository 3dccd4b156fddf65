//! Puts `memory.x` on the linker's search path (cortex-m-rt's `link.x`
//! includes it) and relinks when it changes; writes `recording.rs` for the
//! `qemu-record` image: the bundled test recording's ankle axes (the first
//! three columns of `examples/data/daphnet_gait.test.csv`, the bundled
//! model's channels), which its emulated LIS3DH replays.

use std::{env, fs, path::PathBuf};

/// The recording the emulated sensor of `qemu-record` replays.
const RECORDING: &str = "../../examples/data/daphnet_gait.test.csv";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    // riscv-rt's link.x wants its regions named; QEMU `virt` has RAM at
    // 0x8000_0000 and the image runs from there (`-bios none -kernel`).
    let memory = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("riscv32") => "memory-riscv.x",
        _ => "memory.x",
    };
    fs::copy(memory, out.join("memory.x")).expect("copy memory.x to OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=memory-riscv.x");
    println!("cargo:rerun-if-changed=build.rs");

    let text = fs::read_to_string(RECORDING).unwrap_or_else(|e| panic!("read {RECORDING}: {e}"));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').take(3).collect();
    let mut rows = String::new();
    let mut n = 0usize;
    for (i, line) in lines.enumerate() {
        let v: Vec<i16> = line
            .split(',')
            .take(3)
            .map(|c| {
                c.trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("{RECORDING}:{}: {e}", i + 2))
            })
            .collect();
        rows.push_str(&format!("    {v:?},\n"));
        n += 1;
    }
    let src = format!(
        "/// Columns of [`RECORDING`] in `{RECORDING}`.\npub static RECORDING_COLUMNS: [&str; 3] = {header:?};\n\
/// The first three columns of `{RECORDING}`, row by row (mg).\npub static RECORDING: [[i16; 3]; {n}] = [\n{rows}];\n"
    );
    fs::write(out.join("recording.rs"), src).expect("write recording.rs to OUT_DIR");
    println!("cargo:rerun-if-changed={RECORDING}");
}
