"""One line per set, seed 0, from what `defaults.sh` wrote to OUT: the kept
student's AUROC and test NLL, its teacher's, the best peer's AUROC (and
which), the GaussianMixture's and FlowJAX MAF's test NLL, the training
times and the kept model's size.

    python3 benches/peers/brief.py OUT SET…
"""
import json
import os
import sys

out, sets = sys.argv[1], sys.argv[2:]
peers = {"gmm": "GaussianMixture", "flowjax_maf_rqs": "FlowJAX MAF", "flowjax_coupling_rqs": "FlowJAX coupling",
         "isolation_forest": "IsolationForest", "lof": "LOF"}


def nll(ev):
    return ev.get("nll_normal") if ev.get("nll_normal") is not None else ev.get("nll")


print("| set (train rows × columns) | student AUROC | teacher AUROC | best peer AUROC | student NLL | teacher NLL "
      "| GaussianMixture NLL | FlowJAX MAF NLL | flowmote s | FlowJAX MAF s | ratio | kept |")
print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
for s in sets:
    tag = f"{out}/defaults.{s}.s0"
    ev = json.load(open(f"{tag}.flowmote.json"))
    m = json.load(open(f"{tag}.model.json"))
    p = json.load(open(f"{tag}.peers.json"))
    te = json.load(open(f"{tag}.teacher.eval.json")) if os.path.exists(f"{tag}.teacher.eval.json") else {}
    t0, t1 = map(float, open(f"{tag}.flowmote.time").read().split())
    best = max((k for k in peers if k in p), key=lambda k: p[k]["auroc"])
    st = m["provenance"]["settings"]
    dist = st.get("distillation") or {}
    kept = next((c for c in dist.get("students", []) if c.get("val_nll") == m["provenance"]["val_nll"]), None)
    what = f"{m['kind']} {st['layers']}×{st['hidden']}" + (" T" if kept and kept.get("teacher_samples") else "")
    if kept:
        what += f", {kept['weight_bytes'] / 1024:.0f} KB, {kept['estimated_ms']:.2f} ms"
    elif not dist.get("students") and dist:
        what = f"teacher ({dist['teacher']['weight_bytes'] / 1024:.0f} KB)"
    rows, cols = m["provenance"]["train_rows"] + m["provenance"]["val_rows"], len(m.get("features", []))
    f = lambda v, p=3: "–" if v is None else f"{v:.{p}f}"
    maf = p["flowjax_maf_rqs"]
    print(f"| {s} ({rows} × {cols}) | {f(ev.get('auroc'))} | {f(te.get('auroc'))} | {p[best]['auroc']:.3f} "
          f"{peers[best]} | {f(nll(ev), 2)} | {f(nll(te) if te else None, 2)} | {f(p['gmm']['test_nll'], 2)} "
          f"| {f(maf['test_nll'], 2)} | {t1 - t0:.1f} | {maf['train_s']:.1f} | {(t1 - t0) / maf['train_s']:.1f}× "
          f"| {what} |")
