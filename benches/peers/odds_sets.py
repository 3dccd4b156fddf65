"""More labelled sets for the defaults-vs-peers run: the tabular
outlier-detection benchmark files of ODDS (Rayana 2016,
https://odds.cs.stonybrook.edu; the same `.mat` files ship in PyOD's
repository under `notebooks/data/`). Not bundled here: point the script at a
directory holding them.

Each file has `X` (rows × columns) and `y` (1 = outlier). As for the shared
sets: the normal rows are shuffled (numpy seed 0), 60 % of them are the
training file, the other normal rows plus every outlier the labelled test
file (`label` 1 = anomaly). Columns that are constant on the training rows
stay in (flowmote leaves them out with a note; the peers standardise them).
Writes OUTDIR/NAME.{train,test}.csv for every NAME.mat found in MATDIR.

Usage (with the peers' venv):
    benches/peers/.venv/bin/python benches/peers/odds_sets.py MATDIR OUTDIR
    DATA=OUTDIR OUT=benches/peers/results/odds SEEDS=0 SETS="cardio satellite …" benches/peers/defaults.sh
"""
import glob
import os
import sys

import numpy as np
import scipy.io

mat_dir, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
for path in sorted(glob.glob(os.path.join(mat_dir, "*.mat"))):
    name = os.path.basename(path)[:-4]
    m = scipy.io.loadmat(path)
    x, y = np.asarray(m["X"], dtype=float), np.asarray(m["y"]).ravel().astype(int)
    normal, anomalous = np.where(y == 0)[0], np.where(y == 1)[0]
    np.random.default_rng(0).shuffle(normal)
    n_train = int(0.6 * len(normal))
    cols = [f"x{i}" for i in range(x.shape[1])]
    test = np.vstack([x[normal[n_train:]], x[anomalous]])
    labels = [0] * (len(normal) - n_train) + [1] * len(anomalous)
    np.savetxt(f"{out}/{name}.train.csv", x[normal[:n_train]], delimiter=",", header=",".join(cols),
               comments="", fmt="%.9g")
    np.savetxt(f"{out}/{name}.test.csv", np.column_stack([test, labels]), delimiter=",",
               header=",".join(cols + ["label"]), comments="", fmt="%.9g")
    print(f"{name}: {n_train} training rows × {x.shape[1]}, {len(test)} test rows ({len(anomalous)} anomalies)")
