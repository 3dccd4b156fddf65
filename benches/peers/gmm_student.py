"""What-if for the device-budget issue: a Gaussian-mixture candidate among
the students, chosen like them by NLL on the held-out rows (the last 10 % of
the training file).

For each labelled set and each of the five seeds of `benches/peers/defaults.sh`
(run it first: this reads its `defaults.SET.sSEED.model.json`, the kept
students), fits scikit-learn GaussianMixtures (1, 2, 3, 4, 6 or 8
components; full, tied or diagonal covariances; `reg_covar` 1e-3) on the
other 90 % of the training rows (standardised; constant columns left out),
keeps the one with the lowest NLL on the held-out rows, and compares that
NLL with the student's on the same rows (`flowmote score`). Prints, per set,
on how many seeds the mixture would be chosen and the test AUROC and test NLL
(normal rows) of the students against those of the chosen model.

Usage (from the repository root, with the peers' venv):
    benches/peers/.venv/bin/python benches/peers/gmm_student.py [SETS…]
"""
import subprocess, sys, numpy as np
from sklearn.mixture import GaussianMixture
from sklearn.metrics import roc_auc_score
import os
HERE = os.path.dirname(os.path.abspath(__file__))
D = os.path.join(HERE, "../../../shared/data"); R = os.path.join(HERE, "results"); F = os.path.join(HERE, "../../target/release/flowmote")
def load(p):
    h=open(p).readline().strip().split(","); a=np.genfromtxt(p,delimiter=",",skip_header=1); lab=None
    if "label" in h: i=h.index("label"); lab=a[:,i].astype(int); a=np.delete(a,i,1); h=h[:i]+h[i+1:]
    return a,lab,h
def flow_lp(model, rows, cols):
    import tempfile; p=os.path.join(tempfile.gettempdir(), "flowmote-gmm-student-rows.csv"); np.savetxt(p, rows, delimiter=",", header=",".join(cols), comments="")
    out=subprocess.run([F,"score","--model",model,"--data",p],capture_output=True,text=True).stdout
    return np.array([float(l.split(",")[1]) if l.split(",")[1] else -np.inf for l in out.strip().split("\n")[1:]])
print("| set | seeds where the GMM wins validation | AUROC student → chosen | test NLL student → chosen |")
print("|---|---|---|---|")
for s in (sys.argv[1:] or ["breast_cancer", "italy_power", "japanese_vowels", "gunpoint", "digits"]):
    xtr,_,h=load(f"{D}/{s}.train.csv"); xte,lab,_=load(f"{D}/{s}.test.csv")
    keep=xtr.std(0)>0; xtr2,xte2=xtr[:,keep],xte[:,keep]
    nv=int(round(0.1*len(xtr))); tr,va=xtr2[:-nv],xtr2[-nv:]
    mu,sd=tr.mean(0),tr.std(0); sd=np.where(sd>0,sd,1); z=lambda x:(x-mu)/sd; ls=np.log(sd).sum()
    wins=0; au=[[],[]]; nl=[[],[]]
    for seed in range(5):
        m=f"{R}/defaults.{s}.s{seed}.model.json"
        fv=flow_lp(m,xtr[-nv:],h); ft=flow_lp(m,xte,h)
        best=None
        for cov in ("full","tied","diag"):
            for k in (1,2,3,4,6,8):
                try: g=GaussianMixture(k,covariance_type=cov,random_state=seed,reg_covar=1e-3).fit(z(tr))
                except Exception: continue
                v=-(g.score_samples(z(va))-ls).mean()
                if best is None or v<best[0]: best=(v,g)
        gt=best[1].score_samples(z(xte2))-ls
        gmm_wins=best[0] < -fv.mean()
        wins+=gmm_wins
        ok=np.isfinite(ft); fts=np.where(ok,ft,-1e30)
        au[0].append(roc_auc_score(lab,-fts)); nl[0].append(-ft[lab==0].mean())
        c=gt if gmm_wins else fts
        au[1].append(roc_auc_score(lab,-c)); nl[1].append(-c[lab==0].mean())
    print(f"| {s} | {wins} of 5 | {np.mean(au[0]):.3f} → {np.mean(au[1]):.3f} | {np.mean(nl[0]):.2f} → {np.mean(nl[1]):.2f} |",flush=True)
