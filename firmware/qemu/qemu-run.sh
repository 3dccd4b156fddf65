#!/usr/bin/env bash
# Cargo runner of the emulated images (.cargo/config.toml): runs the ELF in
# qemu-system-arm (mps2-an386, Cortex-M4F, semihosting) — or, built for
# riscv32imc-unknown-none-elf, qemu-system-riscv32 (virt) — under `timeout`, decodes
# its defmt log with defmt-print and exits with the image's exit code (0 = all
# checks passed; a failed check, a panic or a HardFault exits 1; a hang is
# ended by the timeout). Extra arguments go to QEMU before `-kernel`.
set -euo pipefail
elf=$1
shift
# The RV32IMC image (the ESP32-C3's instruction set, soft float) runs on the
# riscv32 `virt` machine, in machine mode (`-bios none`); every Arm image
# (thumbv7em, and thumbv6m: the Cortex-M4 executes ARMv6-M code) on
# mps2-an386.
case $elf in
*/riscv32imc-unknown-none-elf/*) machine=(qemu-system-riscv32 -machine virt -bios none) ;;
*) machine=(qemu-system-arm -cpu cortex-m4 -machine mps2-an386) ;;
esac
timeout "${FIRMWARE_QEMU_TIMEOUT:-120}" "${machine[@]}" -nographic \
    -semihosting-config enable=on,target=native "$@" -kernel "$elf" | defmt-print -e "$elf"
