"""Markdown tables of the peer comparison from the JSON files run.sh writes.

Usage: python report.py OUT_DIR SET... -- FLOW...
"""

import json
import os
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def f(v, fmt="{:.2f}"):
    return "–" if v is None else fmt.format(v)


def ratio(a, b):
    """a / b, or None."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def main():
    out = sys.argv[1]
    rest = sys.argv[2:]
    sep = rest.index("--")
    sets, flows = rest[:sep], rest[sep + 1 :]
    rows = []
    for s in sets:
        for fl in flows:
            base = os.path.join(out, f"{s}.{fl}")
            rows.append((s, fl, load(base + ".flowmote.json"), load(base + ".flowjax.json"), load(base + ".timing.json")))

    print("### Quality and training time (same split, same architecture, same epochs)")
    print()
    print("Test NLL in nats per row, data units (lower is better; breast_cancer: benign test rows only). "
          "Training time is wall time, FlowJAX's including JIT compilation.")
    print()
    print("| set | flow | test NLL flowmote | test NLL FlowJAX | Δ NLL (fm − fj) | AUROC flowmote | AUROC FlowJAX "
          "| train s flowmote | train s FlowJAX | FlowJAX / flowmote |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for s, fl, fm, fj, _ in rows:
        fm = fm or {}
        fj = fj or {}
        d = None
        if fm.get("test_nll") is not None and fj.get("test_nll") is not None:
            d = fm["test_nll"] - fj["test_nll"]
        print(
            f"| {s} | {fl} | {f(fm.get('test_nll'))} | {f(fj.get('test_nll'))} | {f(d, '{:+.2f}')} "
            f"| {f(fm.get('auroc'), '{:.3f}')} | {f(fj.get('auroc'), '{:.3f}')} "
            f"| {f(fm.get('train_s'), '{:.2f}')} | {f(fj.get('train_s'), '{:.1f}')} "
            f"| {f(ratio(fj.get('train_s'), fm.get('train_s')), '{:.2f}×')} |"
        )
    print()
    print("### Scoring speed on this CPU")
    print()
    print("Single sample: flowmote `Flow::log_prob` of the const-generic (firmware) type and of the run-time "
          "`DynFlow` the tool scores with; FlowJAX `flow.log_prob(x)` eager (as written in a Python loop) and "
          "jitted (`jax.jit`, weights closed over). Batch, sustained rows/s (each timed pass repeats the call "
          "for >= 20 ms; best of 7): FlowJAX one jitted call on 1024 rows; flowmote the tool's "
          "`DynMixture::log_probs` (what `eval`, `score`, `calibrate` and `plot` run: blocks of 16 rows, "
          "vectorised across rows) on 1 and 2 threads, and a plain loop of the firmware type's `log_prob` "
          "split over 2 threads.")
    print()
    print("| set | flow | single µs flowmote static | single µs flowmote dyn | single µs FlowJAX eager "
          "| single µs FlowJAX jit | eager / static | jit / static | batch rows/s tool 1 thr | tool 2 thr "
          "| firmware loop 2 thr | batch rows/s FlowJAX jit | tool 2 thr / FlowJAX |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s, fl, _, fj, tm in rows:
        fj = fj or {}
        tm = tm or {}
        st = tm.get("static") or {}
        dy = tm.get("dyn") or {}
        us = lambda ns: None if ns is None else ns / 1000.0  # noqa: E731
        print(
            f"| {s} | {fl} | {f(us(st.get('single_ns')))} | {f(us(dy.get('single_ns')))} "
            f"| {f(us(fj.get('single_eager_ns')), '{:.0f}')} | {f(us(fj.get('single_jit_ns')), '{:.1f}')} "
            f"| {f(ratio(fj.get('single_eager_ns'), st.get('single_ns')), '{:.0f}×')} "
            f"| {f(ratio(fj.get('single_jit_ns'), st.get('single_ns')), '{:.2f}×')} "
            f"| {f(dy.get('log_probs_rows_per_s_1thread'), '{:,.0f}')} "
            f"| {f(dy.get('log_probs_rows_per_s_2threads'), '{:,.0f}')} "
            f"| {f(st.get('batch_rows_per_s_2threads'), '{:,.0f}')} "
            f"| {f(fj.get('batch_rows_per_s'), '{:,.0f}')} "
            f"| {f(ratio(dy.get('log_probs_rows_per_s_2threads'), fj.get('batch_rows_per_s')), '{:.2f}×')} |"
        )
    fm0 = next((r[2] for r in rows if r[2]), {}) or {}
    fj0 = next((r[3] for r in rows if r[3]), {}) or {}
    print()
    print(f"flowmote trainer: {fm0.get('trainer', '–')}. Peer: FlowJAX {((fj0.get('versions') or {}).get('flowjax'))}, "
          f"JAX {((fj0.get('versions') or {}).get('jax'))}, epochs run {fj0.get('epochs_run', '–')}.")


if __name__ == "__main__":
    main()
