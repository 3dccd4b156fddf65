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
#   qemu-system-arm, qemu-system-riscv32 (Debian's qemu-system-misc)
#                        via apt-get, as root        (~30 s)
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
#   4b. the same golden run built for the soft-float instruction sets: for
#      riscv32imc-unknown-none-elf (the ESP32-C3's) on qemu-system-riscv32
#      `virt`, and for thumbv6m-none-eabi (the RP2040's ARMv6-M) on the same
#      mps2-an386 machine (a Cortex-M4 executes ARMv6-M code; QEMU's only
#      Cortex-M0 machine has too little flash for the image): the host's
#      numbers bit for bit without an FPU
#   5. image sizes: flash and static RAM of each image (scripts/elf-size.py)
#      against the `sizes.txt` in its crate's folder; an image that grew by
#      more than layout noise (1 %, at least 512 B of flash) fails until the
#      snapshot is updated on purpose
#   6. record mode: the nRF52840-DK image with `--features record` builds;
#      `cargo run --release --bin qemu-record` (the firmware's Recorder on an
#      emulated LIS3DH replaying examples/data/daphnet_gait.test.csv) piped
#      into `flowmote record` gives back that file's ankle columns, clipped to
#      the sensor's ±2 g, row for row (no gap, the 2 injected sensor errors
#      reported), and a model with the bundled model's pipeline scores it
#   7. the nRF52840-DK image builds with a mixture model the tool keeps (a
#      committee), adapted through its export's AdaptGradient (MixtureGradient)
#   8. `flowmote monitor --json` on the golden run's log counts the windows,
#      anomalies and alarms the log shows
# Ends with "firmware: N passed, 0 failed".
set -euo pipefail
cd "$(dirname "$0")/../firmware"
fw=$(pwd)
elf_size="$fw/../scripts/elf-size.py"
passed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
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
# One package per apt-get: on a machine with backports' qemu-utils, asking
# for both at once stops apt's resolver ("generated breaks"), while one at a
# time installs each (checked on a fresh machine of this project).
if ! have qemu-system-arm || ! have qemu-system-riscv32; then
    as_root apt-get update -qq
    for pkg in qemu-system-arm qemu-system-misc; do
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
    done
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

step "record mode: nrf52840dk with --features record (cargo clippy, cargo build --release)"
(cd boards/nrf52840dk && cargo clippy --release --features record -- -D warnings \
    && cargo build --release --features record && cargo build --release)
passed=$((passed + 1))

step "QEMU mps2-an386 (Cortex-M4F): golden vectors, monitor, stack (cargo run --release --bin qemu)"
(cd qemu && cargo clippy --release -- -D warnings && cargo build --release && cargo run --release --bin qemu) \
    | tee "$tmp/golden.log"
check_sizes qemu
passed=$((passed + 1))

step "soft float: the same golden run for RV32IMC (ESP32-C3; QEMU riscv32 virt) and ARMv6-M (RP2040; mps2-an386)"
(cd qemu && cargo clippy --release --target riscv32imc-unknown-none-elf --bin qemu --bin qemu-bench -- -D warnings \
    && cargo run --release --target riscv32imc-unknown-none-elf --bin qemu \
    && cargo clippy --release --target thumbv6m-none-eabi --bin qemu --bin qemu-bench -- -D warnings \
    && cargo run --release --target thumbv6m-none-eabi --bin qemu)
passed=$((passed + 1))

# The host tool, for the record and monitor steps (built by `cargo test` in scripts/test.sh).
step "host tool: cargo build -p flowmote-tools --bin flowmote"
(cd .. && cargo build -q -p flowmote-tools --bin flowmote)
flowmote="${CARGO_TARGET_DIR:-$fw/../target}/debug/flowmote"
json_check() { # FILE PYTHON-EXPRESSION-OVER-j MESSAGE
    python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))
sys.exit(0 if eval(sys.argv[2]) else "firmware: " + sys.argv[3] + ": " + json.dumps(j))' "$@"
}

step "record mode in QEMU: cargo run --release --bin qemu-record | flowmote record --log - --out rec.csv"
(cd qemu && cargo run --release --bin qemu-record) \
    | "$flowmote" record --log - --out "$tmp/rec.csv" --json >"$tmp/rec.json"
json_check "$tmp/rec.json" 'j["readings"] == 1408 and j["first_seq"] == 0 and j["last_seq"] == 1407 and j["gap_count"] == 0 and j["malformed_count"] == 0 and j["restart_count"] == 0 and j["sensor_errors"] == 2' \
    "flowmote record did not get the 1408 readings and 2 sensor errors qemu-record logged"
