#!/usr/bin/env bash
# The defaults on files of unusual shape and content, as a new user's data
# may be: `flowmote train --data F --out M -q` with no other flags, then
# `flowmote eval` on the same file. Prints one line per file: the exit
# status, the seconds, what was kept and the mean NLL. Every file is drawn
# here (Python's standard library, seeded), so nothing is downloaded.
#
#   benches/shapes.sh            # all of them (≈ 1.5 min on 2 cores)
#   benches/shapes.sh wide big   # some
#
# A failure is a line with `exit 1` and the tool's error; CI does not run
# this (minutes), it is for checking a change against odd data.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build -q --release -p flowmote-tools
tool=${CARGO_TARGET_DIR:-$root/target}/release/flowmote
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work" <<'EOF'
import math, random, sys
out = sys.argv[1]
r = random.Random(0)
def write(name, rows):
    d = len(rows[0])
    with open(f"{out}/{name}.csv", "w") as f:
        f.write(",".join(f"c{j}" for j in range(d)) + "\n")
        for row in rows:
            f.write(",".join(f"{v:.9g}" for v in row) + "\n")
g = r.gauss
write("one_column", [[g(0, 1)] for _ in range(500)])                       # 1 column
write("tiny", [[g(0, 1), g(0, 1)] for _ in range(30)])                     # 30 rows
write("scales", [[g(0, 1) * 1e9, g(0, 1) * 1e-9, g(0, 1)] for _ in range(400)])
write("offset", [[1e6 + g(0, 1) for _ in range(3)] for _ in range(500)])   # f32 keeps 1/16 of a unit
write("cauchy", [[math.tan(math.pi * (r.random() - 0.5)) for _ in range(4)] for _ in range(600)])
base = [[g(0, 1) for _ in range(3)] for _ in range(200)]
write("duplicates", base + base + base[:50])                               # most rows repeated
write("categorical", [[r.randrange(3)] + [g(0, 1) for _ in range(3)] for _ in range(800)])
write("binary", [[r.randrange(2) for _ in range(6)] for _ in range(500)])
A = [[g(0, 1) for _ in range(40)] for _ in range(200)]                     # 200 columns, 40 factors
def factor_row():
    z = [g(0, 1) for _ in range(40)]
    return [0.2 * sum(a * b for a, b in zip(A[j], z)) + 0.1 * g(0, 1) for j in range(200)]
write("wide", [factor_row() for _ in range(3000)])
write("big", [[g(0, 1) for _ in range(5)] for _ in range(100000)])         # 100 000 rows
write("short_wide", [factor_row()[:80] for _ in range(60)])                # fewer rows than columns
EOF
for name in ${@:-one_column tiny scales offset cauchy duplicates categorical binary wide big short_wide}; do
    f=$work/$name.csv
    t0=$(date +%s.%N)
    if "$tool" train --data "$f" --out "$work/$name.json" -q >"$work/$name.log" 2>&1; then
        t1=$(date +%s.%N)
        nll=$("$tool" eval --model "$work/$name.json" --data "$f" --json |
            python3 -c 'import json,sys; print("%.3f" % json.load(sys.stdin)["nll"])')
        kept=$(grep -o 'kept [^(:]*' "$work/$name.log" | head -1)
        printf '%-12s exit 0  %6.1f s  NLL %9s  %s\n' "$name" "$(python3 -c "print($t1 - $t0)")" "$nll" "$kept"
    else
        printf '%-12s exit 1  %s\n' "$name" "$(grep -m1 '^error' "$work/$name.log" || tail -1 "$work/$name.log")"
    fi
done
