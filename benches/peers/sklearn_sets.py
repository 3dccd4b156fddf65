"""Two more labelled sets for the defaults-vs-peers run, from the data that
ships inside scikit-learn (no download): small files of the shapes the
device-budget issue names (60 × 4 and 78 × 13), which the shared data has
none of.

* iris: the normal rows are setosa and versicolor (two well-separated
  clusters), the anomalies virginica.
* wine: the normal rows are cultivars 0 and 1, the anomalies cultivar 2.

Per set, the normal rows are shuffled (numpy seed 0): 60 % of them are the
training file, the rest plus the first 10 anomalies the labelled test file
(`label` 1 = anomaly). Writes OUTDIR/{iris,wine}.{train,test}.csv.

Usage (with the peers' venv):
    benches/peers/.venv/bin/python benches/peers/sklearn_sets.py OUTDIR
    DATA=OUTDIR OUT=benches/peers/results/sklearn SETS="iris wine" benches/peers/defaults.sh
"""
import os
import sys

import numpy as np
from sklearn.datasets import load_iris, load_wine

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for name, load in (("iris", load_iris), ("wine", load_wine)):
    d = load()
    x, y = d.data, d.target
    normal, anomalous = np.where(y != 2)[0], np.where(y == 2)[0]
    np.random.default_rng(0).shuffle(normal)
    n_train = int(0.6 * len(normal))
    cols = ["".join(c if c.isalnum() else "_" for c in f).strip("_") for f in d.feature_names]
    test = np.vstack([x[normal[n_train:]], x[anomalous[:10]]])
    labels = [0] * (len(normal) - n_train) + [1] * 10
    np.savetxt(f"{out}/{name}.train.csv", x[normal[:n_train]], delimiter=",", header=",".join(cols),
               comments="", fmt="%g")
    np.savetxt(f"{out}/{name}.test.csv", np.column_stack([test, labels]), delimiter=",",
               header=",".join(cols + ["label"]), comments="", fmt="%g")
    print(f"{name}: {n_train} training rows × {x.shape[1]}, {len(test)} test rows ({sum(labels)} anomalies)")
