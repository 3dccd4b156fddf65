#!/usr/bin/env bash
# The defaults for each device target on every shared set: what
# `flowmote train --target T` keeps (seed 0, or SEED) and how it does on the test file.
#
# Per target and set: `flowmote train --data S.train.csv --target T --seed S`,
# then `flowmote eval --json` on S.test.csv (with `--label-column label`
# where the test file is labelled: NLL of the normal rows and AUROC; else the
# NLL of every row). A budget nothing meets prints the error's first words.
# Prints one markdown table: target, set, kept model (size, multiply-adds,
# estimated ms), test NLL, AUROC, train seconds.
#
# Usage (from anywhere): [SEED=s] benches/targets.sh [targets…]
# Default targets: rp2040 esp32c3. Sets from ../shared/data (DATA=dir), all
# of them unless SETS="a b" names some. FLOWMOTE=path runs another build of
# the tool (e.g. an older commit's, for a before/after table).
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(rp2040 esp32c3)
D=${DATA:-../shared/data}
SETS=${SETS:-"daphnet_gait breast_cancer italy_power japanese_vowels gunpoint digits"}
if [ -z "${FLOWMOTE:-}" ]; then
    cargo build --release -q -p flowmote-tools
    FLOWMOTE=target/release/flowmote
fi
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
echo "| target | set | kept | test NLL | AUROC | train s |"
echo "|---|---|---|---:|---:|---:|"
for t in "${targets[@]}"; do
    for s in $SETS; do
        m="$W/$t.$s.json"
        start=$(date +%s.%N)
        if ! "$FLOWMOTE" train --data "$D/$s.train.csv" --out "$m" --target "$t" --seed "${SEED:-0}" -q >"$W/out" 2>"$W/err"; then
            why=$(sed -n 's/.*the smallest tried, \([^(]*\) (.*is over it — \([^;]*\);.*/no model fits: the smallest tried, \1, is over it — \2/p' "$W/err")
            echo "| $t | $s | ${why:-$(tail -1 "$W/err")} | – | – | – |"
            continue
        fi
        secs=$(echo "$(date +%s.%N) - $start" | bc)
        lab=()
        head -1 "$D/$s.test.csv" | tr -d '\r' | tr ',' '\n' | grep -qx label && lab=(--label-column label)
        "$FLOWMOTE" eval --model "$m" --data "$D/$s.test.csv" "${lab[@]}" --json >"$W/eval" 2>/dev/null
        python3 - "$m" "$W/eval" "$t" "$s" "$secs" <<'PY'
import json, sys
m, ev, t, s, secs = sys.argv[1:]
kept = json.load(open(m))["provenance"]["settings"]["distillation"]["kept"].split(": validation")[0]
e = json.load(open(ev))
nll = e["nll_normal"] if e.get("nll_normal") is not None else e["nll"]
au = "–" if e.get("auroc") is None else f"{e['auroc']:.3f}"
print(f"| {t} | {s} | {kept} | {nll:.2f} | {au} | {float(secs):.1f} |")
PY
    done
done
