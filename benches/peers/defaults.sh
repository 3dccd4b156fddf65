#!/usr/bin/env bash
# Defaults vs peers (issue 6): each side at its own defaults, same splits.
#   flowmote:  `flowmote train --data … --out …` (default --flow auto) + `eval --json`
#   peers:     scikit-learn GaussianMixture (components/covariance chosen on a
#              validation split of train, 1–8, 12, 16, 24 or 32 components), FlowJAX MAF and coupling flows with
#              a RationalQuadraticSpline transformer at FlowJAX's defaults, scikit-learn
#              IsolationForest and LocalOutlierFactor at theirs (AUROC only)
#              (benches/peers/peer_defaults.py).
# Writes benches/peers/results/defaults.*.json and defaults.md. On a labelled
# test set it also keeps every model's per-row scores and reports the AUROC
# difference flowmote − peer with a paired bootstrap interval over the test
# rows: is the difference larger than the test set can resolve?
#
#   benches/peers/defaults.sh
#   MAX_EPOCHS=20 benches/peers/defaults.sh   # cap FlowJAX epochs (default: its own 100)
#   SEEDS='0 1 2' benches/peers/defaults.sh  # seeds (default 0 1 2 3 4)
#   KEEP_PEERS=1 benches/peers/defaults.sh  # rerun flowmote only; keep the peers' files (they
#                                            # depend on the data, the seed and their versions only)
#   REPORT_ONLY=1 benches/peers/defaults.sh  # rewrite defaults.md from the files of the last run
#
# Uses the venv of benches/peers/requirements.txt (benches/peers/.venv, created
# on first use).
source "$(dirname "$0")/common.sh"
SETS=${SETS:-daphnet_gait breast_cancer italy_power japanese_vowels gunpoint digits}
peer_python
build_tool
ep=(); [ -z "${MAX_EPOCHS:-}" ] || ep=(--max-epochs "$MAX_EPOCHS")

