#!/usr/bin/env bash
# Firmware CI: lint and build every firmware crate, keep each image's size
# snapshot, link the no-panic proofs and run the emulated Cortex-M4F
# golden-vector check. Run from anywhere: `scripts/firmware-ci.sh`.
#
# The firmware workspace (firmware/): app/ (hardware-independent logic),
# boards/<board>/ (one crate per board, each with its own .cargo/config.toml
# naming its target and runner), qemu/ (the emulator image, runner QEMU) and
# nopanic/ (link-time proof). Every crate is built from its own folder, as a
# user would, so its .cargo/config.toml applies.
#
# Installs what a fresh machine lacks (each step is skipped when present):
#   rustup targets thumbv7em-none-eabihf, thumbv6m-none-eabi, riscv32imc-unknown-none-elf (seconds)
#   qemu-system-arm      via apt-get, as root        (~30 s)
#   defmt-print          via cargo install --locked  (~2 min, once per machine)
#
# Steps (each fails the script):
#   1. format and clippy (warnings are errors) of every firmware crate
#   2. every board image: `cargo build --release` in boards/<board> (what
#      `cargo run --release` flashes; no board can be flashed here)
#   3. no-panic proof: images whose panic handler calls an undefined symbol
#      link only if the scoring path cannot panic, for each instruction set
#      the boards use (thumbv7em-none-eabihf; thumbv6m-none-eabi and
#      riscv32imc-unknown-none-elf, soft float)
#   4. QEMU golden run: `cargo run --release --bin qemu` in firmware/qemu (the
#      runner is qemu-system-arm mps2-an386 under `timeout`); the image exits
#      non-zero on a mismatch, panic or HardFault
#   5. image sizes: flash and static RAM of each image (scripts/elf-size.py)
#      against the `sizes.txt` in its crate's folder; an image that grew by
#      more than layout noise (1 %, at least 512 B of flash) fails until the
#      snapshot is updated on purpose
# Ends with "firmware: N passed, 0 failed".
set -euo pipefail
cd "$(dirname "$0")/../firmware"
fw=$(pwd)
elf_size="$fw/../scripts/elf-size.py"
passed=0
step() { printf '\n--> firmware [%ss]: %s\n' "$SECONDS" "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
# The target a crate's .cargo/config.toml builds for.
target_of() { sed -n 's/^target = "\([^"]*\)".*/\1/p' "$1/.cargo/config.toml"; }
# Check the images a crate's sizes.txt names against it.
check_sizes() {
    local dir=$1 target
    target=$(target_of "$dir")
    mapfile -t images < <(sed -e 's/#.*//' "$dir/sizes.txt" | awk 'NF { print $1 }')
    python3 "$elf_size" --check "$dir/sizes.txt" "${images[@]/#/$fw/target/$target/release/}"
}

step "toolchain"
installed=$(rustup target list --installed 2>/dev/null)
for t in thumbv7em-none-eabihf thumbv6m-none-eabi riscv32imc-unknown-none-elf; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t"
done
rustup component add rustfmt clippy >/dev/null 2>&1 || true
if ! have qemu-system-arm; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-arm >/dev/null
fi
have defmt-print || cargo install defmt-print --locked
have python3 || { as_root apt-get update -qq; as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null; }

step "format (cargo fmt --all --check)"
cargo fmt --all --check
step "clippy of the app library (host and Cortex-M4F with defmt; warnings are errors)"
(cd app && cargo clippy --all-targets -- -D warnings \
    && cargo clippy --release --target thumbv7em-none-eabihf --features defmt -- -D warnings)
passed=$((passed + 1))

for board in boards/*/; do
    board=${board%/}
    step "${board#boards/} image: cargo clippy and cargo build --release in $board ($(target_of "$board"))"
    (cd "$board" && cargo clippy --release -- -D warnings && cargo build --release)
    check_sizes "$board"
    passed=$((passed + 1))
done

step "no-panic proof: link the scoring path with an undefined panic handler"
(
    cd nopanic
    cargo clippy --release -- -D warnings
    cargo clippy --release --target riscv32imc-unknown-none-elf -- -D warnings
    for target in thumbv7em-none-eabihf thumbv6m-none-eabi riscv32imc-unknown-none-elf; do
        if ! cargo build --release --target "$target"; then
            echo "the scoring path can panic on $target: see firmware/nopanic/src/lib.rs" >&2
            exit 1
        fi
    done
)
passed=$((passed + 1))

step "QEMU mps2-an386 (Cortex-M4F): golden vectors, monitor, stack (cargo run --release --bin qemu)"
(cd qemu && cargo clippy --release -- -D warnings && cargo build --release && cargo run --release --bin qemu)
check_sizes qemu
passed=$((passed + 1))

echo
echo "firmware: every step took ${SECONDS} s"
echo "firmware: ${passed} passed, 0 failed"
