"""Defaults vs peers (issue 6): peers at their own defaults on one split.

For one train/test CSV pair prints one JSON object with, per model, the test
NLL in data units (normal rows only when the test file is labelled) and the
AUROC of -log p(x) against `label` (anomaly = 1) when labelled, with each
row's log p(x) (`log_prob`, null when not finite) for a paired comparison:

* scikit-learn GaussianMixture: n_components 1..8, 12, 16, 24, 32 x covariance type
  (full, tied, diag, spherical) chosen by mean log-likelihood on a random
  20 % validation split of train (seed 0), then refitted on all of train;
* FlowJAX masked_autoregressive_flow and coupling_flow with a
  RationalQuadraticSpline(knots=8, interval=4) transformer, every other
  argument at FlowJAX's default (flow_layers=8, nn_width=50, nn_depth=1,
  relu), trained by fit_to_data at its defaults (lr 5e-4, batch 100,
  max_epochs 100, max_patience 5, val_prop 0.1, best epoch kept), unless
  --max-epochs is given;
* scikit-learn IsolationForest and LocalOutlierFactor (novelty=True) at
  their defaults, fitted on train: no density, so no NLL; their AUROC is of
  the negated `score_samples`, kept per row as `score` (higher = more
  normal) for the paired comparison.

All models see train-standardised inputs; sum(log std) is added back.

Usage: python peer_defaults.py --train T.csv --test S.csv [--max-epochs N]
"""

import argparse
import json
import time

import numpy as np

from peer_flowjax import auroc, load


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--max-epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    xtr, _ = load(a.train)
    xte, lab = load(a.test)
    mean, std = xtr.mean(0), xtr.std(0)
    std = np.where(std > 0, std, 1.0)
    ztr = (xtr - mean) / std
    zte = (xte - mean) / std
    log_std = float(np.log(std).sum())
    normal = lab == 0 if lab is not None else np.ones(len(zte), bool)

    def summarise(lp, extra):
        lp = np.asarray(lp, dtype=np.float64)
        finite = np.isfinite(lp)
        out = {
            "test_nll": float(-lp[normal & finite].mean() + log_std),
            "auroc": auroc(np.where(finite, -lp, np.inf), lab) if lab is not None else None,
            "nonfinite": int((~finite).sum()),
        }
        if lab is not None:  # per-row scores, for the paired bootstrap in defaults.sh
            out["log_prob"] = [float(v) if np.isfinite(v) else None for v in lp]
        out.update(extra)
        return out

    res = {}

    # --- GaussianMixture, selected on a validation split -----------------
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(a.seed)
    perm = rng.permutation(len(ztr))
    nval = max(1, int(round(0.2 * len(ztr))))
    va, tr = ztr[perm[:nval]], ztr[perm[nval:]]
    t0 = time.perf_counter()
    best = None
    for cov in ("full", "tied", "diag", "spherical"):
        for k in (*range(1, 9), 12, 16, 24, 32):
            try:
                g = GaussianMixture(k, covariance_type=cov, random_state=a.seed, reg_covar=1e-6).fit(tr)
                s = g.score(va)
            except Exception:  # e.g. too few rows for a full covariance
                continue
            if np.isfinite(s) and (best is None or s > best[0]):
                best = (s, k, cov)
    _, k, cov = best
    g = GaussianMixture(k, covariance_type=cov, random_state=a.seed, reg_covar=1e-6).fit(ztr)
    res["gmm"] = summarise(
        g.score_samples(zte),
        {"components": k, "covariance": cov, "val_ll_std_units": float(best[0]),
         "train_s": time.perf_counter() - t0},
    )

    # --- IsolationForest and LocalOutlierFactor at their defaults --------
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import LocalOutlierFactor

    for name, make in (("isolation_forest", lambda: IsolationForest(random_state=a.seed)),
                       ("lof", lambda: LocalOutlierFactor(novelty=True))):
        t0 = time.perf_counter()
        m = make().fit(ztr)
        train_s = time.perf_counter() - t0
        sc = m.score_samples(zte)
        res[name] = {"auroc": auroc(-sc, lab) if lab is not None else None, "train_s": train_s}
        if lab is not None:
            res[name]["score"] = [float(v) for v in sc]

    # --- FlowJAX RQS flows at defaults -----------------------------------
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    from flowjax.bijections import RationalQuadraticSpline
    from flowjax.distributions import Normal
    from flowjax.flows import coupling_flow, masked_autoregressive_flow
    from flowjax.train import fit_to_data

    d = ztr.shape[1]
    for name, make in (("flowjax_maf_rqs", masked_autoregressive_flow),
                       ("flowjax_coupling_rqs", coupling_flow)):
        k_init, k_fit = jr.split(jr.key(a.seed))
        flow = make(k_init, base_dist=Normal(jnp.zeros(d)),
                    transformer=RationalQuadraticSpline(knots=8, interval=4))
        kw = {} if a.max_epochs is None else {"max_epochs": a.max_epochs}
        t0 = time.perf_counter()
        flow, losses = fit_to_data(k_fit, flow, jnp.asarray(ztr, jnp.float32),
                                   show_progress=False, **kw)
        jax.block_until_ready(flow)
        train_s = time.perf_counter() - t0
        lp = jax.jit(lambda x: flow.log_prob(x))(jnp.asarray(zte, jnp.float32))
        res[name] = summarise(
            lp, {"epochs_run": len(losses["train"]),
                 "best_val_loss_std_units": float(min(losses["val"])),
                 "train_s": train_s})
    print(json.dumps(res))


if __name__ == "__main__":
    main()
