"""Peer side of the flowmote benchmark: FlowJAX (JAX, CPU) on the same split.

Trains a masked autoregressive flow or an affine coupling flow with the same
layer count, hidden width and conditioner depth as the flowmote model, on the
train CSV standardised with the train mean/std, and prints one JSON object:

* test NLL in data units: mean over test rows (normal rows only when the test
  file is labelled) of -log p(standardised x) + sum(log std);
* AUROC of the score -log p(x) against `label` (anomaly = 1), when labelled;
* training wall time (including JAX compilation) and epochs run;
* batch log_prob throughput of the jitted call (rows/s);
* single-sample latency of the eager call `flow.log_prob(x)` (what a user
  writes in a loop) and, for reference, of the jitted call.

Usage: python peer_flowjax.py --train T.csv --test S.csv --flow maf|coupling
       --layers N --hidden H --depth K --epochs E --batch B --lr LR --seed S
"""

import argparse
import json
import os
import statistics
import time

import numpy as np


# Timed passes of the batch call, each repeating it for >= 20 ms; the best
# counts (flowmote-timing measures its side the same way).
PASSES = 7

def load(path):
    with open(path) as f:
        header = f.readline().strip().split(",")
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    if "label" in header:
        j = header.index("label")
        return np.delete(data, j, axis=1), data[:, j].astype(int)
    return data, None


def auroc(scores, labels):
    """Mann-Whitney AUROC with average ranks for ties (score high = anomaly)."""
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=int)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    s = scores[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    n1 = labels.sum()
    n0 = len(labels) - n1
    if n1 == 0 or n0 == 0:
        return None
    return float((ranks[labels == 1].sum() - n1 * (n1 + 1) / 2) / (n0 * n1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--flow", choices=["maf", "coupling"], default="maf")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--activation", choices=["tanh", "relu"], default="tanh")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--val", type=float, default=0.1)
    ap.add_argument("--patience", type=int, default=None, help="early-stopping patience (default: epochs, i.e. none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-rows", type=int, default=1024)
    a = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import jax.random as jr
    from flowjax.bijections import Affine
    from flowjax.distributions import Normal
    from flowjax.flows import coupling_flow, masked_autoregressive_flow
    from flowjax.train import fit_to_data

    xtr, _ = load(a.train)
    xte, lab = load(a.test)
    mean, std = xtr.mean(0), xtr.std(0)
    std = np.where(std > 0, std, 1.0)
    ztr = ((xtr - mean) / std).astype(np.float32)
    zte = ((xte - mean) / std).astype(np.float32)
    log_std = float(np.log(std).sum())
    d = ztr.shape[1]

    key, k_init, k_fit = jr.split(jr.key(a.seed), 3)
    make = masked_autoregressive_flow if a.flow == "maf" else coupling_flow
    act = jnp.tanh if a.activation == "tanh" else jax.nn.relu
    flow = make(
        k_init,
        base_dist=Normal(jnp.zeros(d)),
        transformer=Affine(),
        flow_layers=a.layers,
        nn_width=a.hidden,
        nn_depth=a.depth,
        nn_activation=act,
    )

    t0 = time.perf_counter()
    flow, losses = fit_to_data(
        k_fit,
        flow,
        jnp.asarray(ztr),
        learning_rate=a.lr,
        max_epochs=a.epochs,
        max_patience=a.patience if a.patience is not None else a.epochs,
        batch_size=a.batch,
        val_prop=a.val,
        show_progress=False,
    )
    jax.block_until_ready(flow)
    train_s = time.perf_counter() - t0
    epochs_run = len(losses["train"])

    lp = jax.jit(lambda x: flow.log_prob(x))  # weights closed over: fastest dispatch
    lp_te = np.asarray(lp(jnp.asarray(zte)), dtype=np.float64)
    normal = lab == 0 if lab is not None else np.ones(len(zte), bool)
    finite = np.isfinite(lp_te)
    nll = float(-lp_te[normal & finite].mean() + log_std)
    au = auroc(np.where(finite, -lp_te, np.inf), lab) if lab is not None else None

    # Batch throughput of the jitted call (compiled once for this shape):
    # the best of PASSES calls, as flowmote-timing measures its side.
    reps = -(-a.batch_rows // len(zte))
    xb = jnp.asarray(np.tile(zte, (reps, 1))[: a.batch_rows])
    jax.block_until_ready(lp(xb))
    reps = 1
    while True:
        t = time.perf_counter()
        for _ in range(reps):
            jax.block_until_ready(lp(xb))
        if time.perf_counter() - t >= 0.02:
            break
        reps *= 2
    best = float("inf")
    for _ in range(PASSES):
        t = time.perf_counter()
        for _ in range(reps):
            jax.block_until_ready(lp(xb))
        best = min(best, (time.perf_counter() - t) / reps)
    batch_rows_per_s = a.batch_rows / best

    # Single sample: eager call (no jit), and the jitted call for reference.
    x1 = jnp.asarray(zte[0])
    jax.block_until_ready(flow.log_prob(x1))
    eager = []
    for _ in range(15):
        t = time.perf_counter()
        jax.block_until_ready(flow.log_prob(x1))
        eager.append(time.perf_counter() - t)
    jax.block_until_ready(lp(x1))
    jitted = []
    for _ in range(31):
        n = 200
        t = time.perf_counter()
        for _ in range(n):
            r = lp(x1)
        jax.block_until_ready(r)
        jitted.append((time.perf_counter() - t) / n)

    print(
        json.dumps(
            {
                "peer": "flowjax",
                "versions": {
                    "flowjax": __import__("flowjax").__version__ if hasattr(__import__("flowjax"), "__version__") else None,
                    "jax": jax.__version__,
                },
                "flow": a.flow,
                "dim": d,
                "layers": a.layers,
                "hidden": a.hidden,
                "depth": a.depth,
                "activation": a.activation,
                "epochs": a.epochs,
                "epochs_run": epochs_run,
                "batch": a.batch,
                "lr": a.lr,
                "seed": a.seed,
                "train_file_rows": int(len(ztr)),  # fit_to_data holds out val_prop of these
                "test_rows": int(len(zte)),
                "test_nll": nll,
                "test_nll_rows": "normal (label 0)" if lab is not None else "all",
                "nonfinite_test_rows": int((~finite).sum()),
                "auroc": au,
                "best_val_loss_std": float(min(losses["val"])),
                "train_s": train_s,
                "batch_rows": a.batch_rows,
                "batch_rows_per_s": batch_rows_per_s,
                "single_eager_ns": statistics.median(eager) * 1e9,
                "single_jit_ns": statistics.median(jitted) * 1e9,
                "cpu_threads_visible": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
