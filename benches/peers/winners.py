"""Which student each seed of `benches/peers/defaults.sh` kept (T = trained
with teacher samples, R = on the real rows only), and the mean validation NLL
of the teacher and the kept student on the held-out rows, from the
`defaults.SET.sSEED.model.json` files the script writes (run it first).

Usage (from the repository root): python3 benches/peers/winners.py
"""
import json
import os
import statistics as st

R = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
print("| set | winner per seed | teacher | kept student |")
print("|---|---|---|---|")
for s in ["daphnet_gait", "breast_cancer", "italy_power", "japanese_vowels", "gunpoint", "digits"]:
    w, tv, kv = [], [], []
    for seed in range(5):
        try:
            m = json.load(open(f"{R}/defaults.{s}.s{seed}.model.json"))
        except FileNotFoundError:
            continue
        d = m["provenance"]["settings"].get("distillation")
        if not d or not d["students"]:
            w.append("-")
            continue
        kept = min(d["students"], key=lambda c: c["val_nll"])
        w.append("T" if kept.get("teacher_samples") else "R")
        tv.append(d["teacher"]["val_nll"])
        kv.append(m["provenance"]["val_nll"])
    if tv:
        print(f"| {s} | {' '.join(w)} | {st.mean(tv):.2f} | {st.mean(kv):.2f} |")
