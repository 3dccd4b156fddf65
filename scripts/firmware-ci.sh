#!/usr/bin/env bash
# Firmware CI: build every firmware image and run the emulated Cortex-M4F
# golden-vector check. From firmware/: `../scripts/firmware-ci.sh`.
#
# Installs what a fresh machine lacks (each step is skipped when present):
#   rustup target thumbv7em-none-eabihf              (seconds)
#   qemu-system-arm      via apt-get, as root        (~30 s)
#   defmt-print          via cargo install --locked  (~2 min, once per machine)
#
# Steps (each fails the script):
#   1. nRF52840-DK image:   cargo build --release   (the board binary, as `cargo run --release` flashes it)
#   2. no-panic proof:      the image whose panic handler calls an undefined
#                           symbol links only if the scoring path cannot panic
#   3. QEMU golden run:     the same scoring/sampling code on the bundled
#                           model's golden vectors in qemu-system-arm
#                           (mps2-an386, Cortex-M4F), under `timeout`; the
#                           image exits non-zero on a mismatch, panic or HardFault
#   4. image sizes: flash and static RAM of both images (scripts/elf-size.py)
#                           against firmware/sizes.txt; an image that grew by
#                           more than layout noise (1 %, at least 512 B of
#                           flash) fails until the snapshot is updated on purpose
# Ends with "firmware: N passed, 0 failed".
set -euo pipefail
cd "$(dirname "$0")/../firmware"
TIMEOUT=${FIRMWARE_QEMU_TIMEOUT:-120}
passed=0
step() { printf '\n--> firmware: %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

step "toolchain"
rustup target list --installed 2>/dev/null | grep -qx thumbv7em-none-eabihf || rustup target add thumbv7em-none-eabihf
if ! have qemu-system-arm; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-arm >/dev/null
fi
have defmt-print || cargo install defmt-print --locked
have python3 || { as_root apt-get update -qq; as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null; }

step "nRF52840-DK image (cargo build --release)"
cargo build --release
passed=$((passed + 1))

step "no-panic proof: link the scoring path with an undefined panic handler"
for f in nopanic nopanic-extended; do
    if ! cargo build --release --no-default-features --features "$f" --bin nopanic; then
        echo "the scoring path can panic ($f): see firmware/src/bin/nopanic.rs" >&2
        exit 1
    fi
done
passed=$((passed + 1))

step "QEMU mps2-an386 (Cortex-M4F): golden vectors, monitor, stack"
cargo build --release --no-default-features --features qemu --bin qemu
elf=target/thumbv7em-none-eabihf/release/qemu
set -o pipefail
timeout "$TIMEOUT" qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic \
    -semihosting-config enable=on,target=native -kernel "$elf" | defmt-print -e "$elf"
passed=$((passed + 1))

step "image sizes against the snapshot firmware/sizes.txt (fails if an image grew)"
# flash = .vector_table + .text + .rodata, RAM = .data + .bss + .uninit.
# Intended growth: ../scripts/elf-size.py --update sizes.txt <the two images>.
python3 ../scripts/elf-size.py --check sizes.txt \
    target/thumbv7em-none-eabihf/release/nrf52840dk target/thumbv7em-none-eabihf/release/qemu
passed=$((passed + 1))

echo
echo "firmware: ${passed} passed, 0 failed"
