#!/usr/bin/env bash
# Runs every check CI runs, installing what a fresh machine lacks:
#   rustup targets thumbv7em-none-eabihf (Cortex-M4F) and thumbv6m-none-eabi (Cortex-M0, soft float),
#   qemu-system-arm (emulated Cortex-M4F for the firmware's golden-vector run; apt-get, as root).
# Ends with one line "N passed, N failed" summing every test that ran.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT

step() { printf '\n==> %s\n' "$*"; }

step "toolchain: targets and components"
rustup target add thumbv7em-none-eabihf thumbv6m-none-eabi >/dev/null
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "format"
cargo fmt --all --check
(cd firmware 2>/dev/null && cargo fmt --check) || [ ! -d firmware ]

step "clippy (host workspace, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "docs (cargo doc, warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "no_std core builds for Cortex-M4F and Cortex-M0 (no alloc)"
cargo build -p flowmote --release --target thumbv7em-none-eabihf
cargo build -p flowmote --release --target thumbv6m-none-eabi
cargo build -p flowmote --release --target thumbv7em-none-eabihf --features defmt

step "MSRV: the core builds with the rust-version in Cargo.toml"
msrv=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)
case "$msrv" in *.*.*) ;; *) msrv="$msrv.0" ;; esac
rustup toolchain install "$msrv" --profile minimal --target thumbv7em-none-eabihf >/dev/null 2>&1 \
    || rustup toolchain install "$msrv" --profile minimal --target thumbv7em-none-eabihf
cargo "+$msrv" build -p flowmote --release --target thumbv7em-none-eabihf
cargo "+$msrv" build -p flowmote --release

step "host tests (cargo test: every workspace member, see default-members)"
cargo test 2>&1 | tee -a "$log"

step "benches compile"
cargo bench --workspace --no-run

if [ -x scripts/firmware-ci.sh ]; then
    step "firmware: build, emulated Cortex-M4F golden-vector run"
    scripts/firmware-ci.sh 2>&1 | tee -a "$log"
fi

passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
echo
echo "${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
