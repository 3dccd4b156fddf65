//! `flowmote-fit`: a stand-in for `flowmote train` + `flowmote eval --json`
//! in the peer comparison (`bench/peers/run.sh`) while the tools trainer has
//! not landed. Same protocol as the peer script: standardise with the train
//! mean/std (a frozen ActNorm first layer, so `log p` is in data units), hold
//! out a random 10 % of train for validation, train with mini-batch Adam on
//! the mean NLL through `DynFlow::nll_backward` (whole batches of a fresh
//! shuffle each epoch), keep the parameters of the best validation epoch,
//! report test NLL (normal rows when labelled), AUROC and the training wall
//! time, as one JSON object.
//!
//! ```text
//! flowmote-fit --train T.csv --test S.csv --flow maf|coupling --layers 4 --hidden 64
//!              --depth 2 --epochs 100 --batch 64 --lr 1e-3 --seed 0 [--threads 2]
//!              [--clamp 3] [--perm random|reverse] [--save model.json]
//! ```

use flowmote_benches::train::{dyn_flow, read_csv, Kind, NllTrainer};
use flowmote_benches::{rng, Rng};
use flowmote_tools::model::{DynFlow, Layer, Workspace};
use std::time::Instant;

fn labels(path: &str) -> Option<Vec<u8>> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let j = lines.next()?.split(',').position(|h| h.trim() == "label")?;
    Some(
        lines
            .filter(|l| !l.trim().is_empty())
            .map(|l| u8::from(l.split(',').nth(j).is_some_and(|v| v.trim() != "0")))
            .collect(),
    )
}

fn mean_nll(flow: &DynFlow, rows: &[f32], ws: &mut Workspace) -> (f64, Vec<f64>) {
    let scores: Vec<f64> = rows
        .chunks_exact(flow.dim)
        .map(|x| flow.log_prob(x, ws).map_or(f64::INFINITY, |lp| -(lp as f64)))
        .collect();
    let finite: Vec<f64> = scores.iter().copied().filter(|s| s.is_finite()).collect();
    (finite.iter().sum::<f64>() / finite.len().max(1) as f64, scores)
}