# What the emulated LIS3DH sent: the test file's ankle columns, clipped to ±2 g (12 bits, mg).
cut -d, -f1-3 ../examples/data/daphnet_gait.test.csv \
    | awk -F, 'NR == 1 { print; next } { for (i = 1; i <= 3; i++) { if ($i < -2048) $i = -2048; if ($i > 2047) $i = 2047 } print $1 "," $2 "," $3 }' \
    >"$tmp/expected.csv"
if ! cmp "$tmp/expected.csv" "$tmp/rec.csv"; then
    diff "$tmp/expected.csv" "$tmp/rec.csv" | head -20 >&2
    echo "firmware: the recorded CSV is not what the emulated sensor sent" >&2
    exit 1
fi
echo "recorded CSV = examples/data/daphnet_gait.test.csv's ankle columns clipped to ±2 g ($(($(wc -l <"$tmp/rec.csv") - 1)) rows)"
# The CSV feeds the tool as it is: a small model with the bundled model's
# pipeline (windows of 25 every 5, mean of the ankle axes) scores every window.
cut -d, -f1-3 ../examples/data/daphnet_gait.train.csv >"$tmp/ankle.train.csv"
"$flowmote" train --data "$tmp/ankle.train.csv" --window 25 --hop 5 --features mean --flow maf --layers 1 \
    --hidden 8 --epochs 3 --noise 0 --folds 1 --no-mixture --target host --out "$tmp/model.json" -q
"$flowmote" eval --model "$tmp/model.json" --data "$tmp/rec.csv" --json >"$tmp/eval.json"
json_check "$tmp/eval.json" 'j["n"] == (1408 - 25) // 5 + 1 and j["unscorable"] == 0' \
    "flowmote eval did not score the recording's 277 windows"
passed=$((passed + 1))

step "nrf52840dk image with a mixture model (a 3-fold committee, adapted through its MixtureGradient)"
# The export names the AdaptGradient the board builds (a flow's Gradient, a
# mixture's MixtureGradient, or NoGradient, whose `new` fails, for a model the
# device cannot differentiate), so the board builds with any model the tool keeps.
"$flowmote" train --data "$tmp/ankle.train.csv" --window 25 --hop 5 --features mean --flow maf --layers 1 \
    --hidden 8 --epochs 3 --noise 0 --folds 3 --target host --out "$tmp/mixture.json" -q
"$flowmote" export --model "$tmp/mixture.json" --out "$tmp/mixture.rs" --no-threshold >/dev/null
grep -q 'flowmote::gradient::MixtureGradient<' "$tmp/mixture.rs" ||
    { echo "the committee's export names no MixtureGradient as its AdaptGradient" >&2; exit 1; }
# The bundled model goes back however this step ends (the EXIT trap too).
bundled=$fw/../fixtures/src/model.rs
cp "$bundled" "$tmp/bundled-model.rs"
trap 'cp "$tmp/bundled-model.rs" "$bundled"; rm -rf "$tmp"' EXIT
cp "$tmp/mixture.rs" "$bundled"
if ! (cd boards/nrf52840dk && cargo clippy --release -- -D warnings && cargo build --release); then
    echo "firmware: the nRF52840-DK image does not build with a mixture model" >&2
    exit 1
fi
cp "$tmp/bundled-model.rs" "$bundled"
trap 'rm -rf "$tmp"' EXIT
passed=$((passed + 1))

step "flowmote monitor --json on the golden run's log"
"$flowmote" monitor --log "$tmp/golden.log" --json >"$tmp/monitor.json"
scores=$(grep -cE 'score [^ ]+ threshold [^ ]+ (normal|ANOMALOUS) alarm' "$tmp/golden.log")
anomalous=$(grep -cE 'score [^ ]+ threshold [^ ]+ ANOMALOUS alarm' "$tmp/golden.log")
invalid=$(grep -cE 'invalid features .* alarm' "$tmp/golden.log" || true)
raised=$(grep -oE 'alarm (true|false)$' "$tmp/golden.log" | awk '$2 == "true" && prev != "true" { n++ } { prev = $2 } END { print n + 0 }')
json_check "$tmp/monitor.json" "j['windows'] == $scores + $invalid and j['anomalous'] == $anomalous and j['invalid'] == $invalid and j['alarms_raised'] == $raised and $raised > 0 and j['sensor_errors'] >= 1 and j['garbage_frames'] >= 1" \
    "flowmote monitor's counts differ from the log's ($scores scores, $anomalous anomalous, $invalid invalid, $raised alarms raised)"
echo "monitor: $scores windows scored ($anomalous anomalous), $raised alarms raised, as the log shows"
passed=$((passed + 1))

echo
echo "firmware: every step took ${SECONDS} s"
echo "firmware: ${passed} passed, 0 failed"
