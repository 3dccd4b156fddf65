"""Markdown tables from criterion's saved estimates of `cargo bench -p flowmote-benches`.

Usage: python3 benches/table.py [CRITERION_DIR]
(default: $CARGO_TARGET_DIR/criterion or target/criterion). Uses the median
point estimate of the latest run of each benchmark. Standard library only.
"""

import json
import os
import re
import sys


def load(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "benchmark.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            b = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            e = json.load(f)
        out[b["full_id"]] = e["median"]["point_estimate"]  # ns per iteration
    return out


def macs_mlp(inp, cond, h, depth, out):
    return h * (inp + cond) + (depth - 1) * h * h + out * h


def macs(family, d, h):
    if family == "maf":
        return 4 * macs_mlp(d, 0, h, 2, 2 * d)
    if family == "coupling":
        a, b = d // 2, d - d // 2
        return 4 * macs_mlp(a, 0, h, 2, 2 * b)
    if family == "cnf":
        return 8 * 4 * (macs_mlp(d, 1, h, 1, d) + h)
    return None


def fmt_ns(ns):
    return f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.0f} ns"


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "criterion")
    r = load(root)
    if not r:
        sys.exit(f"no criterion estimates under {root}")
    cfgs = sorted(
        {(m.group(1), int(m.group(2)), int(m.group(3))) for k in r for m in [re.search(r"^(\w+)/log_prob_single/D(\d+)_H(\d+)$", k)] if m},
        key=lambda c: (["maf", "coupling", "cnf"].index(c[0]) if c[0] in ("maf", "coupling", "cnf") else 9, c[1], c[2]),
    )
    print("| flow | D | H | MACs / log_prob | log_prob, 1 sample | ns / MAC | batch 1024, 1 thread (rows/s) | batch 1024, 2 threads (rows/s) | sample, 1 draw |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for fam, d, h in cfgs:
        pid = f"D{d}_H{h}"
        single = r.get(f"{fam}/log_prob_single/{pid}")
        b1 = r.get(f"{fam}/log_prob_batch1024/1thread/{pid}")
        b2 = r.get(f"{fam}/log_prob_batch1024/2threads/{pid}")
        smp = r.get(f"{fam}/sample/{pid}")
        m = macs(fam, d, h)
        print(
            f"| {fam} | {d} | {h} | {m:,} | {fmt_ns(single) if single else '–'} | {single / m:.2f} | "
            f"{1024e9 / b1:,.0f} | {1024e9 / b2:,.0f} | {fmt_ns(smp) if smp else '–'} |"
        )
    tr = {k: v for k, v in r.items() if k.startswith("train_epoch")}
    if tr:
        print()
        print("| training epoch | path | rows | time / epoch | µs / row |")
        print("|---|---|---:|---:|---:|")
        for k in sorted(tr):
            m = re.search(r"train_epoch_(\w+)/\w*?(\d+)x(\d+)/(.*)$", k)
            path, rows, name = (m.group(1), int(m.group(2)), m.group(4)) if m else ("", 0, k)
            print(f"| {name} | {path} | {rows} | {tr[k] / 1e6:.0f} ms | {tr[k] / 1e3 / max(rows, 1):.1f} |")
    mb = {k: v for k, v in r.items() if k.startswith("mlp_batch/")}
    if mb:
        print()
        print("| MAF conditioner 9-64-64-18, 1024 rows | time | rows/s | speed-up |")
        print("|---|---:|---:|---:|")
        base = next((v for k, v in mb.items() if k.endswith("/rowwise")), None)
        for k in sorted(mb, key=lambda k: -mb[k]):
            print(f"| {k.rsplit('/', 1)[1]} | {mb[k] / 1e6:.2f} ms | {1024e9 / mb[k]:,.0f} | {base / mb[k]:.1f}× |")


if __name__ == "__main__":
    main()