SEEDS=${SEEDS:-0 1 2 3 4}
if [ -z "${REPORT_ONLY:-}" ]; then
for seed in $SEEDS; do
for set in $SETS; do
    train=$DATA/$set.train.csv test=$DATA/$set.test.csv
    lab=(); case ",$(head -1 "$test" | tr -d '\r')," in *,label,*) lab=(--label-column label) ;; esac
    tag=$set.s$seed
    say "$set seed $seed: flowmote train (defaults)"
    t0=$(date +%s.%N)
    rm -f "$OUT/defaults.$tag.teacher.json" "$OUT/defaults.$tag.teacher.eval.json"
    "$tool" train --data "$train" --out "$OUT/defaults.$tag.model.json" --seed "$seed" --quiet \
        --teacher-out "$OUT/defaults.$tag.teacher.json" >&2
    t1=$(date +%s.%N)
    "$tool" eval --model "$OUT/defaults.$tag.model.json" --data "$test" "${lab[@]}" --json \
        >"$OUT/defaults.$tag.flowmote.json"
    # The teacher the default target's student was distilled from (over the budget).
    [ ! -f "$OUT/defaults.$tag.teacher.json" ] || "$tool" eval --model "$OUT/defaults.$tag.teacher.json" \
        --data "$test" "${lab[@]}" --json >"$OUT/defaults.$tag.teacher.eval.json"
    # Per-row scores of labelled sets, for the paired bootstrap below.
    [ ${#lab[@]} -eq 0 ] || "$tool" score --model "$OUT/defaults.$tag.model.json" --data "$test" "${lab[@]}" \
        --out "$OUT/defaults.$tag.flowmote.scores.csv" 2>/dev/null
    echo "$t0 $t1" >"$OUT/defaults.$tag.flowmote.time"
    if [ -n "${KEEP_PEERS:-}" ] && [ -s "$OUT/defaults.$tag.peers.json" ]; then
        say "$set seed $seed: keeping the peers' results of an earlier run (KEEP_PEERS)"
        continue
    fi
    say "$set seed $seed: GaussianMixture + FlowJAX RQS flows"
    (cd "$here" && "$py" peer_defaults.py --train "$train" --test "$test" --seed "$seed" "${ep[@]}") \
        >"$OUT/defaults.$tag.peers.json"
done
done
fi

"$py" - "$OUT" "${MAX_EPOCHS:-}" "$SEEDS" "$DATA" $SETS >"$OUT/defaults.md" <<'EOF2'
import json, os, sys
import numpy as np
out, maxep, seeds, data, sets = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4], sys.argv[5:]
from scipy.stats import rankdata
print(f"Machine: {os.cpu_count()} cores, load average at the end: {open('/proc/loadavg').read().split()[0]}."
      f" FlowJAX max_epochs: {maxep or '100 (default)'}. Seeds: {', '.join(seeds)}"
      " (each seed changes every model's split/initialisation/batches; the data split is fixed).\n")
print("| set | model | test NLL mean ± sd (nats/row, data units) | per seed | AUROC mean ± sd | per seed | train s (mean) | notes |")
print("|---|---|---|---|---|---|---|---|")
def nll_of(ev):
    return ev.get("nll_normal") if ev.get("nll_normal") is not None else ev.get("nll")
for s in sets:
    rows = {}
    for seed in seeds:
        tag = f"{s}.s{seed}"
        ev = json.load(open(f"{out}/defaults.{tag}.flowmote.json"))
        t0, t1 = map(float, open(f"{out}/defaults.{tag}.flowmote.time").read().split())
        m = json.load(open(f"{out}/defaults.{tag}.model.json"))
        st = m["provenance"]["settings"]
        dist = st.get("distillation")
        if st.get("members"):
            kinds = [c["flow"] for c in st["members"]]
            kb = sum(c["parameters"] for c in st["members"]) * 4 / 1024
            note = ("mixture: " if (st.get("folds") or 1) == 1 else f"{st['folds']}-fold committee: ") + \
                " + ".join(f"{k} ×{kinds.count(k)}" for k in sorted(set(kinds))) + f", {kb:.0f} KB"
        else:
            # With Gaussians beside it the model's validation NLL is the
            # mixture's; the student is found by its own.
            g = (dist or {}).get("gaussians") or {}
            own = g["student_val_nll"] if g.get("kept") else m["provenance"]["val_nll"]
            kept = next((c for c in (dist or {}).get("students", []) if c.get("val_nll") == own), None)
            note = f"{m['kind']} {st['layers']}×{st['hidden']}"
            if kept:
                note += f"{' + teacher samples' if kept.get('teacher_samples') else ''}, {kept['weight_bytes'] / 1024:.0f} KB, {kept['macs']} MACs, {kept['estimated_ms']:.2f} ms"
            if g.get("kept"):
                note += f" + {g['components']} {g['covariance']} Gaussians ({g['weight_bytes'] / 1024:.1f} KB, weight {g['weight']:.2f})"
        rows.setdefault("flowmote defaults (--target nrf52840)", []).append((nll_of(ev), ev.get("auroc"), t1 - t0, note))
        tp = f"{out}/defaults.{tag}.teacher.eval.json"
        if dist and os.path.exists(tp):
            te = json.load(open(tp))
            t = dist["teacher"]
            rows.setdefault("its teacher (over the budget)", []).append(
                (nll_of(te), te.get("auroc"), t["seconds"], f"{t['weight_bytes'] / 1024:.0f} KB, {t['macs']} MACs"))
        p = json.load(open(f"{out}/defaults.{tag}.peers.json"))
        g = p["gmm"]
        rows.setdefault("GaussianMixture (val-selected)", []).append(
            (g["test_nll"], g["auroc"], g["train_s"], f"{g['components']} × {g['covariance']}"))
        for k, name in (("flowjax_maf_rqs", "FlowJAX MAF + RQS, defaults"),
                        ("flowjax_coupling_rqs", "FlowJAX coupling + RQS, defaults")):
            r = p[k]
            rows.setdefault(name, []).append((r["test_nll"], r["auroc"], r["train_s"],
                f"{r['epochs_run']} ep" + (f", {r['nonfinite']} non-finite" if r["nonfinite"] else "")))
        for k, name in (("isolation_forest", "IsolationForest, defaults"),
                        ("lof", "LocalOutlierFactor, defaults")):
            if k in p:  # no density: AUROC only
                rows.setdefault(name, []).append((None, p[k]["auroc"], p[k]["train_s"], "no density"))
    for name, rs in rows.items():
        nll = np.array([np.nan if r[0] is None else r[0] for r in rs], float)
        au = [r[1] for r in rs]
        f = lambda v, p=2: "–" if v is None else f"{v:.{p}f}"
        aus = "–" if au[0] is None else f"{np.mean(au):.3f} ± {np.std(au, ddof=1) if len(au) > 1 else 0:.3f}"
        nlls = "–" if np.isnan(nll).all() else f"{nll.mean():.2f} ± {nll.std(ddof=1) if len(nll) > 1 else 0:.2f}"
        print(f"| {s} | {name} | {nlls} | "
              f"{' / '.join(f(r[0]) for r in rs)} | {aus} | {' / '.join(f(v, 3) for v in au)} | "
              f"{np.mean([r[2] for r in rs]):.1f} | {'; '.join(sorted(set(r[3] for r in rs)))} |")

# AUROC differences on labelled sets, with a paired bootstrap over the test
# rows: each replicate resamples the anomalous and the normal rows (with
# replacement, separately), rescores every model and seed on that same
# resample, and takes the difference of the seed-mean AUROCs.
def auroc_matrix(s, idx):
    """AUROC of each row of s (models×seeds, rows) on column resample idx."""
    x = s[..., idx]
    y = labels[idx]
    ranks = rankdata(x, axis=-1)  # average ranks for ties
    n1 = y.sum(); n0 = len(y) - n1
    return (ranks[..., y == 1].sum(-1) - n1 * (n1 + 1) / 2) / (n1 * n0)
header = False
for s in sets:
    try:
        fm = []
        for seed in seeds:
            rows = np.genfromtxt(f"{out}/defaults.{s}.s{seed}.flowmote.scores.csv", delimiter=",",
                                 skip_header=1, usecols=1)
            fm.append(np.where(np.isfinite(rows), -rows, np.inf))
    except OSError:
        continue  # unlabelled set: no scores written
    peers = {}
    for seed in seeds:
        p = json.load(open(f"{out}/defaults.{s}.s{seed}.peers.json"))
        for k, name in (("gmm", "GaussianMixture"), ("flowjax_maf_rqs", "FlowJAX MAF + RQS"),
                        ("flowjax_coupling_rqs", "FlowJAX coupling + RQS")):
            lp = np.array([np.nan if v is None else v for v in p[k]["log_prob"]], float)
            peers.setdefault(name, []).append(np.where(np.isfinite(lp), -lp, np.inf))
        for k, name in (("isolation_forest", "IsolationForest"), ("lof", "LocalOutlierFactor")):
            if k in p:  # higher score = more normal, like log p
                peers.setdefault(name, []).append(-np.array(p[k]["score"], float))
    with open(f"{data}/{s}.test.csv") as f:
        head = f.readline().strip().split(",")
    labels = np.genfromtxt(f"{data}/{s}.test.csv", delimiter=",", skip_header=1,
                           usecols=head.index("label")).astype(int)
    fm = np.array(fm)
    if not header:
        print("\nAUROC difference flowmote − peer (mean over seeds), with a 95 % paired bootstrap "
              "interval over the test rows (2 000 replicates, anomalous and normal rows resampled separately):\n")
        print("| set | peer | AUROC difference | 95 % interval | replicates where flowmote ≥ peer |")
        print("|---|---|---|---|---|")
        header = True
    rng = np.random.default_rng(0)
    pos, neg = np.where(labels == 1)[0], np.where(labels == 0)[0]
    reps = [np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]) for _ in range(2000)]
    full = np.arange(len(labels))
    for name, sc in peers.items():
        sc = np.array(sc)
        diff = lambda idx: auroc_matrix(fm, idx).mean() - auroc_matrix(sc, idx).mean()
        d = np.array([diff(i) for i in reps])
        lo, hi = np.percentile(d, [2.5, 97.5])
        print(f"| {s} | {name} | {diff(full):+.4f} | [{lo:+.4f}, {hi:+.4f}] | {100 * (d >= 0).mean():.0f} % |")
EOF2
cat "$OUT/defaults.md"
