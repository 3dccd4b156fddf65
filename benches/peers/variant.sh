#!/usr/bin/env bash
# One variant of the defaults on the five labelled sets: `flowmote train`
# with the given extra flags, then `eval --label-column label`. Prints one
# line per set and seed: variant, set, seed, test NLL of the normal rows,
# AUROC, train seconds, and the mean AUROC per set at the end. Used to
# measure which choices help ranking (BENCHMARKS.md, "What helps ranking").
#
#   benches/peers/variant.sh NAME 'SEEDS' [-- train flags…]
#   benches/peers/variant.sh best '0 1 2'
#   benches/peers/variant.sh one-se '0 1 2' -- --select one-se
source "$(dirname "$0")/common.sh"
name=$1 seeds=$2
shift 2
[ "${1:-}" != "--" ] || shift
SETS=${SETS:-breast_cancer italy_power japanese_vowels gunpoint digits}
build_tool
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for seed in $seeds; do
    for set in $SETS; do
        t0=$(date +%s.%N)
        "$tool" train --data "$DATA/$set.train.csv" --out "$work/m.json" --seed "$seed" -q "$@" >/dev/null 2> >(grep -v "^note:" >&2)
        t1=$(date +%s.%N)
        "$tool" eval --model "$work/m.json" --data "$DATA/$set.test.csv" --label-column label --json >"$work/e.json"
        python3 - "$work/e.json" "$name" "$set" "$seed" "$t0" "$t1" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]} {sys.argv[3]} {sys.argv[4]} {e['nll_normal']:.3f} {e['auroc']:.4f} {float(sys.argv[6]) - float(sys.argv[5]):.1f}")
PY
    done
done | tee "$work/rows"
python3 - "$work/rows" <<'PY'
import collections, sys
au = collections.defaultdict(list)
for line in open(sys.argv[1]):
    p = line.split()
    au[p[1]].append(float(p[4]))
for s, v in au.items():
    print(f"mean AUROC {s}: {sum(v) / len(v):.3f} over {len(v)} seed(s)")
PY
