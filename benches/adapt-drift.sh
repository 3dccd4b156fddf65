#!/usr/bin/env bash
# On-device adaptation under a per-column sensor drift (issue 16's evidence):
# for each shared data set, a model trained with the defaults on the clean
# training file, then every column of the train and test files drifted by a
# gain in [1.1, 1.4] and an offset in [−1, 1] training standard deviations
# (seeded). Reported on the drifted test file: the NLL of its normal rows,
# the AUROC of −log p against its labelled anomalies and the false-alarm rate
# at each model's calibrated threshold, for
#   before:    the clean model as shipped;
#   adapted:   `flowmote adapt` on the drifted training file (the device's
#              commissioning code, "new normal" data, its threshold
#              re-calibrated on the same rows), and the same model
#              re-calibrated on held-out drifted rows (the clean model's
#              validation rows under the same drift);
#   retrained: `flowmote train` from scratch on the drifted training file,
#              calibrated on its held-out rows.
# Usage: benches/adapt-drift.sh [set …]   (default: breast_cancer
# japanese_vowels italy_power); needs ../shared/data beside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
data=../shared/data
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(breast_cancer japanese_vowels italy_power)
cargo build --quiet --release -p flowmote-tools
fm=target/release/flowmote
work=out/adapt-drift
mkdir -p "$work"
row() { # name, eval json
    python3 -c 'import json,sys; j=json.loads(sys.argv[2]); print("| %s | %.2f | %.3f | %.1f %% |" % (sys.argv[1], j["nll_normal"], j["auroc"], 100*j["false_alarm_rate"]))' "$1" "$2"
}
for s in "${sets[@]}"; do
    d="$work/$s"
    mkdir -p "$d"
    python3 - "$data/$s.train.csv" "$data/$s.test.csv" "$d" <<'PY'
import csv, random, statistics, sys
train, test, out = sys.argv[1:4]
rows = list(csv.reader(open(train)))
head, body = rows[0], [[float(v) for v in r] for r in rows[1:]]
rng = random.Random(16)
drift = []
for j, name in enumerate(head):
    col = [r[j] for r in body]
    sd = statistics.pstdev(col) or 1.0
    drift.append((rng.uniform(1.1, 1.4), rng.uniform(-1.0, 1.0) * sd))
def write(src, dst):
    rows = list(csv.reader(open(src)))
    w = csv.writer(open(dst, "w", newline=""))
    w.writerow(rows[0])
    for r in rows[1:]:
        w.writerow([("%.6g" % (a * float(v) + c)) if name != "label" else v
                    for v, name, (a, c) in zip(r, rows[0], drift + [(1.0, 0.0)] * (len(r) - len(drift)))])
write(train, out + "/drift.train.csv")
write(test, out + "/drift.test.csv")
PY
    $fm train --data "$data/$s.train.csv" --out "$d/model.json" --val-out "$d/val.csv" -q
    # The clean model's held-out rows under the same drift.
    python3 - "$data/$s.train.csv" "$d/drift.train.csv" "$d/val.csv" "$d/drift.heldout.csv" <<'PY'
import csv, sys
clean, drifted, val, out = sys.argv[1:5]
c = list(csv.reader(open(clean)))[1:]
dr = list(csv.reader(open(drifted)))
index = {tuple(float(v) for v in r): i for i, r in enumerate(c)}
w = csv.writer(open(out, "w", newline=""))
w.writerow(dr[0])
for r in list(csv.reader(open(val)))[1:]:
    i = index.get(tuple(float(v) for v in r))
    if i is not None:
        w.writerow(dr[i + 1])
PY
    $fm calibrate --model "$d/model.json" --data "$d/val.csv" >/dev/null
    $fm adapt --model "$d/model.json" --data "$d/drift.train.csv" --out "$d/adapted.json" >/dev/null
    $fm train --data "$d/drift.train.csv" --out "$d/retrained.json" --val-out "$d/drift.val.csv" -q
    $fm calibrate --model "$d/retrained.json" --data "$d/drift.val.csv" >/dev/null
    echo
    echo "### $s"
    echo
    echo "| model | NLL of normal test rows (drifted) | AUROC (drifted test) | flagged normal rows |"
    echo "| --- | ---: | ---: | ---: |"
    row "clean model on the clean test file (reference)" "$($fm eval --model "$d/model.json" --data "$data/$s.test.csv" --label-column label --json)"
    row "before: the clean model on the drifted test file" "$($fm eval --model "$d/model.json" --data "$d/drift.test.csv" --label-column label --json)"
    row "adapted on the drifted training file" "$($fm eval --model "$d/adapted.json" --data "$d/drift.test.csv" --label-column label --json)"
    cp "$d/adapted.json" "$d/adapted.heldout.json"
    $fm calibrate --model "$d/adapted.heldout.json" --data "$d/drift.heldout.csv" >/dev/null
    row "adapted, threshold from held-out drifted rows" "$($fm eval --model "$d/adapted.heldout.json" --data "$d/drift.test.csv" --label-column label --json)"
    row "retrained on the drifted training file" "$($fm eval --model "$d/retrained.json" --data "$d/drift.test.csv" --label-column label --json)"
done
