#!/usr/bin/env bash
# Training time and fit on files larger than the shared sets, whose rows are
# drawn from a known density: a committed teacher (benches/peers/results,
# from defaults.sh) samples the training rows (seed 1) and 1 000 test rows
# (seed 2) with their true log-density, so the test NLL has a floor (the
# sampling model's own NLL on the test rows). Then the flowmote defaults
# (seed 0) and the peers (peer_defaults.py, seed 0) train on the same rows.
# Prints one Markdown row per file: rows × columns, the floor, flowmote's
# time and test NLL, FlowJAX MAF + RQS's and the GaussianMixture's.
#
#   benches/peers/scale.sh                  # the three files below
#   SIZES="daphnet_gait:24616" benches/peers/scale.sh
source "$(dirname "$0")/common.sh"
SIZES=${SIZES:-daphnet_gait:24616 breast_cancer:993 breast_cancer:2639}
build_tool
peer_python
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "| rows × columns (sampled from) | floor NLL | flowmote s | flowmote NLL | FlowJAX MAF s | FlowJAX MAF NLL | ratio | GaussianMixture s | GaussianMixture NLL |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for spec in $SIZES; do
    set=${spec%%:*} n=${spec##*:}
    teacher=$OUT/defaults.$set.s0.teacher.json
    "$tool" sample --model "$teacher" -n "$n" --seed 1 --out "$work/train.csv" >/dev/null 2>&1
    "$tool" sample --model "$teacher" -n 1000 --seed 2 --log-prob --out "$work/truth.csv" >/dev/null 2>&1
    # The test rows without the log_prob column; the floor from it.
    floor=$("$py" - "$work/truth.csv" "$work/test.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
with open(sys.argv[2], "w", newline="") as f:
    csv.writer(f).writerows(r[:-1] for r in rows)
print(f"{-sum(float(r[-1]) for r in rows[1:]) / (len(rows) - 1):.2f}")
PY
)
    say "$set × $n: flowmote train (defaults)"
    t0=$(date +%s.%N)
    "$tool" train --data "$work/train.csv" --out "$work/m.json" --seed 0 -q >/dev/null 2>&1
    t1=$(date +%s.%N)
    nll=$("$tool" eval --model "$work/m.json" --data "$work/test.csv" --json | "$py" -c 'import json, sys; print("%.2f" % json.load(sys.stdin)["nll"])')
    say "$set × $n: peers"
    (cd "$here" && "$py" peer_defaults.py --train "$work/train.csv" --test "$work/test.csv" --seed 0 2>/dev/null) >"$work/p.json"
    "$py" - "$work/p.json" "$set" "$n" "$(head -1 "$work/train.csv" | tr ',' '\n' | wc -l)" "$floor" "$t0" "$t1" "$nll" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
s, n, d, floor, t0, t1, nll = sys.argv[2:]
fm = float(t1) - float(t0)
fj, g = p["flowjax_maf_rqs"], p["gmm"]
print(f"| {n} × {d} ({s} teacher) | {floor} | {fm:.1f} | {nll} | {fj['train_s']:.1f} | {fj['test_nll']:.2f} | "
      f"{fm / fj['train_s']:.1f}× | {g['train_s']:.1f} | {g['test_nll']:.2f} |")
PY
done
