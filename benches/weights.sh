#!/usr/bin/env bash
# Compressed weights: what storing the conditioners' weight matrices as f16 or
# i8 (+ one f32 scale per row) costs in quality and saves in flash.
#
# Per data set: one quick f32 training (maf 3 × 32, one split, no mixture,
# seed 0), then `flowmote eval --weights f32|f16|i8` on the test file (the
# model compressed after training, evaluated with the device's arithmetic)
# and `flowmote export --weights … --json` for the weight bytes. Data sets
# with a `label` column in their test file (breast_cancer) report the NLL of
# the normal rows and the AUROC; the others the NLL of every row.
# With qemu-system-arm and defmt-print installed, also runs
# benches/firmware-bench.sh and prints its f32/f16/i8 rows (instructions
# per multiply–add on the emulated Cortex-M4F); `--no-firmware` skips that.
#
# Usage (from anywhere): benches/weights.sh [--no-firmware] [sets…]
# Default sets: daphnet_gait breast_cancer, read from ../shared/data
# (override with DATA=dir).
set -euo pipefail
cd "$(dirname "$0")/.."
firmware=1
if [ "${1:-}" = "--no-firmware" ]; then
    firmware=0
    shift
fi
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(daphnet_gait breast_cancer)
D=${DATA:-../shared/data}
cargo build --release -q -p flowmote-tools
F=target/release/flowmote
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
S=(--flow maf --layers 3 --hidden 32 --folds 1 --no-mixture --seed 0 -q)

echo "| data | weights | test NLL (nats/row) | Δ NLL vs f32 | AUROC | weight bytes |"
echo "| --- | --- | ---: | ---: | ---: | ---: |"
for set in "${sets[@]}"; do
    tr=$D/$set.train.csv
    te=$D/$set.test.csv
    label=()
    if head -1 "$te" | tr -d '\r' | tr ',;\t' '\n\n\n' | grep -qx label; then
        label=(--label-column label)
    fi
    "$F" train --data "$tr" --out "$W/m.json" "${S[@]}" >/dev/null 2>&1
    base=""
    for w in f32 f16 i8; do
        "$F" eval --model "$W/m.json" --data "$te" --weights "$w" --json "${label[@]}" >"$W/eval.json"
        "$F" export --model "$W/m.json" --weights "$w" --no-threshold --json --out "$W/m.rs" >"$W/export.json"
        line=$(python3 - "$W/eval.json" "$W/export.json" "$set" "$w" "$base" <<'EOF'
import json, sys
e = json.load(open(sys.argv[1]))
x = json.load(open(sys.argv[2]))
nll = e.get("nll_normal", e["nll"])
auroc = e.get("auroc")
base = float(sys.argv[5]) if sys.argv[5] else nll
print(f"{nll!r}|| {sys.argv[3]} | {sys.argv[4]} | {nll:.4f} | {nll - base:+.4f} | "
      f"{'–' if auroc is None else f'{auroc:.4f}'} | {x['weight_bytes']} |")
EOF
)
        [ -n "$base" ] || base=${line%%||*}
        echo "|${line#*||}"
    done
done

if [ "$firmware" = 1 ] && command -v qemu-system-arm >/dev/null && command -v defmt-print >/dev/null; then
    echo
    echo "Instructions per multiply–add on the emulated Cortex-M4F (benches/firmware-bench.sh):"
    echo
    benches/firmware-bench.sh 2>/dev/null |
        grep -E '^\| (benchmark|---|MAF D=8 H=64 depth 2|MLP 8-64-64-16 (tanh|relu), core view)'
fi
