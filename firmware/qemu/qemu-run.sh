#!/usr/bin/env bash
# Cargo runner of the emulated images (.cargo/config.toml): runs the ELF in
# qemu-system-arm (mps2-an386, Cortex-M4F, semihosting) under `timeout`, decodes
# its defmt log with defmt-print and exits with the image's exit code (0 = all
# checks passed; a failed check, a panic or a HardFault exits 1; a hang is
# ended by the timeout). Extra arguments go to QEMU before `-kernel`.
set -euo pipefail
elf=$1
shift
timeout "${FIRMWARE_QEMU_TIMEOUT:-120}" qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic \
    -semihosting-config enable=on,target=native "$@" -kernel "$elf" | defmt-print -e "$elf"