/// Mann–Whitney AUROC with average ranks for ties (high score = anomaly).
fn auroc(scores: &[f64], lab: &[u8]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        for &k in &idx[i..=j] {
            ranks[k] = 0.5 * (i + j) as f64 + 1.0;
        }
        i = j + 1;
    }
    let n1 = lab.iter().filter(|&&l| l == 1).count() as f64;
    let n0 = lab.len() as f64 - n1;
    if n1 == 0.0 || n0 == 0.0 {
        return None;
    }
    let r1: f64 = ranks.iter().zip(lab).filter(|(_, &l)| l == 1).map(|(r, _)| r).sum();
    Some((r1 - n1 * (n1 + 1.0) / 2.0) / (n0 * n1))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str| args.iter().position(|a| a == k).and_then(|i| args.get(i + 1)).cloned();
    let num = |k: &str, d: f64| get(k).and_then(|s| s.parse::<f64>().ok()).unwrap_or(d);
    let train_p = get("--train").expect("--train FILE");
    let test_p = get("--test").expect("--test FILE");
    let kind = match get("--flow").as_deref() {
        Some("coupling") => Kind::Coupling,
        _ => Kind::Maf,
    };
    let (layers, hidden, depth) = (
        num("--layers", 4.0) as usize,
        num("--hidden", 64.0) as usize,
        num("--depth", 2.0) as usize,
    );
    let (epochs, batch, lr, seed) = (
        num("--epochs", 100.0) as usize,
        num("--batch", 64.0) as usize,
        num("--lr", 1e-3) as f32,
        num("--seed", 0.0) as u64,
    );
    let val_prop = num("--val", 0.1);

    let (xtr, d) = read_csv(train_p.as_ref()).expect("train CSV");
    let (xte, d2) = read_csv(test_p.as_ref()).expect("test CSV");
    assert_eq!(d, d2, "train and test columns differ");
    let lab = labels(&test_p);

    let t0 = Instant::now();
    // Standardisation as a frozen first layer (train mean / population std).
    let n = xtr.len() / d;
    let mut flow = dyn_flow(kind, d, layers, hidden, depth, seed);
    // Between layers: a seeded random permutation (`--perm random`, the
    // default, as FlowJAX does for D > 2) or the reversal (`--perm reverse`).
    let perm = get("--perm").unwrap_or_else(|| "random".into());
    if perm == "random" {
        let mut pr = rng(seed ^ 0x9e37);
        for l in &mut flow.layers {
            if matches!(l, Layer::Reverse) {
                let mut p: Vec<usize> = (0..d).collect();
                shuffle(&mut p, &mut pr);
                *l = Layer::Permutation { perm: p };
            }
        }
    }
    let clamp = num("--clamp", flowmote::coupling::DEFAULT_CLAMP as f64) as f32;
    for l in &mut flow.layers {
        if let Layer::Maf { clamp: c, .. } | Layer::AffineCoupling { clamp: c, .. } = l {
            *c = clamp;
        }
    }
    if let Layer::ActNorm { log_scale, shift, .. } = &mut flow.layers[0] {
        for j in 0..d {
            let col = xtr.iter().skip(j).step_by(d).map(|&v| v as f64);
            let mean = col.clone().sum::<f64>() / n as f64;
            let var = col.map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
            let sd = if var > 0.0 { var.sqrt() } else { 1.0 };
            log_scale[j] = -(sd.ln()) as f32;
            shift[j] = (-mean / sd) as f32;
        }
    }
    // Random train/validation split.
    let mut r = rng(seed ^ 0x5eed);
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, &mut r);
    let n_val = ((n as f64 * val_prop).round() as usize).clamp(1, n - 1);
    let gather = |ix: &[usize]| -> Vec<f32> {
        ix.iter()
            .flat_map(|&i| xtr[i * d..(i + 1) * d].iter().copied())
            .collect()
    };
    let val = gather(&order[..n_val]);
    let mut tr_idx = order[n_val..].to_vec();

    let threads = num("--threads", 2.0) as usize;
    let mut trainer = NllTrainer::new(&flow, batch, lr, threads);
    let mut ws = Workspace::new(&flow);
    let mut best = (f64::INFINITY, flow.clone(), 0usize);
    let mut history = Vec::new();
    for e in 0..epochs {
        shuffle(&mut tr_idx, &mut r);
        let rows = gather(&tr_idx);
        let tr_nll = trainer.epoch(&mut flow, &rows);
        let (v, _) = mean_nll(&flow, &val, &mut ws);
        history.push((tr_nll, v));
        if v < best.0 {
            best = (v, flow.clone(), e + 1);
        }
    }
    let train_s = t0.elapsed().as_secs_f64();
    let flow = best.1;

    let (_, scores) = mean_nll(&flow, &xte, &mut ws);
    let normal: Vec<f64> = scores
        .iter()
        .enumerate()
        .filter(|(i, s)| s.is_finite() && lab.as_ref().is_none_or(|l| l[*i] == 0))
        .map(|(_, s)| *s)
        .collect();
    let test_nll = normal.iter().sum::<f64>() / normal.len().max(1) as f64;
    let au = lab.as_ref().and_then(|l| auroc(&scores, l));
    if let Some(p) = get("--save") {
        std::fs::write(&p, serde_json::to_vec(&flow).expect("json")).expect("write model");
    }
    let out = serde_json::json!({
        "trainer": "flowmote-fit (benches fallback: DynFlow::nll_backward + Adam)",
        "flow": if kind == Kind::Maf { "maf" } else { "coupling" },
        "dim": d, "layers": layers, "hidden": hidden, "depth": depth, "activation": "tanh",
        "epochs": epochs, "batch": batch, "threads": threads, "clamp": clamp, "perm": perm, "lr": lr, "seed": seed,
        "train_rows": n - n_val, "val_rows": n_val, "test_rows": scores.len(),
        "test_nll": test_nll,
        "test_nll_rows": if lab.is_some() { "normal (label 0)" } else { "all" },
        "nonfinite_test_rows": scores.iter().filter(|s| !s.is_finite()).count(),
        "auroc": au,
        "best_val_nll": best.0, "best_epoch": best.2,
        "train_s": train_s,
        "final_train_nll": history.last().map(|h| h.0),
    });
    println!("{out}");
}

fn shuffle<R: Rng>(v: &mut [usize], r: &mut R) {
    for i in (1..v.len()).rev() {
        let j = (r.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}
