#!/usr/bin/env bash
# Instruction counts per log_prob on the emulated Cortex-M4F (QEMU mps2-an386),
# for BENCHMARKS.md. Not part of CI (the trace is ~70 MB; the run takes seconds).
#
# Builds firmware/qemu/src/bin/qemu-bench.rs, runs it under
#   qemu-system-arm -singlestep -d exec,nochain -D trace.log
# (one trace line per executed instruction), counts the lines between each
# return from `bench_start` and the following entry to `bench_end`, and prints
# a Markdown table next to the names and multiply–accumulate counts the image
# logs (defmt over semihosting, decoded by defmt-print).
#
# Needs: rustup target thumbv7em-none-eabihf, qemu-system-arm, defmt-print
# (scripts/firmware-ci.sh installs them). Extra cargo arguments are passed on,
# e.g. `--config profile.release.opt-level="s"`.
#
# `--m0` (first argument): the same image built for thumbv6m-none-eabi
# (Cortex-M0, soft float: the RP2040 class) and run on QEMU's `microbit`
# machine (nRF51, 16 KiB RAM: rows whose weights do not fit are left out, see
# qemu-bench.rs). Needs `rustup target add thumbv6m-none-eabi`.
#
# `--rv32` (first argument): built for riscv32imc-unknown-none-elf (RV32IMC,
# soft float: the ESP32-C3's instruction set) and run on QEMU's riscv32 `virt`
# machine (`-bios none`: the image starts in machine mode), with the Cortex-M0's
# rows. Needs `rustup target add riscv32imc-unknown-none-elf` and
# qemu-system-riscv32 (Debian/Ubuntu: `apt-get install qemu-system-misc`).
set -euo pipefail
cd "$(dirname "$0")/../firmware/qemu"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

target=thumbv7em-none-eabihf
qemu=(qemu-system-arm -cpu cortex-m4 -machine mps2-an386)
if [ "${1:-}" = "--m0" ]; then
    shift
    target=thumbv6m-none-eabi
    qemu=(qemu-system-arm -machine microbit)
elif [ "${1:-}" = "--rv32" ]; then
    shift
    target=riscv32imc-unknown-none-elf
    qemu=(qemu-system-riscv32 -machine virt -bios none)
fi
cargo build --release --target "$target" --bin qemu-bench "$@" >&2
elf=${CARGO_TARGET_DIR:-../target}/$target/release/qemu-bench
timeout 600 "${qemu[@]}" -nographic \
    -semihosting-config enable=on,target=native -singlestep -d exec,nochain -D "$tmp/trace.log" \
    -kernel "$elf" | defmt-print -e "$elf" >"$tmp/log.txt"
awk '{ sym = $NF }
     sym == "bench_start" { st = 1; counting = 0; next }
     sym == "bench_end"   { if (counting) print n; counting = 0; st = 0; next }
     st == 1              { st = 0; counting = 1; n = 1; next }
     counting             { n++ }' "$tmp/trace.log" >"$tmp/counts.txt"
sed -n 's/^.*bench \(.*\) macs \([0-9]*\)$/\1|\2/p' "$tmp/log.txt" >"$tmp/names.txt"
if [ "$(wc -l <"$tmp/counts.txt")" -ne "$(wc -l <"$tmp/names.txt")" ]; then
    echo "marker/benchmark count mismatch" >&2
    cat "$tmp/log.txt" >&2
    exit 1
fi
echo "| benchmark | MACs | instructions | instructions / MAC |"
echo "| --- | ---: | ---: | ---: |"
paste -d'|' "$tmp/names.txt" "$tmp/counts.txt" | awk -F'|' '{
    r = ($2 > 0) ? sprintf("%.1f", $3 / $2) : "–";
    printf "| %s | %d | %d | %s |\n", $1, $2, $3, r }'
