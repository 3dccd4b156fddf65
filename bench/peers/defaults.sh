#!/usr/bin/env bash
# Defaults vs peers (issue 6): each side at its own defaults, same splits.
#   flowmote:  `flowmote train --data … --out …` (default --flow auto) + `eval --json`
#   peers:     scikit-learn GaussianMixture (components/covariance chosen on a
#              validation split of train), FlowJAX MAF and coupling flows with
#              a RationalQuadraticSpline transformer at FlowJAX's defaults
#              (bench/peers/peer_defaults.py).
# Writes bench/peers/results/defaults.*.json and defaults.md.
#
#   bench/peers/defaults.sh
#   MAX_EPOCHS=20 bench/peers/defaults.sh   # cap FlowJAX epochs (default: its own 100)
#
# Uses the venv of run.sh (bench/peers/.venv) plus scikit-learn
# (installed into it on first use).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
DATA=${DATA:-$root/../shared/data}
OUT=${OUT:-$here/results}
SETS=${SETS:-daphnet_gait breast_cancer}
mkdir -p "$OUT"
say() { printf '==> %s\n' "$*" >&2; }

py=$here/.venv/bin/python
[ -x "$py" ] || { echo "run bench/peers/run.sh once to create $here/.venv" >&2; exit 1; }
"$py" -c 'import sklearn' 2>/dev/null || "$here/.venv/bin/pip" install -q scikit-learn
say "building flowmote (release)"
cargo build -q --release -p flowmote-tools
tool=${CARGO_TARGET_DIR:-$root/target}/release/flowmote
ep=(); [ -z "${MAX_EPOCHS:-}" ] || ep=(--max-epochs "$MAX_EPOCHS")

for set in $SETS; do
    train=$DATA/$set.train.csv test=$DATA/$set.test.csv
    lab=(); case ",$(head -1 "$test" | tr -d '\r')," in *,label,*) lab=(--label-column label) ;; esac
    say "$set: flowmote train (defaults)"
    t0=$(date +%s.%N)
    "$tool" train --data "$train" --out "$OUT/defaults.$set.model.json" --quiet >&2
    t1=$(date +%s.%N)
    "$tool" eval --model "$OUT/defaults.$set.model.json" --data "$test" "${lab[@]}" --json \
        >"$OUT/defaults.$set.flowmote.json"
    echo "$t0 $t1" >"$OUT/defaults.$set.flowmote.time"
    say "$set: GaussianMixture + FlowJAX RQS flows"
    (cd "$here" && "$py" peer_defaults.py --train "$train" --test "$test" "${ep[@]}") \
        >"$OUT/defaults.$set.peers.json"
done

"$py" - "$OUT" "${MAX_EPOCHS:-}" $SETS >"$OUT/defaults.md" <<'EOF2'
import json, os, sys
out, maxep, sets = sys.argv[1], sys.argv[2], sys.argv[3:]
f = lambda v, p=2: "–" if v is None else f"{v:.{p}f}"
print(f"Machine: {os.cpu_count()} cores, load average at the end: {open('/proc/loadavg').read().split()[0]}."
      f" FlowJAX max_epochs: {maxep or '100 (default)'}.\n")
print("| set | model | test NLL (nats/row, data units) | AUROC | train s | notes |")
print("|---|---|---|---|---|---|")
for s in sets:
    ev = json.load(open(f"{out}/defaults.{s}.flowmote.json"))
    t0, t1 = map(float, open(f"{out}/defaults.{s}.flowmote.time").read().split())
    m = json.load(open(f"{out}/defaults.{s}.model.json"))
    nll = ev.get("nll_normal") if ev.get("nll_normal") is not None else ev.get("nll")
    print(f"| {s} | flowmote defaults (`--flow auto`) | {f(nll)} | {f(ev.get('auroc'), 3)} | {t1 - t0:.1f} | |")
    p = json.load(open(f"{out}/defaults.{s}.peers.json"))
    g = p["gmm"]
    print(f"| {s} | GaussianMixture (val-selected) | {f(g['test_nll'])} | {f(g['auroc'], 3)} | {g['train_s']:.1f} | {g['components']} × {g['covariance']} |")
    for k, name in (("flowjax_maf_rqs", "FlowJAX MAF + RQS, defaults"), ("flowjax_coupling_rqs", "FlowJAX coupling + RQS, defaults")):
        r = p[k]
        note = f"{r['epochs_run']} epochs" + (f", {r['nonfinite']} non-finite test rows" if r["nonfinite"] else "")
        print(f"| {s} | {name} | {f(r['test_nll'])} | {f(r['auroc'], 3)} | {r['train_s']:.1f} | {note} |")
EOF2
cat "$OUT/defaults.md"
