"""What-if for the device-budget issue's ranking aim: would a kernel density
beside the kept student rank anomalies better? A Gaussian kernel density is
a mixture with one Gaussian per training row (a density, not a heuristic,
and the closest density to LocalOutlierFactor's local ranking), so it could
be exported like the Gaussians `flowmote train` already puts beside a
student, at one member per training row.

For each labelled set and each of the five seeds of `benches/peers/defaults.sh`
(run it first: this reads its `defaults.SET.sSEED.model.json`, the kept
models), on the first 90 % of the training rows (standardised; constant
columns left out): kernels `N(row, h²·Σ)` with `Σ` the identity (diagonal)
or the rows' covariance (full, + 1e-3·I), the bandwidth `h` on a grid of
40 from 0.02 to 2, chosen with the kernel by NLL on the held-out last 10 %
(what the tool chooses by); then the mixture `w·kept model + (1 − w)·kernel
density` with `w` fitted on the held-out rows by EM. Prints, per set, the
mean over the seeds of the test AUROC of the kept model, the kernel density
alone and the mixture, and the test NLL of the normal rows of the three.

Usage (from the repository root, with the peers' venv):
    benches/peers/.venv/bin/python benches/peers/kde_student.py [SETS…]
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score

HERE = os.path.dirname(os.path.abspath(__file__))
D = os.path.join(HERE, "../../../shared/data")
R = os.path.join(HERE, "results")
F = os.path.join(HERE, "../../target/release/flowmote")


def load(p):
    h = open(p).readline().strip().split(",")
    a = np.genfromtxt(p, delimiter=",", skip_header=1)
    lab = None
    if "label" in h:
        i = h.index("label")
        lab = a[:, i].astype(int)
        a = np.delete(a, i, 1)
        h = h[:i] + h[i + 1:]
    return a, lab, h


def model_lp(model, rows, cols):
    """log p of `rows` under a flowmote model file (`flowmote score`)."""
    p = os.path.join(tempfile.gettempdir(), "flowmote-kde-student-rows.csv")
    np.savetxt(p, rows, delimiter=",", header=",".join(cols), comments="")
    out = subprocess.run([F, "score", "--model", model, "--data", p], capture_output=True, text=True).stdout
    return np.array([float(l.split(",")[1]) if l.split(",")[1] else -np.inf for l in out.strip().split("\n")[1:]])


def kde_lp(train, x, chol, h):
    """log of the mean over `train` rows of N(x; row, h²·L·Lᵀ)."""
    li = np.linalg.inv(chol)
    a = (x @ li.T)[:, None, :] - (train @ li.T)[None, :, :]
    d = train.shape[1]
    lk = -0.5 * (a**2).sum(-1) / h**2 - d * np.log(h) - np.log(np.diag(chol)).sum() - 0.5 * d * np.log(2 * np.pi)
    return logsumexp(lk, axis=1) - np.log(len(train))


def em_weight(a, b):
    """Weight of `a` in the two-member mixture that maximises the likelihood."""
    w = 0.5
    for _ in range(1000):
        la, lb = np.log(w) + a, np.log(1 - w) + b
        r = np.exp(la - np.logaddexp(la, lb)).mean()
        done = abs(r - w) < 1e-10
        w = min(max(r, 1e-6), 1 - 1e-6)
        if done:
            break
    return w


print("| set | kernel | AUROC kept → kernel density → mixture | test NLL kept → kernel density → mixture |")
print("|---|---|---|---|")
for s in sys.argv[1:] or ["breast_cancer", "italy_power", "japanese_vowels", "gunpoint", "digits"]:
    xtr, _, h = load(f"{D}/{s}.train.csv")
    xte, lab, _ = load(f"{D}/{s}.test.csv")
    keep = xtr.std(0) > 0
    xtr2, xte2 = xtr[:, keep], xte[:, keep]
    nv = int(round(0.1 * len(xtr)))
    tr, va = xtr2[:-nv], xtr2[-nv:]
    mu, sd = tr.mean(0), tr.std(0)
    sd = np.where(sd > 0, sd, 1)
    z = lambda x: (x - mu) / sd  # noqa: E731
    ls = np.log(sd).sum()
    d = tr.shape[1]
    best = None
    for kind, chol in (("diagonal", np.eye(d)), ("full", np.linalg.cholesky(np.cov(z(tr).T) + 1e-3 * np.eye(d)))):
        for bw in np.exp(np.linspace(np.log(0.02), np.log(2), 40)):
            v = -(kde_lp(z(tr), z(va), chol, bw) - ls).mean()
            if best is None or v < best[0]:
                best = (v, kind, bw, chol)
    _, kind, bw, chol = best
    kv = kde_lp(z(tr), z(va), chol, bw) - ls
    kt = kde_lp(z(tr), z(xte2), chol, bw) - ls
    au, nl = [], []
    for seed in range(5):
        m = f"{R}/defaults.{s}.s{seed}.model.json"
        fv, ft = model_lp(m, xtr[-nv:], h), model_lp(m, xte, h)
        w = em_weight(fv, kv)
        mt = np.logaddexp(np.log(w) + ft, np.log(1 - w) + kt)
        au.append([roc_auc_score(lab, -c) for c in (ft, kt, mt)])
        nl.append([-c[lab == 0].mean() for c in (ft, kt, mt)])
    a, n = np.mean(au, 0), np.mean(nl, 0)
    print(f"| {s} | {kind}, h = {bw:.3f} | {a[0]:.3f} → {a[1]:.3f} → {a[2]:.3f} | {n[0]:.2f} → {n[1]:.2f} → {n[2]:.2f} |", flush=True)
