#!/usr/bin/env bash
# Distillation probe (groundwork for the device-budget issue): does a small
# student flow trained on the real training rows plus samples drawn from the
# default model (the "teacher") fit normal rows better than the same student
# trained on the real rows alone? Students: maf 3×32, one split, no mixture.
# The student's validation rows are the last 10 % of the real rows (the
# teacher's samples come first in its training file, so they never validate).
# Prints per set and seed: test NLL of the normal rows and AUROC.
# Usage: benches/peers/distil-probe.sh [sets…]   (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p flowmote-tools
F=target/release/flowmote
D=../shared/data
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
S=(--flow maf --layers 3 --hidden 32 --folds 1 --no-mixture -q)
fig() { "$F" eval --model "$1" --data "$2" --label-column label --json |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.3f %.4f" % (d["nll_normal"], d["auroc"]))'; }
sets=("$@"); [ ${#sets[@]} -gt 0 ] || sets=(gunpoint japanese_vowels italy_power breast_cancer)
echo "set model seed nll_normal auroc"
for set in "${sets[@]}"; do
    tr=$D/$set.train.csv; te=$D/$set.test.csv
    "$F" train --data "$tr" --out "$W/teacher.json" -q >/dev/null 2>&1
    echo "$set teacher 0 $(fig "$W/teacher.json" "$te")"
    n=$(($(wc -l < "$tr") - 1)); nv=$((n / 10))
    for seed in 0 1; do
        "$F" train --data "$tr" --out "$W/s.json" "${S[@]}" --seed "$seed" >/dev/null 2>&1
        echo "$set student-real $seed $(fig "$W/s.json" "$te")"
        for mult in 5 20; do
            "$F" sample --model "$W/teacher.json" -n $((mult * n)) --seed $((seed + 10)) --out "$W/samples.csv" 2>/dev/null
            { cat "$W/samples.csv"; tail -n +2 "$tr"; } > "$W/distil.csv"
            frac=$(python3 -c "print(min(0.89, $nv / ($n * ($mult + 1))))")
            "$F" train --data "$W/distil.csv" --out "$W/d.json" "${S[@]}" --seed "$seed" --val-fraction "$frac" >/dev/null 2>&1
            echo "$set student-x$mult $seed $(fig "$W/d.json" "$te")"
        done
    done
done
